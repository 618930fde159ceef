"""The seeded train/dev/test split.

The permutation depends only on the pool size and the seed, so every mode and
every rank of a distributed run sees the same three subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from harness.errors import ConfigValueError


@dataclass
class SplitConfig:
    train: float = 0.7
    """Fraction of the pool used for training (> 0)."""
    dev: float = 0.15
    """Fraction evaluated after every epoch (0 turns dev evaluation off)."""
    test: float = 0.15
    """Fraction evaluated once at the end (0 turns the test off)."""

    def __post_init__(self):
        for name in ("train", "dev", "test"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigValueError(name, f"expected a fraction in [0, 1], got {value}")
        if self.train <= 0:
            raise ConfigValueError("train", f"expected a fraction > 0, got {self.train}")
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ConfigValueError(
                "train", f"train + dev + test must sum to 1, got {total:g}"
            )


def split_indices(n: int, cfg: SplitConfig, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Partition ``range(n)`` into train/dev/test index lists, deterministically."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_dev = round(n * cfg.dev)
    n_test = round(n * cfg.test)
    n_train = n - n_dev - n_test
    return perm[:n_train], perm[n_train : n_train + n_dev], perm[n_train + n_dev :]


class TransformedSubset(Dataset):
    """A view of ``base`` at ``indices`` with its own transform.

    The train view augments and the dev/test views do not, while all three
    share one underlying data set (one folder scan, one decode path).

    Items may be plain positions or ``(position, seed)`` pairs from
    ``SeededBatchSampler``: a batch of pairs is transformed under its own seed, on a
    forked random state. Augmentation is then a function of (run seed, epoch, batch
    number) alone: the same with 0 or 8 workers, with the loader prefetching ahead,
    and after a resume inside an epoch, and it never moves the main random state
    that dropout draws from.
    """

    def __init__(self, base: Dataset, indices: list[int], transform=None):
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, i: int):
        index = self.indices[i]
        try:
            image, target = self.base[index]
        except (OSError, SyntaxError, ValueError) as err:
            samples = getattr(self.base, "samples", None)  # an ImageFolder knows its files
            if samples is None:
                raise
            raise RuntimeError(f"{samples[index][0]} is not a readable image ({err}); "
                               "set data.corrupt_images: skip with data.scan_images: true "
                               "to leave such files out") from err
        if self.transform is not None:
            image = self.transform(image)
        return image, target

    def __getitem__(self, item):
        if isinstance(item, tuple):
            return self.__getitems__([item])[0]
        return self._load(item)

    def __getitems__(self, items: list) -> list:
        if not items or not isinstance(items[0], tuple):
            return [self._load(i) for i in items]
        # The CPU generator alone, saved and restored by hand: transforms draw from it,
        # and torch.manual_seed / fork_rng also visit every accelerator backend
        # (~100 us a call, a measurable share of a small batch's loading time).
        gen = torch.default_generator
        saved = gen.get_state()
        gen.manual_seed(items[0][1])
        try:
            return [self._load(i) for i, _ in items]
        finally:
            gen.set_state(saved)
