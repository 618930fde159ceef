"""A recipe's preprocessing, from its config: the one place every command gets it.

``data.transforms`` alone does not say what a sample is: under ``preset: weights``
the pretrained weights decide the size, the crop and the normalisation
(``zoo.preset_transform``). ``harness run`` and ``validate`` (build.py), ``evaluate``,
``predict``, ``bench-inference`` (a config or a run folder), ``scenario: inference``
and ``launch``'s preflight all resolve it here, so no command feeds or measures a
model on samples other than those it trains on.
"""

from __future__ import annotations


def weights_preset(cfg):
    """The weights' own eval transform under ``data.transforms.preset: weights``; else None."""
    if cfg.data.transforms.preset != "weights":
        return None
    from harness.models.zoo import preset_transform

    return preset_transform(cfg.model)


DEFAULT_SEQ_LEN = 256
"""Tokens per window when neither data.seq_len nor model.kwargs.seq_len says."""


def text_seq_len(cfg) -> int:
    """A text recipe's window: data.seq_len, else the model's positions, else the default."""
    positions = cfg.model.kwargs.get("seq_len")
    if cfg.data.seq_len is not None:
        return cfg.data.seq_len
    return positions if isinstance(positions, int) and not isinstance(positions, bool) else DEFAULT_SEQ_LEN


def recipe_data(cfg):
    """The recipe's data set, split and transforms (a ``DataBundle``), as training builds them;
    a text corpus's windows (a ``TextData``, harness/data/text.py) for ``data.name: text``."""
    from harness.data import build_data
    from harness.data.datasets import TEXT_SETS

    if cfg.data.name in TEXT_SETS:
        from harness.data.text import build_text_data

        return build_text_data(cfg.data.root, text_seq_len(cfg), cfg.data.split, cfg.data.tokenizer)

    return build_data(cfg.data, cfg.seed, weights_preset(cfg))


def eval_transform(cfg, channels: int):
    """The eval pipeline a PIL image goes through before the model: the test split's."""
    from harness.data.transforms import build_transform

    return build_transform(cfg.data.transforms, train=False, channels=channels, preset=weights_preset(cfg))
