"""Data: a registry of data sets, transforms, the seeded split and the loaders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from harness.data.augment import augmented_subset
from harness.data.datasets import DataConfig, Pool, load_pool
from harness.data.split import TransformedSubset, split_indices
from harness.data.transforms import build_transform
from harness.errors import BadInput


@dataclass
class DataBundle:
    train: TransformedSubset
    dev: TransformedSubset
    test: TransformedSubset
    classes: list[str]
    sample_shape: tuple[int, ...]
    """(channels, height, width) of a transformed sample."""
    source: str
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Files left out as corrupt."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.sample_shape[0]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def build_data(cfg: DataConfig, seed: int, preset=None) -> DataBundle:
    """``preset``: the transform data.transforms.preset names; commands build through
    ``harness.data.preprocess.recipe_data``, which resolves it from the model."""
    if cfg.transforms.preset != "none" and preset is None:
        # Without it every sample would silently keep the data set's own size (3x8x8 for
        # a 224x224 model): a wrong figure, not an error, so refuse loudly.
        raise ValueError("build_data: data.transforms.preset is set but no preset transform was given; "
                         "build through harness.data.preprocess.recipe_data")
    pool: Pool = load_pool(cfg)
    n = len(pool.dataset)
    indices = list(range(n))
    if cfg.subset is not None and cfg.subset < n:
        # A seeded choice, independent of the split's own permutation.
        g = torch.Generator().manual_seed(seed + 1)
        indices = sorted(torch.randperm(n, generator=g)[: cfg.subset].tolist())
    tr, dv, te = split_indices(len(indices), cfg.split, seed)
    if not tr:
        raise BadInput(f"data.split.train: {cfg.split.train:g} of {len(indices)} samples leaves no "
                       "training sample after dev and test take theirs; use more samples or a larger fraction")
    pick = lambda idx: [indices[i] for i in idx]  # noqa: E731

    probe = build_transform(dataclasses.replace(cfg.transforms, normalize=False), train=False, preset=preset)
    shape = tuple(probe(pool.dataset[indices[0]][0]).shape)
    train_tf = build_transform(cfg.transforms, train=True, channels=shape[0], preset=preset)
    eval_tf = build_transform(cfg.transforms, train=False, channels=shape[0], preset=preset)
    return DataBundle(
        # Augmentation is drawn per batch, by the same function on both loader paths.
        train=augmented_subset(pool.dataset, pick(tr), train_tf),
        dev=TransformedSubset(pool.dataset, pick(dv), eval_tf),
        test=TransformedSubset(pool.dataset, pick(te), eval_tf),
        classes=pool.classes,
        sample_shape=shape,
        source=pool.source,
        skipped=pool.skipped,
    )


__all__ = ["DataBundle", "DataConfig", "build_data"]
