"""The environment block of a report: what ran where.

``comparability`` holds the keys that decide whether two results may be compared
(hardware model, versions, world size, precision); ``info`` holds the rest
(hostname, clocks, memory in use), whose jitter must never make two runs look
incomparable.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import psutil
import torch

from harness.files import git

SPEED_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "TORCHINDUCTOR_MAX_AUTOTUNE",
)


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_revision() -> dict:
    """The harness's own commit, and whether its tree had uncommitted changes."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"name": p.name, "memory_mb": p.total_memory // (1024 * 1024),
                    "capability": f"{p.major}.{p.minor}"})
    return out


def _driver() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def collect(seed: int | None = None) -> dict:
    cuda = torch.cuda.is_available()
    nccl = None
    if cuda and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            nccl = None
    g = gpus()
    comparability = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_model": g[0]["name"] if g else None,
        "gpu_count": len(g),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "accelerate": _version("accelerate"),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": nccl,
        "harness_git_sha": git_revision()["sha"],
    }
    switches = {
        "torch_num_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    info = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python_executable": sys.executable,
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "ram_total_mb": psutil.virtual_memory().total // (1024 * 1024),
        "ram_available_mb": psutil.virtual_memory().available // (1024 * 1024),
        "gpus": g,
        "gpu_driver": _driver(),
        "harness_git_dirty": git_revision()["dirty"],
        "env": {k: os.environ[k] for k in SPEED_VARIABLES if k in os.environ},
    }
    # The commit of the working directory the run ran in (the user's repository), not the
    # harness's own checkout (comparability.harness_git_sha).
    return {"comparability": comparability, "switches": switches, "seed": seed, "info": info,
            "git": git.checkout()}
