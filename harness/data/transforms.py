"""Transforms from config: the eval pipeline, and the train pipeline with augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torchvision import transforms as T

from harness.errors import BadInput, ConfigValueError


@dataclass
class AugmentConfig:
    """Train-only augmentation; every default leaves the image unchanged."""

    rotation_deg: float = 0.0
    """RandomRotation range in degrees (+/-)."""
    hflip_p: float = 0.0
    """Probability of RandomHorizontalFlip."""
    color_jitter: float = 0.0
    """ColorJitter strength for brightness, contrast and saturation."""
    gaussian_noise_std: float = 0.0
    """Std of Gaussian noise added to the tensor after ToTensor (before Normalize)."""

    def __post_init__(self):
        if self.rotation_deg < 0:
            raise ConfigValueError("rotation_deg", f"expected >= 0, got {self.rotation_deg}")
        if not 0 <= self.hflip_p <= 1:
            raise ConfigValueError("hflip_p", f"expected a probability in [0, 1], got {self.hflip_p}")
        if self.color_jitter < 0:
            raise ConfigValueError("color_jitter", f"expected >= 0, got {self.color_jitter}")
        if self.gaussian_noise_std < 0:
            raise ConfigValueError(
                "gaussian_noise_std", f"expected >= 0, got {self.gaussian_noise_std}"
            )


MIN_STD = 1e-6
"""Normalize divides by std: below this a pixel in [0, 1] would exceed 1e6."""


@dataclass
class TransformConfig:
    grayscale: bool = False
    """Convert images to one channel (Grayscale)."""
    resize: list[int] | int | None = None
    """[height, width] to Resize to, or one integer for a square; null keeps the data set's size."""
    normalize: bool = True
    mean: list[float] = field(default_factory=lambda: [0.5])
    """Per-channel mean for Normalize (one value is broadcast to every channel)."""
    std: list[float] = field(default_factory=lambda: [0.5])
    """Per-channel std for Normalize, each > 0."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preset: Literal["none", "weights"] = "none"
    """weights: the pretrained weights' own preprocessing (resize, crop, ImageNet
    normalisation) from torchvision's ``weights.transforms()``, in place of grayscale,
    resize and normalize; augmentation still applies before it (harness/models/zoo.py)."""

    def __post_init__(self):
        if self.preset == "weights" and (self.grayscale or self.resize is not None):
            raise ConfigValueError("preset", "weights sets the size and three channels itself; "
                                   "leave grayscale and resize unset")
        if isinstance(self.resize, int):
            self.resize = [self.resize, self.resize]
        if self.resize is not None and (
            len(self.resize) != 2 or any(v <= 0 for v in self.resize)
        ):
            raise ConfigValueError("resize", f"expected [height, width] > 0, got {self.resize}")
        if not self.mean:
            raise ConfigValueError("mean", "expected at least one value")
        if len(self.std) != len(self.mean):
            raise ConfigValueError(
                "std", f"expected as many values as mean ({len(self.mean)}), got {len(self.std)}"
            )
        if any(s < MIN_STD for s in self.std):
            # Dividing by a std near 0 (1e-320 is a subnormal) gives inf pixels and a NaN loss.
            raise ConfigValueError("std", f"expected values >= {MIN_STD:g}, got {self.std}")


class GaussianNoise(torch.nn.Module):
    """Adds N(0, std^2) noise to a tensor image."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.std

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std})"


class ToRGB:
    """PIL image -> RGB (a grey image repeated on three channels), for the weights' preset."""

    def __call__(self, img):
        return img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def build_transform(cfg: TransformConfig, train: bool, channels: int | None = None,
                    preset=None) -> T.Compose:
    """The pipeline for PIL images; ``channels`` (known after a probe) checks Normalize.

    ``preset`` (data.transforms.preset: weights) replaces resize, ToTensor and Normalize.
    """
    steps: list = []
    if cfg.grayscale:
        steps.append(T.Grayscale(num_output_channels=1))
    if cfg.resize is not None:
        steps.append(T.Resize(tuple(cfg.resize), antialias=True))
    aug = cfg.augment
    if train:
        if aug.rotation_deg:
            steps.append(T.RandomRotation(aug.rotation_deg))
        if aug.hflip_p:
            steps.append(T.RandomHorizontalFlip(aug.hflip_p))
        if aug.color_jitter:
            j = aug.color_jitter
            steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    if preset is not None:
        # The weights' pipeline takes an RGB PIL image; noise goes on after it.
        steps += [ToRGB(), preset]
        if train and aug.gaussian_noise_std:
            steps.append(GaussianNoise(aug.gaussian_noise_std))
        return T.Compose(steps)
    steps.append(T.ToTensor())
    if train and aug.gaussian_noise_std:
        steps.append(GaussianNoise(aug.gaussian_noise_std))
    if cfg.normalize:
        mean, std = list(cfg.mean), list(cfg.std)
        if channels is not None and len(mean) not in (1, channels):
            raise BadInput(
                f"data.transforms.mean: has {len(mean)} values but the images have "
                f"{channels} channel(s); give " + ("1" if channels == 1 else f"1 or {channels}")
            )
        if channels is not None and len(mean) == 1:
            mean, std = mean * channels, std * channels
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)
