"""The overhead benchmarks' hand-written loops compute what ``harness run`` computes.

benchmarks/test_overhead.py and test_lm_overhead.py divide the harness's throughput by
a hand loop's (benchmarks/plain_loop.py, plain_lm_loop.py). The ratio measures the
harness's cost only when both sides do the same work: the same data, model, initial
weights, optimizer and schedule. Equal per-step training losses from the same seed say
they do: a different batch order, augmentation draw, dropout draw, initial weight or
learning rate shows in the first steps' losses. The harness's losses are read from its
metrics.jsonl, logged every step.
"""

from __future__ import annotations

import json

import pytest

from harness.config.run import load_config
from support.cli import run_in_process

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

SAME = ["tracking.every_n_steps=1", "output.progress=false", "output.checkpoint_every_epoch=false",
        "output.save_model=false", "runtime.device=cpu"]


def harness_losses(recipe: str, overrides: list[str], out) -> list[float]:
    assert run_in_process([recipe, *overrides], out) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "interval"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))  # one line per step
    return [r["train_loss"] for r in steps]


def assert_same_losses(hand: list[float], harness: list[float], steps: int) -> None:
    assert len(hand) == len(harness) == steps
    assert len(set(hand)) == steps  # the losses move: equal sequences are not trivially equal
    assert hand == pytest.approx(harness, rel=1e-6, abs=0)


def test_the_digits_hand_loop_reaches_the_harness_losses(tmp_path):
    from benchmarks.plain_loop import plain_loop

    # Two epochs of 20 steps sized the schedule; 25 steps cross the epoch boundary, where
    # both sides re-seed the order, the augmentation and dropout.
    overrides = [*SAME, "train.epochs=2", "train.max_steps=25"]
    harness = harness_losses("configs/digits_cnn.yaml", overrides, tmp_path / "run")
    hand = plain_loop(load_config("configs/digits_cnn.yaml", overrides), keep_losses=True)
    assert_same_losses(hand.losses, harness, 25)
    assert hand.measured_steps == 15  # after the recipe's 10 warm-up steps, as the harness's window


def test_the_lm_hand_loop_reaches_the_harness_losses(tmp_path):
    from benchmarks.plain_lm_loop import plain_lm_loop

    overrides = [*SAME, "train.max_steps=20"]
    harness = harness_losses("configs/tiny_gpt.yaml", overrides, tmp_path / "run")
    hand = plain_lm_loop(load_config("configs/tiny_gpt.yaml", overrides), keep_losses=True)
    assert_same_losses(hand.losses, harness, 20)


def test_a_recipe_the_hand_loop_does_not_write_out_is_refused():
    from benchmarks.plain_loop import check_recipe

    with pytest.raises(ValueError, match="optim.name is 'sgd'"):
        check_recipe(load_config("configs/digits_cnn.yaml", ["optim.name=sgd"]))
