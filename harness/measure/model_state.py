"""The model state one rank holds: its parameters, their gradients and the optimizer's state.

Counted from the live tensors, in bytes (``numel * element_size``), at the end of
training. A DTensor (an FSDP2 shard) counts its local part (``to_local()``), so under
FSDP2 over N ranks a rank reads about 1/N of what a DDP rank holds. A tensor reachable
twice (tied weights: a GPT's head and token embedding) counts once. A sharded model is
resharded first (``reshard``: no collective), so the count is the rank's steady state. Only what these
tensors hold: not activations, not the allocator's cache, not the process around them
(those are ``memory.peak_*``).
"""

from __future__ import annotations

MB = 2 ** 20


def _local(t):
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _tensors(tree):
    import torch

    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _tensors(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tensors(v)


def _bytes(tensors, seen: set) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = _local(t)
        key = (t.data_ptr(), t.numel(), t.dtype) if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def model_state(model, optimizer) -> dict:
    """This rank's ``model_state_mb`` and its parts (``params_mb``, ``grads_mb``, ``optimizer_mb``)."""
    from torch.distributed.fsdp import FSDPModule

    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    for module in model.modules():
        # FSDP2's root keeps its parameters gathered after a forward (reshard_after_forward is
        # false there): what the rank holds between steps is the shards, counted here.
        if isinstance(module, FSDPModule):
            module.reshard()
    seen: set = set()
    params = list(model.parameters())
    parts = {
        "params_mb": _bytes(params, seen) / MB,
        "grads_mb": _bytes((p.grad for p in params), seen) / MB,
        "optimizer_mb": _bytes(_tensors(list(inner.state.values())), seen) / MB,
    }
    return {"model_state_mb": sum(parts.values()), "model_state": parts}


def place(figures: dict, per_rank: list[dict]) -> None:
    """Each rank's ``model_state`` (rank 0 first) into the combined figures (aggregate.py):
    ``per_rank[i].model_state_mb``, and in ``memory`` the largest rank's, with its parts."""
    if not per_rank:
        return
    for row, held in zip(figures["per_rank"], per_rank):
        row["model_state_mb"] = held["model_state_mb"]
    largest = max(per_rank, key=lambda held: held["model_state_mb"])
    figures["memory"].update(largest)
