"""YAML written by harness commands, read back without its dangerous corners.

Every reader of a file a harness command wrote (report.yaml, eval.yaml, sweep.yaml,
a checkpoint's state) goes through ``read_yaml`` (or ``read_text`` + ``loads``):

- a size cap, counted on the bytes read, not on ``st_size`` (``/dev/zero`` and
  a FIFO report 0), and only regular files are opened;
- no aliases: ``yaml.safe_load`` expands them, and a few nested ones (the "billion
  laughs") grow a small file into gigabytes. The writer never emits one, so an
  alias is refused before anything is expanded;
- a depth cap: PyYAML composes nodes recursively, so a 5,000-deep list would end in
  a RecursionError traceback; a report nests five levels, plus its config's own;
- libyaml's scanner and parser when PyYAML has them: a long run's report is tens of
  MB of step times, which the pure-Python scanner reads about 5x slower.

Files people write (configs, sweep specs) go through strict_yaml.py instead, which
allows their anchors and refuses what YAML would resolve silently.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from harness.config import strict_yaml
from harness.errors import BadInput

MAX_REPORT_BYTES = 64 * 1024 * 1024
"""About 1.5 million measured steps (each writes two ~21-byte figures under ``raw``);
nothing larger is read, and nothing this large is parsed whole by the commands that
skip ``raw`` (report.load_report)."""
MAX_DEPTH = strict_yaml.MAX_DEPTH + 8
"""A report nests five levels of its own, but it holds the run's config one level down,
and a config may nest up to strict_yaml's cap (model.kwargs is the user's)."""

try:  # libyaml's parser hands events to the Python composer below, which caps the depth
    from yaml.cyaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml: the pure-Python reader, slower but the same
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _HarnessLoader(Composer, _Parser, SafeConstructor, Resolver):
    """A safe loader that refuses aliases before expanding them and caps the nesting.

    Composer comes before the parser: libyaml's CParser composes in C, where
    neither check could be made.
    """

    def __init__(self, stream, max_depth: int = MAX_DEPTH):
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth, self._max_depth = 0, max_depth

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"YAML aliases are refused; found the alias *{event.anchor}", event.start_mark)
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise _Refused(f"nested more than {self._max_depth} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        # A writer never gives a key twice: a second one means a hand edit, and PyYAML would
        # keep the last silently (a sweep row's status overwritten, say).
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in seen:
                    raise _Refused(f"the key {key.value!r} is given twice", key.start_mark)
                seen.add((key.tag, key.value))
        return node


class _Refused(Exception):
    def __init__(self, why: str, mark):
        super().__init__(why)
        self.why, self.mark = why, mark


def _line(mark) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def loads(text: str, where: str | Path, what: str = "report", max_depth: int = MAX_DEPTH) -> Any:
    """Parse one YAML document a harness command wrote; BadInput naming ``where``."""
    loader = _HarnessLoader(text, max_depth)
    try:
        return loader.get_single_data()
    except _Refused as err:
        raise BadInput(f"{where}: not a {what} ({err.why}{_line(err.mark)})") from None
    except yaml.MarkedYAMLError as err:
        # libyaml stops at 1000 levels in its own scanner, before the composer's cap sees them.
        why = f"nested more than {max_depth} levels deep" if "nesting depth" in str(err.problem) else "malformed YAML"
        raise BadInput(f"{where}: not a {what} ({why}{_line(err.problem_mark)})") from None
    except yaml.YAMLError:
        raise BadInput(f"{where}: not a {what} (malformed YAML)") from None
    finally:
        loader.dispose()


def read_text(path: Path, what: str = "report", max_bytes: int = MAX_REPORT_BYTES) -> str:
    """The file's text: a regular file, at most ``max_bytes``, UTF-8; else BadInput in one line."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        raise BadInput(f"{path}: no such {what}") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot read the {what} ({err.strerror or err.__class__.__name__})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise BadInput(f"{path}: not a {what} ({kind})")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as err:
            raise BadInput(f"{path}: cannot read the {what} ({err.strerror or err.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise BadInput(f"{path}: not a {what} (larger than {max_bytes >> 20} MB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise BadInput(f"{path}: not a {what} (not UTF-8 text at line {line})") from None


def read_yaml(path: str | Path, what: str = "report") -> Any:
    """Parse a YAML file that a harness command wrote: bounded size and depth, no aliases."""
    return loads(read_text(Path(path), what), path, what)
