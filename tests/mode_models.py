"""Models for the run-mode tests (model.name: mode_models:ClassName)."""

import torch
from torch import nn


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite); infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


class InfiniteGradients(nn.Module):
    """Every weight gradient is infinite: a gradient scaler must skip every step."""

    def __init__(self, in_channels: int, image_size, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x):
        return _InfiniteGradient.apply(self.fc(self.flatten(x)))
