"""Models for the sweep tests, imported by path in a cell's own process."""

import time

import torch
from torch import nn


class Boom(nn.Module):
    """Passes config validation, fails at run time."""

    def __init__(self, num_classes: int):
        super().__init__()
        raise RuntimeError("Boom: this model cannot be built")


class OutOfMemoryAbove8(nn.Module):
    """A linear model that 'runs out of memory' on batches of more than 8 samples."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.LazyLinear(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > 8:
            raise RuntimeError(f"out of memory: a batch of {x.shape[0]} does not fit (test model)")
        return self.fc(x.flatten(1))


class Slow(nn.Module):
    """A linear model whose every training step takes 0.2 s: a cell that is still running."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.LazyLinear(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(0.2)
        return self.fc(x.flatten(1))
