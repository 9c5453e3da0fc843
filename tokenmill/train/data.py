"""Training batches: random windows of `block_size + 1` tokens from the memory-mapped token streams.

A step's global batch (batch_size x grad_accum x world windows) is a pure function of (seed, step): resuming at
step k draws exactly the windows an uninterrupted run would have drawn, and micro-batch m of DDP rank r takes its
contiguous slice of that same global batch, so 2 ranks x B/2, 2 micro-batches x B/2 and 1 process x B all see
the same data.

With a mixture (`train: {mixture: {source: weight}}`), each window of a step's global batch first picks a source
by weight, then a window inside that source's documents (runs of consecutive documents of that source in the
token streams): still a pure function of (seed, step), sliced the same way.

Validation takes consecutive non-overlapping windows from the start of the validation stream
(`consecutive_windows`): no window is seen twice, and a small split gives fewer windows rather than repeats.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tokenmill.engine.fsio import read_json
from tokenmill.tokenize.token_splits import TokenSplit, open_split


class EmptySplit(ValueError):
    """A token split with no window of `block_size + 1` tokens: no tokens at all, or only shorter streams."""


class UnknownSource(ValueError):
    """A mixture names a source the training split does not hold (or one with no window)."""


class Sampler:
    """What the trainer draws batches from: `windows(key, count, rows)` decides the windows of a key."""

    block_size: int

    def windows(self, key: tuple[int, ...], count: int, rows: slice = slice(None)) -> np.ndarray:
        raise NotImplementedError

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
        """A fixed set of random batches (the same at every call and in every run)."""
        rows = self.windows((2**31 - 1,), batches * batch_size)
        data = torch.from_numpy(rows)
        return [(chunk[:, :-1], chunk[:, 1:]) for chunk in data.split(batch_size)]


class WindowSampler(Sampler):
    """Uniform over every window start position of every stream long enough to hold a window."""

    def __init__(self, split: TokenSplit, block_size: int, seed: int, name: str = "the split") -> None:
        self.arrays = split.arrays  # every stream, in order (the consecutive windows run across them)
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

    def consecutive(self, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Up to `batches` batches of consecutive, non-overlapping windows from the start of the split."""
        return consecutive_windows(self.arrays, self.block_size, batches * batch_size, batch_size)


