"""One recipe on every loader path: the device-resident loader draws the DataLoader path's augmentation."""

from __future__ import annotations


import pytest
import torch

from harness.config.run import load_config
from harness.data import build_data
from harness.data.loaders import build_loaders
from support.paths import REPO

AUGMENT = ["data.subset=150", "data.transforms.augment.rotation_deg=15", "data.transforms.augment.hflip_p=0.5",
           "data.transforms.augment.color_jitter=0.3", "data.transforms.augment.gaussian_noise_std=0.05",
           "loader.batch_size=16"]


def _both(*extra: str):
    cfg = load_config(REPO / "configs/digits_cnn.yaml", [*AUGMENT, *extra])
    data = build_data(cfg.data, cfg.seed)
    dl = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
    cfg.loader.kind = "device_resident"
    dr = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
    return cfg, dl, dr


def _epoch(loaders, seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loaders.reseed(seed, epoch)
    return list(loaders.train)


@pytest.mark.parametrize("workers", [0, 2])
def test_both_paths_draw_the_same_augmentation_for_the_same_seed_and_epoch(workers):
    """The same function on the same tensors with the same per-batch seed: equal batches,
    element for element (workers or not)."""
    cfg, dl, dr = _both(f"loader.num_workers={workers}")
    for epoch in (0, 1):
        a, b = _epoch(dl, cfg.seed, epoch), _epoch(dr, cfg.seed, epoch)
        assert len(a) == len(b) == len(dl.train)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb)
            assert torch.equal(xa, xb)


def test_the_augmentation_is_drawn_afresh_every_epoch():
    cfg, dl, dr = _both("loader.shuffle=false")  # the same samples at the same place each epoch
    for loaders in (dl, dr):
        e0, e1 = _epoch(loaders, cfg.seed, 0), _epoch(loaders, cfg.seed, 1)
        assert all(torch.equal(y0, y1) for (_, y0), (_, y1) in zip(e0, e1))
        changed = [not torch.equal(x0, x1) for (x0, _), (x1, _) in zip(e0, e1)]
        assert all(changed)
        assert torch.equal(e0[0][0], _epoch(loaders, cfg.seed, 0)[0][0])  # and the same again for epoch 0


def test_a_resumed_epoch_draws_what_the_whole_epoch_drew():
    cfg, _, dr = _both()
    whole = _epoch(dr, cfg.seed, 1)
    dr.reseed(cfg.seed, 1)
    rest = list(dr.train.skip_first(3))
    assert len(rest) == len(whole) - 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[3:], rest))


def test_the_augmentation_really_augments():
    """Against the eval pipeline on the same samples: the draws change pixels, and the
    normalisation still holds (flat noise-free pixels land where Normalize puts them)."""
    cfg, dl, _ = _both("loader.shuffle=false", "data.transforms.augment.gaussian_noise_std=0")
    data = build_data(cfg.data, cfg.seed)
    x, _ = _epoch(dl, cfg.seed, 0)[0]
    plain = torch.stack([data.dev.transform(data.train.base[i][0]) for i in data.train.indices[:x.shape[0]]])
    assert x.shape == plain.shape and not torch.equal(x, plain)
    lowest = (0.0 - 0.3) / 0.4  # a black pixel after Normalize(0.3, 0.4)
    assert x.min().item() == pytest.approx(lowest, abs=1e-6)
