"""eval.yaml's schemas: the keys every ``harness evaluate`` writes, then what an image
classifier's and a language model's evaluation add (docs/report.md)."""

# No ``from __future__ import annotations``: the schemas read Required[...] from live annotations.
from typing import Any, Required, TypedDict


class EvalCommon(TypedDict, total=False):
    """The keys of every eval.yaml, image or text."""
    kind: Required[str]
    run: Required[str]
    model: str
    data: Required[dict[str, Any]]
    accuracy: Required[float | None]
    loss: Required[float | None]
    samples: Required[int]
    run_report: dict[str, Any] | None
    environment: Required[dict[str, Any]]
    mode: dict[str, Any]
    wall_s: float
    config: Required[dict[str, Any]]


class EvalReport(EvalCommon, total=False):
    """eval.yaml of an image classifier's run."""
    classes: Required[list[str]]
    per_class: Required[dict[str, Any]]
    confusion_matrix: Required[list[list[int]]]


class TextEvalReport(EvalCommon, total=False):
    """eval.yaml of a language model's run."""
    perplexity: Required[float | None]
    bits_per_byte: Required[float | None]
    tokens: Required[int]