class MixtureSampler(Sampler):
    """Each window: a source drawn by weight, then a uniform window start inside that source's runs (maximal
    stretches of consecutive documents of the source within a token stream, long enough for a window)."""

    def __init__(
        self, directory: str, block_size: int, seed: int, mixture: dict[str, float], name: str = "the train split"
    ) -> None:
        self.block_size, self.seed = block_size, seed
        runs = source_runs(directory, "train")
        self.sources = list(mixture)
        self.tokens = {s: sum(len(r) for r in runs.get(s, [])) for s in self.sources}
        for source in self.sources:
            if source not in runs:
                known = ", ".join(sorted(runs)) or "none"
                raise UnknownSource(f"train.mixture: unknown source {source!r} ({name} holds: {known})")
        self.runs = [[r for r in runs[s] if len(r) > block_size] for s in self.sources]
        for source, kept in zip(self.sources, self.runs):
            if not kept:
                raise UnknownSource(
                    f"train.mixture: source {source!r} has no run of documents of {block_size + 1} tokens "
                    f"(block_size {block_size})"
                )
        weights = np.array([mixture[s] for s in self.sources], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.bounds = np.cumsum(self.weights)
        self.bounds[-1] = 1.0
        self.cumulative = [np.cumsum([len(r) - block_size for r in kept]) for kept in self.runs]

    def choose(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """The source index of each of `count` windows (drawn first, so a replay needs no positions)."""
        return np.searchsorted(self.bounds, rng.random(count), side="right").clip(max=len(self.sources) - 1)

    def windows(self, key: tuple[int, ...], count: int, rows: slice = slice(None)) -> np.ndarray:
        rng = np.random.default_rng([self.seed, *key])
        which = self.choose(rng, count)
        highs = np.array([int(c[-1]) for c in self.cumulative], dtype=np.int64)[which]
        positions = rng.integers(0, highs)
        out = np.empty((len(which[rows]), self.block_size + 1), dtype=np.int64)
        for row, (source, position) in enumerate(zip(which[rows], positions[rows])):
            cumulative = self.cumulative[source]
            run = int(np.searchsorted(cumulative, position, side="right"))
            offset = int(position - (cumulative[run - 1] if run else 0))
            out[row] = self.runs[source][run][offset : offset + self.block_size + 1]
        return out

    def drawn(self, steps: int, count: int) -> dict[str, int]:
        """Windows drawn from each source over steps 0..steps-1 of `count` windows each (replaying the draws)."""
        totals = np.zeros(len(self.sources), dtype=np.int64)
        for step in range(steps):
            totals += np.bincount(self.choose(np.random.default_rng([self.seed, step]), count), minlength=len(totals))
        return dict(zip(self.sources, totals.tolist()))

    def epochs(self, steps: int, count: int) -> dict[str, dict[str, float | int]]:
        """Per source: its weight, its tokens, the tokens a run of `steps` steps draws from it, and how many
        times that repeats the source (epochs)."""
        report = {}
        for source, (windows, weight) in zip(self.sources, zip(self.drawn(steps, count).values(), self.weights)):
            drawn = windows * self.block_size
            report[source] = {
                "weight": round(float(weight), 6),
                "tokens": self.tokens[source],
                "tokens_drawn": drawn,
                "epochs": round(drawn / max(self.tokens[source], 1), 4),
            }
        return report


def source_runs(directory: str, split: str) -> dict[str, list[np.ndarray]]:
    """Each source's runs in `split`: zero-copy views of maximal stretches of consecutive documents of that source
    (documents EOS-separated, as in the streams)."""
    state = read_json(os.path.join(directory, split, "state.json"))
    runs: dict[str, list[np.ndarray]] = {}
    for entry in state["_data_files"]:
        mapped = pa.memory_map(os.path.join(directory, split, entry["filename"]), "r")
        for batch in pa.ipc.open_stream(mapped):
            if batch.num_rows == 0:
                continue
            column = batch.column("input_ids")
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=True)
            encoded = pc.dictionary_encode(batch.column("source").fill_null("unknown"))
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            names = encoded.dictionary.to_pylist()
            changes = np.flatnonzero(np.diff(codes)) + 1
            starts = np.concatenate([[0], changes])
            ends = np.concatenate([changes, [len(codes)]])
            for first, last in zip(starts.tolist(), ends.tolist()):
                runs.setdefault(names[codes[first]], []).append(values[offsets[first] : offsets[last]])
    return runs


def consecutive_windows(
    streams: list[np.ndarray], block_size: int, count: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to `count` consecutive, non-overlapping windows of block_size + 1 tokens from the start of the streams
    taken as one stream, in batches of `batch_size` (the last may be smaller): fewer when the streams are short,
    never a window twice."""
    width = block_size + 1
    need = count * width
    parts, have = [], 0
    for stream in streams:
        if have >= need:
            break
        parts.append(stream[: need - have])
        have += len(parts[-1])
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    rows = torch.from_numpy(flat[: len(flat) // width * width].reshape(-1, width))
    return [(chunk[:, :-1], chunk[:, 1:]) for chunk in rows.split(batch_size)]


def open_windows(
    tokens: str, split: str, block_size: int, seed: int, mixture: dict[str, float] | None = None
) -> Sampler:
    """The windows of `split` ("train" or "validation") of a `tokenize` output directory (by `mixture` when given);
    EmptySplit names the split's directory when it has none."""
    name = f"the {split} split {os.path.join(tokens, split)}"
    if mixture:
        return MixtureSampler(tokens, block_size, seed, mixture, name)
    try:
        return WindowSampler(open_split(tokens, split), block_size, seed, name)
    except EmptySplit as exc:
        if split == "validation" and str(exc).endswith("holds no tokens"):
            raise EmptySplit(f"{exc}: nothing to validate on (tokenize with a validation_fraction above 0)") from None
        raise
