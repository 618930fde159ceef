"""Each GPU figure against its bound, and the table that shows them.

The figures arrive as one mapping of what was measured (``figures.json``: key -> value,
or ``{"error": "..."}`` where taking it failed); judging them needs no GPU and no torch, so
a recorded file is judged again anywhere (``python -m scripts.gpu_check --judge FILE``).
A figure that is missing or whose measurement failed does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

SLEEP_TOLERANCE = 0.10
"""A step that is a known GPU sleep reads that sleep within 10% (STYLE.md: physical truth)."""
BLOCK_TOLERANCE = 0.05
"""A phase's device peak over its opening reads a known block within 5%."""
MAX_DATA_WAIT_FRACTION = 0.05
"""A GPU-bound step whose batches are ready on the host waits for data < 5% of the window."""
BUDGET_S = 480.0
"""The whole check, tests and figures, on one GPU: under 8 minutes."""


@dataclass(frozen=True)
class Check:
    name: str
    key: str
    """The measurement it reads (a key of figures.json)."""
    bound: str
    """What must hold, in words; empty for a figure reported without a bound."""
    holds: Callable[[Any], bool]
    show: Callable[[Any], str] = lambda v: _num(v)


@dataclass(frozen=True)
class Verdict:
    name: str
    value: str
    bound: str
    holds: bool | None
    """None: reported only (no bound)."""


MAX_SHOWN = 120
"""An error longer than this is cut in the table (figures.json keeps it whole)."""


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _fraction(v: Any) -> bool:
    """An MFU: in (0, 1]."""
    return _positive(v) and v <= 1


def _completed(v: dict) -> bool:
    return v.get("status") == "completed"


def _tests_hold(v: dict) -> bool:
    return v.get("failed", 1) == 0 and v.get("errors", 1) == 0 and v.get("passed", 0) > 0


def _sleep_holds(v: dict) -> bool:
    return _positive(v.get("read_ms")) and abs(v["read_ms"] / v["slept_ms"] - 1) <= SLEEP_TOLERANCE


def _wait_holds(v: dict) -> bool:
    f = v["fraction"]
    return isinstance(f, (int, float)) and 0 <= f < MAX_DATA_WAIT_FRACTION


def _block_holds(v: dict) -> bool:
    return _positive(v.get("read_mb")) and abs(v["read_mb"] / v["block_mb"] - 1) <= BLOCK_TOLERANCE


def _phase_peaks_hold(v: dict) -> bool:
    return all(_positive(v.get(p)) for p in ("train", "eval", "checkpoint"))


def _fp16_holds(v: dict) -> bool:
    skipped = v.get("scaler_skipped_steps")
    return (_completed(v) and v.get("mixed_precision") == "fp16" and isinstance(skipped, int)
            and 0 <= skipped < v.get("steps", 0))


def _phase(name: str) -> Callable[[dict], Any]:
    return lambda v: v[name]


def _block(phase: str) -> Check:
    return Check(f"meter: device peak, {phase} phase (MB over the phase's start)", f"phase_blocks.{phase}",
                 f"within {_num(BLOCK_TOLERANCE * 100, 0)}% of the block allocated in it", _block_holds,
                 lambda v: f"{_num(v['read_mb'], 1)} (block {_num(v['block_mb'], 0)})")


def _compile(mode: str) -> Check:
    return Check(f"torch.compile mode {mode}: recompiles in the window", f"compile_{mode.replace('-', '_')}",
                 "completed, 0", lambda v: _completed(v) and v.get("recompiles_in_window") == 0,
                 lambda v: f"{v.get('recompiles_in_window')} ({v.get('status')}, compile "
                           f"{_num(v.get('compile_time_s'), 1)} s)")


