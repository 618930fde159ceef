"""Reading YAML the way a user means it, and refusing what YAML would silently resolve.

PyYAML implements YAML 1.1, which reads ``3e-4`` (no dot) as the *string* "3e-4";
every ML user writes learning rates that way, so a number with an exponent is a
number here, as in YAML 1.2. A key given twice in one mapping is refused (PyYAML
keeps the last silently), a document nested deeper than any config needs is refused
before Python's recursion limit turns it into a traceback, and a file is read with a
size cap, so ``/dev/zero`` or a mistyped multi-gigabyte path is refused at once.
This is for files people write (configs, sweep specs); what harness commands wrote
(reports, sweep.yaml) is read by safe_yaml.py, which refuses aliases outright.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import BadInput

MAX_BYTES = 1 << 20
"""A config or a sweep spec is a few kilobytes; a megabyte is no config."""
MAX_DEPTH = 64
"""Nesting deeper than any config needs (a config is about four levels)."""

# YAML 1.2's float: the exponent form needs no dot and its sign is optional.
_FLOAT_1_2 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$""")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 exponent floats, no duplicate keys and a depth limit."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise BadInput(f"nested more than {MAX_DEPTH} levels deep at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _refuse_duplicate_keys(node)
        return node


def _refuse_duplicate_keys(root: yaml.Node) -> None:
    """A key given twice in one mapping, named by its dotted path and both lines."""
    stack, seen = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: its mapping is checked once, however often it is used
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        first_line: dict[tuple, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            dotted = f"{path}.{key_node.value}" if path else key_node.value
            ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if ident in first_line:
                raise BadInput(f"{dotted}: the key is given twice, at lines {first_line[ident]} and {line}")
            first_line[ident] = line
            stack.append((value_node, dotted))


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789"))


def loads(text: str) -> Any:
    """Parse one YAML document; BadInput (without a file name) for anything refused."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"malformed YAML{where}") from None
    except RecursionError:  # a guard above MAX_DEPTH should make this unreachable
        raise BadInput(f"nested more than {MAX_DEPTH} levels deep") from None


def read_text(path: Path, what: str = "config") -> str:
    """The file's text, refusing a missing, unreadable, binary or oversized file in one line."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such {what} file") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise BadInput(f"{path}: cannot read {what} ({err.__class__.__name__})") from None
    if len(data) > MAX_BYTES:
        raise BadInput(f"{path}: larger than {MAX_BYTES // 1024} KiB; a {what} file is a few KiB of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: cannot read {what} (not UTF-8 text)") from None
