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
bytes, in the data set's order) and of the decode (FORMAT, the mode). Reading every file to
hash it is most of a warm start's data phase, so the key is also kept under the files' stat
(``content_key``): size, modification and change times, inode. A file rewritten in any way
gets a new change time (ctime, which no program sets back short of resetting the system
clock), so an unchanged stat means unchanged bytes, once the files are older than
SETTLED_S: a file changed twice within one tick of the kernel's coarse clock could keep its
ctime (git's "racy clean" case), so files that recent are hashed every time and their stat
is not kept.
An entry is trusted only after its key, its file list and the sha256 of its pixels match;
anything else (a damaged file, another version's, a torn write) is ignored and written
again. Writes are atomic (files/atomic.py); under DDP the main process builds it first
(build.py's main_process_first) and the other ranks read it. ``HARNESS_DECODE_CACHE=0``
turns it off (the scan then decodes every run, as before); sets whose pixels exceed
LIMIT_BYTES are scanned but neither kept in memory nor cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = 2
"""Bump when what is stored or how a file is decoded changes: older entries then miss."""
MODE = "RGB"
"""torchvision's ImageFolder loader (pil_loader) converts every image to RGB."""
LIMIT_BYTES = 1 << 30
ENV = "HARNESS_DECODE_CACHE"
SETTLED_S = 10.0
"""Files whose stat is kept: none changed less than this long ago (far above the clock's tick
and small clock steps; a file system on another machine with its clock ahead is covered too,
one behind by more than this is not)."""

DECODES = [0]
"""Files this process has decoded here (the tests count a second run's)."""
HASHED = [0]
"""Sets of files this process has hashed for their key (the tests count a second run's)."""


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def fingerprint(samples: list[tuple[str, int]]) -> str:
    """The key: the files' contents (path, label and the sha256 of each file's bytes) in order,
    and the decode. Contents, not sizes and modification times: a file replaced by another of
    the same size with its time kept (``cp -p``, ``rsync -t``) must miss. Reading the bytes is
    cheap beside decoding them (the 1,797 digits: ~1.3 MB)."""
    HASHED[0] += 1
    h = hashlib.sha256(f"harness-decoded\0{FORMAT}\0{MODE}\n".encode())
    for path, label in samples:
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            h.update(f"{path}\0{label}\0{digest}\n".encode())
        except OSError:
            h.update(f"{path}\0{label}\0missing\n".encode())
    return h.hexdigest()


def _stat(samples: list[tuple[str, int]]) -> tuple[str | None, bool]:
    """(the digest of every file's path, label and stat; whether all are older than SETTLED_S).

    None where a file cannot be stat'ed (the fingerprint names it missing). The clock is read
    before the first stat: a file changed after its stat has a later ctime than the one kept.
    """
    settled_before = time.time_ns() - int(SETTLED_S * 1e9)
    h = hashlib.sha256(f"harness-decoded-stat\0{FORMAT}\0{MODE}\n".encode())
    settled = True
    for path, label in samples:
        try:
            st = os.stat(path)
        except OSError:
            return None, False
        # A ctime of 0: a file system that keeps none, whose stat cannot be trusted.
        settled = settled and 0 < st.st_ctime_ns < settled_before and st.st_mtime_ns < settled_before
        h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n"
                 .encode())
    return h.hexdigest(), settled


def _memo(cache: Path, stat: str) -> Path:
    return Path(cache) / "decoded" / f"{stat[:40]}.key"


def content_key(samples: list[tuple[str, int]], cache: Path) -> str:
    """``fingerprint(samples)``, read back from ``cache`` where the files' stat is the one it was
    hashed under (see the module doc); hashed now otherwise, and kept if the files are settled."""
    stat, settled = _stat(samples)
    if stat is not None:
        try:
            kept_stat, key = _memo(cache, stat).read_text().split()
            if kept_stat == stat and len(key) == 64:
                return key
        except (OSError, ValueError):  # none yet, or damaged: hash
            pass
    key = fingerprint(samples)
    if stat is not None and settled:
        from harness.files.atomic import write_text_atomic

        try:
            write_text_atomic(_memo(cache, stat), f"{stat} {key}\n")
        except OSError:  # the next run hashes again
            pass
    return key


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
        meta = json.loads(raw["meta"])
        d = Decoded(meta["paths"], meta["why"], [tuple(s) if s is not None else None for s in meta["sizes"]],
                    raw["pixels"], meta["offsets"])
        ok = (raw["format"] == FORMAT and raw["key"] == key and d.paths == paths
              and len(d.why) == len(d.sizes) == len(d.offsets) == len(paths)
              and d.pixels.dtype == torch.uint8 and raw["sha256"] == d.digest())
        return d if ok else None
    except Exception:  # noqa: BLE001 -- any damage at all: decode again
        return None


def _save(path: Path, key: str, d: Decoded) -> None:
    from harness.files.atomic import write_atomic

    # The lists as one JSON string: torch's weights-only unpickler reads thousands of small
    # objects one by one in Python (~25 ms for the digits), one string at once.
    meta = json.dumps({"paths": d.paths, "why": d.why, "offsets": d.offsets,
                       "sizes": [list(s) if s is not None else None for s in d.sizes]})
    blob = {"format": FORMAT, "key": key, "meta": meta, "pixels": d.pixels, "sha256": d.digest()}
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
    key = content_key(samples, cache)
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
