"""Models imported by path in tests (model.name: custom_models:ClassName)."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


class WrongWidth(nn.Module):
    """fc2 expects 100 inputs but fc1 gives 32: the classic mismatch."""

    def __init__(self, in_channels: int, image_size, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * image_size[0] * image_size[1], 32)
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flatten(x))))


class WrongClasses(nn.Module):
    def __init__(self, in_channels: int, image_size):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class NotAModule:
    pass
