"""The registry of data sets. Each entry returns a pool of (PIL image, class) pairs.

Nothing is downloaded unless ``data.download`` is true; a loader whose files are
missing says where they must go.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from torch.utils.data import ConcatDataset, Dataset

from harness.data.split import SplitConfig
from harness.data.transforms import TransformConfig
from harness.errors import BadInput, ConfigValueError


@dataclass
class FakeDataConfig:
    """torchvision FakeData: random images, deterministic per index."""

    size: int = 1000
    """Number of images in the pool."""
    image_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    """[channels, height, width]; channels 1 or 3."""
    num_classes: int = 10

    def __post_init__(self):
        if self.size <= 0:
            raise ConfigValueError("size", f"expected an integer > 0, got {self.size}")
        if len(self.image_shape) != 3 or any(v <= 0 for v in self.image_shape):
            raise ConfigValueError(
                "image_shape", f"expected [channels, height, width] > 0, got {self.image_shape}"
            )
        if self.image_shape[0] not in (1, 3):
            raise ConfigValueError("image_shape", f"channels must be 1 or 3, got {self.image_shape[0]}")
        if self.num_classes < 2:
            raise ConfigValueError("num_classes", f"expected an integer >= 2, got {self.num_classes}")


@dataclass
class DataConfig:
    name: str = "digits"
    """One of the registry's names: digits, imagefolder, fake, mnist, fashion_mnist, cifar10;
    or text, a corpus for a language model (harness/data/text.py)."""
    root: str | None = None
    """Folder holding the files. digits: its PNG cache (default ~/.cache/harness/digits).
    text: a .txt file or a folder of them (null: the CPython documentation every Python ships)."""
    download: bool = False
    """Let torchvision download mnist/fashion_mnist/cifar10 into root (off: never fetch)."""
    corrupt_images: Literal["fail", "skip"] = "fail"
    """An image file that does not decode (folder-backed sets: digits, imagefolder):
    fail names it and stops before training; skip leaves it out and lists it in the report."""
    scan_images: bool = True
    """Decode every file of a folder-backed set once before training, so a corrupt one is
    found before the run starts (about 0.1-1 ms per small image; turn off for huge folders:
    a bad file then fails the run when it is first loaded, naming the file)."""
    subset: int | None = None
    """Use only this many samples of the pool (a seeded choice): quick runs and tests. Image
    data sets only: a text corpus is read whole (its size is in data.root)."""
    fake: FakeDataConfig = field(default_factory=FakeDataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    seq_len: int | None = None
    """text: tokens per training window (null: the model's model.kwargs.seq_len, else 256)."""
    tokenizer: str | None = None
    """text: a local tokenizer.json (the text extra); null: one token per UTF-8 byte."""

    def __post_init__(self):
        if self.name not in DATASETS and self.name not in TEXT_SETS:
            raise ConfigValueError(
                "name", f"unknown data set {self.name!r} (expected one of: {', '.join([*DATASETS, *TEXT_SETS])})"
            )
        text = self.name in TEXT_SETS
        for key in ("seq_len", "tokenizer"):
            if getattr(self, key) is not None and not text:
                raise ConfigValueError(key, f"only a text corpus (data.name: text) has one; data.name is {self.name}")
        if self.seq_len is not None and self.seq_len < 1:
            raise ConfigValueError("seq_len", f"expected an integer >= 1 or null, got {self.seq_len}")
        if self.subset is not None and self.subset <= 0:
            raise ConfigValueError("subset", f"expected an integer > 0 or null, got {self.subset}")
        if self.corrupt_images == "skip" and not self.scan_images:
            raise ConfigValueError("corrupt_images", "skip needs data.scan_images: true (the scan finds them)")


@dataclass
class Pool:
    dataset: Dataset
    """Yields (PIL image, int class)."""
    classes: list[str]
    source: str
    """Where the samples came from, for the report."""
    skipped: list[str] = field(default_factory=list)
    """Files left out as corrupt (data.corrupt_images: skip)."""


def default_cache() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


# --- digits ----------------------------------------------------------------------

DIGITS_COUNT = 1797


def _digits_complete(root: Path) -> bool:
    return (root / ".complete").is_file()


def write_digits_cache(root: Path) -> None:
    """Write scikit-learn's 8x8 digits once as PNGs, one folder per class.

    The folder is built beside its final place and renamed into it, so several
    ranks starting together, or a run killed half-way, never leave a partial cache.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root.parent.mkdir(parents=True, exist_ok=True)
    bunch = load_digits()
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=root.parent))
    try:
        # 0..16 intensities -> 0..255 grey levels
        pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        for i, (img, label) in enumerate(zip(pixels, bunch.target)):
            folder = tmp / str(int(label))
            folder.mkdir(exist_ok=True)
            Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
        (tmp / ".complete").write_text(f"{len(pixels)}\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not _digits_complete(root):  # lost a race to a process that did finish
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _digits(cfg: DataConfig) -> Pool:
    from harness.data.folder import OnceImageFolder

    root = Path(cfg.root) if cfg.root else default_cache() / "digits"
    if not _digits_complete(root):
        if root.exists() and any(root.iterdir()):
            raise BadInput(f"data.root: {root} exists but is not a complete digits cache; remove it")
        try:
            if root.exists():
                root.rmdir()
            write_digits_cache(root)
        except OSError as err:
            where = "data.root" if cfg.root else "HARNESS_CACHE"
            raise BadInput(f"{where}: cannot write the digits cache at {root} ({err.__class__.__name__}: "
                           f"{err.strerror or err}); point {where} at a writable folder") from None
    ds = OnceImageFolder(str(root))
    return Pool(ds, list(ds.classes), f"digits:{root}", _drop_corrupt(ds, cfg))


def _drop_corrupt(ds, cfg: DataConfig) -> list[str]:
    """Check every image of an ImageFolder before training; fail on the first bad one or leave them out.

    The scan decodes each file once (a second or two per ten thousand small images),
    which is cheaper than a run that dies hours in, on the one file no one looked at.
    It also finds images of different sizes, which no batch can stack without a resize.
    """
    if not cfg.scan_images:
        return []
    from harness.data.decoded import CachedLoader, decoded_set

    # One decode serves the scan and every epoch after it, and a second run decodes nothing
    # (data/decoded.py); the scan's verdicts are the cached ones.
    found, ds.decoded_cache = decoded_set(ds.samples, default_cache())
    if found.pixels is not None:
        ds.loader = CachedLoader(found)
    policy = cfg.corrupt_images
    bad = []
    first_of_size: dict[tuple[int, int], str] = {}
    for path, why, size in found.scan():
        if why is None:
            first_of_size.setdefault(size, path)
            continue
        if policy == "fail":
            raise BadInput(f"data.corrupt_images: {path} is not a readable image ({why}); "
                           "fix or remove it, or set data.corrupt_images: skip")
        bad.append(path)
    if len(first_of_size) > 1 and cfg.transforms.resize is None:
        (s1, p1), (s2, p2) = list(first_of_size.items())[:2]
        raise BadInput(f"data.transforms.resize: the images differ in size ({p1} is {s1[0]}x{s1[1]}, "
                       f"{p2} is {s2[0]}x{s2[1]}, width x height); set resize: [height, width]")
    if bad:
        keep = set(bad)
        ds.samples = [s for s in ds.samples if s[0] not in keep]
        ds.imgs, ds.targets = ds.samples, [t for _, t in ds.samples]
        if not ds.samples:
            raise BadInput(f"data.root: every image under {ds.root} is corrupt")
    return bad


# --- a user's folder ---------------------------------------------------------------

def _imagefolder(cfg: DataConfig) -> Pool:
    from harness.data.folder import OnceImageFolder

    if not cfg.root:
        raise BadInput("data.root: the imagefolder data set needs root: a folder with one sub-folder per class")
    root = Path(cfg.root)
    if not root.is_dir():
        raise BadInput(f"data.root: {root} is not a folder; expected one sub-folder per class")
    try:
        # ImageFolder refuses a class folder without images, and a root without classes.
        ds = OnceImageFolder(str(root))
    except FileNotFoundError as err:
        raise BadInput(f"data.root: {root}: {str(err).splitlines()[0]}") from None
    if len(ds.classes) < 2:
        raise BadInput(f"data.root: {root} holds {len(ds.classes)} class folder ({', '.join(ds.classes)}); "
                       "a classifier needs at least 2")
    if ds.duplicates:
        print(f"warning: data.root: {len(ds.duplicates)} paths lead to files or folders already found "
              f"through another path (symlinks), each kept once; first: {ds.duplicates[0]}",
              file=sys.stderr)
    return Pool(ds, list(ds.classes), f"imagefolder:{root}", _drop_corrupt(ds, cfg))


# --- synthetic ---------------------------------------------------------------------

def _fake(cfg: DataConfig) -> Pool:
    from torchvision.datasets import FakeData

    f = cfg.fake
    ds = FakeData(size=f.size, image_size=tuple(f.image_shape), num_classes=f.num_classes)
    return Pool(ds, [str(i) for i in range(f.num_classes)], "fake")


# --- torchvision's downloadable sets, read from a local root -------------------------

_TV_LAYOUT = {
    "mnist": ("MNIST", "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
              "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, or their .gz)"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/ (the four idx files of Fashion-MNIST, or their .gz)"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/ (cifar-10-python.tar.gz extracted: data_batch_1..5, test_batch)"),
}


def _torchvision_set(cfg: DataConfig) -> Pool:
    import torchvision.datasets as tvd

    cls_name, layout = _TV_LAYOUT[cfg.name]
    if not cfg.root:
        raise BadInput(f"data.root: {cfg.name} needs root, a folder holding {layout}")
    root = Path(cfg.root)
    cls = getattr(tvd, cls_name)
    try:
        parts = [cls(str(root), train=train, download=cfg.download) for train in (True, False)]
    except RuntimeError as err:
        if "not found" in str(err).lower() or "corrupted" in str(err).lower():
            raise BadInput(
                f"data.root: {cfg.name} files not found under {root}; put them in {root}/{layout}, "
                "or set data.download: true"
            ) from None
        raise
    # Both official parts form one pool that data.split divides, like every other set.
    return Pool(ConcatDataset(parts), list(parts[0].classes), f"{cfg.name}:{root}")


DATASETS: dict[str, Callable[[DataConfig], Pool]] = {
    "digits": _digits,
    "imagefolder": _imagefolder,
    "fake": _fake,
    "mnist": _torchvision_set,
    "fashion_mnist": _torchvision_set,
    "cifar10": _torchvision_set,
}


TEXT_SETS = ("text",)
"""Data sets of text, for a language model: harness/data/text.py builds them, not ``load_pool``."""


def load_pool(cfg: DataConfig) -> Pool:
    if cfg.root and Path(cfg.root).exists() and not Path(cfg.root).is_dir():
        raise BadInput(f"data.root: {cfg.root} is a file; expected a folder")
    return DATASETS[cfg.name](cfg)
