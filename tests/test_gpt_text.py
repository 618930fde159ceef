"""The offline text corpus, the GPT with its KV cache, and FLOPs per token by formula."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import pytest
import torch

from harness.data.split import SplitConfig
from harness.data.text import build_text_data, default_corpus, fingerprint, read_corpus
from harness.errors import BadInput
from harness.measure.flops import training_flops
from harness.measure.lm_flops import (attention_recompute_flops_per_token, flops_per_token_formula,
                                      gpt_flops_per_token, matmul_params)
from harness.models.gpt import GPT, GPTConfig
from harness.task.causal_lm import CausalLM


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    args = {"vocab_size": 50, "seq_len": 24, "n_layer": 2, "n_head": 2, "d_model": 32} | kw
    return GPT(**args).eval()


# --- the corpus -------------------------------------------------------------------------


def test_default_corpus_is_pythons_topics_with_its_fingerprint():
    data, source = read_corpus(None)
    path = default_corpus()
    assert path.name == "topics.py" and path.parent.name == "pydoc_data"
    assert source == str(path) and data == path.read_bytes()
    fp = fingerprint(data, source)
    assert fp == {"source": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "size_bytes": path.stat().st_size}


def test_windows_are_contiguous_spans_with_next_token_targets():
    text = build_text_data(None, seq_len=64, split=SplitConfig(0.8, 0.1, 0.1))
    raw = default_corpus().read_bytes()
    assert text.vocab_size == 256 and text.bytes_per_token == 1.0
    assert text.corpus["size_bytes"] == len(raw) and text.corpus["tokens"] == len(raw)
    # The three spans, in order, are the whole stream: no token lost, none shared.
    joined = torch.cat([text.train.tokens, text.dev.tokens, text.test.tokens])
    assert bytes(joined.tolist()) == raw
    assert abs(len(text.train.tokens) - 0.8 * len(raw)) <= 1
    x, y = text.dev[3]
    assert x.shape == y.shape == (64,) and x.dtype == torch.long
    start = len(text.train.tokens) + 3 * 64
    assert bytes(x.tolist()) == raw[start : start + 64] and bytes(y.tolist()) == raw[start + 1 : start + 65]
    for view in (text.train, text.dev, text.test):
        assert len(view) == (len(view.tokens) - 1) // 64
        last_x, last_y = view[len(view) - 1]  # the last full window still has its next tokens
        assert last_y.shape == (64,)
    with pytest.raises(IndexError):
        text.test[len(text.test)]


def test_a_folder_reads_its_txt_files_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_bytes(b"second")
    (tmp_path / "a.txt").write_bytes("first é".encode())
    (tmp_path / "notes.md").write_bytes(b"ignored")
    data, source = read_corpus(tmp_path)
    assert data == "first é".encode() + b"\n" + b"second" and source == str(tmp_path)
    one = build_text_data(tmp_path, seq_len=4, split=SplitConfig(1.0, 0.0, 0.0))
    two = build_text_data(tmp_path, seq_len=4, split=SplitConfig(1.0, 0.0, 0.0))
    assert torch.equal(one.train.tokens, two.train.tokens) and one.corpus == two.corpus
    assert len(one.dev) == len(one.test) == 0


def _bad_corpus(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.txt"
    if kind == "empty folder":
        (tmp_path / "d").mkdir()
        return tmp_path / "d"
    path = tmp_path / f"{kind}.txt"
    path.write_bytes({"empty": b"", "short": b"tiny"}[kind])
    return path


@pytest.mark.parametrize("kind, key, expected", [
    ("missing", "data.root", "does not exist"),
    ("empty", "data.root", "is empty"),
    ("empty folder", "data.root", "holds no .txt file"),
    ("short", "data.seq_len", "has 4 tokens, fewer than one window"),
])
def test_bad_corpora_are_one_line_naming_the_key(tmp_path, kind, key, expected):
    with pytest.raises(BadInput, match=expected) as err:
        build_text_data(_bad_corpus(tmp_path, kind), seq_len=16, split=SplitConfig())
    assert str(err.value).startswith(key + ":") and "\n" not in str(err.value)
    assert err.value.key == key


def test_a_span_too_short_for_one_window_names_its_fraction(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"x" * 100)
    with pytest.raises(BadInput, match=r"^data\.split\.dev: 0\.05 of 100 tokens is 5 tokens") as err:
        build_text_data(tmp_path / "c.txt", seq_len=8, split=SplitConfig(0.9, 0.05, 0.05))
    assert err.value.key == "data.split.dev"


def test_a_missing_tokenizers_package_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(BadInput, match=r"^data\.tokenizer: .*needs the tokenizers package"):
        build_text_data(None, seq_len=8, split=SplitConfig(), tokenizer=tmp_path / "tokenizer.json")


def _word_tokenizer(path: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "the", "cat", "sat", "on", "mat", "."]
    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(path))
    return path


def test_a_local_tokenizer_json_tokenizes_the_corpus(tmp_path):
    tok = _word_tokenizer(tmp_path / "tokenizer.json")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat . " * 20)
    text = build_text_data(corpus, seq_len=5, split=SplitConfig(0.8, 0.1, 0.1), tokenizer=tok)
    assert text.vocab_size == 7 and text.corpus["tokenizer"] == str(tok)
    assert text.corpus["tokens"] == 7 * 20
    assert text.bytes_per_token == pytest.approx(len(corpus.read_bytes()) / 140)
    x, y = text.train[0]
    assert x.tolist() == [1, 2, 3, 4, 1] and y.tolist() == [2, 3, 4, 1, 5]
    assert text.tokenizer.decode(x.tolist()) == "the cat sat on the"


def test_a_tokenizer_json_needs_utf8_text(tmp_path):
    tok = _word_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "latin1.txt").write_bytes("the caf\xe9 sat".encode("latin-1") * 10)
    with pytest.raises(BadInput, match=r"^data\.root: .*latin1\.txt is not UTF-8 text \(byte 7\)"):
        build_text_data(tmp_path / "latin1.txt", seq_len=2, split=SplitConfig(), tokenizer=tok)
    # Bytes read any file as it is.
    assert build_text_data(tmp_path / "latin1.txt", seq_len=2, split=SplitConfig()).corpus["tokens"] == 120


def test_a_tokenizer_file_that_does_not_parse_is_bad_input(tmp_path):
    pytest.importorskip("tokenizers")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match=r"^data\.tokenizer: .*tokenizer\.json tokenizers can read") as err:
        build_text_data(None, seq_len=8, split=SplitConfig(), tokenizer=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="does not exist"):
        build_text_data(None, seq_len=8, split=SplitConfig(), tokenizer=tmp_path / "none.json")


# --- the model --------------------------------------------------------------------------


def test_gpt_logits_and_tied_head():
    model = tiny()
    assert model(torch.randint(0, 50, (3, 24))).shape == (3, 24, 50)
    assert model.head.weight is model.wte.weight
    untied = tiny(tie_embeddings=False)
    assert untied.head.weight is not untied.wte.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == 50 * 32


def test_gpt_is_causal():
    model = tiny()
    x = torch.randint(0, 50, (1, 24))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50  # change only the future of position 9
    assert torch.equal(model(x)[0, :10], model(y)[0, :10])


def test_cached_decoding_gives_the_full_forwards_logits():
    model = tiny()
    x = torch.randint(0, 50, (2, 20))
    full = model(x)
    with torch.no_grad():
        cache = model.new_cache(2)
        # A prefill, a chunk that continues it (the explicit-mask path), then one token at a time.
        steps = [model(x[:, :8], cache), model(x[:, 8:12], cache)]
        steps += [model(x[:, i : i + 1], cache) for i in range(12, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_greedy_generation_matches_decoding_without_a_cache():
    model = tiny()
    prompt = torch.randint(0, 50, (2, 5))
    out = model.generate(prompt, max_new_tokens=10)
    seq = prompt
    with torch.no_grad():
        for _ in range(10):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.shape == (2, 15) and torch.equal(out, seq)


def test_sampled_generation_is_reproducible_with_a_seed():
    model = tiny()
    prompt = torch.randint(0, 50, (1, 3))
    draw = lambda seed: model.generate(prompt, 12, temperature=1.0, top_k=5,  # noqa: E731
                                       generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(7), draw(7))
    assert int(draw(7).max()) < 50


def test_positions_past_the_model_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="24 positions"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="must fit the model's 24 positions"):
        model.generate(torch.zeros(1, 20, dtype=torch.long), max_new_tokens=5)


def test_bad_gpt_sizes_name_the_key():
    with pytest.raises(BadInput, match=r"^model\.kwargs\.d_model: 30 is not a multiple of model\.kwargs\.n_head"):
        GPTConfig(vocab_size=10, d_model=30, n_head=4)
    with pytest.raises(BadInput, match=r"^model\.kwargs\.n_layer: expected an integer >= 1, got 0"):
        GPTConfig(vocab_size=10, n_layer=0)


def test_a_tiny_gpt_learns_a_repeated_text():
    torch.manual_seed(0)
    model, task = GPT(vocab_size=256, seq_len=16, n_layer=1, n_head=2, d_model=32).train(), CausalLM()
    data = torch.tensor(list(b"abcdefgh" * 8))
    x, y = data[:-1].unfold(0, 16, 16), data[1:].unfold(0, 16, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert first == pytest.approx(math.log(256), abs=0.2) and loss.item() < 0.5


# --- FLOPs per token --------------------------------------------------------------------

# (n_layer, n_head, d_model, seq_len, tied): three sizes, both head layouts.
SIZES = [(2, 2, 64, 16, True), (3, 4, 96, 32, False), (4, 4, 128, 64, True)]


def _counted_per_token(size, device=None) -> float:
    n_layer, n_head, d_model, seq_len, tied = size
    torch.manual_seed(0)
    model = GPT(256, seq_len, n_layer, n_head, d_model, tie_embeddings=tied)
    x, y = torch.randint(0, 256, (2, seq_len)), torch.randint(0, 256, (2, seq_len))
    return training_flops(model, x, y, CausalLM().loss, device=device)[1] / seq_len


def test_n_is_every_matmul_weight_with_the_head_once():
    for n_layer, _, d_model, seq_len, tied in SIZES:
        model = GPT(256, seq_len, n_layer, 2, d_model, tie_embeddings=tied)
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert matmul_params(n_layer, d_model, 256) == linear
        assert gpt_flops_per_token(model.config) == flops_per_token_formula(n_layer, 2, d_model, seq_len, 256)


@pytest.mark.parametrize("size", SIZES)
def test_formula_against_torchs_count_of_a_training_step(size):
    n_layer, n_head, d_model, seq_len, _ = size
    formula = flops_per_token_formula(n_layer, n_head, d_model, seq_len, 256)
    # On the meta device the attention runs as plain matmuls, whose backward keeps
    # the forward's scores: torch counts exactly the formula's work.
    assert _counted_per_token(size, device="meta") == formula
    # On the CPU the fused attention backward computes Q K^T a second time and torch
    # counts it: the whole gap is that one product (lm_flops.attention_recompute_...).
    counted = _counted_per_token(size)
    assert counted == formula + attention_recompute_flops_per_token(n_layer, n_head, d_model, seq_len)
    # For these shapes (seq_len up to half of d_model) the two figures agree within 2%.
    assert abs(counted - formula) / counted < 0.02
