"""What other processes took of this run's CPUs during a timed window.

A probe is read at a window's edges (``Probe.read``); the difference of two readings
(``Tally``) becomes the report's ``contention`` block (``block``):

    foreign_cpu_fraction = (busy time of the run's CPUs - the run's own CPU time)
                           / (capacity_cpus x wall time), clamped to [0, 1]

* busy time: user+nice+system+irq+softirq jiffies of ``/proc/stat``, summed over the
  CPUs in this process's affinity only (the per-CPU ``cpuN`` lines). Load on CPUs the
  run may not use is not its contention, and the run's own threads only ever run on
  its affinity CPUs, so the subtraction compares like with like. Steal (time the
  hypervisor gave another guest) is not busy time here: it is ``steal_fraction``.
* own time: user+system CPU time of the run's process tree (psutil): this process,
  every live descendant (DataLoader workers) and what exited children left in
  ``children_user``/``children_system``. Under a multi-process launcher (torchrun,
  ``accelerate launch``) the other ranks on this host are the run's own too: the tree
  is then rooted at the launcher's agent (this process's parent), which started them.
* capacity: ``len(os.sched_getaffinity(0))`` capped by the cgroup CPU quota (v2
  ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) of this cgroup and its
  ancestors. With a quota below the affinity, busy time of other cgroups on the
  affinity CPUs is counted against a smaller capacity: the fraction then reads high
  (an over-statement, never an under-statement, clamped at 1).

Jiffies tick 100 times a second; a window shorter than ``MIN_WALL_S`` cannot resolve a
fraction and reads verdict ``unknown``, as does a machine without ``/proc/stat``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTENDED_AT = 0.25
"""foreign_cpu_fraction at or above which a window is ``contended``: half of one busy core of
two. docs/report.md has the measured table behind it (benchmarks/contention_table.py)."""

MIN_WALL_S = 0.25
"""Shorter windows read ``unknown``: 25 jiffies per CPU cannot place a fraction to +-0.05."""

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (guest is inside user already)
_STEAL_FIELD = 7


@dataclass
class CpuTimes:
    busy_s: float
    steal_s: float
    cpus: int


def parse_proc_stat(text: str, cpus: set[int] | None = None) -> CpuTimes | None:
    """Busy and steal seconds over ``cpus`` (all when None) from /proc/stat's ``cpuN`` lines."""
    busy = steal = 0.0
    seen = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()]
        busy += sum(ticks[i] for i in _BUSY_FIELDS if i < len(ticks))
        steal += ticks[_STEAL_FIELD] if len(ticks) > _STEAL_FIELD else 0
        seen += 1
    if not seen:
        return None
    return CpuTimes(busy / CLK_TCK, steal / CLK_TCK, seen)


def affinity() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


# --- cgroups --------------------------------------------------------------------------

