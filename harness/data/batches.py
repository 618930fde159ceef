"""The seeds behind an epoch's batches, shared by both train loaders (the DataLoader
path in loaders.py, the device-resident one in resident.py), so the two draw the same."""

from __future__ import annotations

from torch.utils.data import BatchSampler


def epoch_seed(seed: int, epoch: int) -> int:
    # numpy takes 32-bit seeds; seeds below 42,949 (every one that ran before) are unchanged.
    return (seed * 100_003 + epoch) % 2**32


class SeededBatchSampler(BatchSampler):
    """Batches of ``(position, seed)``: each batch carries the seed of its augmentation.

    The seed is a function of the epoch's seed and the batch's number, set in the main
    process by ``Loaders.reseed``, so it reaches persistent workers too (see
    ``TransformedSubset``). The order of positions is the plain BatchSampler's.
    """

    epoch_seed: int = 0

    def __iter__(self):
        for k, batch in enumerate(super().__iter__()):
            seed = (self.epoch_seed * 1_000_003 + k) % 2**63
            yield [(i, seed) for i in batch]
