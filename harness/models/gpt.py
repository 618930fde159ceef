"""A GPT: pre-norm decoder blocks, causal attention, learned positions, a KV cache.

The shape of nanoGPT's model (``model.name: gpt``): token and position embeddings,
``n_layer`` blocks of ``x + attn(ln(x))`` then ``x + mlp(ln(x))``, a final LayerNorm
and a linear head, optionally tied to the token embedding. Attention is
``scaled_dot_product_attention``, so each device picks its fused kernel. The model
returns logits of shape (batch, time, vocab_size); the task computes the loss.

Generation runs a prefill over the prompt, then one token per step against a
``KVCache`` of every layer's keys and values, so a step costs O(T) rather than a
full forward over everything generated so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import BadInput


@dataclass
class GPTConfig:
    vocab_size: int
    """Tokens in the vocabulary (256 for bytes); given by the data, not model.kwargs."""
    seq_len: int = 256
    """Positions the model has embeddings for: the longest window or generation."""
    n_layer: int = 4
    """Decoder blocks."""
    n_head: int = 4
    """Attention heads per block; each is d_model / n_head wide."""
    d_model: int = 128
    """Width of the residual stream; a multiple of n_head."""
    tie_embeddings: bool = True
    """The head reuses the token embedding's weight (one matrix, not two)."""
    dropout: float = 0.0
    """Off by default: runs that differ only in how a batch is split then compute the same thing."""
    bias: bool = True
    """Biases in the linear layers and LayerNorms."""

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(f"model.kwargs.{name}: expected an integer >= 1, got {value!r}",
                               key=f"model.kwargs.{name}")
        if self.d_model % self.n_head:
            raise BadInput(f"model.kwargs.d_model: {self.d_model} is not a multiple of "
                           f"model.kwargs.n_head = {self.n_head}", key="model.kwargs.d_model")
        if not 0.0 <= self.dropout < 1.0:
            raise BadInput(f"model.kwargs.dropout: expected a value in [0, 1), got {self.dropout}",
                           key="model.kwargs.dropout")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class KVCache:
    """Every layer's keys and values for ``batch`` sequences, preallocated to ``max_len``.

    ``length`` is how many positions are filled; the model advances it after a
    forward has written the new positions into every layer.
    """

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int | None = None,
                 device=None, dtype: torch.dtype = torch.float32):
        max_len = max_len or cfg.seq_len
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes this step's keys and values at ``length`` and returns all of them so far."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer, self.n_head, self.dropout = layer, cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
                   for z in self.qkv(x).split(d, dim=2))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer, k, v)
        if past == 0:
            mask, causal = None, True
        elif t == 1:
            mask, causal = None, False  # one new query sees every cached position
        else:
            # is_causal aligns the triangle to the top left, wrong once keys outnumber
            # queries: query i sits at position past + i and sees keys 0..past + i.
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int = 256, n_layer: int = 4, n_head: int = 4,
                 d_model: int = 128, tie_embeddings: bool = True, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        cfg = self.config = GPTConfig(vocab_size, seq_len, n_layer, n_head, d_model, tie_embeddings,
                                      dropout, bias)
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.head.weight = self.wte.weight
        self.apply(self._init)
        # GPT-2's scaling: each block adds two residual branches, so their output
        # projections start smaller to keep the residual stream's variance flat in depth.
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (batch, time, vocab) for token ids ``idx`` (batch, time).

        With ``cache``, ``idx`` continues the cached sequences: its positions start at
        ``cache.length``, and the cache holds them too afterwards.
        """
        start = cache.length if cache is not None else 0
        end = start + idx.shape[1]
        limit = min(self.config.seq_len, cache.max_len) if cache is not None else self.config.seq_len
        if end > limit:
            raise ValueError(f"positions up to {end} asked of a GPT with {limit} positions")
        pos = torch.arange(start, end, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length = end
        return self.head(self.ln_f(x))

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty cache on this model's device, in the dtype its activations will have."""
        w = self.head.weight
        dtype = torch.get_autocast_dtype(w.device.type) if torch.is_autocast_enabled(w.device.type) else w.dtype
        return KVCache(self.config, batch, max_len, device=w.device, dtype=dtype)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``prompt`` (batch, time) followed by ``max_new_tokens`` tokens.

        Greedy when ``temperature`` is 0; otherwise sampled from the softmax at that
        temperature (over the ``top_k`` likeliest tokens when given) with ``generator``,
        so a seed reproduces the text. One prefill over the prompt, then one cached
        decode step per new token.
        """
        total = prompt.shape[1] + max_new_tokens
        if prompt.shape[1] < 1 or total > self.config.seq_len:
            raise ValueError(f"a prompt of {prompt.shape[1]} tokens plus {max_new_tokens} new ones must "
                             f"fit the model's {self.config.seq_len} positions (and hold at least one token)")
        cache = self.new_cache(prompt.shape[0], total)
        logits = self(prompt, cache)[:, -1]
        out = [prompt]
        for i in range(max_new_tokens):
            nxt = _pick(logits, temperature, top_k, generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:  # the last token's logits are never needed
                logits = self(nxt, cache)[:, -1]
        return torch.cat(out, dim=1)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """The next token (batch, 1) from the last position's logits."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
