"""User models that are bad input (model.name: bad_models:ClassName), for tests/test_bad_input.py."""

import sys

from torch import nn


class RejectsKwargs(nn.Module):
    """Validates its own kwargs, as user code does: a ValueError from __init__."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


class InitRaises(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        raise RuntimeError("this model cannot be built")


class NoParameters(nn.Module):
    """Output of the right shape, and nothing an optimizer could train."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes

    def forward(self, x):
        return self.pool(x).flatten(1)[:, :1].expand(-1, self.num_classes)


class ExitsInInit(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        sys.exit(5)
