"""FSDP2 (``runtime.sharding: fsdp2``): each rank holds a shard of the parameters,
their gradients and the optimizer's state, instead of all of them as under DDP.

On a GPU the run goes through Accelerate's plugin (``fsdp_version=2``), which applies
``fully_shard`` in ``prepare``. On the CPU Accelerate ignores that plugin (it enables
FSDP for accelerator devices only, and would DDP-wrap the model instead), so the
harness applies torch's ``fully_shard`` itself over a 1-D mesh of the gloo world and
keeps the model out of ``accelerator.prepare``. Either way the report reads what ran
from the live model (``describe``), never from the config: a run that asked for
fsdp2 and did not get it cannot pass for one.

Units of sharding (one all-gather each): every GPT ``Block``; for another model, every
child holding at least ``MIN_SHARD_PARAMS`` parameters (looking inside ModuleList,
Sequential and ModuleDict containers); then the root, which takes every parameter
left. ``reshard_after_forward`` is fixed at FSDP2's default (true: parameters are
freed after a unit's forward and gathered again for its backward, ZeRO-3).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from harness.errors import BadInput

MIN_SHARD_PARAMS = 100_000
"""A child module of a model that is not a GPT becomes its own unit of sharding from this
many parameters up; smaller ones are sharded with the root's group."""

SHARDED_DIR = "fsdp2"
"""Inside a checkpoint folder: the model's and optimizer's shards (torch.distributed.checkpoint)."""

WORLD_FILE = "world_size"
"""Inside ``fsdp2/``: how many ranks wrote the shards."""

_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def check(runtime, world_size: int, use_cuda: bool, distributed_type: str = "FSDP") -> None:
    """Refuse, by name, what cannot shard: one CPU process, compile on the CPU path, or a GPU
    run Accelerate did not make an FSDP one (it needs a distributed launch, even of one process)."""
    if runtime.sharding != "fsdp2":
        return
    if use_cuda and distributed_type != "FSDP":
        raise BadInput(f"runtime.sharding: fsdp2 on a GPU needs a distributed launch (harness launch --mode fsdp, "
                       f"or torchrun, even with one process); this run is {distributed_type} with world size "
                       f"{world_size}", key="runtime.sharding")
    if world_size < 2 and not use_cuda:
        raise BadInput(f"runtime.sharding: fsdp2 needs a world of at least 2 processes on the CPU, got world size "
                       f"{world_size}; use harness launch --mode fsdp --nproc 2 (or runtime.sharding=none)",
                       key="runtime.sharding")
    if runtime.compile.enabled and not use_cuda:
        raise BadInput("runtime.compile.enabled: not with runtime.sharding: fsdp2 on the CPU (the model is "
                       "sharded outside Accelerate there, and compiled by nothing)", key="runtime.compile.enabled")


def _is_gpt_block(module: nn.Module) -> bool:
    from harness.models.gpt import Block

    return isinstance(module, Block)


def units(model: nn.Module) -> list[nn.Module]:
    """The modules that get their own ``fully_shard`` before the root (module docstring)."""
    blocks = [m for m in model.modules() if _is_gpt_block(m)]
    if blocks:
        return blocks
    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, _CONTAINERS):
                walk(child)
            elif sum(p.numel() for p in child.parameters()) >= MIN_SHARD_PARAMS:
                found.append(child)

    walk(model)
    return found


def _mixed_precision(precision, root: bool = True):
    """The policy from runtime.precision: bf16 parameters in compute, gradients reduced in fp32,
    and the root's output handed back in fp32 (the loss is computed there, as autocast would).
    Only the root's: a unit's fp32 output would meet the root's own bf16 layers (a final
    LayerNorm) in fp32, which the CPU kernels refuse."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision.autocast_dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=precision.autocast_dtype, reduce_dtype=torch.float32,
                                output_dtype=torch.float32 if root else None)


def shard_on_cpu(model: nn.Module, precision, world_size: int) -> nn.Module:
    """``fully_shard`` per unit, then the root, over a 1-D CPU mesh of the gloo world."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    for unit in units(model):
        fully_shard(unit, mesh=mesh, mp_policy=_mixed_precision(precision, root=False))
    fully_shard(model, mesh=mesh, mp_policy=_mixed_precision(precision))
    return model


