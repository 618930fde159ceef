"""YAML written by harness commands, read back without its dangerous corners.

``yaml.safe_load`` still expands aliases: a few nested ones (the "billion laughs")
grow a small file into gigabytes, and an error message that prints the value then
exhausts memory. Files the harness writes never hold an alias, so they are refused
before anything is expanded; and a file far larger than any report is not read.
Files people write (configs, sweep specs) go through strict_yaml.py instead, which
allows their anchors and refuses what YAML would resolve silently.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from harness.errors import BadInput

MAX_REPORT_BYTES = 64 * 1024 * 1024
"""A report of a long run with every step time is a few MB; anything near this is not one."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases before expanding them.

    The writer never emits one; a report holding ``*name`` is hand-made, and a few
    nested aliases expand to gigabytes (the "billion laughs").
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"found the alias *{event.anchor}", event.start_mark)
        return super().compose_node(parent, index)


def read_capped(path: Path, what: str = "report", max_bytes: int = MAX_REPORT_BYTES) -> str:
    """A file's text, read with a cap on the bytes actually read: ``st_size`` says 0 for
    ``/dev/zero`` (or a symlink to it), which would then be read until memory runs out.
    Anything but a regular file is refused (opened without blocking: a FIFO would wait for a writer)."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BadInput(f"{path}: cannot read the {what} (not a regular file)")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such {what}") from None
    except OSError as err:  # a folder, no permission, an unreadable device
        raise BadInput(f"{path}: cannot read the {what} ({err.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise BadInput(f"{path}: not a {what} (larger than {max_bytes >> 20} MB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: cannot read the {what} ({err.__class__.__name__})") from None


def read_yaml(path: Path, what: str = "report"):
    """Parse a YAML file that a harness command wrote: no aliases, bounded size."""
    text = read_capped(path, what)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.composer.ComposerError as err:
        if "alias" in str(err.problem):
            line = err.problem_mark.line + 1 if err.problem_mark else "?"
            raise BadInput(f"{path}: not a {what} (YAML aliases are refused; {err.problem} at line {line})") \
                from None
        raise BadInput(f"{path}: not a {what} (malformed YAML)") from None
    except yaml.YAMLError:
        raise BadInput(f"{path}: not a {what} (malformed YAML)") from None
