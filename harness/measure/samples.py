"""How many real samples a batch holds: the meter counts them at each step's end.

A batch's rows, except in the last batch of a loader that pads it (Accelerate's
``even_batches``, ``DeviceResidentLoader``), whose padding is no throughput.
"""

from __future__ import annotations

import torch


def batch_size_of(batch) -> int:
    """The rows of a batch's first part; the step's usual case, a tuple of tensors, is read
    inline by ``real_batch_size`` without calling this."""
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, torch.Tensor):
        return int(first.shape[0])
    return int(first.shape[0]) if hasattr(first, "shape") else len(first)


def real_batch_size(loader, batch) -> int:
    """Samples of ``batch`` that are not padding; ``loader``: the one it came from where that
    may pad (it answers ``end_of_dataloader``: ``pads``), else None.

    With ``even_batches`` Accelerate tops the epoch's last global batch up with
    samples from its start, so every rank takes as many steps; the duplicates are
    not samples. They sit after the real ones in the global batch, so rank r's
    last batch holds ``remainder - r * batch_size`` real ones, clamped to [0, its
    size]. ``DeviceResidentLoader`` shards the same way and answers the same
    attributes (``end_of_dataloader``, ``remainder``, ``total_batch_size``).
    """
    first = batch[0] if batch.__class__ is list or batch.__class__ is tuple else None
    # A tensor's rows read here, once a step: no call of batch_size_of's in the usual case.
    n = first.shape[0] if first.__class__ is torch.Tensor else batch_size_of(batch)
    if loader is None or not loader.end_of_dataloader:
        return n
    remainder, total = getattr(loader, "remainder", -1), getattr(loader, "total_batch_size", None)
    if remainder is None or remainder <= 0 or not total:
        return n
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return min(n, max(remainder - rank * (total // world), 0))


def pads(loader):
    """``loader`` where it may pad its last batch, else None (``real_batch_size``'s argument):
    asked once a pass, so a step reads a flag, not ``getattr``."""
    return loader if hasattr(loader, "end_of_dataloader") else None
