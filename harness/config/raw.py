"""A config file and its ``KEY=VALUE`` overrides as plain YAML, before any validation.

Torch-free on purpose: a command that must not import torch (the parent of whole-run
repeats, ``harness sweep``) can still read what a config asks for; ``config.py`` turns
the result into typed dataclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config import strict_yaml
from harness.errors import BadInput


def parse_override(text: str) -> tuple[list[str], Any]:
    """``loader.batch_size=128`` -> (["loader", "batch_size"], 128); values are YAML."""
    if "=" not in text:
        raise BadInput(f"override {text!r}: expected KEY=VALUE, e.g. loader.batch_size=128")
    key, raw_value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise BadInput(f"override {text!r}: {key!r} is not a dotted key")
    try:
        value = strict_yaml.loads(raw_value) if raw_value.strip() else None
    except BadInput as err:
        raise BadInput(f"override {text!r}: the value is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(parts[: depth + 1])
                raise BadInput(f"override {text!r}: {dotted} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    text = strict_yaml.read_text(path)
    try:
        raw = strict_yaml.loads(text)
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping of sections at the top level")
    return raw
