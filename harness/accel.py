"""The run mode: how the Accelerator is built, and nothing else.

Device, precision and compilation change only this object; the split, the
shuffling, the seeds and the meaning of a batch are the recipe's and stay put.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from harness.errors import BadInput


@dataclass
class CompileConfig:
    enabled: bool = False
    """Compile the model with torch.compile (inductor)."""
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    fullgraph: bool = False
    dynamic: bool | None = None
    """null lets torch decide; false specialises every shape."""


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """auto: a GPU when CUDA is available, else the CPU."""
    precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision for the forward pass; fp16 adds a gradient scaler."""
    compile: CompileConfig = field(default_factory=CompileConfig)


@dataclass(frozen=True)
class Precision:
    """One place that turns the precision setting into dtype choices."""

    name: str
    autocast_dtype: torch.dtype | None
    uses_grad_scaler: bool

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or torch.float32


def resolve_precision(name: str, use_cuda: bool) -> Precision:
    if name == "no":
        return Precision("no", None, False)
    if name == "bf16":
        if use_cuda and not torch.cuda.is_bf16_supported():
            raise BadInput("runtime.precision: bf16 is not supported by this GPU; use fp16 or no")
        return Precision("bf16", torch.bfloat16, False)
    if not use_cuda:
        raise BadInput("runtime.precision: fp16 needs a CUDA GPU; on the CPU use bf16 or no")
    return Precision("fp16", torch.float16, True)


def resolve_device(cfg: RuntimeConfig) -> bool:
    """True when the run uses CUDA."""
    from accelerate.utils import parse_flag_from_env

    has_cuda = torch.cuda.is_available()
    if cfg.device == "gpu" and not has_cuda:
        raise BadInput("runtime.device: gpu was asked for but CUDA is not available on this machine")
    # `accelerate launch --cpu` (or use_cpu: true) makes every Accelerator a CPU one;
    # deciding precision for a GPU the run will not get would be wrong.
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        if cfg.device == "gpu":
            raise BadInput("runtime.device: gpu, but the launcher asked for the CPU "
                           "(accelerate launch --cpu or use_cpu: true)")
        return False
    return cfg.device == "gpu" or (cfg.device == "auto" and has_cuda)


def build_accelerator(cfg: RuntimeConfig):
    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    use_cuda = resolve_device(cfg)
    precision = resolve_precision(cfg.precision, use_cuda)
    # Without a plugin, Accelerate would read ACCELERATE_DYNAMO_* from the launcher's
    # environment; the harness config decides, so "no" is explicit.
    dynamo = TorchDynamoPlugin(backend="no")
    if cfg.compile.enabled:
        dynamo = TorchDynamoPlugin(backend="inductor", mode=cfg.compile.mode,
                                   fullgraph=cfg.compile.fullgraph, dynamic=cfg.compile.dynamic)
        # accelerate launch always exports ACCELERATE_DYNAMO_USE_DYNAMIC (False by
        # default), which the plugin reads when dynamic is None: null must stay null.
        dynamo.dynamic = cfg.compile.dynamic
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=precision.name, dynamo_plugin=dynamo)
    return accelerator, precision


def describe(accelerator) -> dict:
    """The mode that really ran, read from the live Accelerator rather than the config."""
    state = accelerator.state
    backend = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
    return {
        "distributed_type": str(state.distributed_type.value if hasattr(state.distributed_type, "value")
                                else state.distributed_type),
        "world_size": accelerator.num_processes,
        "backend": backend,
        "device": str(accelerator.device),
        "mixed_precision": str(accelerator.mixed_precision),
    }
