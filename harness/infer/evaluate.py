"""``harness evaluate RUN_DIR``: the trained model on its own split, or on another data set.

The run's own split is rebuilt from its config and seed (``preprocess.recipe_data``,
as in training, the weights preset included) and passed through ``loop.evaluate``, the function the run tested with,
with the same loader, batch size, loss and mode: the test accuracy and loss are the
run's exactly (a run of several processes summed its losses in another order: equal
to rounding). Another data set (``data.name=imagefolder data.root=...``) must hold
only classes the model knows, by name; its labels are mapped onto the model's
outputs by name, so a folder holding a few of the classes is fine.
"""

import os
import sys
from pathlib import Path

from harness.errors import BadInput
from harness.infer.eval_schema import EvalReport, TextEvalReport
from harness.infer.loader import eval_loader as _loader
from harness.infer.reload import RunFolder, build_trained_model, check_sample_shape, open_run


class Relabelled:
    """A data set whose targets are mapped through ``mapping`` (its class index -> the model's)."""

    def __init__(self, ds, mapping: list[int]):
        self.ds, self.mapping = ds, mapping

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x, self.mapping[y]


def class_mapping(run: RunFolder, classes: list[str], source: str) -> list[int] | None:
    """Each of the data set's class indices -> the model's; None when identical."""
    if list(classes) == list(run.classes):
        return None
    unseen = [c for c in classes if c not in run.classes]
    if unseen:
        shown = ", ".join(repr(c) for c in unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        raise BadInput(f"data: {source} has the class{'es' if len(unseen) > 1 else ''} {shown}, which the model "
                       f"never saw (it knows {', '.join(run.classes)})")
    return [run.classes.index(c) for c in classes]


def _view(data, split: str):
    """The split to evaluate, through the eval transforms (the train split too: no augmentation)."""
    from harness.data.split import TransformedSubset

    eval_tf = data.test.transform
    if split == "all":
        indices = sorted(data.train.indices + data.dev.indices + data.test.indices)
    else:
        indices = getattr(data, split).indices
    return TransformedSubset(data.test.base, indices, eval_tf)


def evaluate_run(run: RunFolder, split: str) -> dict:
    """Evaluate ``run``'s model; returns the eval.yaml body (predictions under ``_predictions``)."""
    import torch

    from harness.infer import eval_setup
    from harness.run.loop import evaluate

    ev = eval_setup.start(run)
    cfg, data = run.cfg, ev.data
    own = run.same_data()
    if own and list(data.classes) != list(run.classes):
        raise BadInput(f"data: {data.source} now has the classes {', '.join(data.classes)}, but the model was "
                       f"trained on {', '.join(run.classes)} (the data set changed since the run)")
    check_sample_shape(run, data.sample_shape, f"data: the images of {data.source}")
    mapping = class_mapping(run, data.classes, data.source)
    view = _view(data, split)
    eval_setup.check_not_empty(view, split, data.source, "sample")
    parts = eval_setup.parts(ev, ev.accelerator.prepare(build_trained_model(run)))
    collected: list = []
    result = evaluate(parts, _loader(Relabelled(view, mapping) if mapping else view, cfg, ev.accelerator), collected)
    preds = torch.cat([p for p, _ in collected]) if collected else torch.zeros(0, dtype=torch.long)
    targets = torch.cat([t for _, t in collected]) if collected else torch.zeros(0, dtype=torch.long)
    body = _body(run, split, data.source, own, result, preds, targets)
    body.update(eval_setup.closing(ev))
    body["_predictions"] = preds.tolist()
    return body


def _body(run: RunFolder, split: str, source: str, own: bool, result, preds, targets) -> dict:
    n = len(run.classes)
    confusion = [[0] * n for _ in range(n)]
    for t, p in zip(targets.tolist(), preds.tolist()):
        confusion[t][p] += 1
    per_class = {}
    for i, name in enumerate(run.classes):
        total = sum(confusion[i])
        per_class[name] = {"samples": total, "correct": confusion[i][i],
                           "accuracy": confusion[i][i] / total if total else None}
    return {
        "kind": "evaluation",
        "run": str(run.path),
        "model": str(run.weights),
        "data": {"source": source, "split": split, "own_split": own},
        "accuracy": result.accuracy,
        "loss": result.loss,
        "samples": result.samples,
        "classes": list(run.classes),
        "per_class": per_class,
        "confusion_matrix": confusion,
        "run_report": _run_figures(run) if own and split == "test" else None,
    }


def _run_figures(run: RunFolder) -> dict | None:
    """The run's own test figures, for the reader to check against; BadInput when its
    report.yaml is there but is not a report."""
    from harness.infer.eval_setup import report_accuracy

    acc = report_accuracy(run)
    return None if acc is None else {"test_accuracy": acc.get("test_accuracy"), "test_loss": acc.get("test_loss")}


def default_output(run: RunFolder, split: str) -> Path:
    """RUN_DIR/eval-<split>.yaml, or eval-<data set>-<content>-<split>.yaml for another data set:
    a name no run writes, so an evaluation never replaces a run's files."""
    if run.same_data():
        return run.path / f"eval-{split}.yaml"
    from harness.config.run import to_dict
    from harness.config.recipe import data_fingerprint

    tag = data_fingerprint(to_dict(run.cfg)["data"]).replace(":", "-")
    return run.path / f"eval-{tag}-{split}.yaml"


def check_target(path: Path, flag: str) -> None:
    """BadInput when eval.yaml cannot be written at ``path``: a folder holds its name, or the
    nearest existing folder above it is a file or not writable."""
    if path.is_dir():
        raise BadInput(f"{flag}: {path} is a folder; expected the eval.yaml file's place (move the folder, "
                       "or give --output DIR)")
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise BadInput(f"{flag}: {folder} is a file; expected a folder for eval.yaml")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise BadInput(f"{flag}: cannot write in {folder} (permission denied)")
            return


def write_eval(path: Path, body: dict, schema=None) -> Path:
    from harness.files.atomic import write_text_atomic
    from harness.report.io import _plain, dump
    from harness.config.typecheck import check_block

    plain = _plain({k: v for k, v in body.items() if not k.startswith("_")})
    check_block(plain, schema or EvalReport, "")
    return write_text_atomic(path, dump(plain))


def cmd_evaluate(args) -> int:
    from harness.args import split_positionals

    run_dir, overrides = split_positionals(args.items)
    if run_dir is None:
        raise BadInput("evaluate: needs RUN_DIR, the folder a `harness run` wrote")
    run = open_run(run_dir, overrides)
    split = args.split or ("test" if run.same_data() else "all")
    if split == "all" and run.same_data():
        print("warning: --split all includes the samples the model was trained on", file=sys.stderr)
    path = Path(args.output) / "eval.yaml" if args.output else default_output(run, split)
    # Refused now, not after minutes of evaluation: where eval.yaml goes, and the run's report.
    check_target(path, "--output" if args.output else "evaluate")
    _run_figures(run)
    if run.text:
        from harness.infer.text_eval import evaluate_text, summary

        body = evaluate_text(run, split)
        write_eval(path, body, TextEvalReport)
        print(summary(body))
        print(f"wrote {path}")
        return 0
    body = evaluate_run(run, split)
    write_eval(path, body)
    print(f"{body['data']['source']} ({split}, {body['samples']} samples): accuracy {body['accuracy']:.4f}, "
          f"loss {body['loss']:.4f}")
    worst = sorted((v["accuracy"], k) for k, v in body["per_class"].items() if v["accuracy"] is not None)[:3]
    if worst:
        print("lowest per-class accuracy: " + ", ".join(f"{k} {a:.3f}" for a, k in worst))
    print(f"wrote {path}")
    return 0
