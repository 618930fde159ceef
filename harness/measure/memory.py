"""Peak resident memory of the process tree, sampled in a background thread.

DataLoader workers are separate processes, so the tree (this process and its
children) is what the run really costs.
"""

from __future__ import annotations

import threading

import psutil

MB = 1024 * 1024


def tree_rss_bytes(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a worker that exited between listing and reading
    return total


class RssSampler:
    """Samples the tree's RSS every ``interval_s`` while started; keeps the peak."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline_bytes = 0
        self.peak_bytes = 0

    def sample(self) -> int:
        rss = tree_rss_bytes(self._proc)
        if rss > self.peak_bytes:
            self.peak_bytes = rss
        return rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        if self._thread is not None:
            return
        self.baseline_bytes = self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
