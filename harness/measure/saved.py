"""The bytes a training forward keeps for its backward (``memory.saved_for_backward_mb``).

Counted with ``torch.autograd.graph.saved_tensors_hooks`` over one forward and loss of
one batch: every tensor autograd packs for the backward, each storage once (views of
one storage, and a tensor saved by two ops, are one buffer). Storages of the model's
parameters and buffers are left out: they are held whether or not a backward follows
(the weights, not the activations).

Under activation checkpointing autograd packs nothing inside a checkpointed block (its
own hooks hold a placeholder and the block runs again in the backward); what the block
does keep is its inputs, held for the recomputation. Those are counted through a
forward pre-hook on each checkpointed block (``held_inputs``), into the same set of
storages, so a block input that is also saved elsewhere counts once.
"""

from __future__ import annotations

import torch
from torch import nn


def _key(t: torch.Tensor):
    storage = t.untyped_storage()
    # On the meta device every storage's data_ptr is 0; the storage object's own
    # address tells them apart (each is alive for the whole count, so none is reused).
    return (t.device.type, storage.data_ptr() if t.device.type != "meta" else storage._cdata)


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def saved_for_backward_bytes(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn,
                             held_inputs: list[str] = ()) -> int:
    """Bytes of distinct storages saved for the backward of one forward of ``inputs`` through
    ``model`` (train mode) and ``loss_fn``, plus the tensor inputs of the modules named in
    ``held_inputs`` (checkpointed blocks). No backward runs; the graph is dropped after."""
    own = {_key(t) for t in (*model.parameters(), *model.buffers())}
    seen: dict = {}

    def note(t) -> None:
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            key = _key(t)
            if key not in own:
                seen.setdefault(key, _nbytes(t))

    def pack(t):
        note(t)
        return t

    def pre_hook(_module, args, kwargs):
        for a in (*args, *kwargs.values()):
            note(a)

    handles = [model.get_submodule(name).register_forward_pre_hook(pre_hook, with_kwargs=True)
               for name in held_inputs]
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model(inputs), targets)
        del loss
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sum(seen.values())
