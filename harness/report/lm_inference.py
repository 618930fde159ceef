"""inference.yaml (``kind: lm_inference``): a language model's prefill and decode figures.

``harness bench-inference RUN`` writes it for a language model's run (harness/infer/text_bench.py)
into ``RUN/inference/``; ``harness compare`` reads it beside each run's report.yaml. This module is
the file's name, its kind and its reader: torch-free, so compare stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import BadInput
from harness.report.io import read_yaml_of

KIND = "lm_inference"
FOLDER, NAME = "inference", "inference.yaml"
"""``harness bench-inference RUN`` writes RUN/inference/inference.yaml unless given --output."""


def beside(report_path: Path) -> Path:
    """Where the run of ``report_path`` (its report.yaml) keeps its language-model inference file."""
    return Path(report_path).parent / FOLDER / NAME


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rows(body: dict, key: str, size: str, value: str, path: Path) -> list[dict]:
    rows = body.get(key)
    if not isinstance(rows, list):
        raise BadInput(f"{path}: {key}: expected a list of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        top, _, inner = value.partition(".")
        figure = row.get(top) if isinstance(row, dict) else None
        figure = figure.get(inner) if inner and isinstance(figure, dict) else (None if inner else figure)
        if not isinstance(row, dict) or not isinstance(row.get(size), int) or not _number(figure):
            raise BadInput(f"{path}: {key}[{i}]: expected {size} (an integer) and {value} (a number)")
    return rows


def read(path: Path) -> dict:
    """The file's body, its rows checked (BadInput naming the file and key otherwise)."""
    body = read_yaml_of(path, what="language-model inference file")
    if not isinstance(body, dict) or body.get("kind") != KIND:
        raise BadInput(f"{path}: not a language model's inference file (expected kind: {KIND})")
    _rows(body, "prefill", "prompt_tokens", "latency_ms.p50", path)
    _rows(body, "decode", "batch_size", "tokens_per_s", path)
    return body


def figures(body: dict) -> dict[tuple[str, int], float]:
    """``("prefill_ms_p50", prompt tokens)`` -> the p50 latency of a prefill of that prompt;
    ``("decode_tokens_per_s", batch)`` -> the decode tokens/s at that batch size."""
    out = {("prefill_ms_p50", r["prompt_tokens"]): float(r["latency_ms"]["p50"]) for r in body["prefill"]}
    out.update({("decode_tokens_per_s", r["batch_size"]): float(r["tokens_per_s"]) for r in body["decode"]})
    return out
