"""``harness predict RUN_DIR "a prompt"`` on a language model's run: the continuation it writes.

The prompt is tokenized by the run's tokenizer (bytes, or its ``tokenizer.json``) and
continued by the model's own ``generate`` (harness/models/gpt.py: one prefill, then one
KV-cached step per token) under ``eval()``, in the run's precision: greedy by default,
sampled at ``--temperature`` (over the ``--top-k`` likeliest tokens) with a generator
seeded by ``--seed``, so the same seed writes the same text. A prompt the model cannot
take is bad input naming it: a token the tokenizer does not know (its unknown token, or
an id beyond the model's vocabulary), or more tokens than the model's positions leave.
"""

from __future__ import annotations

import sys

from harness.errors import BadInput
from harness.infer.reload import RunFolder, build_trained_model

DEFAULT_NEW_TOKENS = 64
"""New tokens when --max-new-tokens is not given (fewer where the positions run out)."""


def unknown_pieces(tokenizer, prompt: str, ids: list[int]) -> list[str]:
    """The prompt's pieces a tokenizer.json maps to its unknown token (none for bytes)."""
    inner = getattr(tokenizer, "_tok", None)  # data/text.py's FileTokenizer keeps the tokenizers object
    unk = getattr(getattr(inner, "model", None), "unk_token", None)
    unk_id = inner.token_to_id(unk) if inner is not None and unk else None
    if unk_id is None or unk_id not in ids:
        return []
    enc = inner.encode(prompt, add_special_tokens=False)
    return [prompt[a:b] for i, (a, b) in zip(enc.ids, enc.offsets) if i == unk_id]


def encode_prompt(tokenizer, prompt: str, vocab_size: int, positions: int) -> list[int]:
    """The prompt's token ids; BadInput naming what the model cannot take."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise BadInput(f"prompt: {prompt!r} holds no token of {tokenizer.name}; expected some text")
    unknown = unknown_pieces(tokenizer, prompt, ids)
    if unknown:
        raise BadInput(f"prompt: {unknown[0]!r} is not in the vocabulary of {tokenizer.name} (it reads as the "
                       "unknown token); use words the run's tokenizer knows")
    beyond = [i for i in ids if not 0 <= i < vocab_size]
    if beyond:
        raise BadInput(f"prompt: token id {beyond[0]} is outside the model's vocabulary of {vocab_size} tokens")
    if len(ids) >= positions:
        raise BadInput(f"prompt: {len(ids)} tokens, but the model has {positions} positions and needs one "
                       f"left to write into; give a prompt of at most {positions - 1} tokens")
    return ids


def _check_options(args) -> None:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens: expected an integer > 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise BadInput(f"--temperature: expected 0 (greedy) or more, got {args.temperature}")
    if args.top_k is not None and args.top_k <= 0:
        raise BadInput(f"--top-k: expected an integer > 0, got {args.top_k}")


def generate_text(run: RunFolder, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                  top_k: int | None = None, seed: int = 0) -> str:
    """The model's continuation of ``prompt``, decoded by the run's tokenizer."""
    import torch

    from harness.data.preprocess import text_seq_len
    from harness.data.text import build_tokenizer
    from harness.run import accel

    tokenizer = build_tokenizer(run.cfg.data.tokenizer)
    model = build_trained_model(run)
    if not callable(getattr(model, "generate", None)):
        raise BadInput(f"model.name: {run.cfg.model.name} has no generate(prompt, max_new_tokens, temperature, "
                       "top_k, generator) method, which predict calls (harness/models/gpt.py has one)")
    config = getattr(model, "config", None)
    positions = getattr(config, "seq_len", None) or text_seq_len(run.cfg)
    vocab = getattr(config, "vocab_size", None) or tokenizer.vocab_size
    ids = encode_prompt(tokenizer, prompt, vocab, positions)
    room = positions - len(ids)
    if max_new_tokens is None:
        max_new_tokens = min(DEFAULT_NEW_TOKENS, room)
    elif max_new_tokens > room:
        raise BadInput(f"--max-new-tokens: {max_new_tokens}, but a prompt of {len(ids)} tokens leaves "
                       f"{room} of the model's {positions} positions")
    accelerator, _ = accel.build_accelerator(run.cfg.runtime)
    model = accelerator.prepare(model)
    model.eval()
    generator = torch.Generator(device=accelerator.device).manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long, device=accelerator.device)
    # prepare may wrap the module (DDP never here, compile perhaps): generate is the model's own.
    own = accelerator.unwrap_model(model)
    out = own.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return tokenizer.decode(out[0, len(ids):].tolist())


def cmd_predict_text(run: RunFolder, args) -> int:
    _check_options(args)
    if len(args.inputs) != 1:
        raise BadInput(f"predict: a language model's run takes one prompt (quote it), got {len(args.inputs)} "
                       "arguments")
    text = generate_text(run, args.inputs[0], args.max_new_tokens, args.temperature, args.top_k, args.seed)
    sys.stdout.write(text + "\n")
    return 0
