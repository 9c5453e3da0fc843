"""Token shards for training: memory-mapped Arrow files exposed as zero-copy numpy views (no Python lists)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tokenmill.engine.fsio import read_json


class TokenizerMismatch(ValueError):
    """The tokenizer given does not match the one the shards were made with."""


@dataclass
class TokenSplit:
    """One split's token streams: `arrays[i]` is a flat run of token ids (documents EOS-separated), a view into
    a memory-mapped file; `boundaries[i]` holds the document start offsets within it (plus the end)."""

    arrays: list[np.ndarray]
    boundaries: list[np.ndarray]
    maps: list[pa.MemoryMappedFile] = field(default_factory=list, repr=False)  # keeps the mappings alive

    @property
    def total(self) -> int:
        return sum(len(a) for a in self.arrays)

    @property
    def documents(self) -> int:
        return sum(len(b) - 1 for b in self.boundaries)


def open_split(directory: str, split: str = "train") -> TokenSplit:
    """Memory-map every Arrow file of `split` in a `tokenize` output directory."""
    state = read_json(os.path.join(directory, split, "state.json"))
    arrays, boundaries, maps = [], [], []
    for entry in state["_data_files"]:
        mapped = pa.memory_map(os.path.join(directory, split, entry["filename"]), "r")
        maps.append(mapped)
        for batch in pa.ipc.open_stream(mapped):
            column = batch.column("input_ids")
            if len(column) == 0:
                continue
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=True)
            arrays.append(values[offsets[0] : offsets[-1]])
            boundaries.append(offsets - offsets[0])
    return TokenSplit(arrays, boundaries, maps)


def check_tokenizer(directory: str, tokenizer_json: str) -> dict:
    """The shards' manifest, after checking `tokenizer_json` is the tokenizer they were made with."""
    from tokenmill.engine.identity import file_digest

    manifest = read_json(os.path.join(directory, "manifest.json"))
    actual = file_digest(tokenizer_json)
    if manifest["tokenizer_sha256"] != actual:
        raise TokenizerMismatch(
            f"{tokenizer_json} (sha256 {actual[:12]}) is not the tokenizer these shards were made with "
            f"(manifest: {manifest['tokenizer_sha256'][:12]}); re-run `tokenize` or use the matching tokenizer"
        )
    return manifest
