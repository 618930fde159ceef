"""A folder's images decoded once, kept as one file of tensors keyed by the files' fingerprint.

Without it a folder-backed set (digits, imagefolder) is decoded twice per run before the
first epoch ends: the scan before training (datasets._drop_corrupt: every file, to find a
corrupt one early) and again at every epoch by ImageFolder's loader. The scan here decodes
each file once into the pixels ImageFolder's loader would have made (``Image.open(path)
.convert("RGB")``), writes them under ``$HARNESS_CACHE/decoded/`` and hands the data set a
loader that rebuilds each PIL image from them: bit-identical samples, transforms and
augmentation unchanged. The next run whose files have the same fingerprint reads the file
instead of decoding, and scans nothing.

The key is the fingerprint of the scanned files (each path, label and the sha256 of its
bytes, in the data set's order) and of the decode (FORMAT, the mode).
An entry is trusted only after its key, its file list and the sha256 of its pixels match;
anything else (a damaged file, another version's, a torn write) is ignored and written
again. Writes are atomic (files/atomic.py); under DDP the main process builds it first
(build.py's main_process_first) and the other ranks read it. ``HARNESS_DECODE_CACHE=0``
turns it off (the scan then decodes every run, as before); sets whose pixels exceed
LIMIT_BYTES are scanned but neither kept in memory nor cached.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
"""Bump when what is stored or how a file is decoded changes: older entries then miss."""
MODE = "RGB"
"""torchvision's ImageFolder loader (pil_loader) converts every image to RGB."""
LIMIT_BYTES = 1 << 30
ENV = "HARNESS_DECODE_CACHE"

DECODES = [0]
"""Files this process has decoded here (the tests count a second run's)."""


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def fingerprint(samples: list[tuple[str, int]]) -> str:
    """The key: the files' contents (path, label and the sha256 of each file's bytes) in order,
    and the decode. Contents, not sizes and modification times: a file replaced by another of
    the same size with its time kept (``cp -p``, ``rsync -t``) must miss. Reading the bytes is
    cheap beside decoding them (the 1,797 digits: ~1.3 MB)."""
    h = hashlib.sha256(f"harness-decoded\0{FORMAT}\0{MODE}\n".encode())
    for path, label in samples:
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            h.update(f"{path}\0{label}\0{digest}\n".encode())
        except OSError:
            h.update(f"{path}\0{label}\0missing\n".encode())
    return h.hexdigest()


@dataclass
class Decoded:
    """Every scanned file: why it did not decode (None: it did), its (width, height), its pixels."""
    paths: list[str]
    why: list[str | None]
    sizes: list[tuple[int, int] | None]
    pixels: torch.Tensor | None
    """uint8, each decoded image's height x width x 3 bytes one after another; None: not kept."""
    offsets: list[int]

    def scan(self) -> list[tuple[str, str | None, tuple[int, int] | None]]:
        return list(zip(self.paths, self.why, self.sizes))

    def digest(self) -> str:
        return hashlib.sha256(self.pixels.numpy().tobytes()).hexdigest()


def _decode(path: str):
    """(why it failed or None, (width, height), H x W x 3 uint8 array)."""
    from PIL import Image

    DECODES[0] += 1
    try:
        with open(path, "rb") as f, Image.open(f) as img:
            img.load()  # a truncated file fails here, not at the first epoch
            return None, img.size, np.asarray(img.convert(MODE))
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        return f"{err.__class__.__name__}: {err}", None, None


def decode_all(paths: list[str], keep: bool = True) -> Decoded:
    why, sizes, arrays, offsets, total = [], [], [], [], 0
    for path in paths:
        bad, size, arr = _decode(path)
        why.append(bad)
        sizes.append(size)
        offsets.append(total)
        if arr is not None and keep:
            total += arr.size
            keep = total <= LIMIT_BYTES
            arrays.append(arr.reshape(-1))
    pixels = torch.from_numpy(np.concatenate(arrays)) if keep and arrays else None
    if keep and not arrays:
        pixels = torch.zeros(0, dtype=torch.uint8)
    return Decoded(paths, why, sizes, pixels, offsets)


def cache_file(cache: Path, key: str) -> Path:
    """``cache``: the harness's cache folder (``$HARNESS_CACHE``, datasets.default_cache)."""
    return Path(cache) / "decoded" / f"{key[:40]}.pt"


def _load(path: Path, key: str, paths: list[str]) -> Decoded | None:
    """The entry at ``path`` if it is whole and this key's; None otherwise (never trusted unchecked)."""
    try:
        raw = torch.load(path, weights_only=True)
        d = Decoded(list(raw["paths"]), list(raw["why"]),
                    [tuple(s) if s is not None else None for s in raw["sizes"]], raw["pixels"], list(raw["offsets"]))
        ok = (raw["format"] == FORMAT and raw["key"] == key and d.paths == paths
              and len(d.why) == len(d.sizes) == len(d.offsets) == len(paths)
              and d.pixels.dtype == torch.uint8 and raw["sha256"] == d.digest())
        return d if ok else None
    except Exception:  # noqa: BLE001 -- any damage at all: decode again
        return None


def _save(path: Path, key: str, d: Decoded) -> None:
    from harness.files.atomic import write_atomic

    blob = {"format": FORMAT, "key": key, "paths": d.paths, "why": d.why,
            "sizes": [list(s) if s is not None else None for s in d.sizes],
            "offsets": d.offsets, "pixels": d.pixels, "sha256": d.digest()}
    try:
        write_atomic(path, lambda f: torch.save(blob, f), binary=True)
    except OSError:  # a cache that cannot be written costs the next run a decode, not this run
        pass


def decoded_set(samples: list[tuple[str, int]], cache: Path) -> tuple[Decoded, str]:
    """Every file of ``samples`` decoded, from the cache or now; and where it came from
    (``hit``, ``written``, ``off``: the cache is disabled or the pixels too large)."""
    paths = [p for p, _ in samples]
    if not enabled():
        return decode_all(paths, keep=False), "off"
    key = fingerprint(samples)
    where = cache_file(cache, key)
    if where.is_file():
        found = _load(where, key, paths)
        if found is not None:
            return found, "hit"
    d = decode_all(paths)
    if d.pixels is None:
        return d, "off"
    _save(where, key, d)
    return d, "written"


class CachedLoader:
    """ImageFolder's ``loader``: the PIL image of a decoded file, as ``pil_loader`` returns it."""

    def __init__(self, d: Decoded):
        self.d = d
        self.index = {p: i for i, p in enumerate(d.paths) if d.why[i] is None}

    def __call__(self, path: str):
        from PIL import Image

        i = self.index.get(path)
        if i is None:  # not among the decoded files: the ordinary loader
            from torchvision.datasets.folder import default_loader

            return default_loader(path)
        w, h = self.d.sizes[i]
        start = self.d.offsets[i]
        arr = self.d.pixels[start:start + h * w * 3].numpy().reshape(h, w, 3)
        return Image.fromarray(arr)
