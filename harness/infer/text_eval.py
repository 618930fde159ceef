"""``harness evaluate RUN_DIR`` on a language model's run: its loss, perplexity, bits per byte.

The corpus is read, tokenized and cut into windows as the run did
(``preprocess.recipe_data``), the run's task is built with the corpus's bytes per
token (``task.load.build_task``, as ``run/build.py``), and the split goes through
``loop.evaluate`` with the run's loader and mode: on the run's own test split the
loss (nats per token), perplexity, bits per byte and token accuracy are the
report's exactly. A language model has no classes: no confusion matrix.
"""

from __future__ import annotations

from harness.errors import BadInput
from harness.infer import eval_setup
from harness.infer.loader import eval_loader
from harness.infer.reload import RunFolder, build_trained_model

FIGURES = ("loss", "perplexity", "bits_per_byte", "accuracy", "tokens")
"""What the task's evaluation gives (harness/task/causal_lm.py), each written to eval.yaml."""


def _view(data, split: str):
    from torch.utils.data import ConcatDataset

    if split == "all":
        return ConcatDataset([data.train, data.dev, data.test])
    return getattr(data, split)


def evaluate_text(run: RunFolder, split: str) -> dict:
    """Evaluate a language model's ``run`` on ``split``; returns the eval.yaml body."""
    from harness.data.text import TextData
    from harness.run.loop import evaluate
    from harness.task.load import build_task

    ev = eval_setup.start(run)
    cfg, data = run.cfg, ev.data
    if not isinstance(data, TextData):
        raise BadInput(f"data.name: {cfg.data.name} is not a text corpus; a language model's run is "
                       "evaluated on text (data.name: text)", key="data.name")
    source = data.corpus["source"]
    view = _view(data, split)
    eval_setup.check_not_empty(view, split, source, "window")
    model = build_trained_model(run)
    if getattr(model, "config", None) is not None and getattr(model.config, "vocab_size", None) not in \
            (None, data.vocab_size):
        raise BadInput(f"data.tokenizer: {data.corpus['tokenizer']} has {data.vocab_size} tokens, the model "
                       f"{model.config.vocab_size}")
    task = build_task(cfg.task, label_smoothing=cfg.loss.label_smoothing, bytes_per_token=data.bytes_per_token)
    parts = eval_setup.parts(ev, ev.accelerator.prepare(model), task)
    result = evaluate(parts, eval_loader(view, cfg, ev.accelerator))
    own = run.same_data()
    return {
        "kind": "evaluation",
        "run": str(run.path),
        "model": str(run.weights),
        "data": {"source": source, "split": split, "own_split": own, "sha256": data.corpus["sha256"],
                 "tokenizer": data.corpus["tokenizer"], "seq_len": data.seq_len},
        "accuracy": result.accuracy,
        "loss": result.loss,
        "samples": result.samples,
        **{k: result.figures.get(k) for k in FIGURES if k not in ("loss", "accuracy")},
        "run_report": run_figures(run) if own and split == "test" else None,
        **eval_setup.closing(ev),
    }


def run_figures(run: RunFolder) -> dict | None:
    """The report's own test figures, side by side with the evaluation's."""
    acc = eval_setup.report_accuracy(run)
    return None if acc is None else {f"test_{k}": acc.get(f"test_{k}") for k in FIGURES}


def summary(body: dict) -> str:
    d = body["data"]
    return (f"{d['source']} ({d['split']}, {body['tokens']} tokens): loss {body['loss']:.4f} nats/token, "
            f"perplexity {body['perplexity']:.3f}, {body['bits_per_byte']:.4f} bits/byte, "
            f"token accuracy {body['accuracy']:.4f}")