def _cgroup_dirs(root: Path, proc_cgroup: str) -> tuple[list[Path], list[Path]]:
    """(v2 dirs, v1 cpu-controller dirs) of this process, innermost first, with their ancestors."""
    v2, v1 = [], []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if hid == "0" and controllers == "":
            base = root
        elif "cpu" in controllers.split(","):
            base = next((root / n for n in ("cpu,cpuacct", "cpu", "cpuacct,cpu") if (root / n).is_dir()), None)
            if base is None:
                continue
        else:
            continue
        chain, here = [], base / rel if rel else base
        while True:
            chain.append(here)
            if here == base:
                break
            here = here.parent
        (v2 if hid == "0" and controllers == "" else v1).extend(chain)
    return v2, v1


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def quota_cpus(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota of this cgroup and its ancestors, in CPUs; None when unlimited/unknown."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_dirs(root, proc_cgroup)
    limits = []
    for d in v2:
        text = _read(d / "cpu.max")
        if text and text.split()[0] != "max":
            quota, period = text.split()[:2]
            limits.append(int(quota) / int(period))
    for d in v1:
        q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if q and p and int(q) > 0 and int(p) > 0:
            limits.append(int(q) / int(p))
    return min(limits) if limits else None


def throttled_s(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> float | None:
    """Seconds this cgroup was throttled so far (cpu.stat: v2 throttled_usec, v1 throttled_time ns)."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_dirs(root, proc_cgroup)
    for dirs, key, scale in ((v2, "throttled_usec", 1e-6), (v1, "throttled_time", 1e-9)):
        text = _read(dirs[0] / "cpu.stat") if dirs else None
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value) * scale
    return None


def capacity_cpus(cpus: set[int] | None = None, quota: float | None = None) -> float:
    """CPUs the run may use: its affinity, capped by the cgroup quota."""
    n = float(len(cpus)) if cpus else float(os.cpu_count() or 1)
    return min(n, quota) if quota else n


# --- the run's own processes ----------------------------------------------------------

def launched_ranks() -> int:
    """Processes of the run on this host: the launcher's local world size, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def own_root_pid() -> int:
    """The process whose tree is the run: the launcher's agent under a multi-process launch
    (the other local ranks are its children, and ours), else this process."""
    if launched_ranks() > 1 and os.environ.get("LOCAL_RANK") is not None:
        return os.getppid()
    return os.getpid()


def tree_cpu_s(root_pid: int) -> float | None:
    """User+system CPU seconds of ``root_pid``, its live descendants and its reaped children."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for i, p in enumerate(procs):
        try:
            t = p.cpu_times()
        except psutil.Error:  # exited between the listing and now: its time is in its parent's children_*
            continue
        total += t.user + t.system
        if i == 0:  # only the root's: a descendant's reaped children are counted by the walk above them
            total += t.children_user + t.children_system
    return total


# --- a reading, and the difference of two ---------------------------------------------

@dataclass
class Reading:
    t: float
    cpu: CpuTimes | None
    own_s: float | None
    load_1m: float | None
    throttled_s: float | None


@dataclass
class Probe:
    """Reads the machine and the run's tree; ``proc_stat``, ``own`` and ``throttle`` are
    injectable for tests (recorded numbers instead of the live machine)."""

    cpus: set[int] | None = field(default_factory=affinity)
    quota: float | None = field(default_factory=quota_cpus)
    root_pid: int = field(default_factory=own_root_pid)
    proc_stat: object = None
    own: object = None
    throttle: object = None
    load: object = None
    clock: object = None

    @property
    def capacity(self) -> float:
        return capacity_cpus(self.cpus, self.quota)

    def read(self) -> Reading:
        text = self.proc_stat() if self.proc_stat else _read(Path("/proc/stat"))
        cpu = parse_proc_stat(text, self.cpus) if text else None
        try:
            own = self.own() if self.own else tree_cpu_s(self.root_pid)
        except Exception:  # noqa: BLE001 -- no psutil figure: the fraction is unknown, the run goes on
            own = None
        load = self.load() if self.load else (os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
        thr = self.throttle() if self.throttle else throttled_s()
        return Reading((self.clock or time.perf_counter)(), cpu, own, load, thr)


@dataclass
class Tally:
    """Sums of the differences between pairs of readings: one window's segments together."""

    capacity: float
    wall_s: float = 0.0
    busy_s: float | None = 0.0
    steal_s: float | None = 0.0
    own_s: float | None = 0.0
    throttled_s: float | None = 0.0
    cpus: int = 0
    load_avg_start: float | None = None
    load_avg_end: float | None = None
    started: bool = False

    def add(self, a: Reading, b: Reading) -> None:
        self.wall_s += b.t - a.t
        if not self.started:
            self.load_avg_start, self.started = a.load_1m, True
        self.load_avg_end = b.load_1m
        if a.cpu and b.cpu and self.busy_s is not None:
            self.busy_s += b.cpu.busy_s - a.cpu.busy_s
            self.steal_s += b.cpu.steal_s - a.cpu.steal_s
            self.cpus = b.cpu.cpus
        else:
            self.busy_s = self.steal_s = None
        self.own_s = None if a.own_s is None or b.own_s is None or self.own_s is None \
            else self.own_s + b.own_s - a.own_s
        self.throttled_s = None if a.throttled_s is None or b.throttled_s is None or self.throttled_s is None \
            else self.throttled_s + b.throttled_s - a.throttled_s

    def merge(self, other: "Tally") -> None:
        """Add ``other``'s segments (a later window) to this tally."""
        if not other.started:
            return
        self.wall_s += other.wall_s
        for key in ("busy_s", "steal_s", "own_s", "throttled_s"):
            mine, theirs = getattr(self, key), getattr(other, key)
            setattr(self, key, None if mine is None or theirs is None else mine + theirs)
        self.cpus = other.cpus or self.cpus
        if not self.started:
            self.load_avg_start, self.started = other.load_avg_start, True
        self.load_avg_end = other.load_avg_end

    def block(self) -> dict:
        return block(self)


def fraction(busy_s: float, own_s: float, capacity: float, wall_s: float) -> float:
    """(busy - own) / (capacity x wall), clamped to [0, 1]."""
    if capacity <= 0 or wall_s <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy_s - own_s) / (capacity * wall_s)))


