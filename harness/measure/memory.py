"""Host memory of the process tree, sampled in a background thread, peaks kept per phase.

DataLoader workers are separate processes, so the tree (this process and its
children) is what the run really costs. Forked workers share their parent's pages
(the data set, the libraries) until they write them, so summed RSS counts a shared
page once per process: 4 workers over a 200 MB data set read ~4.5x the truth. The
tree's figure is therefore PSS (each shared page split between the processes that
map it: the sum over the tree is the tree's real footprint) and USS (pages only
one process maps: what ending it would free). RSS is kept for the main process
alone, comparable with ``top`` and with earlier reports.

Peaks are kept per phase (train, eval, checkpoint): a sample counts towards the
phase open when it is taken, so a checkpoint's host copy of the state never lands
in the train figure. Each phase is read in full as it closes; as it opens, a full
reading taken moments before (within one sampling interval: mostly the previous
phase's closing one) serves again, with a fresh RSS.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


@dataclass
class TreeMemory:
    """One reading: the main process's RSS, and the tree's PSS and USS (bytes; None where the OS has none)."""

    rss: int
    pss: int | None
    uss: int | None


def _full(proc: psutil.Process) -> tuple[int, int | None, int | None]:
    info = proc.memory_full_info()  # Linux: /proc/<pid>/smaps_rollup
    return info.rss, getattr(info, "pss", None), getattr(info, "uss", None)


def read_tree(proc: psutil.Process, children: list[psutil.Process] | None = None) -> TreeMemory:
    try:
        rss, pss, uss = _full(proc)
    except psutil.AccessDenied:  # no smaps access (some containers): RSS alone
        return TreeMemory(proc.memory_info().rss, None, None)
    for child in proc.children(recursive=True) if children is None else children:
        try:
            _, c_pss, c_uss = _full(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that exited between listing and reading
        pss = None if pss is None or c_pss is None else pss + c_pss
        uss = None if uss is None or c_uss is None else uss + c_uss
    return TreeMemory(rss, pss, uss)


@dataclass
class PhasePeak:
    """Peaks seen while one phase was open (bytes); CUDA peaks folded in at each close."""

    rss: int = 0
    pss: int | None = None
    uss: int | None = None
    cuda_allocated: int | None = None
    cuda_reserved: int | None = None
    entered: int = 0

    def add(self, m: TreeMemory) -> None:
        self.rss = max(self.rss, m.rss)
        if m.pss is not None:
            self.pss = max(self.pss or 0, m.pss)
        if m.uss is not None:
            self.uss = max(self.uss or 0, m.uss)

    def as_dict(self) -> dict:
        mb = lambda v: v / MB if v else None  # noqa: E731
        return {"peak_rss_mb": mb(self.rss), "peak_pss_mb": mb(self.pss), "peak_uss_mb": mb(self.uss),
                "device_peak_allocated_mb": mb(self.cuda_allocated) if self.cuda_allocated is not None else None,
                "device_peak_reserved_mb": mb(self.cuda_reserved) if self.cuda_reserved is not None else None}


PHASES = ("train", "eval", "checkpoint")


class MemorySampler:
    """Samples the tree every ``interval_s`` while started; keeps each phase's peaks.

    ``cuda_device``: when set, each phase start resets the CUDA peak statistics and
    each phase end folds ``max_memory_allocated/reserved`` into that phase, so a
    phase's device peak is its own even when phases alternate (train, eval, train...).
    """

    # Listing children scans every process on the machine; reading a known
    # process's smaps_rollup is one small file. The list is refreshed rarely so the
    # sampler's share of the GIL stays negligible next to the training loop.
    CHILDREN_REFRESH_S = 1.0
    # Reading smaps_rollup walks the page tables in the kernel: ~0.5 ms for a small
    # process, ~12 ms for a torch process on a loaded 2-core VM. The main process's RSS
    # (statm, ~20 us) is read every interval; the tree's PSS and USS only once at least
    # FULL_READ_RATIO times the last full read has passed, so that read takes at most
    # ~1/(1+FULL_READ_RATIO) of one core from the run it measures: 2%, a read every
    # ~0.6 s. At 5% (19) the sampler's thread took 1.9 s of CPU in 37 s of a run that
    # mostly slept, against 0.8 s now; on a machine whose cores the run fills, that
    # share is taken from the training it measures.
    FULL_READ_RATIO = 49.0

    def __init__(self, interval_s: float = 0.05, cuda_device=None):
        self.interval_s = interval_s
        self.cuda_device = cuda_device
        self._proc = psutil.Process()
        self._children: list[psutil.Process] = []
        self._listed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.phases: dict[str, PhasePeak] = {}
        self.current: str | None = None
        self.baseline: TreeMemory | None = None
        self.last_read_s = 0.0
        self._latest_full: tuple[float, TreeMemory] | None = None
        """(monotonic time, reading) of the latest full reading, set as one so that the
        sampler's thread never pairs one reading with another's time."""

    @property
    def last_full(self) -> TreeMemory | None:
        """The latest reading of the whole tree (PSS), for the recorder's interval lines."""
        return None if self._latest_full is None else self._latest_full[1]

    def sample(self, full: bool | None = None) -> TreeMemory:
        """One reading (PSS/USS too when ``full``, or when due); counted towards the open phase."""
        now = time.monotonic()
        if full is None:
            latest = self._latest_full
            full = latest is None or now - latest[0] >= self.FULL_READ_RATIO * self.last_read_s
        if not full:
            m = TreeMemory(self._proc.memory_info().rss, None, None)
        else:
            if now - self._listed_at > self.CHILDREN_REFRESH_S:
                self._children = self._proc.children(recursive=True)
                self._listed_at = now
            t0 = time.perf_counter()
            m = read_tree(self._proc, self._children)
            self.last_read_s = time.perf_counter() - t0
            self._latest_full = (now, m)
        with self._lock:
            if self.current is not None:
                self.phases[self.current].add(m)
        return m

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        if self._thread is not None:
            return
        self.baseline = self.sample(full=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def enter(self, name: str) -> str | None:
        """Open phase ``name``; returns the phase it interrupts (restore it with ``leave``)."""
        self.start()
        previous = self.current
        if previous is not None:
            self._fold_cuda(previous)
        if self.cuda_device is not None:
            import torch

            torch.cuda.reset_peak_memory_stats(self.cuda_device)
        with self._lock:
            self.phases.setdefault(name, PhasePeak()).entered += 1
            self.current = name
        self._opening_reading()
        return previous

    def _opening_reading(self) -> None:
        """The phase's first reading: a full one, unless one was taken within the interval.

        Phases follow each other (train's window closes, eval opens, the checkpoint
        opens as eval closes) with only the loop's bookkeeping between them, so the tree
        the closing phase was just read at is the tree the next one opens with. Reading
        it again cost about 12-20 ms of kernel time per edge on a torch process: with
        three phases an epoch, about 40% of a short epoch's CPU. The main process's RSS
        is read fresh (20 us); what the tree allocates inside the interval shows in the
        phase's next full reading, its closing one at the latest, as any allocation
        between two of the sampler's readings does.
        """
        latest = self._latest_full
        now = time.monotonic()
        if latest is None or now - latest[0] >= self.interval_s:
            self.sample(full=True)
            return
        full = latest[1]
        m = TreeMemory(self._proc.memory_info().rss, full.pss, full.uss)
        with self._lock:
            if self.current is not None:
                self.phases[self.current].add(m)

    def leave(self, previous: str | None = None) -> None:
        """Close the open phase (one last sample, its CUDA peaks) and reopen ``previous``."""
        if self.current is None:
            return
        self.sample(full=True)
        self._fold_cuda(self.current)
        with self._lock:
            self.current = None
        if previous is not None:
            self.enter(previous)

    @contextmanager
    def phase(self, name: str):
        previous = self.enter(name)
        try:
            yield
        finally:
            self.leave(previous)

    def _fold_cuda(self, name: str) -> None:
        if self.cuda_device is None:
            return
        import torch

        p = self.phases[name]
        p.cuda_allocated = max(p.cuda_allocated or 0, torch.cuda.max_memory_allocated(self.cuda_device))
        p.cuda_reserved = max(p.cuda_reserved or 0, torch.cuda.max_memory_reserved(self.cuda_device))

    def summary(self) -> dict:
        """Per phase seen: peaks in MB (phases never entered are absent)."""
        return {name: p.as_dict() for name, p in self.phases.items()}

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
