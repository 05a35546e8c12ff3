"""The built-in character corpus and the distributed sampler that feeds it to ranks."""

from shardwise.data.corpus import CORPUS_FILES, VOCAB, Corpus, build_corpus, load_corpus
from shardwise.data.sampler import BatchSampler, random_eval_batches, rank_slice

__all__ = [
    "CORPUS_FILES",
    "VOCAB",
    "BatchSampler",
    "Corpus",
    "build_corpus",
    "load_corpus",
    "random_eval_batches",
    "rank_slice",
]
