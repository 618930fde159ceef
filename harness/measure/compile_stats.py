"""Compile time and recompilations, from torch.compile's own compile callbacks.

Dynamo runs a start and an end callback around each outermost compilation: a frame
compiled for the first time, a frame compiled again because its guards failed (a
recompile: a new shape, the switch between train and eval, grad mode), and a
backward graph compiled lazily at the first backward. The tracker times those
brackets. The meter tells it where the timed window's edges are, so compile work
inside the window is reported as such, and ``compile.fail_on_recompile`` turns on
Dynamo's ``error_on_recompile`` for exactly the window's steps.

It reads no clock on the hot path: the callbacks fire only while compiling.
"""

from __future__ import annotations

import time

from harness.run.accel import CompileConfig


class CompileTracker:
    """One process's compile figures; ``combine`` merges the ranks'."""

    def __init__(self, cfg: CompileConfig):
        self.cfg = cfg
        self.in_window = False
        self.compile_s = 0.0
        self.window_compile_s = 0.0
        self.compiles = 0
        self.recompiles = 0
        self.window_recompiles = 0
        self._ids: set[str] = set()
        self._frames: set[str] = set()
        self._started: float | None = None
        self._started_in_window = False
        self._saved_error_flag: bool | None = None
        self._handler = None
        if cfg.enabled:
            import torch._dynamo

            # A run's compile figures are its own: graphs cached by an earlier run in
            # this process (tests, notebooks) would hide its compiles and recompiles.
            torch._dynamo.reset()
            try:
                from torch._dynamo.callback import callback_handler
            except ImportError:  # a torch without compile callbacks: figures stay null
                return
            callback_handler.register_start_callback(self._start)
            callback_handler.register_end_callback(self._end)
            self._handler = callback_handler

    # -- Dynamo's callbacks -------------------------------------------------------

    def _start(self, args=None) -> None:
        self._started = time.perf_counter()
        self._started_in_window = self.in_window

    def _end(self, args=None) -> None:
        if self._started is None:
            return
        took = time.perf_counter() - self._started
        self._started = None
        self.compile_s += took
        if self._started_in_window:
            self.window_compile_s += took
        if getattr(args, "callback_trigger", None) is not None and args.callback_trigger.name != "DYNAMO":
            return  # a lazy backward or a CUDA graph recording: time, not a frame compile
        compile_id = str(getattr(args, "compile_id", ""))
        if compile_id in self._ids:
            return  # the same compile restarted (e.g. after a graph break): not a new one
        self._ids.add(compile_id)
        self.compiles += 1
        # A compile id reads "frame/count": the frame's first compile is a compile,
        # every later one a recompile.
        frame = compile_id.split("/")[0]
        if frame in self._frames:
            self.recompiles += 1
            if self._started_in_window:
                self.window_recompiles += 1
        self._frames.add(frame)

    # -- the meter's window edges -------------------------------------------------

    def window_opened(self) -> None:
        self.in_window = True
        if self.cfg.fail_on_recompile:
            import torch._dynamo

            self._saved_error_flag = torch._dynamo.config.error_on_recompile
            torch._dynamo.config.error_on_recompile = True

    def window_closed(self) -> None:
        self.in_window = False
        if self._saved_error_flag is not None:
            import torch._dynamo

            torch._dynamo.config.error_on_recompile = self._saved_error_flag
            self._saved_error_flag = None

    # -- results ------------------------------------------------------------------

    def close(self) -> None:
        """Unregister the callbacks (idempotent); the process may run again in-process."""
        self.window_closed()
        if self._handler is not None:
            # torch._dynamo.reset() clears every callback: ours may be gone already.
            for registered, ours in ((self._handler.start_callbacks, self._start),
                                     (self._handler.end_callbacks, self._end)):
                if ours in registered:
                    registered.remove(ours)
            self._handler = None

    def summary(self) -> dict:
        measured = self._handler is not None
        self.close()
        if not measured:
            return dict.fromkeys(("compile_time_s", "compile_time_in_window_s", "compiles", "recompiles",
                                  "recompiles_in_window"))
        return {"compile_time_s": self.compile_s, "compile_time_in_window_s": self.window_compile_s,
                "compiles": self.compiles, "recompiles": self.recompiles,
                "recompiles_in_window": self.window_recompiles}


def combine(cfg: CompileConfig, per_rank: list[dict]) -> dict:
    """The report's ``compile`` block: the settings, then the slowest rank's figures.

    Ranks compile the same graphs at the same steps, so the largest figure is what
    held the job up; null when compilation is off.
    """
    block = {"enabled": cfg.enabled, "backend": cfg.backend if cfg.enabled else None,
             "mode": cfg.mode if cfg.enabled else None, "dynamic": cfg.dynamic,
             "fullgraph": cfg.fullgraph, "fail_on_recompile": cfg.fail_on_recompile}
    keys = ("compile_time_s", "compile_time_in_window_s", "compiles", "recompiles", "recompiles_in_window")
    for key in keys:
        values = [r[key] for r in per_rank if r[key] is not None]
        block[key] = max(values) if values else None
    return block


def warnings_for(block: dict) -> list[str]:
    if not block.get("compile_time_in_window_s"):
        return []
    return [f"{block['compile_time_in_window_s']:.2f} s of compilation ({block['recompiles_in_window']} "
            "recompile(s)) fell inside the timed window: throughput includes compile time"]
