"""DataLoaders from config, with a shuffling order owned by the harness.

The train loader's generator is re-seeded from (seed, epoch) at every epoch, so
the order of epoch k is the same in every mode, on every rank, and after a resume.

``loader.kind: device_resident`` replaces the DataLoaders with
``DeviceResidentLoader``s (harness/data/resident.py): every split is transformed
once and kept as tensors on the device (train augmentation: per batch, on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from harness.data.batches import SeededBatchSampler, epoch_seed
from harness.data.resident import DeviceResidentLoader
from harness.data.split import TransformedSubset
from harness.errors import BadInput, ConfigValueError


@dataclass
class LoaderConfig:
    kind: Literal["dataloader", "device_resident"] = "dataloader"
    """dataloader: a torch DataLoader per split. device_resident: each split transformed
    once and held as tensors on the device, batches by indexing; train augmentation is
    drawn per batch on the device, the same draws as the DataLoader path's (num_workers,
    pin_memory and prefetch do not apply)."""
    batch_size: int = 64
    """Samples per batch per device; the global batch is this times the world size."""
    eval_batch_size: int | None = None
    """Batch size for dev/test; null uses batch_size."""
    num_workers: int = 0
    """DataLoader worker processes (0 loads in the main process)."""
    pin_memory: bool = False
    persistent_workers: bool = False
    """Keep workers alive between epochs (needs num_workers > 0)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead (needs num_workers > 0; null: torch's default)."""
    drop_last: bool = False
    """Drop the last incomplete train batch."""
    shuffle: bool = True
    """Shuffle the train split each epoch (seeded)."""

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ConfigValueError("batch_size", f"expected an integer > 0, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise ConfigValueError(
                "eval_batch_size", f"expected an integer > 0 or null, got {self.eval_batch_size}"
            )
        if self.num_workers < 0:
            raise ConfigValueError("num_workers", f"expected an integer >= 0, got {self.num_workers}")
        if self.persistent_workers and self.num_workers == 0:
            raise ConfigValueError("persistent_workers", "needs num_workers > 0")
        if self.prefetch_factor is not None:
            if self.num_workers == 0:
                raise ConfigValueError("prefetch_factor", "needs num_workers > 0 (or null)")
            if self.prefetch_factor <= 0:
                raise ConfigValueError(
                    "prefetch_factor", f"expected an integer > 0 or null, got {self.prefetch_factor}"
                )


@dataclass
class Loaders:
    train: DataLoader | DeviceResidentLoader
    dev: DataLoader | DeviceResidentLoader | None
    test: DataLoader | DeviceResidentLoader | None
    generator: torch.Generator
    """Drives the train order alone; see ``reseed``."""
    worker_seeds: torch.Generator | None = None
    """What a DataLoader iterator draws its workers' base seed from. Kept apart from the
    order: a persistent iterator draws it once per run, a fresh one once per epoch, and
    sharing one generator made persistent workers shuffle epochs 2+ differently."""

    def reseed(self, seed: int, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(seed, epoch))
        if self.worker_seeds is not None:
            self.worker_seeds.manual_seed(epoch_seed(seed, epoch))
        batches = getattr(self.train, "batch_sampler", None)
        # Accelerate wraps the batch sampler (a shard, a skipper); the seeded one is inside.
        while batches is not None and not isinstance(batches, SeededBatchSampler):
            batches = getattr(batches, "batch_sampler", None)
        if batches is not None:
            batches.epoch_seed = epoch_seed(seed, epoch)


def skip_batches(loader, n: int, accelerator):
    """``loader`` without its first ``n`` batches of this epoch, skipped at the sampler.

    Skipping by index, not by loading and dropping, leaves the random state as the
    step where the run stopped left it, so a resumed epoch draws what it would have.
    """
    if n == 0:
        return loader
    if isinstance(loader, DeviceResidentLoader):
        return loader.skip_first(n)
    return accelerator.skip_first_batches(loader, n)


def _loader(ds: Dataset, cfg: LoaderConfig, batch_size: int, train: bool, generator,
            worker_seeds: torch.Generator) -> DataLoader:
    """``generator`` orders the train split; ``worker_seeds`` feeds only the iterator's
    base seed, so neither the order nor the main random state (which a loader without
    a generator would draw from) depends on how often an iterator is created."""
    extra = {}
    if cfg.num_workers > 0:
        extra["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            extra["prefetch_factor"] = cfg.prefetch_factor
    drop_last = cfg.drop_last and train
    if train and isinstance(ds, TransformedSubset):
        sampler = RandomSampler(ds, generator=generator) if cfg.shuffle else SequentialSampler(ds)
        batches = SeededBatchSampler(sampler, batch_size, drop_last)
        return DataLoader(ds, batch_sampler=batches, num_workers=cfg.num_workers,
                          pin_memory=cfg.pin_memory, generator=worker_seeds, **extra)
    if train and cfg.shuffle:
        extra["sampler"] = RandomSampler(ds, generator=generator)
    return DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        drop_last=drop_last,
        generator=worker_seeds,
        **extra,
    )


def build_loaders(train: Dataset, dev: Dataset, test: Dataset, cfg: LoaderConfig, seed: int) -> Loaders:
    if cfg.drop_last and len(train) < cfg.batch_size:
        raise BadInput(
            f"loader.drop_last: the train split has {len(train)} samples, fewer than one batch "
            f"of {cfg.batch_size}, so no batch would be left"
        )
    generator = torch.Generator().manual_seed(epoch_seed(seed, 0))
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    if cfg.kind == "device_resident":
        return Loaders(
            train=DeviceResidentLoader(train, cfg.batch_size, cfg.shuffle, cfg.drop_last, generator),
            dev=DeviceResidentLoader(dev, eval_bs) if len(dev) else None,
            test=DeviceResidentLoader(test, eval_bs) if len(test) else None,
            generator=generator,
        )
    worker_seeds = torch.Generator().manual_seed(epoch_seed(seed, 0))
    eval_seeds = torch.Generator().manual_seed(epoch_seed(seed, 0))
    return Loaders(
        train=_loader(train, cfg, cfg.batch_size, True, generator, worker_seeds),
        dev=_loader(dev, cfg, eval_bs, False, None, eval_seeds) if len(dev) else None,
        test=_loader(test, cfg, eval_bs, False, None, eval_seeds) if len(test) else None,
        generator=generator,
        worker_seeds=worker_seeds,
    )
