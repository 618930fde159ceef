"""An ImageFolder that follows symlinks but reaches each real folder and file once.

torchvision's ImageFolder walks with ``os.walk(followlinks=True)``: a link back to
an ancestor (``loop -> ..``) is walked round and round, and a file reached through
two paths lands in the pool twice, so the same image can sit in train and in test.
Here a loop is refused with the link's path, and a folder or file already found
through another path is kept once (the first in sorted order) and listed in
``duplicates``. The order of samples is torchvision's: folders by path, files by name.
"""

from __future__ import annotations

import os
from typing import Callable

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import has_file_allowed_extension

from harness.errors import BadInput


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)  # follows links: the real folder or file
    return st.st_dev, st.st_ino


def _walk_class(top: str, root_ident: tuple, seen: set, duplicates: list[str]) -> list[tuple[str, list[str]]]:
    """(folder, sorted file names) for every real folder under ``top``, each once."""
    found = []
    stack = [(top, (root_ident,))]  # (folder, identities of its ancestors)
    while stack:
        folder, ancestors = stack.pop()
        ident = _identity(folder)
        if ident in ancestors:
            raise BadInput(f"data.root: {folder} links back to a folder above it (a symlink loop); "
                           "remove the link")
        if ident in seen:
            duplicates.append(folder)
            continue
        seen.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            raise BadInput(f"data.root: cannot list {folder} ({err.__class__.__name__})") from None
        files = []
        for entry in entries:
            if entry.is_dir():  # follows links, as torchvision does
                stack.append((entry.path, ancestors + (ident,)))
            else:  # a broken link too: the image scan then names it
                files.append(entry.name)
        found.append((folder, files))
    return sorted(found)


class OnceImageFolder(ImageFolder):
    """ImageFolder whose scan reaches each real folder and file once; see the module doc."""

    def __init__(self, root: str, **kwargs):
        self.duplicates: list[str] = []
        super().__init__(root, **kwargs)

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], extensions=None,
                     is_valid_file: Callable[[str], bool] | None = None, allow_empty: bool = False):
        if is_valid_file is None:
            is_valid_file = lambda p: has_file_allowed_extension(p, extensions)  # noqa: E731
        seen: set = set()
        root_ident = _identity(directory)
        instances, available = [], set()
        for name in sorted(class_to_idx):
            top = os.path.join(directory, name)
            if not os.path.isdir(top):
                continue
            for folder, files in _walk_class(top, root_ident, seen, self.duplicates):
                for fname in files:
                    path = os.path.join(folder, fname)
                    if not is_valid_file(path):
                        continue
                    try:
                        ident = _identity(path)
                    except OSError:  # a broken link: kept, for the scan to report
                        ident = ("missing", path)
                    if ident in seen:
                        self.duplicates.append(path)
                        continue
                    seen.add(ident)
                    instances.append((path, class_to_idx[name]))
                    available.add(name)
        empty = set(class_to_idx) - available
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(sorted(empty))}.")
        return instances
