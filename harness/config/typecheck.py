"""Checking a parsed YAML value against a type, naming the dotted key that does not fit.

The one reading of type hints for both schemas: the report's TypedDicts are walked here
(``check_block``), and the config's dataclasses are built by config/run.py with the same
``fits`` and ``describe``, so a wrong value reads alike in either file. Checks are by
kind (a mapping, a list, a number, one of some literals), never coercions, and a
block may hold keys its TypedDict does not name: a newer writer may add one.
"""

# No ``from __future__ import annotations``: the hints are read as live objects.
import dataclasses
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


_NAMES = {type(None): "null", int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


def _is_block(tp) -> bool:
    """A mapping of named keys: a report's TypedDict or a config's dataclass."""
    return is_typeddict(tp) or dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict


def describe(tp) -> str:
    """What a value of type ``tp`` is, for an error: ``a number or null``, ``one of sgd, adam``."""
    origin = typing.get_origin(tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if _is_block(tp):
        return "a mapping"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if args and args[0] in _NAMES and args[0] is not type(None):
            return f"a list of {_NAMES[args[0]].split(' ', 1)[-1]}s"
        return "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if set(args) >= {int, float}:
            args = tuple(a for a in args if a is not int)  # an integer is a number
        return " or ".join(describe(a) for a in args)
    return "any value"


def fits(value, tp) -> bool:
    """Shallow: whether ``value`` has the kind ``tp`` asks for (children checked apart).

    Kinds, never coercions: True is no integer, 1 is a number, NaN and inf are none.
    """
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
    if _is_block(tp):
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in typing.get_args(tp))
    raise TypeError(f"schema type {tp!r} is not supported")


def _check(value, tp, key: str) -> None:
    if not fits(value, tp):
        raise ValueError(f"{key}: expected {describe(tp)}, got {short(value)}")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if fits(value, arg):
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
