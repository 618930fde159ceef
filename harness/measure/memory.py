"""Peak resident memory of the process tree, sampled in a background thread.

DataLoader workers are separate processes, so the tree (this process and its
children) is what the run really costs.
"""

from __future__ import annotations

import threading
import time

import psutil

MB = 1024 * 1024


def tree_rss_bytes(proc: psutil.Process, children: list[psutil.Process] | None = None) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True) if children is None else children:
        try:
            total += child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a worker that exited between listing and reading
    return total


class RssSampler:
    """Samples the tree's RSS every ``interval_s`` while started; keeps the peak."""

    # Listing children scans every process on the machine; reading a known
    # process's RSS is one small file. The list is refreshed rarely so the
    # sampler's share of the GIL stays negligible next to the training loop.
    CHILDREN_REFRESH_S = 1.0

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self._children: list[psutil.Process] = []
        self._listed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline_bytes = 0
        self.peak_bytes = 0

    def sample(self) -> int:
        now = time.monotonic()
        if now - self._listed_at > self.CHILDREN_REFRESH_S:
            self._children = self._proc.children(recursive=True)
            self._listed_at = now
        rss = tree_rss_bytes(self._proc, self._children)
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
