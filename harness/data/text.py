"""The offline text corpus: bytes from disk, a tokenizer, three contiguous spans of windows.

Nothing is downloaded. The default corpus is the English documentation every CPython
ships in ``pydoc_data/topics.py``; ``data.name: text`` reads a user's ``.txt`` file
or folder of them instead. The corpus's SHA-256 and size travel with the report, so
runs on two Python versions (two different topic files) are never taken for one
workload.

The token stream is cut into train, dev and test spans in that order, by the split
fractions: contiguous spans, not a shuffle of windows, so no test window overlaps a
training one. Each span is cut into non-overlapping windows of ``seq_len`` inputs and
the ``seq_len`` next tokens as targets; a span's last partial window is dropped.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness.errors import BadInput

BYTE_VOCAB = 256


def default_corpus() -> Path:
    """CPython's ``pydoc_data/topics.py``: present wherever Python is, never fetched."""
    spec = importlib.util.find_spec("pydoc_data.topics")
    if spec is None or spec.origin is None:
        raise BadInput("data.root: this Python has no pydoc_data/topics.py; give a .txt file or folder")
    return Path(spec.origin)


def read_corpus(root: str | Path | None) -> tuple[bytes, str]:
    """The corpus's raw bytes and where they came from.

    ``root`` is a ``.txt`` file or a folder whose ``.txt`` files (recursively, in
    sorted path order so every machine reads the same stream) are joined with a
    newline; None reads the default corpus.
    """
    path = default_corpus() if root is None else Path(root)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise BadInput(f"data.root: {path} holds no .txt file; expected a .txt file or a folder of them",
                           key="data.root")
        data = b"\n".join(_read(p) for p in files)
    elif path.is_file():
        data = _read(path)
    else:
        raise BadInput(f"data.root: {path} does not exist; expected a .txt file or a folder of them",
                       key="data.root")
    if not data:
        raise BadInput(f"data.root: {path} is empty; expected text", key="data.root")
    return data, str(path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadInput(f"data.root: cannot read {path} ({err.strerror or err})", key="data.root") from err


def fingerprint(data: bytes, source: str) -> dict:
    """What identifies the corpus in a report: two runs compare only if these agree."""
    return {"source": source, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


class ByteTokenizer:
    """Each UTF-8 byte is one token: vocabulary 256, no file, lossless on any text."""

    vocab_size = BYTE_VOCAB
    name = "bytes"

    def encode(self, data: bytes | str) -> list[int]:
        return list(data.encode("utf-8") if isinstance(data, str) else data)

    def encode_corpus(self, data: bytes) -> torch.Tensor:
        # Straight from the buffer: a list of Python ints would take ~35 bytes per corpus byte.
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()

    def decode(self, ids: list[int]) -> str:
        # A sampled stream may stop inside a multi-byte character.
        return bytes(ids).decode("utf-8", errors="replace")


class FileTokenizer:
    """A local Hugging Face ``tokenizer.json`` (the ``text`` extra); never a hub download."""

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise BadInput("data.tokenizer: reading a tokenizer.json needs the tokenizers package; "
                           "pip install 'harness[text]' or leave data.tokenizer unset for bytes",
                           key="data.tokenizer") from err
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"data.tokenizer: {path} does not exist; expected a tokenizer.json file",
                           key="data.tokenizer")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on a file it cannot parse
            first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
            raise BadInput(f"data.tokenizer: {path} is not a tokenizer.json tokenizers can read ({first})",
                           key="data.tokenizer") from err
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.name = str(path)

    def encode(self, data: bytes | str) -> list[int]:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_corpus(self, data: bytes) -> torch.Tensor:
        """The corpus's ids; raises UnicodeDecodeError on bytes that are not UTF-8."""
        return torch.tensor(self.encode(data.decode("utf-8")), dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def build_tokenizer(path: str | Path | None):
    """Bytes when ``path`` is None, else the ``tokenizer.json`` at ``path``."""
    return ByteTokenizer() if path is None else FileTokenizer(path)


class TokenWindows(Dataset):
    """Non-overlapping windows of one span: item i is (tokens[iT : iT+T], tokens[iT+1 : iT+T+1])."""

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(len(self.tokens) - 1, 0) // self.seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.seq_len
        chunk = self.tokens[start : start + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


@dataclass
class TextData:
    train: TokenWindows
    dev: TokenWindows
    test: TokenWindows
    vocab_size: int
    seq_len: int
    tokenizer: object
    corpus: dict
    """``fingerprint`` of the corpus bytes, plus the tokenizer's name and the token count."""
    bytes_per_token: float
    """Corpus bytes over corpus tokens (1.0 for bytes): turns nats per token into bits per byte."""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def split_spans(n: int, split) -> tuple[range, range, range]:
    """Contiguous train/dev/test ranges of ``range(n)`` by ``split``'s fractions (a SplitConfig)."""
    n_dev, n_test = round(n * split.dev), round(n * split.test)
    n_train = n - n_dev - n_test
    return range(0, n_train), range(n_train, n_train + n_dev), range(n_train + n_dev, n)


def build_text_data(root: str | Path | None, seq_len: int, split, tokenizer: str | Path | None = None) -> TextData:
    """The corpus at ``root`` (None: the default) tokenized and cut into windows of ``seq_len``."""
    if seq_len < 1:
        raise BadInput(f"data.seq_len: expected a window of at least 1 token, got {seq_len}", key="data.seq_len")
    data, source = read_corpus(root)
    tok = build_tokenizer(tokenizer)
    try:
        # int64: what nn.Embedding and cross_entropy take, so a batch needs no cast per step.
        tokens = tok.encode_corpus(data)
    except UnicodeDecodeError as err:  # bytes need no decoding; a tokenizer.json reads text
        raise BadInput(f"data.root: {source} is not UTF-8 text (byte {err.start}), which "
                       "data.tokenizer needs; fix the file or leave data.tokenizer unset for bytes",
                       key="data.root") from err
    if len(tokens) < seq_len + 1:
        raise BadInput(f"data.seq_len: {source} has {len(tokens)} tokens, fewer than one window "
                       f"(data.seq_len + 1 = {seq_len + 1}); use a longer corpus or a shorter data.seq_len",
                       key="data.seq_len")
    spans = split_spans(len(tokens), split)
    views = [TokenWindows(tokens[s.start : s.stop], seq_len) for s in spans]
    for name, view in zip(("train", "dev", "test"), views):
        if getattr(split, name) > 0 and len(view) == 0:
            raise BadInput(f"data.split.{name}: {getattr(split, name):g} of {len(tokens)} tokens is "
                           f"{len(view.tokens)} tokens, fewer than one window of data.seq_len + 1 = "
                           f"{seq_len + 1}; use a longer corpus, a shorter data.seq_len or a larger fraction",
                           key=f"data.split.{name}")
    corpus = {**fingerprint(data, source), "tokenizer": tok.name, "tokens": len(tokens)}
    return TextData(train=views[0], dev=views[1], test=views[2], vocab_size=tok.vocab_size, seq_len=seq_len,
                    tokenizer=tok, corpus=corpus, bytes_per_token=len(data) / len(tokens))
