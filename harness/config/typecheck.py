"""Checking a parsed YAML value against a TypedDict schema, naming the dotted key that does not fit.

report.py's schema is TypedDicts; this walks a value against one. Checks are by
kind (a mapping, a list, a number, one of some literals), never coercions, and a
block may hold keys its TypedDict does not name: a newer writer may add one.
"""

# No ``from __future__ import annotations``: the hints are read as live objects.
import math
import sys
import types
import typing
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):
    from typing import is_typeddict
else:  # typing_extensions comes with torch
    from typing_extensions import is_typeddict


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if tp in (int, float, str, bool):
        return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}[tp]
    if is_typeddict(tp) or origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if set(args) >= {int, float}:
            args = tuple(a for a in args if a is not int)
        return " or ".join(_describe(a) for a in args)
    return "any value"


def _fits(value, tp) -> bool:
    """Shallow: whether ``value`` has the kind ``tp`` asks for (children checked apart)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if is_typeddict(tp) or origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if origin is Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    raise TypeError(f"report schema type {tp!r} is not supported")


def _check(value, tp, key: str) -> None:
    if not _fits(value, tp):
        raise ValueError(f"{key}: expected {_describe(tp)}, got {short(value)}")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if _fits(value, arg):
                return _check(value, arg, key)
    if is_typeddict(tp):
        check_block(value, tp, key)
    elif origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            _check(v, item, f"{key}[{i}]")
    elif origin is dict:
        _, item = typing.get_args(tp) or (str, Any)
        for k, v in value.items():
            _check(v, item, f"{key}.{k}")
    return None


def check_block(block: dict, schema, prefix: str) -> None:
    hints = typing.get_type_hints(schema)
    for key in sorted(schema.__required_keys__):
        if key not in block:
            raise ValueError(f"{prefix + '.' if prefix else ''}{key}: required key missing")
    for key, value in block.items():
        if key in hints:
            _check(value, hints[key], f"{prefix}.{key}" if prefix else str(key))
