"""The train augmentation on a batch of tensors, on the device: the device-resident path's.

``build_transform`` makes a per-image PIL pipeline for the DataLoader path. This
module reads that pipeline's random steps and applies them to a whole batch at
once, drawing each sample's own parameters (angle, flip, jitter factors, noise)
from a generator seeded per batch, so an epoch's draws are fresh, and the same
again for the same (seed, epoch, batch) after a resume.

torchvision's v2 transforms accept batched tensors but draw one set of parameters
for the whole batch; a recipe's augmentation draws per sample, so each step here is
written per sample and vectorised. The draws follow the same distributions as the
PIL steps (rotation: uniform angle, nearest, zero fill; flip: Bernoulli(p); jitter:
uniform brightness, contrast, saturation factors), but they are not the same numbers
as the PIL path's: those come from per-image calls in another order, on uint8 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from harness.data.split import TransformedSubset


@dataclass
class BatchAugment:
    """The random steps of a train pipeline, and its Normalize, for batches (B, C, H, W) in [0, 1]."""

    rotation_deg: float = 0.0
    hflip_p: float = 0.0
    brightness: tuple[float, float] | None = None
    contrast: tuple[float, float] | None = None
    saturation: tuple[float, float] | None = None
    noise_std: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def draws(self) -> bool:
        return bool(self.rotation_deg or self.hflip_p or self.brightness or self.contrast
                    or self.saturation or self.noise_std)

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator(device=x.device).manual_seed(seed)
        n = x.shape[0]
        uniform = lambda lo, hi: torch.rand(n, 1, 1, 1, device=x.device, generator=g) * (hi - lo) + lo  # noqa: E731
        if self.rotation_deg:
            x = _rotate(x, uniform(-self.rotation_deg, self.rotation_deg).flatten())
        if self.hflip_p:
            flip = torch.rand(n, 1, 1, 1, device=x.device, generator=g) < self.hflip_p
            x = torch.where(flip, x.flip(-1), x)
        if self.brightness:
            x = (x * uniform(*self.brightness)).clamp(0, 1)
        if self.contrast:
            mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = _blend(x, mean, uniform(*self.contrast))
        if self.saturation and x.shape[1] == 3:
            x = _blend(x, _gray(x), uniform(*self.saturation))
        if self.noise_std:
            x = x + torch.randn(x.shape, device=x.device, generator=g) * self.noise_std
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Each image by its own angle about its centre, nearest, zero fill (the angle is drawn
    symmetric about 0, so the direction of a positive angle does not change the recipe)."""
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    h, w = x.shape[-2:]
    # affine_grid works in [-1, 1] coordinates per axis; the aspect ratio keeps the rotation rigid.
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


RANDOM_STEPS = (T.RandomRotation, T.RandomHorizontalFlip, T.ColorJitter)


def split_pipeline(transform) -> tuple[object, BatchAugment | None]:
    """(the deterministic part of ``transform``, the batch augmentation) when it draws anything.

    The deterministic part (grayscale, resize, to-tensor) is applied once per sample;
    the random steps and Normalize move to the batch. None when nothing is drawn:
    the whole pipeline is then applied once, as before.
    """
    from harness.data.transforms import GaussianNoise

    steps = list(getattr(transform, "transforms", []))
    if not any(isinstance(s, (*RANDOM_STEPS, GaussianNoise)) for s in steps):
        return transform, None
    aug, keep = BatchAugment(), []
    for s in steps:
        if isinstance(s, T.RandomRotation):
            lo, hi = s.degrees
            if lo != -hi:
                raise ValueError(f"batched rotation needs a symmetric range, got {s.degrees}")
            aug.rotation_deg = float(hi)
        elif isinstance(s, T.RandomHorizontalFlip):
            aug.hflip_p = float(s.p)
        elif isinstance(s, T.ColorJitter):
            aug.brightness, aug.contrast, aug.saturation = s.brightness, s.contrast, s.saturation
            if s.hue is not None:
                raise ValueError("batched augmentation has no hue jitter")
        elif isinstance(s, GaussianNoise):
            aug.noise_std = float(s.std)
        elif isinstance(s, T.Normalize):
            aug.mean, aug.std = tuple(s.mean), tuple(s.std)
        else:
            keep.append(s)
    return T.Compose(keep), aug


def augmented_subset(base, indices: list[int], transform):
    """The train view: ``transform``'s random steps applied per batch (``AugmentedSubset``),
    or a plain ``TransformedSubset`` when it draws nothing."""
    fixed, augment = split_pipeline(transform)
    if augment is None:
        return TransformedSubset(base, indices, transform)
    return AugmentedSubset(base, indices, fixed, augment)


class AugmentedSubset(TransformedSubset):
    """A train view whose augmentation is ``BatchAugment``, applied to each batch as loaded.

    The DataLoader path's workers and the device-resident loader run the same
    function on the same tensors with the same per-batch seed (the one
    ``SeededBatchSampler`` puts on each batch), so both paths draw the same.
    """

    def __init__(self, base, indices, transform, augment: BatchAugment):
        super().__init__(base, indices, transform)
        self.augment = augment

    def __getitems__(self, items: list) -> list:
        samples = super().__getitems__(items)
        if not samples:
            return samples
        if isinstance(items[0], tuple):
            seed = items[0][1]
        else:  # a position without a batch seed: a fresh draw
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        x = self.augment(torch.stack([s[0] for s in samples]), seed)
        return [(x[j], t) for j, (_, t) in enumerate(samples)]

    def __getitem__(self, item):
        return self.__getitems__([item])[0]

