"""A Hugging Face ``transformers`` causal LM built from a config alone (``model.name: hf_causal_lm``).

``model.kwargs.config`` names the model type (``gpt2``, ``llama``, ... any of
``transformers.AutoConfig``'s), the other kwargs are that config's fields (GPT-2's
``n_layer``, ``n_head``, ``n_embd``, ``resid_pdrop``, ...), and the vocabulary and
positions come from the data, as every language model's do. The weights are random:
nothing is read from the hub or a cache, nothing downloaded. The package is the ``hf``
extra (``pip install 'harness[hf]'``); without it the recipe is refused at load.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import BadInput

SPECIAL = ("bos_token_id", "eos_token_id", "pad_token_id")
"""Token ids a config names by default (GPT-2's 50256): none exist in a byte vocabulary."""


def missing() -> str | None:
    """Why ``hf_causal_lm`` cannot be built here (the package is absent), or None; cheap: no import."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return "hf_causal_lm needs the transformers package: pip install 'harness[hf]'"
    return None


def hf_config(model_type: str, vocab_size: int, seq_len: int, fields: dict):
    """``AutoConfig.for_model(model_type, ...)`` with the data's vocabulary and positions."""
    if missing():
        raise BadInput(f"model.name: {missing()}", key="model.name")
    from transformers import AutoConfig

    if "vocab_size" in fields:
        raise BadInput("model.kwargs.vocab_size: given by the data (its tokenizer), not model.kwargs",
                       key="model.kwargs.vocab_size")
    try:
        default = AutoConfig.for_model(model_type)
    except ValueError as err:  # transformers lists every type it knows after the first sentence
        why = str(err).split(". Should contain")[0].splitlines()[0]
        raise BadInput(f"model.kwargs.config: {model_type!r}: {why}; expected a model type of "
                       "transformers.AutoConfig (gpt2, llama, ...)", key="model.kwargs.config") from None
    # A config keeps any keyword as an attribute: a misspelt field would pass unnoticed.
    known = set(default.to_dict()) | set(getattr(default, "attribute_map", {}))
    for key in fields:
        if key not in known:
            raise BadInput(f"model.kwargs.{key}: {model_type}'s config has no such field", key=f"model.kwargs.{key}")
    given = {k: None for k in SPECIAL if k not in fields}
    # Every field through the constructor, which derives others from them (llama's head_dim).
    # max_position_embeddings: each config maps it onto its own name (GPT-2's n_positions).
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, max_position_embeddings=seq_len,
                                **given, **fields)


class HFCausalLM(nn.Module):
    """``AutoModelForCausalLM.from_config``: input ids (batch, time) -> logits (batch, time, vocab)."""

    def __init__(self, vocab_size: int, seq_len: int, config: str = "gpt2", **fields):
        super().__init__()
        self.config = hf_config(config, vocab_size, seq_len, fields)
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_config(self.config)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits
