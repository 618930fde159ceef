"""Data sets, transforms, the seeded split and the loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.config.run import load_config
from harness.data import build_data
from harness.data.datasets import DIGITS_COUNT, DataConfig, FakeDataConfig, load_pool
from harness.data.loaders import LoaderConfig, build_loaders
from harness.data.split import SplitConfig, split_indices
from harness.errors import BadInput


def test_split_is_a_seeded_partition():
    cfg = SplitConfig(0.7, 0.15, 0.15)
    a = split_indices(1000, cfg, seed=3)
    b = split_indices(1000, cfg, seed=3)
    c = split_indices(1000, cfg, seed=4)
    assert a == b
    assert a != c
    train, dev, test = a
    assert (len(train), len(dev), len(test)) == (700, 150, 150)
    assert sorted(train + dev + test) == list(range(1000))


def test_digits_cache_is_an_image_folder(harness_cache):
    pool = load_pool(DataConfig(name="digits"))
    assert len(pool.dataset) == DIGITS_COUNT
    assert pool.classes == [str(i) for i in range(10)]
    root = harness_cache / "digits"
    assert sum(1 for _ in root.glob("*/*.png")) == DIGITS_COUNT
    image, label = pool.dataset[0]
    assert isinstance(image, Image.Image) and image.size == (8, 8)
    assert 0 <= label < 10


def test_digits_split_and_transforms():
    cfg = load_config("configs/digits_cnn.yaml").data
    bundle = build_data(cfg, seed=0)
    assert bundle.sample_shape == (1, 8, 8)
    assert sum(bundle.sizes().values()) == DIGITS_COUNT
    x, y = bundle.dev[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    # the same seed gives the same split, on any run
    again = build_data(cfg, seed=0)
    assert bundle.test.indices == again.test.indices


def test_train_view_augments_and_eval_view_does_not():
    cfg = load_config(None, ["data.transforms.augment.gaussian_noise_std=0.5"]).data
    bundle = build_data(cfg, seed=0)
    base_index = bundle.train.indices[0]
    assert not torch.equal(bundle.train[0][0], bundle.train[0][0])  # noise differs per draw
    bundle.dev.indices[0] = base_index
    assert torch.equal(bundle.dev[0][0], bundle.dev[0][0])


def test_resize_and_grayscale_on_fake_rgb():
    cfg = load_config(None, ["data.name=fake", "data.fake.size=20", "data.fake.image_shape=[3, 12, 10]",
                             "data.transforms.grayscale=true", "data.transforms.resize=[16, 16]"]).data
    bundle = build_data(cfg, seed=0)
    assert bundle.sample_shape == (1, 16, 16)
    assert bundle.num_classes == 10


def test_normalize_channel_mismatch_is_bad_input():
    cfg = load_config(None, ["data.name=fake", "data.fake.size=10",
                             "data.transforms.mean=[0.5, 0.5]", "data.transforms.std=[0.2, 0.2]"]).data
    with pytest.raises(BadInput, match="data.transforms.mean: has 2 values but the images have 3 channel"):
        build_data(cfg, seed=0)


def test_imagefolder_reads_a_user_folder(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (5, 5), color=(i * 40, 0, 0)).save(tmp_path / cls / f"{i}.png")
    pool = load_pool(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert pool.classes == ["cat", "dog"] and len(pool.dataset) == 6


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(BadInput, match=r"data.root: .*nope is not a folder"):
        load_pool(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))


def test_imagefolder_empty_class_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "x.png")
    with pytest.raises(BadInput, match=r"data.root: .*b"):
        load_pool(DataConfig(name="imagefolder", root=str(tmp_path)))


@pytest.mark.parametrize("name, where", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                                         ("cifar10", "cifar-10-batches-py")])
def test_downloadable_sets_say_where_files_go(tmp_path, name, where):
    with pytest.raises(BadInput) as info:
        load_pool(DataConfig(name=name, root=str(tmp_path)))
    assert "data.root" in str(info.value) and where in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing may be downloaded or created"


def test_fake_data_shape():
    pool = load_pool(DataConfig(name="fake", fake=FakeDataConfig(size=7, image_shape=[1, 6, 6], num_classes=3)))
    assert len(pool.dataset) == 7 and pool.dataset[0][0].size == (6, 6)


def _tensor_set(n):
    return torch.utils.data.TensorDataset(torch.arange(n).float().unsqueeze(1), torch.zeros(n, dtype=torch.long))


def test_loader_order_is_a_function_of_seed_and_epoch():
    def order(epoch):
        loaders = build_loaders(_tensor_set(50), _tensor_set(5), _tensor_set(5), LoaderConfig(batch_size=10), seed=1)
        loaders.reseed(1, epoch)
        return torch.cat([x for x, _ in loaders.train]).flatten().tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(1)) == list(range(50))


def test_loader_settings_are_applied():
    cfg = LoaderConfig(batch_size=8, eval_batch_size=4, num_workers=1, pin_memory=False,
                       persistent_workers=True, prefetch_factor=3, drop_last=True)
    loaders = build_loaders(_tensor_set(20), _tensor_set(6), _tensor_set(0), cfg, seed=0)
    assert loaders.train.batch_size == 8 and loaders.train.drop_last
    assert loaders.train.num_workers == 1 and loaders.train.prefetch_factor == 3
    assert loaders.train.persistent_workers
    assert loaders.dev.batch_size == 4 and not loaders.dev.drop_last
    assert loaders.test is None
    assert len(loaders.train) == 2


def test_drop_last_with_too_few_samples():
    with pytest.raises(BadInput, match="loader.drop_last: the train split has 5 samples"):
        build_loaders(_tensor_set(5), _tensor_set(1), _tensor_set(1), LoaderConfig(batch_size=8, drop_last=True), 0)


def _folder(root: Path, classes=("a", "b"), per_class: int = 3) -> Path:
    for c in classes:
        (root / c / "sub").mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=20 * i).save(root / c / f"{i}.png")
            Image.new("L", (8, 8), color=20 * i + 5).save(root / c / "sub" / f"s{i}.png")
    return root


def test_imagefolder_scan_orders_samples_as_torchvision_does(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _folder(tmp_path / "images")
    pool = load_pool(DataConfig(name="imagefolder", root=str(root)))
    assert pool.dataset.samples == ImageFolder(str(root)).samples and len(pool.dataset) == 12


def test_imagefolder_symlink_loop_is_refused_naming_the_link(tmp_path):
    import os

    root = _folder(tmp_path / "images")
    os.symlink("..", root / "a" / "sub" / "up")
    with pytest.raises(BadInput, match=r"data.root: .*a/sub/up links back .*symlink loop"):
        load_pool(DataConfig(name="imagefolder", root=str(root)))


def test_imagefolder_keeps_each_real_file_once_and_says_so(tmp_path, capsys):
    import os

    root = _folder(tmp_path / "images")
    os.symlink(root / "a" / "sub", root / "b" / "also_a")  # a folder reached twice
    os.symlink(root / "a" / "0.png", root / "b" / "copy.png")  # a file reached twice
    pool = load_pool(DataConfig(name="imagefolder", root=str(root)))
    paths = [os.path.realpath(p) for p, _ in pool.dataset.samples]
    assert len(paths) == len(set(paths)) == 12
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 paths" in err and "kept once" in err


def test_imagefolder_needs_two_classes(tmp_path):
    root = _folder(tmp_path / "images", classes=("only",))
    with pytest.raises(BadInput, match=r"data.root: .* 1 class folder \(only\); a classifier needs at least 2"):
        load_pool(DataConfig(name="imagefolder", root=str(root)))


def test_persistent_workers_draw_the_same_train_order_every_epoch():
    """A persistent iterator draws its workers' base seed once per run, a fresh one once per
    epoch: that draw must not come from the generator that orders the samples."""
    def orders(**kw):
        loaders = build_loaders(_tensor_set(40), _tensor_set(5), _tensor_set(5),
                                LoaderConfig(batch_size=10, **kw), seed=3)
        out = []
        for epoch in range(3):
            loaders.reseed(3, epoch)
            out.append(torch.cat([x for x, _ in loaders.train]).flatten().tolist())
        return out

    assert orders() == orders(num_workers=2, persistent_workers=True) == orders(num_workers=2)
