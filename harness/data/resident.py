"""A loader whose whole split lives on the device as two tensors.

Every sample is transformed once, when the loader is built, and batches are
taken by indexing: no workers, no collation, no host-to-device copy per step.
The train split's augmentation is therefore drawn once and fixed for the run,
not redrawn each epoch as the DataLoader path does.

The order matches the DataLoader path exactly: its ``RandomSampler`` draws
``torch.randperm(n, generator=generator)`` from the order generator alone (the
DataLoader's workers draw their base seed from another, see loaders.py), and
``__iter__`` draws the same, so after ``Loaders.reseed(seed, epoch)`` both paths
visit the same indices.

Under DDP (``shard``), each global batch of ``batch_size x world_size``
consecutive indices of the permutation is cut into ``world_size`` contiguous
slices and rank r takes slice r — the samples Accelerate's batch sharding would
give rank r. A last incomplete global batch is topped up from the start of the
permutation to a multiple of the world size, so every rank takes as many steps.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


def materialise(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the split's transform once per sample; returns (inputs, targets) on the CPU."""
    inputs, targets = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        inputs.append(torch.as_tensor(x))
        targets.append(int(y))
    return torch.stack(inputs), torch.tensor(targets, dtype=torch.long)


class DeviceResidentLoader:
    """Yields ``(inputs, targets)`` batches of tensors already on the device."""

    def __init__(self, ds: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None):
        self.inputs, self.targets = materialise(ds)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.rank, self.world_size = 0, 1

    @property
    def num_samples(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device) -> "DeviceResidentLoader":
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> "DeviceResidentLoader":
        self.rank, self.world_size = rank, world_size
        return self

    def as_dataloader(self) -> DataLoader:
        """The same tensors as an ordinary DataLoader (for Accelerate to shard eval splits)."""
        ds = TensorDataset(self.inputs.cpu(), self.targets.cpu())
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False)

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        n = self.num_samples
        return n // per_step if self.drop_last else math.ceil(n / per_step)

    def _order(self) -> torch.Tensor:
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=self.generator)

    def _rank_indices(self, order: torch.Tensor) -> list[torch.Tensor]:
        bs, world = self.batch_size, self.world_size
        per_step = bs * world
        steps = len(self)
        batches = []
        for step in range(steps):
            chunk = order[step * per_step:(step + 1) * per_step]
            if chunk.numel() % world:
                pad = world - chunk.numel() % world
                chunk = torch.cat([chunk, order[:pad]])
            size = chunk.numel() // world
            batches.append(chunk[self.rank * size:(self.rank + 1) * size])
        return batches

    def skip_first(self, n: int) -> "_Skipped":
        """The same epoch without its first ``n`` batches (the order is drawn as usual)."""
        return _Skipped(self, n)

    def __iter__(self):
        return self._batches()

    def _batches(self, skip: int = 0):
        device = self.inputs.device
        for idx in self._rank_indices(self._order())[skip:]:
            idx = idx.to(device)
            yield self.inputs.index_select(0, idx), self.targets.index_select(0, idx)


class _Skipped:
    def __init__(self, loader: DeviceResidentLoader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return max(len(self.loader) - self.n, 0)

    def __iter__(self):
        return self.loader._batches(self.n)