def gpu_plugin(runtime, model_name: str, precision):
    """Accelerate's FSDP2 plugin for a CUDA run (None unless runtime.sharding is fsdp2).

    Only ever built for CUDA: on the CPU Accelerate would ignore it without a word.
    """
    if runtime.sharding != "fsdp2":
        return None
    if not torch.cuda.is_available():
        raise RuntimeError("the FSDP2 plugin is for CUDA runs only; the CPU shards through shard_on_cpu")
    from accelerate.utils import FullyShardedDataParallelPlugin

    wrap = dict(auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["Block"]) \
        if model_name == "gpt" else dict(auto_wrap_policy="size_based_wrap", min_num_params=MIN_SHARD_PARAMS)
    # The plugin gives every unit one policy; Accelerate's autocast wrapper hands the output
    # back in fp32 itself, so the units' policy (no output cast) is the one for all.
    return FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                          mixed_precision_policy=_mixed_precision(precision, root=False),
                                          state_dict_type="SHARDED_STATE_DICT", **wrap)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` really ran on ``model``: it turns the module's class into an
    ``FSDPModule`` and its parameters into DTensors. The class is what is read: after a forward
    the root keeps its parameters gathered (plain tensors) until the next backward."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def verify(runtime, model: nn.Module) -> None:
    """After prepare: a run that asked for fsdp2 holds a sharded model, or it stops here."""
    if runtime.sharding == "fsdp2" and not is_sharded(model):
        raise RuntimeError("runtime.sharding: fsdp2 was asked for but the prepared model is not sharded "
                           f"({type(model).__name__}); nothing trains under a mode it did not get")


def describe(model: nn.Module) -> dict:
    """The report's ``distributed.sharding`` and ``sharded_modules``, read from the live model."""
    from torch.distributed.fsdp import FSDPModule

    if not is_sharded(model):
        return {"sharding": "none", "sharded_modules": 0}
    return {"sharding": "fsdp2", "sharded_modules": sum(isinstance(m, FSDPModule) for m in model.modules())}


def _inner(optimizer):
    """The torch optimizer under Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


@contextlib.contextmanager
def optimizers_hidden(accelerator):
    """Accelerate's save_state/load_state without the optimizers: under FSDP2 on the CPU their
    state is a rank's shard, which Accelerate would write from rank 0 alone."""
    held = accelerator._optimizers
    accelerator._optimizers = []
    try:
        yield
    finally:
        accelerator._optimizers = held


def save_shards(folder: Path, model: nn.Module, optimizer) -> None:
    """Every rank writes its shards of the model and optimizer state into ``folder/fsdp2``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    import torch.distributed as dist

    model_state, optim_state = get_state_dict(model, _inner(optimizer))
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDED_DIR))
    if dist.get_rank() == 0:
        from harness.files.atomic import write_text_atomic

        write_text_atomic(folder / SHARDED_DIR / WORLD_FILE, f"{dist.get_world_size()}\n")


def load_shards(folder: Path, model: nn.Module, optimizer) -> None:
    """The shards of ``folder/fsdp2`` into this rank's model and optimizer; DCP reshards a
    checkpoint written by another world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / SHARDED_DIR).is_dir():
        raise BadInput(f"--resume: {folder} holds no {SHARDED_DIR}/ shards: it was not written by a "
                       "runtime.sharding: fsdp2 run on the CPU")
    import torch.distributed as dist

    written = _world_of(folder)
    if written != dist.get_world_size():
        raise BadInput(f"--resume: {folder} was written by {written} ranks under runtime.sharding: fsdp2 and this "
                       f"run has world size {dist.get_world_size()}: resume with --nproc {written} (the data's "
                       "split among ranks, and the steps into the epoch, depend on it)")
    model_state, optim_state = get_state_dict(model, _inner(optimizer))
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    set_state_dict(model, _inner(optimizer), model_state_dict=state["model"], optim_state_dict=state["optim"])


def _world_of(folder: Path) -> int | None:
    try:
        return int((folder / SHARDED_DIR / WORLD_FILE).read_text())
    except (OSError, ValueError):
        return None


def full_state_dict(model: nn.Module) -> dict:
    """The whole model's state_dict on the CPU, gathered from every rank (all must call this),
    with the keys an unsharded model has."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