def verdict(foreign: float | None, wall_s: float) -> str:
    if foreign is None or wall_s < MIN_WALL_S:
        return "unknown"
    return "contended" if foreign >= CONTENDED_AT else "quiet"


def block(t: Tally) -> dict:
    """The report's ``contention`` block for one tally (docs/report.md)."""
    known = t.busy_s is not None and t.own_s is not None and t.wall_s > 0
    foreign = fraction(t.busy_s, t.own_s, t.capacity, t.wall_s) if known else None
    steal = None
    if t.steal_s is not None and t.cpus and t.wall_s > 0:
        steal = min(1.0, max(0.0, t.steal_s / (t.cpus * t.wall_s)))
    return {"foreign_cpu_fraction": foreign, "verdict": verdict(foreign, t.wall_s),
            "capacity_cpus": t.capacity, "steal_fraction": steal, "window_s": t.wall_s,
            "load_avg_start": t.load_avg_start, "load_avg_end": t.load_avg_end,
            "throttled_s": t.throttled_s}


def worst(blocks: list[dict | None]) -> dict | None:
    """The block with the highest foreign_cpu_fraction (a known one before an unknown one)."""
    seen = [b for b in blocks if b]
    if not seen:
        return None
    return max(seen, key=lambda b: (b.get("foreign_cpu_fraction") is not None,
                                    b.get("foreign_cpu_fraction") or 0.0))


class Window:
    """A probe around a block of code: ``with Window(probe) as w: ...; w.block()``."""

    def __init__(self, probe: Probe | None = None):
        self.probe = probe or Probe()
        self.tally = Tally(self.probe.capacity)
        self._start: Reading | None = None

    def open(self) -> None:
        self._start = self.probe.read()

    def close(self) -> None:
        if self._start is not None:
            self.tally.add(self._start, self.probe.read())
            self._start = None

    def __enter__(self) -> "Window":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def block(self) -> dict:
        return self.tally.block()


# --- the GPU ----------------------------------------------------------------------------

def own_pids(root_pid: int | None = None) -> set[int]:
    import psutil

    try:
        root = psutil.Process(root_pid or own_root_pid())
        return {root.pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.Error:
        return {os.getpid()}


def device_holders(device_index: int, mine: set[int], nvml=None) -> list[dict] | None:
    """Other processes holding GPU ``device_index`` (NVML's compute and graphics lists), as
    optimum-benchmark checks; None where pynvml is not importable or NVML does not answer."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 -- no driver, no NVML: nothing to say
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        procs += list(getattr(nvml, "nvmlDeviceGetGraphicsRunningProcesses", lambda h: [])(handle))
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    seen, out = set(), []
    for p in procs:
        if p.pid in mine or p.pid in seen:
            continue
        seen.add(p.pid)
        used = getattr(p, "usedGpuMemory", None)
        out.append({"pid": int(p.pid), "used_memory_mb": used / 2**20 if isinstance(used, int) else None})
    return out
