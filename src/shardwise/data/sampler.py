"""Which rank trains on which examples: the global batch of each step, and each rank's slice of it.

[Note: global batch first]
The sampler decides the *global* batch of step s from (seed, epoch) alone, then rank r of N takes
the contiguous rows `rank_slice(G, r, N)` of it. So N ranks together see exactly the batch one
process would, which is what makes multi-rank runs comparable to (and testable against) a
single-process reference, and lets a checkpoint resume under a different world size: the
position is just (seed, step). Examples are the non-overlapping windows of block_size + 1 tokens;
each epoch is one permutation of them, so no example repeats within an epoch on any rank.
Pure code, no torch.distributed.
"""

import torch

from shardwise.errors import ConfigError


def rank_slice(global_batch: int, rank: int, world_size: int) -> slice:
    """Rows of the global batch that `rank` owns: [r*G/N, (r+1)*G/N)."""
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of {world_size} ranks")
    if global_batch % world_size != 0:
        raise ConfigError(f"global batch {global_batch} does not split evenly over {world_size} ranks")
    per_rank = global_batch // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def windows_at(data: torch.Tensor, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, both [len(starts), block_size] int64, from token offsets `starts`."""
    offsets = starts.long()[:, None] + torch.arange(block_size + 1)  # [B, block_size + 1]
    windows = data[offsets].long()
    return windows[:, :-1], windows[:, 1:]


class BatchSampler:
    """Deterministic, epoch-shuffled batches of non-overlapping windows, sliced by rank (see [Note: global batch first])."""

    def __init__(
        self,
        data: torch.Tensor,
        block_size: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        if data.ndim != 1:
            raise ConfigError(f"sampler data must be a 1D tensor of token ids, got shape {tuple(data.shape)}")
        if block_size < 1:
            raise ConfigError(f"block size must be at least 1, got {block_size}")
        if global_batch < 1:
            raise ConfigError(f"global batch must be at least 1, got {global_batch}")
        self.rows = rank_slice(global_batch, rank, world_size)  # validates rank, world size, divisibility
        self.num_examples = max(len(data) - 1, 0) // block_size
        if self.num_examples < world_size:
            raise ConfigError(
                f"{len(data)} tokens give {self.num_examples} examples of block size {block_size}, "
                f"fewer than the {world_size} ranks"
            )
        if self.num_examples < global_batch:
            raise ConfigError(
                f"{len(data)} tokens give {self.num_examples} examples of block size {block_size}, "
                f"fewer than the global batch {global_batch}"
            )
        self.data = data
        self.block_size = block_size
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.step = 0  # position of `next_batch`; `batch(step)` does not move it
        self.batches_per_epoch = self.num_examples // global_batch  # the incomplete remainder is dropped
        self._cached_epoch: int | None = None
        self._cached_permutation: torch.Tensor | None = None

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def epoch_of(self, step: int) -> int:
        return step // self.batches_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        """Example order of `epoch`: a permutation drawn from its own generator seeded seed + epoch."""
        if epoch != self._cached_epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._cached_permutation = torch.randperm(self.num_examples, generator=generator)
            self._cached_epoch = epoch
        return self._cached_permutation

    def global_indices(self, step: int) -> torch.Tensor:
        """Example indices of the whole global batch of `step`, 1D int64 of length global_batch."""
        if step < 0:
            raise ConfigError(f"step must be non-negative, got {step}")
        batch_in_epoch = step % self.batches_per_epoch
        start = batch_in_epoch * self.global_batch
        return self.permutation(self.epoch_of(step))[start : start + self.global_batch]

    def global_batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole global batch (x, y), each [global_batch, block_size]: what a single-process reference trains on."""
        return windows_at(self.data, self.global_indices(step) * self.block_size, self.block_size)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice (x, y), each [global_batch / world_size, block_size] int64."""
        indices = self.global_indices(step)[self.rows]
        return windows_at(self.data, indices * self.block_size, self.block_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch(self.step)`, then advance the step."""
        batch = self.batch(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        """Plain-data position for checkpoints; independent of rank and world size."""
        return {"seed": self.seed, "step": self.step, "global_batch": self.global_batch, "block_size": self.block_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at the saved (seed, step); the batch shape must match, or steps would mean other examples."""
        for key in ("global_batch", "block_size"):
            if int(state[key]) != getattr(self, key):
                raise ConfigError(
                    f"sampler state was saved with {key.replace('_', ' ')} {state[key]}, this run uses {getattr(self, key)}"
                )
        self.seed = int(state["seed"])
        self.step = int(state["step"])
        self._cached_epoch = None


def random_eval_batches(
    data: torch.Tensor, block_size: int, batch_size: int, num_batches: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`num_batches` batches (x, y) of windows at random offsets, the same for a given seed on every
    rank: for estimating validation loss, where any window is fair and determinism matters more than coverage."""
    for name, value, least in (("block size", block_size, 1), ("batch size", batch_size, 1), ("batch count", num_batches, 0)):
        if value < least:
            raise ConfigError(f"eval {name} must be at least {least}, got {value}")
    if len(data) < block_size + 1:
        raise ConfigError(f"{len(data)} tokens are too few for one window of block size {block_size}")
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)
        batches.append(windows_at(data, starts, block_size))
    return batches
