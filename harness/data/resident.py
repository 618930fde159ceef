"""A loader whose whole split lives on the device as two tensors.

Every sample's deterministic transform (grayscale, resize, to-tensor) is applied
once, when the loader is built, and batches are taken by indexing: no workers, no
collation, no host copy per step. The train split's random steps (rotation, flip,
jitter, noise) and Normalize run on the device a batch at a time
(``harness/data/augment.py``), with fresh draws every epoch as on the DataLoader
path, seeded by the batch's seed: the same (seed, epoch, batch number) seed the
DataLoader path's ``SeededBatchSampler`` gives that batch, so a resumed run draws
the same as an uninterrupted one.

The order matches the DataLoader path exactly: its ``RandomSampler`` draws
``torch.randperm(n, generator=generator)`` from the order generator alone (the
DataLoader's workers draw their base seed from another, see loaders.py), and
``__iter__`` draws the same, so after ``Loaders.reseed(seed, epoch)`` both paths
visit the same indices.

Under DDP (``shard``) the batches are cut by Accelerate's own ``BatchSamplerShard``
(even_batches, no split), so rank r takes the samples ``accelerate.prepare`` would
give it, padding included: a last incomplete batch is topped up with samples from
the epoch's start, so every rank takes as many steps. Like Accelerate's loaders it
answers ``end_of_dataloader``, ``remainder`` and ``total_batch_size``, from which
the meter leaves that padding out of the sample count.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from harness.data.augment import AugmentedSubset, BatchAugment, split_pipeline
from harness.data.batches import SeededBatchSampler


def materialise(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the split's transform once per sample; returns (inputs, targets) on the CPU."""
    inputs, targets = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        inputs.append(torch.as_tensor(x))
        targets.append(int(y))
    return torch.stack(inputs), torch.tensor(targets, dtype=torch.long)


def _split_augmentation(ds: Dataset) -> tuple[Dataset, BatchAugment | None]:
    """``ds`` without its random steps, and those steps for batches (None: nothing is drawn)."""
    from harness.data.split import TransformedSubset

    if isinstance(ds, AugmentedSubset):  # the train view: the same augmentation as the DataLoader path's
        return TransformedSubset(ds.base, ds.indices, ds.transform), ds.augment
    transform = getattr(ds, "transform", None)
    if not isinstance(ds, TransformedSubset) or transform is None:
        return ds, None
    fixed, augment = split_pipeline(transform)
    if augment is None:
        return ds, None
    return TransformedSubset(ds.base, ds.indices, fixed), augment


class _Positions(torch.utils.data.Sampler):
    """An epoch's order, drawn by the loader, handed to a batch sampler."""

    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class DeviceResidentLoader:
    """Yields ``(inputs, targets)`` batches of tensors already on the device."""

    def __init__(self, ds: Dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None):
        ds, self.augment = _split_augmentation(ds)
        self.inputs, self.targets = materialise(ds)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.rank, self.world_size = 0, 1
        self.end_of_dataloader = False

    @property
    def num_samples(self) -> int:
        return int(self.targets.shape[0])

    @property
    def total_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def remainder(self) -> int:
        """Real samples in the epoch's last global batch (Accelerate's meaning); -1 with drop_last."""
        return -1 if self.drop_last else self.num_samples % self.total_batch_size

    def to(self, device: torch.device) -> "DeviceResidentLoader":
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> "DeviceResidentLoader":
        self.rank, self.world_size = rank, world_size
        return self

    def as_dataloader(self) -> DataLoader:
        """The same tensors as an ordinary DataLoader (for Accelerate to shard eval splits)."""
        if self.augment is not None:
            raise ValueError("a split with random augmentation has no fixed tensors to hand over")
        ds = TensorDataset(self.inputs.cpu(), self.targets.cpu())
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False)

    def _batch_sampler(self):
        from accelerate.data_loader import BatchSamplerShard

        batches = SeededBatchSampler(_Positions(self._order()), self.batch_size, self.drop_last)
        batches.epoch_seed = self.generator.initial_seed() if self.generator is not None else 0
        if self.world_size == 1:
            return batches
        return BatchSamplerShard(batches, num_processes=self.world_size, process_index=self.rank,
                                 split_batches=False, even_batches=True)

    def __len__(self) -> int:
        from accelerate.data_loader import BatchSamplerShard
        from torch.utils.data import BatchSampler

        batches = BatchSampler(range(self.num_samples), self.batch_size, self.drop_last)
        if self.world_size == 1:
            return len(batches)
        return len(BatchSamplerShard(batches, num_processes=self.world_size, process_index=self.rank,
                                     split_batches=False, even_batches=True))

    def _order(self) -> list[int]:
        n = self.num_samples
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=self.generator).tolist()

    def skip_first(self, n: int) -> "_Skipped":
        """The same epoch without its first ``n`` batches (the order is drawn as usual)."""
        return _Skipped(self, n)

    def __iter__(self):
        return self._batches()

    def _batches(self, skip: int = 0):
        device = self.inputs.device
        self.end_of_dataloader = False
        batches = list(self._batch_sampler())
        # The epoch's positions go to the device in one copy, not one per step: a
        # per-step copy would wait for the GPU's queue inside the data wait.
        flat = torch.tensor([i for items in batches for i, _ in items], dtype=torch.long)
        flat = (flat.pin_memory() if device.type == "cuda" else flat).to(device, non_blocking=True)
        start = 0
        for k, items in enumerate(batches):
            idx = flat[start:start + len(items)]
            start += len(items)
            if k < skip:
                continue
            self.end_of_dataloader = k == len(batches) - 1
            inputs = self.inputs.index_select(0, idx)
            if self.augment is not None:
                # The batch's seed, as the DataLoader path's workers receive it.
                inputs = self.augment(inputs, items[0][1])
            yield inputs, self.targets.index_select(0, idx)


class _Skipped:
    def __init__(self, loader: DeviceResidentLoader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return max(len(self.loader) - self.n, 0)

    def __iter__(self):
        return self.loader._batches(self.n)

    def __getattr__(self, name):
        return getattr(self.loader, name)
