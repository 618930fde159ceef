"""Activation checkpointing (``runtime.activation_checkpointing``): each block's activations
are dropped after its forward and recomputed in the backward.

Which modules are blocks: the GPT's decoder blocks (``model.blocks``); for any other
model, the children of every ``nn.ModuleList`` or ``nn.Sequential`` whose children are
at least two modules of one class, each holding parameters (the outermost such
containers only): resnet's ``layerN`` BasicBlocks, a ViT's encoder layers, a user's
stack of identical layers. A model with none (the mlp and cnn, whose Sequentials mix
Linear, ReLU and pooling) is bad input: checkpointing it would change nothing.

How: each block's class is swapped for a subclass whose ``forward`` runs the original
through ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``: the public,
documented API, the variant torch recommends (it works with DDP, FSDP2, torch.compile
and keyword arguments). Swapping the class rather than wrapping the module
(``checkpoint_wrapper``) keeps every parameter's name, so ``model.pt`` is the plain
model's ``state_dict`` and loads into one; and unlike a closure set on the instance it
survives ``copy.deepcopy`` (the FLOP count's probe calls the copy's own weights).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from harness.errors import BadInput

_CLASSES: dict[type, type] = {}


class _Checkpointed:
    """Mixed in before a block's own class: its forward, recomputed in the backward."""

    act_ckpt_on = True
    """False while the FLOP count runs the model's plain forward (``plain``)."""
    act_ckpt_norms = False
    """The block holds running statistics (BatchNorm) that its recomputation must not update
    again. Only then is a context_fn passed: torch.compile traces a plain checkpoint whole."""

    def forward(self, *args, **kwargs):
        # Outside training (evaluation, generation under no_grad) nothing is saved for a
        # backward, so there is nothing to drop: the block runs as it is.
        if not (self.act_ckpt_on and self.training and torch.is_grad_enabled()):
            return super().forward(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        # torch.compile traces a checkpoint without a context_fn only; it recomputes inside its
        # own backward graph, from functional ops, so buffer updates are not applied twice there.
        if not self.act_ckpt_norms or torch.compiler.is_compiling():
            return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
        # The recomputation runs inside the second context: a BatchNorm's statistics count once.
        return checkpoint(super().forward, *args, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(self)), **kwargs)


def _has_running_stats(block: nn.Module) -> bool:
    from torch.nn.modules.batchnorm import _NormBase

    return any(isinstance(m, _NormBase) and m.track_running_stats for m in block.modules())


@contextlib.contextmanager
def _running_stats_kept(block: nn.Module):
    """A BatchNorm's running statistics as they were before the block's recomputed forward.

    A train-mode forward updates them; the recomputation is the same forward again, and
    would apply the momentum twice per step (a checkpointed resnet would evaluate with
    other statistics than a plain one). Its output does not read them (train mode
    normalises by the batch), so putting them back changes nothing else. Restored even
    when torch stops the recomputation early, part-way through the block.
    """
    from torch.nn.modules.batchnorm import _NormBase

    kept = [(b, {k: v.clone() for k, v in b.named_buffers(recurse=False) if v is not None})
            for b in block.modules() if isinstance(b, _NormBase) and b.track_running_stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, buffers in kept:
                for k, v in buffers.items():
                    getattr(b, k).copy_(v)


def _checkpointed_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (_Checkpointed, cls), {"__module__": cls.__module__,
                                                                   "__qualname__": cls.__qualname__})
    return _CLASSES[cls]


def _stack(container: nn.Module) -> bool:
    kids = list(container.children())
    return (isinstance(container, (nn.ModuleList, nn.Sequential)) and len(kids) >= 2
            and len({type(k) for k in kids}) == 1 and all(any(True for _ in k.parameters()) for k in kids))


def find_blocks(model: nn.Module) -> list[str]:
    """The dotted names of the blocks to checkpoint (module docstring's rule), in order."""
    from harness.models.gpt import GPT

    if isinstance(model, GPT):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    found: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        if _stack(module):
            found.extend(f"{prefix}{name}" for name, _ in module.named_children())
            return
        for name, child in module.named_children():
            walk(child, f"{prefix}{name}.")

    walk(model, "")
    return found


def apply(model: nn.Module, model_name: str) -> dict:
    """Checkpoint ``model``'s blocks in place; the model block's ``activation_checkpointing``
    entry. BadInput (``runtime.activation_checkpointing``) when it has none."""
    names = find_blocks(model)
    if not names:
        raise BadInput(f"runtime.activation_checkpointing: model {model_name!r} has no blocks to checkpoint "
                       "(a ModuleList or Sequential of at least two modules of one class); set it to false",
                       key="runtime.activation_checkpointing")
    for name in names:
        block = model.get_submodule(name)
        block.__class__ = _checkpointed_class(type(block))
        if _has_running_stats(block):
            block.act_ckpt_norms = True
    kinds = sorted({type(model.get_submodule(n)).__name__ for n in names})
    return {"blocks": len(names), "block_class": ", ".join(kinds), "first": names[0], "last": names[-1]}


def checkpointed(model: nn.Module) -> list[str]:
    """The dotted names of ``model``'s checkpointed blocks (none when it is off)."""
    return [name for name, m in model.named_modules() if isinstance(m, _Checkpointed)]


@contextlib.contextmanager
def plain(model: nn.Module):
    """``model``'s blocks run without recomputation inside (copies made inside too)."""
    blocks = [m for m in model.modules() if isinstance(m, _Checkpointed)]
    for m in blocks:
        m.act_ckpt_on = False
    try:
        yield model
    finally:
        for m in blocks:
            del m.act_ckpt_on
