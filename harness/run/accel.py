"""The run mode: how the Accelerator is built, and nothing else.

Device, precision and compilation change only this object; the split, the
shuffling, the seeds and the meaning of a batch are the recipe's and stay put.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import torch

from harness.errors import BadInput, ConfigValueError


@dataclass
class CompileConfig:
    enabled: bool = False
    """Compile the model with torch.compile."""
    backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    """inductor generates kernels; aot_eager and eager only trace (for finding graph
    breaks and recompiles without paying for code generation)."""
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """inductor's mode; the others need backend inductor."""
    fullgraph: bool = False
    """A graph break is an error instead of a split graph."""
    dynamic: bool | None = None
    """null: the batch dimension is marked dynamic, so a last batch of another size
    reuses the graph (see ``DynamicBatchDim``), other shapes as torch decides;
    true: every dimension symbolic; false: every shape specialised, so each new batch
    size compiles once more (pair it with loader.drop_last: true)."""
    fail_on_recompile: bool = False
    """Any recompilation inside the timed window stops the run (status failed)."""

    def __post_init__(self):
        if self.fail_on_recompile and not self.enabled:
            raise ConfigValueError("fail_on_recompile", "needs runtime.compile.enabled: true")
        if self.mode != "default" and self.backend != "inductor":
            raise ConfigValueError("mode", f"{self.mode} needs backend inductor, got {self.backend}")


MAX_COLLECTIVE_TIMEOUT_S = 365 * 24 * 3600.0


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """auto: a GPU when CUDA is available, else the CPU."""
    precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision for the forward pass; fp16 adds a gradient scaler."""
    compile: CompileConfig = field(default_factory=CompileConfig)
    channels_last: bool = False
    """Model weights and 4-D input batches in channels-last memory format (NHWC): the
    layout cuDNN's and oneDNN's fastest convolutions want; the report's model block
    says which ran (memory_format)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward instead of keeping them
    (harness/run/act_ckpt.py: the GPT's decoder blocks, or a model's stacks of like
    modules); the report's model block names the blocks, compute gives HFU beside MFU."""
    collective_timeout_s: float = 600.0
    """Longest wait of one collective (all-reduce, barrier) across processes. A rank that
    hangs without dying then ends the job with an error after this long, not never."""
    sharding: Literal["none", "fsdp2"] = "none"
    """none: every rank holds the whole model (DDP with several processes); fsdp2: each rank
    holds a shard of the parameters, gradients and optimizer state (run/sharding.py; needs
    2 processes or more on the CPU)."""

    def __post_init__(self):
        if not 0 < self.collective_timeout_s <= MAX_COLLECTIVE_TIMEOUT_S:
            # The process group holds the timeout in int64 milliseconds; a year is already "never".
            raise ConfigValueError("collective_timeout_s", f"expected seconds in (0, {MAX_COLLECTIVE_TIMEOUT_S:g}] "
                                   f"(a year), got {self.collective_timeout_s:g}")


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


def keep_lomo_answer() -> None:
    """Answer accelerate's per-step "is lomo_optim installed?" once per process.

    ``AcceleratedOptimizer.step`` (accelerate 1.15) asks importlib twice in every step
    whether the package exists, a walk of sys.path: ~100 µs a step on the 2-core
    test VM, 0.5% of the default recipe's step. A package does not get installed in
    the middle of a run, so the optimizer module keeps the first answer. Only
    ``accelerate.optimizer``'s name is rebound; the function itself is untouched.
    """
    import functools

    import accelerate.optimizer as optimizer_module

    check = getattr(optimizer_module, "is_lomo_available", None)
    if check is not None and not hasattr(check, "cache_info"):
        optimizer_module.is_lomo_available = functools.cache(check)


