"""Training FLOPs per token of a decoder-only transformer, by the published formula.

    flops_per_token = 6 * N + 12 * L * H * Q * T

(PaLM appendix B; torchtitan's ``get_num_flop_per_token``; nanoGPT's MFU) with L
layers, H heads of width Q, and T the sequence length the model is trained at.

N counts the parameters that take part in a matrix multiply, once per token:

- per block, the attention's qkv (d x 3d) and output (d x d) weights and the MLP's
  two (d x 4d, 4d x d) weights: 12 d^2 per block;
- the head (d x vocab), once, whether or not it is tied to the token embedding:
  tied or not, its matmul runs on every token and so does its backward.

N leaves out the token and position embeddings (a lookup and an add, no matmul;
the tied head's weight is counted as the head, not as an embedding), the biases and
the LayerNorm weights (elementwise, noise next to the matmuls). Each matmul
parameter costs 2 FLOPs per token forward (a multiply and an add) and 4 backward
(the input gradient and the weight gradient): 6 N.

The second term is attention's own matmuls, which have no parameters: per layer,
head and token, Q K^T and A V take 2 T Q FLOPs each forward, twice that backward:
12 L H Q T. It counts the full T x T score matrix, as every published MFU does,
although the causal mask leaves half of it unused.
"""

from __future__ import annotations

FORMULA = "6*N + 12*L*H*Q*T"
"""The formula's words in the report (compute.flops_per_token_formula_source)."""


def matmul_params(n_layer: int, d_model: int, vocab_size: int) -> int:
    """N above: 12 d^2 per block plus the head's d * vocab_size."""
    return 12 * n_layer * d_model * d_model + d_model * vocab_size


def flops_per_token_formula(n_layer: int, n_head: int, d_model: int, seq_len: int, vocab_size: int) -> float:
    """6 N + 12 L H Q T: the forward+backward FLOPs of one training token."""
    head_dim = d_model // n_head
    return float(6 * matmul_params(n_layer, d_model, vocab_size) + 12 * n_layer * n_head * head_dim * seq_len)


def attention_recompute_flops_per_token(n_layer: int, n_head: int, d_model: int, seq_len: int) -> float:
    """What torch's FlopCounterMode counts beyond the formula for a fused attention backward.

    The fused (flash) backward does not keep the T x T scores from the forward; it
    computes Q K^T again, and torch's ``sdpa_backward_flop_count`` counts that second
    product: 2 L H Q T per token more than the formula's 12 L H Q T. The formula
    counts the work the model needs, not the work a kernel chose to redo, so this is
    a known gap between the two figures, not an error in either; it shrinks as
    d_model grows against seq_len (a few tenths of a percent for a tiny GPT with
    seq_len below d_model).
    """
    return float(2 * n_layer * n_head * (d_model // n_head) * seq_len)


def gpt_flops_per_token(cfg, seq_len: int | None = None) -> float:
    """The formula for a ``GPTConfig`` (harness/models/gpt.py) trained on windows of ``seq_len``.

    ``seq_len`` defaults to the model's positions; a run training on shorter windows
    passes its window, since attention's cost follows the window, not the model.
    """
    return flops_per_token_formula(cfg.n_layer, cfg.n_head, cfg.d_model, seq_len or cfg.seq_len, cfg.vocab_size)
