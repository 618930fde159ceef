"""Rebuild a finished run's model from its folder: config.yaml, model.pt and classes.json.

A language model's run has no classes.json: its model is rebuilt for the vocabulary of
the run's tokenizer and the run's window (``data.seq_len``), as ``run/build.py`` built it.

``harness evaluate``, ``predict`` and ``bench-inference RUN_DIR`` start here. The
model is built by the same registry call as in training (``build_model``), with the
run's sample shape and class count, and loaded from model.pt, a plain state_dict;
the run's mode (device, precision, compile) comes from its config, as in training.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from harness.run.checkpoint import MODEL_CARD
from harness.config.run import Config, load_config
from harness.errors import BadInput


@dataclass
class RunFolder:
    path: Path
    cfg: Config
    """The run's resolved config, with the overrides given."""
    saved: Config
    """The run's resolved config as it trained."""
    classes: list[str]
    """The model's class names, in the order of its outputs."""
    sample_shape: tuple[int, ...]
    """(channels, height, width) the model takes, after the recipe's transforms."""

    @property
    def weights(self) -> Path:
        return self.path / "model.pt"

    @property
    def text(self) -> bool:
        """A language model's run (task causal_lm or a user's): no classes, no sample shape."""
        return self.saved.task != "classification"

    def same_data(self) -> bool:
        """The overrides leave the data set itself as the run had it (its split may be evaluated)."""
        a, b = self.cfg.data, self.saved.data
        return (a.name, a.root, a.subset, a.fake, a.split, a.seq_len, a.tokenizer) == \
            (b.name, b.root, b.subset, b.fake, b.split, b.seq_len, b.tokenizer) and self.cfg.seed == self.saved.seed


def open_run(run_dir: str | Path, overrides: list[str] | None = None) -> RunFolder:
    """Read a run folder; BadInput naming what is missing."""
    run = Path(run_dir)
    if not run.is_dir():
        raise BadInput(f"{run}: not a folder; expected a run folder (harness run's output)")
    config = run / "config.yaml"
    if not config.is_file():
        raise BadInput(f"{run}: holds no config.yaml; expected the folder a `harness run` wrote")
    if not (run / "model.pt").is_file():
        raise BadInput(f"{run}: holds no model.pt (the run did not finish, or ran with output.save_model: false)")
    saved = load_config(config)
    overrides = list(overrides or [])
    named = {o.split("=", 1)[0].strip() for o in overrides}
    if named & {"data.name", "data.root"} and "data.subset" not in named:
        # Another data set is evaluated whole: the run's subset was a choice among its own samples.
        overrides.append("data.subset=null")
    cfg = load_config(config, overrides)
    if saved.task != "classification":
        return RunFolder(run, cfg, saved, [], ())
    classes, shape = _card(run, saved)
    return RunFolder(run, cfg, saved, classes, shape)


def _card(run: Path, saved: Config) -> tuple[list[str], tuple[int, ...]]:
    """classes.json; a run from before it: its report's data block, else its data set rebuilt."""
    card = run / MODEL_CARD
    if card.is_file():
        try:
            data = json.loads(card.read_text())
            return [str(c) for c in data["classes"]], tuple(int(v) for v in data["sample_shape"])
        except (ValueError, KeyError, TypeError) as err:
            raise BadInput(f"{card}: not a model card ({err.__class__.__name__}: {err}); "
                           "expected {\"classes\": [...], \"sample_shape\": [C, H, W]}") from None
    report = run / "report.yaml"
    if report.exists():
        from harness.report.io import load_report

        block = load_report(report, raw=False).get("data") or {}
        if block.get("classes") and block.get("sample_shape"):
            return [str(c) for c in block["classes"]], tuple(block["sample_shape"])
    from harness.data.preprocess import recipe_data

    data = recipe_data(saved)
    return list(data.classes), tuple(data.sample_shape)


def build_trained_model(run: RunFolder):
    """The run's model with model.pt loaded, on the CPU, in eval mode."""
    from harness.models.registry import build_model

    # The weights come from model.pt: a pretrained file the run started from is not needed.
    spec = dataclasses.replace(run.cfg.model, pretrained=None, freeze_backbone=False)
    if run.text:
        from harness.data.preprocess import text_seq_len
        from harness.data.text import build_tokenizer
        from harness.models.registry import build_causal_lm

        # The tokenizer alone gives the vocabulary: the corpus need not be read again.
        model, _ = build_causal_lm(spec, build_tokenizer(run.cfg.data.tokenizer).vocab_size, text_seq_len(run.cfg))
    else:
        model, _ = build_model(spec, run.sample_shape, len(run.classes))
    load_weights(model, run.weights)
    return model.eval()


def load_weights(model, path: str | Path) -> None:
    """Load a plain state_dict into ``model``; BadInput naming the file and the first key at fault."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch raises many kinds for a bad file
        raise BadInput(f"{path}: not a loadable state_dict ({err.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise BadInput(f"{path}: does not hold a state_dict")
    from harness.models.registry import not_tensors

    why = not_tensors(state)
    if why:
        raise BadInput(f"{path}: {why}; expected a state_dict of tensors, as `harness run` saves model.pt")
    own = model.state_dict()
    for key in own:
        if key not in state:
            raise BadInput(f"{path}: lacks {key!r}, which the model has (another model or recipe?)")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise BadInput(f"{path}: {key} has shape {tuple(state[key].shape)}, the model "
                           f"{tuple(own[key].shape)} (another model or recipe?)")
    extra = [k for k in state if k not in own]
    if extra:
        raise BadInput(f"{path}: has {extra[0]!r}, which the model does not (another model or recipe?)")
    model.load_state_dict(state)


def check_sample_shape(run: RunFolder, shape: tuple[int, ...], what: str) -> None:
    if tuple(shape) != tuple(run.sample_shape):
        raise BadInput(f"{what}: becomes {_shape(shape)} after the recipe's transforms, but the model takes "
                       f"{_shape(run.sample_shape)} (channels x height x width); set data.transforms "
                       "(grayscale, resize) to match")


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)