def build_accelerator(cfg: RuntimeConfig, log_with: list[str] | None = None, project_dir: str | None = None,
                      grad_accum_steps: int = 1, fsdp_plugin=None):
    """The Accelerator for ``cfg``; ``log_with``/``project_dir``: the trackers (tracking.py) and the run folder;
    ``grad_accum_steps``: micro-batches per optimizer step (train.grad_accum_steps);
    ``fsdp_plugin``: a CUDA run's FSDP2 plugin (sharding.gpu_plugin)."""
    from accelerate import Accelerator
    from accelerate.utils import (DataLoaderConfiguration, GradientAccumulationPlugin, InitProcessGroupKwargs,
                                  TorchDynamoPlugin)

    keep_lomo_answer()

    use_cuda = resolve_device(cfg)
    precision = resolve_precision(cfg.precision, use_cuda)
    # Without a plugin, Accelerate would read ACCELERATE_DYNAMO_* from the launcher's
    # environment; the harness config decides, so "no" is explicit.
    dynamo = TorchDynamoPlugin(backend="no")
    if cfg.compile.enabled:
        dynamo = TorchDynamoPlugin(backend=cfg.compile.backend, mode=cfg.compile.mode,
                                   fullgraph=cfg.compile.fullgraph, dynamic=cfg.compile.dynamic)
        # accelerate launch always exports ACCELERATE_DYNAMO_USE_DYNAMIC (False by
        # default), which the plugin reads when dynamic is None: null must stay null.
        dynamo.dynamic = cfg.compile.dynamic
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.collective_timeout_s))
    # On a GPU, batches are copied to the device without blocking the host (from pinned
    # memory, see ``pin_on_gpu``): a blocking copy inside the loader's next() would wait
    # for the previous step's kernels, and the data wait would count the GPU's compute.
    loading = DataLoaderConfiguration(non_blocking=use_cuda)
    # Explicit, 1 included: without a plugin Accelerate reads ACCELERATE_GRADIENT_ACCUMULATION_STEPS
    # from a launcher's environment, and one left over in-process would keep its count. The loop
    # lines Accelerate's micro-batch count up with its own groups (loop.py), so the last
    # micro-batch of each group syncs, a short last group's too; sync_with_dataloader would
    # read the end of a device-resident loader (which Accelerate never sees) wrong.
    accumulation = GradientAccumulationPlugin(num_steps=grad_accum_steps, sync_with_dataloader=False,
                                              adjust_scheduler=False)
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=precision.name, dynamo_plugin=dynamo,
                              kwargs_handlers=[timeout], dataloader_config=loading,
                              gradient_accumulation_plugin=accumulation,
                              log_with=log_with, project_dir=project_dir, fsdp_plugin=fsdp_plugin)
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
        "non_blocking_copies": bool(accelerator.non_blocking),
    }


def pin_on_gpu(loader_cfg, accelerator):
    """``loader_cfg`` with pinned host batches when the run is on a GPU (a non-blocking copy
    from pageable memory is a blocking one); the recipe is unchanged, only the copy."""
    import dataclasses

    if accelerator.device.type != "cuda" or loader_cfg.pin_memory:
        return loader_cfg
    return dataclasses.replace(loader_cfg, pin_memory=True)


class BatchWrapper:
    """A loader that passes its wrapped loader's batches on, changed in form only; the
    length and every other attribute (sampler, batch_size, ...) are the wrapped loader's."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def wrap_loaders(loaders, wrapper: type) -> None:
    """Wrap ``loaders``' train/dev/test (those present) in ``wrapper``."""
    for name in ("train", "dev", "test"):
        loader = getattr(loaders, name)
        if loader is not None:
            setattr(loaders, name, wrapper(loader))


class DynamicBatchDim(BatchWrapper):
    """A loader whose input batches have their first dimension marked dynamic.

    A recipe's last batch is usually smaller than the others. A graph specialised on
    the full batch would recompile there: inside the timed window at the end of the
    first epoch, and again for dev/test's last batch. Marking dimension 0 dynamic
    before the first compile makes one graph serve every batch size, so the recipe
    keeps its batches (no drop_last forced by the mode) and no recompile lands in the
    window. ``maybe_mark_dynamic`` lets torch specialise anyway where it must.
    """

    def __iter__(self):
        from torch._dynamo import maybe_mark_dynamic

        for batch in self.loader:
            inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
            if isinstance(inputs, torch.Tensor) and inputs.dim() > 0:
                maybe_mark_dynamic(inputs, 0)
            yield batch


def mark_batch_dynamic(loaders, cfg: CompileConfig) -> None:
    """Wrap ``loaders``' train/dev/test in ``DynamicBatchDim`` when compiling with dynamic: null."""
    if cfg.enabled and cfg.dynamic is None:
        wrap_loaders(loaders, DynamicBatchDim)


class ChannelsLast(BatchWrapper):
    """A loader whose 4-D input batches come in channels-last memory format.

    Wraps the prepared loader, so the conversion happens on the run's device, after
    the copy; the recipe's batches are unchanged in value.
    """

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor) \
                    and batch[0].dim() == 4:
                batch = type(batch)([batch[0].contiguous(memory_format=torch.channels_last), *batch[1:]])
            yield batch


def channels_last_batches(loaders, cfg: RuntimeConfig) -> None:
    """Wrap ``loaders``' train/dev/test in ``ChannelsLast`` when runtime.channels_last is on."""
    if cfg.channels_last:
        wrap_loaders(loaders, ChannelsLast)
