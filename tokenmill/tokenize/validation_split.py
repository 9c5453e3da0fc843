"""The validation split of `tokenize` (tokenize_stage.py): its three rules, which one a stage's options choose,
and the positional tail split's rewrite of the encoded shards.

- `validation_fraction` (the default): each document goes by a hash of its id (`is_heldout`, decided in the
  shard task);
- `validation: {tail_fraction: f}`: every document is first encoded to `train`, then `split_tail` moves the
  last `f` of the stream's tokens to `validation` (the document across the boundary is cut in two);
- `validation: {format, paths, ...}`: an explicit source, read with tokenmill's readers (`source_reader`),
  goes to `validation` only.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.fsio import atomic_write_json, join, tmp_name

SPLITS = ("train", "validation")


def check_options(validation: dict[str, Any] | None, fraction_set: bool) -> None:
    """Raises ValueError unless `validation` (with `validation_fraction` set or not) names exactly one rule."""
    if validation is None:
        return
    if fraction_set:
        raise ValueError("set one of validation_fraction, validation.tail_fraction and validation.paths, not two")
    keys = set(validation)
    if "tail_fraction" in keys:
        if keys != {"tail_fraction"}:
            raise ValueError(
                "validation: tail_fraction and a validation source "
                f"({', '.join(sorted(keys - {'tail_fraction'}))}) exclude each other; set one"
            )
        fraction = validation["tail_fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"validation.tail_fraction must be a number in (0, 1), got {fraction!r}")
        return
    if "paths" not in keys:
        raise ValueError("validation: expected {tail_fraction: f} or a source {format: ..., paths: [...]}")
    source_reader(validation)  # raises on a bad source


def tail_fraction_of(validation: dict[str, Any] | None) -> float | None:
    """The positional split's fraction (None under the other rules)."""
    return validation.get("tail_fraction") if validation else None


def source_reader(validation: dict[str, Any] | None) -> Any:
    """The explicit validation source as a tokenmill reader (None without one)."""
    if not validation or "tail_fraction" in validation:
        return None
    from pydantic import ValidationError

    from tokenmill.engine.registry import READERS, known_formats, load_builtins

    load_builtins()
    fmt = validation.get("format")
    if fmt not in READERS:
        got = "missing" if fmt is None else f"got {fmt!r}"
        raise ValueError(f"validation.format must be one of {', '.join(known_formats())} ({got})")
    try:
        return READERS[fmt](**validation)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"validation.{where}: {first['msg']}") from None


def split_rule(validation: dict[str, Any] | None, validation_fraction: float) -> dict[str, Any]:
    """The rule as the manifest records it (`validation_split`)."""
    tail = tail_fraction_of(validation)
    if tail is not None:
        return {"tail_fraction": tail}
    if validation:  # a source (check_options allows nothing else)
        return {"source": {k: v for k, v in validation.items()}}
    return {"validation_fraction": validation_fraction}


def tail_cut(total: int, tail_fraction: float) -> int:
    """The first validation token of a positional split: train is `[:cut]`, validation `[cut:]` (nanoGPT's
    `int(n * 0.9)` for a tail of 0.1)."""
    return int(total * (1 - tail_fraction))


def shard_tokens(result: dict, split: str = "train") -> int:
    return sum(tokens for _, tokens in result["counts"][split].values())


def split_tail(directory: str, results: list[dict], tail_fraction: float) -> list[dict]:
    """Move the last `tail_fraction` of the tokens (the shards in order, every shard's documents in order) from
    `train` to `validation`: the shards after the boundary are renamed, the shard holding it is cut in two
    (the document across it too: its first part, without EOS, ends train, the rest starts validation).

    Each shard's manifest records that it was placed (`tail`), so a resumed run does not move it again."""
    total = sum(shard_tokens(r) + shard_tokens(r, "validation") for r in results)
    cut = tail_cut(total, tail_fraction)
    placed, start = [], 0
    for result in results:
        size = shard_tokens(result) + shard_tokens(result, "validation")
        if result.get("tail") != [cut, start]:
            result = _place(directory, result, max(0, min(size, cut - start)))
            result["tail"] = [cut, start]
            atomic_write_json(join(directory, "_manifest", f"{result['shard']}.json"), result)
        placed.append(result)
        start += size
    return placed


def _place(directory: str, result: dict, keep: int) -> dict:
    """Rewrite one freshly encoded shard (everything in train) as its first `keep` tokens in train and the rest
    in validation."""
    files = result["files"]
    paths = {split: join(directory, files[split]) for split in SPLITS}
    table = pa.ipc.open_stream(pa.memory_map(paths["train"], "r")).read_all()
    lengths = np.asarray(pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False), np.int64)
    ends = np.cumsum(lengths)
    row = int(np.searchsorted(ends, keep, side="right"))  # the first row not wholly in train
    head, tail = table.slice(0, row), table.slice(row)
    if row < len(table) and keep > (ends[row - 1] if row else 0):  # the boundary falls inside document `row`
        inside = keep - int(ends[row - 1] if row else 0)
        doc = table.slice(row, 1)
        ids = doc.column("input_ids").combine_chunks().values
        first = doc.set_column(0, "input_ids", pa.array([ids[:inside]], type=table.schema.field(0).type))
        rest = doc.set_column(0, "input_ids", pa.array([ids[inside:]], type=table.schema.field(0).type))
        head = pa.concat_tables([head, first])
        tail = pa.concat_tables([rest, table.slice(row + 1)])
    counts: dict[str, dict[str, list[int]]] = {}
    tmps = {split: tmp_name(paths[split]) for split in SPLITS}
    for split, part in (("train", head), ("validation", tail)):
        with pa.OSFile(tmps[split], "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            if len(part):
                writer.write_table(part.combine_chunks())
        counts[split] = _count(part)
    for split in SPLITS:
        os.replace(tmps[split], paths[split])
    return {**result, "counts": counts}


def _count(table: pa.Table) -> dict[str, list[int]]:
    """[documents, tokens] per source of a token table."""
    counts: dict[str, list[int]] = {}
    lengths = pc.list_value_length(table.column("input_ids")).to_pylist()
    for source, n in zip(table.column("source").to_pylist(), lengths):
        entry = counts.setdefault(source, [0, 0])
        entry[0] += 1
        entry[1] += n
    return counts
