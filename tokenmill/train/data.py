"""Training batches: random windows of `block_size + 1` tokens from the memory-mapped token streams.

A step's global batch (batch_size x grad_accum x world windows) is a pure function of (seed, step): resuming at
step k draws exactly the windows an uninterrupted run would have drawn, and micro-batch m of DDP rank r takes its
contiguous slice of that same global batch, so 2 ranks x B/2, 2 micro-batches x B/2 and 1 process x B all see
the same data.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from tokenmill.tokenize.token_splits import TokenSplit, open_split


class EmptySplit(ValueError):
    """A token split with no window of `block_size + 1` tokens: no tokens at all, or only shorter streams."""


class WindowSampler:
    """Uniform over every window start position of every stream long enough to hold a window."""

    def __init__(self, split: TokenSplit, block_size: int, seed: int, name: str = "the split") -> None:
        self.streams = [a for a in split.arrays if len(a) > block_size]
        if not self.streams:
            if not split.arrays:
                raise EmptySplit(f"{name} holds no tokens")
            longest = max(len(a) for a in split.arrays)
            raise EmptySplit(
                f"{name}: block_size {block_size} needs streams of at least {block_size + 1} tokens; "
                f"the longest has {longest}"
            )
        self.block_size = block_size
        self.seed = seed
        starts = np.array([len(a) - block_size for a in self.streams], dtype=np.int64)
        self.cumulative = np.cumsum(starts)

    def windows(self, key: tuple[int, ...], count: int, rows: slice = slice(None)) -> np.ndarray:
        """`count` windows (rows of block_size + 1 token ids, int64) determined by `key` alone, or only the
        `rows` slice of them (the same rows, without copying the others)."""
        rng = np.random.default_rng([self.seed, *key])
        positions = rng.integers(0, int(self.cumulative[-1]), size=count)[rows]
        which = np.searchsorted(self.cumulative, positions, side="right")
        offsets = positions - np.concatenate([[0], self.cumulative[:-1]])[which]
        out = np.empty((len(positions), self.block_size + 1), dtype=np.int64)
        for row, (stream, offset) in enumerate(zip(which, offsets)):
            out[row] = self.streams[stream][offset : offset + self.block_size + 1]
        return out

    def batch(
        self, step: int, micro: int, batch_size: int, rank: int = 0, world: int = 1, accum: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets for micro-batch `micro` (of `accum`) of `step` on `rank`; `batch_size` is per rank
        and micro-batch."""
        first = (micro * world + rank) * batch_size
        rows = self.windows((step,), batch_size * world * accum, slice(first, first + batch_size))
        data = torch.from_numpy(rows)
        return data[:, :-1], data[:, 1:]

    def fixed(self, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed set of evaluation batches (the same at every evaluation and in every run)."""
        rows = self.windows((2**31 - 1,), batches * batch_size)
        data = torch.from_numpy(rows)
        return [(chunk[:, :-1], chunk[:, 1:]) for chunk in data.split(batch_size)]


def open_windows(tokens: str, split: str, block_size: int, seed: int) -> WindowSampler:
    """The windows of `split` ("train" or "validation") of a `tokenize` output directory; EmptySplit names the
    split's directory when it has none."""
    name = f"the {split} split {os.path.join(tokens, split)}"
    try:
        return WindowSampler(open_split(tokens, split), block_size, seed, name)
    except EmptySplit as exc:
        if split == "validation" and str(exc).endswith("holds no tokens"):
            raise EmptySplit(f"{exc}: nothing to validate on (tokenize with a validation_fraction above 0)") from None
        raise
