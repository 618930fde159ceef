"""Two runs that must have ended alike: a resumed run against an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.report.io import load_report


def weights(folder: Path) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = load_report(a), load_report(b)
    assert rb["status"] == "completed"
    assert [d["epoch"] for d in rb["accuracy"]["dev"]] == [d["epoch"] for d in ra["accuracy"]["dev"]]
    assert ra["accuracy"]["dev"] == rb["accuracy"]["dev"]  # train loss, dev accuracy and loss, per epoch
    assert ra["accuracy"]["test_accuracy"] == rb["accuracy"]["test_accuracy"]
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
