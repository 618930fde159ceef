"""The task seam: image classification as the loop computes it today, and causal LM."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.run.loop import TrainParts, evaluate
from harness.run.optim import LossConfig, build_loss
from harness.task import TASKS, CausalLM, Classification, Evaluation, Task


pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_tasks_meet_the_interface():
    assert set(TASKS) == {"classification", "causal_lm"}
    for cls, unit in ((Classification, "samples"), (CausalLM, "tokens")):
        assert isinstance(cls(), Task) and cls.unit == unit and TASKS[cls.name] is cls


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_classification_loss_is_todays_loss(smoothing):
    torch.manual_seed(0)
    outputs, targets = torch.randn(8, 5), torch.randint(0, 5, (8,))
    expected = build_loss(LossConfig(label_smoothing=smoothing))(outputs, targets)
    assert torch.equal(Classification(smoothing).loss(outputs, targets), expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_classification_evaluation_is_the_loops_to_the_bit(smoothing):
    """The loop's evaluate() and the seam's Evaluation over the same batches: equal floats."""
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    batches = [(torch.randn(n, 6), torch.randint(0, 4, (n,))) for n in (7, 7, 3)]
    acc = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    cfg = LossConfig(label_smoothing=smoothing)
    parts = TrainParts(acc, model, None, None, build_loss(cfg), build_loss(cfg, reduction="none"))
    loop = evaluate(parts, batches)

    task = Classification(smoothing)
    ev = Evaluation(task, torch.device("cpu"), gather=acc.gather_for_metrics)
    with torch.inference_mode():
        for batch in batches:
            inputs, targets = task.batch(batch)
            ev.add(model(inputs), targets)
    seam = ev.result()
    assert (seam["accuracy"], seam["loss"], seam["samples"]) == (loop.accuracy, loop.loss, loop.samples)


def test_an_empty_pass_reads_nan_as_the_loop_does():
    for task in (Classification(), CausalLM()):
        figures = Evaluation(task).result()
        assert math.isnan(figures["loss"]) and math.isnan(figures["accuracy"])


def test_units_count_samples_or_tokens_and_leave_padding_out():
    labels, windows = torch.zeros(6, dtype=torch.long), torch.zeros(6, 32, dtype=torch.long)
    assert Classification().units(labels) == 6 and Classification().units(labels, samples=4) == 4
    assert CausalLM().units(windows) == 192 and CausalLM().units(windows, samples=4) == 128
    assert CausalLM().units(windows[:0]) == 0


def test_batches_move_to_the_device():
    batch = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    inputs, targets = CausalLM().batch(batch, torch.device("meta"))
    assert inputs.device.type == targets.device.type == "meta"
    assert Classification().batch(batch)[0] is batch[0]


def test_causal_lm_loss_is_the_mean_over_real_tokens():
    torch.manual_seed(0)
    outputs, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    flat = nn.functional.cross_entropy(outputs.reshape(10, 11), targets.reshape(10))
    assert torch.equal(CausalLM().loss(outputs, targets), flat)
    padded = targets.clone()
    padded[1, 3:] = -100
    keep = padded.reshape(-1) != -100
    expected = nn.functional.cross_entropy(outputs.reshape(10, 11)[keep], targets.reshape(10)[keep])
    torch.testing.assert_close(CausalLM().loss(outputs, padded), expected)


def test_uniform_logits_read_ln_vocab_nats_and_eight_bits_per_byte():
    outputs, targets = torch.zeros(3, 4, 256), torch.randint(0, 256, (3, 4))
    ev = Evaluation(CausalLM())
    ev.add(outputs, targets)
    figures = ev.result()
    assert figures["tokens"] == 12
    assert figures["loss"] == pytest.approx(math.log(256))
    assert figures["perplexity"] == pytest.approx(256)
    assert figures["bits_per_byte"] == pytest.approx(8.0)
    # A tokenizer whose tokens stand for 4 bytes each: the same loss is 2 bits per byte.
    ev4 = Evaluation(CausalLM(bytes_per_token=4.0))
    ev4.add(outputs, targets)
    assert ev4.result()["bits_per_byte"] == pytest.approx(2.0)


def test_causal_lm_eval_is_per_sample_so_repeats_can_be_dropped():
    torch.manual_seed(0)
    outputs, targets = torch.randn(3, 4, 7), torch.randint(0, 7, (3, 4))
    targets[2, 2:] = -100
    stats = CausalLM().eval_stats(outputs, targets)
    assert {k: tuple(v.shape) for k, v in stats.items()} == {"loss": (3,), "correct": (3,), "tokens": (3,)}
    assert stats["tokens"].tolist() == [4, 4, 2]
    # gather_for_metrics drops a distributed sampler's repeat (here the last sample).
    ev = Evaluation(CausalLM(), gather=lambda s: {k: v[:2] for k, v in s.items()})
    ev.add(outputs, targets)
    figures = ev.result()
    expected = nn.functional.cross_entropy(outputs[:2].reshape(8, 7), targets[:2].reshape(8))
    assert figures["tokens"] == 8 and figures["loss"] == pytest.approx(expected.item(), rel=1e-6)
    hits = (outputs[:2].argmax(-1) == targets[:2]).sum().item()
    assert figures["accuracy"] == hits / 8
