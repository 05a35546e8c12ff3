"""The built-in character-level corpus: Python standard library source files, ~1.2 MB.

Every machine that has Python 3.11 has these files, so training runs need no download and two
machines build the same corpus. The vocabulary is fixed ("\\n" plus printable ASCII, 96 symbols)
rather than derived from the text, so token ids never depend on which files were read.
"""

import os
import pickle
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from shardwise.errors import ConfigError

CORPUS_FILES: tuple[str, ...] = (
    "argparse.py",
    "bisect.py",
    "collections/__init__.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "logging/__init__.py",
    "pathlib.py",
    "queue.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "subprocess.py",
    "tarfile.py",
    "textwrap.py",
    "typing.py",
)
"""Paths relative to `sysconfig.get_paths()["stdlib"]`, concatenated in this order (all exist in 3.11)."""

VOCAB: str = "\n" + "".join(chr(code) for code in range(32, 127))
"""The fixed 96-symbol vocabulary: newline, then printable ASCII; token id = index in this string."""

UNKNOWN_CHAR = "?"
TRAIN_FRACTION = 0.9
FORMAT_VERSION = 1  # bump when the files, vocabulary or split change, so stale caches are not reused


@dataclass
class Corpus:
    """Token ids of the train and validation text, and the vocabulary that decodes them."""

    train: torch.Tensor
    """1D uint8 token ids, the first 90% of the text."""
    val: torch.Tensor
    """1D uint8 token ids, the last 10% of the text."""
    vocab: str
    """Symbol of each token id."""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Text -> 1D int64 ids, see `encode_text`."""
        return encode_text(text, self.vocab)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Token ids (any integer tensor or list) -> text."""
        id_list = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.vocab[i] for i in id_list)


def encode_text(text: str, vocab: str = VOCAB) -> torch.Tensor:
    """Text -> 1D int64 ids. Tabs become 4 spaces; a character outside the vocabulary becomes "?"."""
    text = text.replace("\t", "    ")
    # errors="replace" turns each non-ASCII character into one b"?"; the table handles ASCII ones.
    raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    return torch.from_numpy(_byte_to_id_table(vocab)[raw].astype(np.int64))


def _byte_to_id_table(vocab: str) -> np.ndarray:
    """256-entry lookup from an ASCII byte to its token id, unknown bytes mapped to "?"."""
    table = np.full(256, vocab.index(UNKNOWN_CHAR), dtype=np.uint8)
    for token_id, char in enumerate(vocab):
        table[ord(char)] = token_id
    return table


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def build_corpus(source_dir: str | None = None) -> Corpus:
    """Read CORPUS_FILES from `source_dir` (default: this Python's stdlib), encode and split 90/10 by position."""
    source_dir = stdlib_dir() if source_dir is None else source_dir
    pieces = []
    for name in CORPUS_FILES:
        path = os.path.join(source_dir, name)
        if not os.path.isfile(path):
            raise ConfigError(f"corpus file {name} is missing from the Python standard library at {source_dir}")
        with open(path, encoding="utf-8", errors="replace") as source:
            text = source.read()
        pieces.append(f"# file: {name}\n{text}" + ("" if text.endswith("\n") else "\n"))
    ids = encode_text("".join(pieces)).to(torch.uint8)  # 96 symbols fit a byte
    num_train = int(TRAIN_FRACTION * len(ids))
    return Corpus(train=ids[:num_train].clone(), val=ids[num_train:].clone(), vocab=VOCAB)


def default_cache_dir() -> str:
    return os.environ.get("SHARDWISE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "shardwise")


def cache_path(cache_dir: str) -> str:
    """Versioned by format and Python major.minor, whose stdlib sources differ."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(cache_dir, f"stdlib-corpus-v{FORMAT_VERSION}-py{python}.pt")


def load_corpus(cache_dir: str | None = None) -> Corpus:
    """The built-in corpus, built on first use and cached in `cache_dir`
    (default `$SHARDWISE_CACHE`, else `~/.cache/shardwise`). A corrupt or stale cache is rebuilt."""
    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    path = cache_path(cache_dir)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    corpus = build_corpus()
    _write_cache_atomically(path, corpus)
    return corpus


def _read_cache(path: str) -> Corpus | None:
    if not os.path.exists(path):
        return None
    try:
        # weights_only: the cache holds tensors and strings only, so loading it runs no pickled code.
        saved = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT_VERSION or saved.get("vocab") != VOCAB:
        return None
    if saved.get("files") != list(CORPUS_FILES):
        return None
    return Corpus(train=saved["train"], val=saved["val"], vocab=saved["vocab"])


def _write_cache_atomically(path: str, corpus: Corpus) -> None:
    """Write to a temporary file in the same directory, then rename: several ranks may build the
    corpus at once, and each rename replaces the file whole, so no reader sees a partial file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".corpus-", suffix=".tmp")
    os.close(handle)
    try:
        payload = {
            "format": FORMAT_VERSION,
            "vocab": corpus.vocab,
            "files": list(CORPUS_FILES),
            "train": corpus.train,
            "val": corpus.val,
        }
        torch.save(payload, temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
