"""Training batches: random windows of `block_size + 1` tokens from the memory-mapped token streams.

A step's global batch is a pure function of (seed, step): resuming at step k draws exactly the windows an
uninterrupted run would have drawn, and DDP rank r takes its contiguous slice of that same global batch, so
2 ranks x B/2 see the same data as 1 process x B.
"""

from __future__ import annotations

import numpy as np
import torch

from tokenmill.tokenize.reader import TokenSplit


class WindowSampler:
    """Uniform over every window start position of every stream long enough to hold a window."""

    def __init__(self, split: TokenSplit, block_size: int, seed: int) -> None:
        self.streams = [a for a in split.arrays if len(a) > block_size]
        if not self.streams:
            longest = max((len(a) for a in split.arrays), default=0)
            raise ValueError(
                f"block_size {block_size} needs streams of at least {block_size + 1} tokens; the longest has {longest}"
            )
        self.block_size = block_size
        self.seed = seed
        starts = np.array([len(a) - block_size for a in self.streams], dtype=np.int64)
        self.cumulative = np.cumsum(starts)

    def windows(self, key: tuple[int, ...], count: int) -> np.ndarray:
        """`count` windows (rows of block_size + 1 token ids, int64) determined by `key` alone."""
        rng = np.random.default_rng([self.seed, *key])
        positions = rng.integers(0, int(self.cumulative[-1]), size=count)
        which = np.searchsorted(self.cumulative, positions, side="right")
        offsets = positions - np.concatenate([[0], self.cumulative[:-1]])[which]
        out = np.empty((count, self.block_size + 1), dtype=np.int64)
        for row, (stream, offset) in enumerate(zip(which, offsets)):
            out[row] = self.streams[stream][offset : offset + self.block_size + 1]
        return out

    def batch(
        self, step: int, micro: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets for one micro-batch of `step`; `batch_size` is per rank."""
        rows = self.windows((step, micro), batch_size * world)[rank * batch_size : (rank + 1) * batch_size]
        data = torch.from_numpy(rows)
        return data[:, :-1], data[:, 1:]

    def fixed(self, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed set of evaluation batches (the same at every evaluation and in every run)."""
        rows = self.windows((2**31 - 1,), batches * batch_size)
        data = torch.from_numpy(rows)
        return [(chunk[:, :-1], chunk[:, 1:]) for chunk in data.split(batch_size)]