CHECKS: list[Check] = [
    Check("gpu-marked tests", "tests", "none failed or in error, at least one passed", _tests_hold,
          lambda v: f"{v.get('passed')} passed, {v.get('failed')} failed, {v.get('errors')} errors, "
                    f"{v.get('skipped')} skipped"),
    Check("meter: step of a known torch.cuda._sleep (ms, CUDA events)", "sleep_step",
          f"within {_num(SLEEP_TOLERANCE * 100, 0)}% of the sleep", _sleep_holds,
          lambda v: f"{_num(v['read_ms'], 2)} (slept {_num(v['slept_ms'], 2)})"),
    Check("meter: data wait fraction, GPU-bound step, pinned batches", "sleep_data_wait",
          f"< {MAX_DATA_WAIT_FRACTION}", _wait_holds,
          lambda v: f"{_num(v['fraction'], 4)} (wait p50 {_num(v.get('wait_ms_p50'), 2)} ms, "
                    f"max {_num(v.get('wait_ms_max'), 2)} ms)"),
    _block("train"), _block("eval"), _block("checkpoint"),
    Check("run: memory.<phase>.device_peak_allocated_mb", "run_phase_peaks", "train, eval, checkpoint each > 0",
          _phase_peaks_hold, lambda v: ", ".join(f"{p} {_num(v.get(p), 1)}" for p in ("train", "eval", "checkpoint"))),
    Check("run: default recipe's data_wait_fraction (host-bound on a GPU)", "run_data_wait_fraction", "",
          lambda v: True, lambda v: _num(v, 4)),
    Check("run: bf16", "bf16", "completed, bf16, no scaler (scaler_skipped_steps null)",
          lambda v: _completed(v) and v.get("mixed_precision") == "bf16" and v.get("scaler_skipped_steps") is None,
          lambda v: f"{v.get('status')}, {v.get('mixed_precision')}, skipped {_num(v.get('scaler_skipped_steps'))}"),
    Check("run: fp16 with the scaler (scaler_skipped_steps)", "fp16", "completed, fp16, 0 <= skipped < steps",
          _fp16_holds, lambda v: f"{v.get('scaler_skipped_steps')} of {v.get('steps')} steps ({v.get('status')})"),
    _compile("default"), _compile("reduce-overhead"),
    Check("resnet50_224 bf16 channels-last: images/s", "resnet50", "completed, channels_last, > 0",
          lambda v: _completed(v) and v.get("memory_format") == "channels_last" and _positive(v.get("samples_per_s")),
          lambda v: _num(v.get("samples_per_s"), 1)),
    Check("resnet50_224 bf16 channels-last: MFU (datasheet)", "resnet50", "in (0, 1]",
          lambda v: _fraction(v.get("mfu_datasheet")), lambda v: _num(v.get("mfu_datasheet"), 4)),
    Check("gpt_small bf16: tokens/s", "gpt", "completed, > 0",
          lambda v: _completed(v) and _positive(v.get("tokens_per_s")), lambda v: _num(v.get("tokens_per_s"), 1)),
    Check("gpt_small bf16: MFU (datasheet)", "gpt", "in (0, 1]",
          lambda v: _fraction(v.get("mfu_datasheet")), lambda v: _num(v.get("mfu_datasheet"), 4)),
    Check("FSDP2 on one GPU (torchrun --nproc_per_node 1)", "fsdp2", "completed, distributed.sharding fsdp2",
          lambda v: _completed(v) and v.get("sharding") == "fsdp2",
          lambda v: f"{v.get('sharding')} ({v.get('status')})"),
    Check("bench-inference: batch-1 latency p50 (ms)", "inference", "completed, CUDA events, > 0",
          lambda v: _completed(v) and v.get("clock") == "cuda_events" and _positive(v.get("p50_ms")),
          lambda v: f"{_num(v.get('p50_ms'), 3)} (p99 {_num(v.get('p99_ms'), 3)}, {v.get('clock')})"),
    Check("gpu-check's own wall time (s)", "wall_s", f"< {_num(BUDGET_S, 0)}",
          lambda v: _positive(v) and v < BUDGET_S, lambda v: _num(v, 1)),
]


def _lookup(figures: dict, key: str) -> Any:
    """``a.b`` reads ``figures["a"]["b"]``; an error recorded at ``a`` is ``a.b``'s error too."""
    value: Any = figures
    for part in key.split("."):
        if isinstance(value, dict) and "error" in value and len(value) == 1:
            return value
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def judge(figures: dict) -> list[Verdict]:
    """One verdict per check, in the table's order."""
    out = []
    for c in CHECKS:
        v = _lookup(figures, c.key)
        if v is None:
            out.append(Verdict(c.name, "not measured", c.bound or "reported", False if c.bound else None))
        elif isinstance(v, dict) and "error" in v:
            error = f"error: {v['error']}"
            error = error if len(error) <= MAX_SHOWN else error[: MAX_SHOWN - 3] + "..."
            out.append(Verdict(c.name, error, c.bound or "reported", False if c.bound else None))
        else:
            try:
                shown, holds = c.show(v), bool(c.holds(v))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:  # a malformed record
                shown, holds = f"unreadable: {err!r}", False
            out.append(Verdict(c.name, shown, c.bound or "reported", holds if c.bound else None))
    return out


def exit_status(verdicts: list[Verdict]) -> int:
    """0 when every bounded figure holds, else 1."""
    return 0 if verdicts and all(v.holds is not False for v in verdicts) else 1


def table(verdicts: list[Verdict]) -> str:
    rows = [("figure", "value", "bound", "holds")]
    rows += [(v.name, v.value, v.bound, {True: "yes", False: "NO", None: "-"}[v.holds]) for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    failed = sum(v.holds is False for v in verdicts)
    lines.append(f"{failed} of {sum(v.holds is not None for v in verdicts)} bounded figures do not hold"
                 if failed else "every bounded figure holds")
    return "\n".join(lines)
