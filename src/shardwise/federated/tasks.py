"""What the clients learn: the data each holds, the model, the loss and the test.

- "digits": scikit-learn's bundled 8x8 digits (1,797 images, scaled to [0, 1]), 80/20
  train/test by a seeded shuffle, the training part split over K clients by --split; an MLP
  64-64-10 with cross entropy.
- "corpus": the built-in standard-library corpus split by source file, a natural non-IID
  split (each file its own style and vocabulary): one client per file (23), each holding
  non-overlapping windows of its file's first 90%; the test set is windows of every file's last
  10%. A small built-in GPT; accuracy is next-character accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .partition import partition


class Task:
    name: str
    clients: int

    def build_model(self) -> nn.Module: ...

    def client_data(self, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), labels.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        logits = model(self.test_x)
        accuracy = (logits.argmax(-1) == self.test_y).float().mean()
        return float(accuracy), float(self.loss(logits, self.test_y))


DIGITS_MODELS = ("mlp", "cnn")


def digits_model(seed: int, kind: str = "mlp") -> nn.Module:
    """The MLP (64-64-10, 4.8K parameters) or a small CNN on the 8 x 8 images (two 3 x 3
    convolutions of 16 and 32 channels with 2 x 2 max-pooling, then a linear layer; 6.1K)."""
    torch.manual_seed(seed)
    if kind == "cnn":
        return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


class Digits(Task):
    name = "digits"

    def __init__(self, clients: int, split: str, seed: int, model: str = "mlp"):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.int64)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        cut = int(0.8 * len(y))
        self.train_x, self.train_y = x[order[:cut]], y[order[:cut]]
        self.test_x, self.test_y = x[order[cut:]], y[order[cut:]]
        self.parts = partition(self.train_y.numpy(), clients, split, seed)
        self.clients, self.seed, self.model = clients, seed, model

    def build_model(self) -> nn.Module:
        return digits_model(self.seed, self.model)

    def client_data(self, k: int):
        idx = torch.tensor(self.parts[k])
        return self.train_x[idx], self.train_y[idx]


class SourceFiles(Task):
    name = "corpus"
    BLOCK = 64

    def __init__(self, clients: int, seed: int):
        from ..data.corpus import CORPUS_FILES, encode_text, stdlib_dir

        if clients != len(CORPUS_FILES):
            raise ConfigError(f"--data corpus has one client per source file: give --clients {len(CORPUS_FILES)}")
        import os

        trains, tests = [], []
        for name in CORPUS_FILES:
            with open(os.path.join(stdlib_dir(), name), encoding="utf-8", errors="replace") as f:
                ids = encode_text(f.read())
            cut = int(0.9 * len(ids))
            trains.append(self._windows(ids[:cut]))
            tests.append(self._windows(ids[cut:]))
        self.train = trains
        test_x = torch.cat([t[0] for t in tests])
        test_y = torch.cat([t[1] for t in tests])
        pick = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(1234))[:256]
        self.test_x, self.test_y = test_x[pick], test_y[pick]
        self.clients, self.seed = clients, seed

    def _windows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = (len(ids) - 1) // self.BLOCK
        x = ids[:count * self.BLOCK].view(count, self.BLOCK)
        y = ids[1:count * self.BLOCK + 1].view(count, self.BLOCK)
        return x, y

    def build_model(self) -> nn.Module:
        from ..models.gpt import GPT, GPTConfig

        torch.manual_seed(self.seed)
        return GPT(GPTConfig(block_size=self.BLOCK, n_layer=2, n_head=2, n_embd=64))

    def client_data(self, k: int):
        return self.train[k]


def make_task(data: str, clients: int, split: str, seed: int, model: str = "mlp") -> Task:
    if data == "digits":
        return Digits(clients, split, seed, model)
    if data == "corpus":
        return SourceFiles(clients, seed)
    raise ConfigError(f"--data must be digits or corpus, got '{data}'")
