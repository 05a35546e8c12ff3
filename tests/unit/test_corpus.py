"""The built-in corpus: fixed vocabulary, round trip, split sizes, cache reuse."""

import os

import pytest
import torch

from shardwise.data import CORPUS_FILES, VOCAB, Corpus, build_corpus, load_corpus
from shardwise.data import corpus as corpus_module
from shardwise.errors import ConfigError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("corpus-cache"))


@pytest.fixture(scope="module")
def corpus(cache_dir) -> Corpus:
    return load_corpus(cache_dir)


def test_vocab_is_fixed_96_symbols(corpus):
    assert corpus.vocab_size == 96
    assert corpus.vocab == VOCAB
    assert corpus.vocab[0] == "\n" and corpus.vocab[1] == " " and corpus.vocab[-1] == "~"


def test_encode_decode_round_trip(corpus):
    text = "def f(x):\n    return x ** 2  # ~!@{}[]\n"
    ids = corpus.encode(text)
    assert ids.dtype == torch.int64
    assert corpus.decode(ids) == text
    assert corpus.decode(ids.tolist()) == text


def test_encode_normalises_tabs_and_unknown_characters(corpus):
    assert corpus.decode(corpus.encode("\ta\u00e9\u4e2d\r\x0cb")) == "    a????b"


def test_train_val_split(corpus):
    total = len(corpus.train) + len(corpus.val)
    assert 1_000_000 < total < 2_000_000
    assert len(corpus.train) == int(0.9 * total)
    assert corpus.train.dtype == torch.uint8 and corpus.train.ndim == 1
    assert int(corpus.train.max()) < 96 and int(corpus.val.max()) < 96
    assert corpus.decode(corpus.train[:40]).startswith(f"# file: {CORPUS_FILES[0]}\n")


def test_cache_file_is_reused(cache_dir, corpus, monkeypatch):
    path = corpus_module.cache_path(cache_dir)
    assert os.path.isfile(path)
    assert not [name for name in os.listdir(cache_dir) if name.endswith(".tmp")]

    def fail_build(*args, **kwargs):
        raise AssertionError("corpus was rebuilt instead of read from the cache")

    monkeypatch.setattr(corpus_module, "build_corpus", fail_build)
    again = load_corpus(cache_dir)
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)


def test_corrupt_cache_is_rebuilt(tmp_path, corpus, monkeypatch):
    path = corpus_module.cache_path(str(tmp_path))
    with open(path, "wb") as handle:
        handle.write(b"not a torch file")
    tiny = Corpus(train=torch.tensor([1, 2], dtype=torch.uint8), val=torch.tensor([3], dtype=torch.uint8), vocab=VOCAB)
    monkeypatch.setattr(corpus_module, "build_corpus", lambda: tiny)
    assert torch.equal(load_corpus(str(tmp_path)).train, tiny.train)
    assert torch.equal(torch.load(path, weights_only=True)["train"], tiny.train)


def test_default_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARDWISE_CACHE", str(tmp_path))
    assert corpus_module.default_cache_dir() == str(tmp_path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=f"corpus file {CORPUS_FILES[0]} is missing"):
        build_corpus(str(tmp_path))
