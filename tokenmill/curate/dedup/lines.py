"""CCNet-style repeated-line removal: lines found in more than `max_occurrences` documents are boilerplate.

Map: each shard counts, per normalized-line hash, the documents containing it and its total occurrences, and
writes those counts hash-partitioned. Reduce: each partition sums its counts and keeps the hashes of frequent
lines. Apply (next segment): every document drops its frequent lines; one left with nothing is rejected.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field, PrivateAttr

from tokenmill.curate.dedup.partitions import (
    default_partitions,
    list_files,
    read_partition,
    read_table,
    write_partitioned,
    write_table,
)
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import join
from tokenmill.engine.registry import register
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import DocumentStage, GlobalStage, ShardOutput
from tokenmill.engine.tasks import clean_work_dir, run_tasks

_DIGITS = re.compile(r"\d")
# Control characters other than whitespace (which collapses anyway), as CCNet drops non-printing characters.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
# The same rules for ASCII bytes: digits to 0, controls deleted, and \x1c-\x1f (whitespace to str.split but not to
# bytes.split) turned into spaces.
_ASCII_MAP = bytes.maketrans(b"123456789\x1c\x1d\x1e\x1f", b"000000000    ")
_ASCII_CONTROL = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x1C)) + b"\x7f"
# Per-shard counts are folded into numpy arrays every this many line hashes, bounding the map's Python lists.
_FOLD_EVERY = 1 << 20
EXEMPT = 0  # the hash slot of a line that is never counted nor removed (blank, or shorter than min_chars)


def normalize_lines(text: str) -> list[str]:
    """The lines of `text` (split on "\\n" only) as CCNet compares them: lowercased, every digit "0", control
    characters dropped, whitespace runs collapsed to one space, stripped. One output line per input line."""
    text = _CONTROL.sub("", _DIGITS.sub("0", text.lower()))
    return [" ".join(line.split()) for line in text.split("\n")]


def line_hashes(text: str, min_chars: int = 0) -> list[int]:
    """64-bit xxh3 of each normalized line's UTF-8, aligned with `text.split("\\n")`; EXEMPT (0) for blank lines
    and lines whose normalized form is shorter than `min_chars`. A real hash of 0 is remapped to 1."""
    shortest = max(min_chars, 1)
    if text.isascii():  # the common case, normalized on bytes: same lines as `normalize_lines`, about 2x faster
        data = text.lower().encode("ascii").translate(_ASCII_MAP, _ASCII_CONTROL)
        lines = [b" ".join(line.split()) for line in data.split(b"\n")]
    else:
        lines = [
            line.encode("utf-8", "surrogatepass") if len(line) >= shortest else b"" for line in normalize_lines(text)
        ]
    return [EXEMPT if len(line) < shortest else xxhash.xxh3_64_intdigest(line) or 1 for line in lines]


def remove_lines(text: str, drop: list[bool]) -> str:
    """`text` without the lines flagged in `drop` (aligned with `text.split("\\n")`).

    Blank lines survive, except where a removal would otherwise leave blank lines at either end or join two
    blank runs into a longer one: removing a boilerplate block leaves the paragraph break it sat in, not a gap.
    """
    out: list[str] = []
    removed = False  # a line was dropped since the last kept line
    for line, gone in zip(text.split("\n"), drop):
        if gone:
            removed = True
        elif line.strip() or not (removed and (not out or not out[-1].strip())):
            out.append(line)
            removed = False
    if removed:
        while out and not out[-1].strip():
            out.pop()
    return "\n".join(out)


@register("dedup_lines")
class RepeatedLineRemoval(GlobalStage):
    """Removes boilerplate lines: those found in more than `max_occurrences` documents of the corpus (CCNet-style).

    Lines are compared normalized (lowercased, digits as 0, whitespace collapsed), so navigation, cookie notices,
    signatures and templated headers match across pages.

    Lines shorter than `min_chars` (normalized) and blank lines are never counted nor removed, so short content
    lines ("Why?", "}") survive. A document left with nothing but whitespace is rejected `all_lines_repeated`.
    """

    max_occurrences: int = Field(10, ge=1, description="a line in more documents than this is removed")
    min_chars: int = Field(10, ge=0, description="normalized lines shorter than this are exempt")
    partitions: int | None = Field(None, gt=0, description="hash partitions; default: one per shard, at most 256")

    def analyze(self, client: Any, shards: list[ShardOutput], work_dir: str) -> dict[str, Any]:
        clean_work_dir(work_dir)
        n = self.partitions or default_partitions(shards)
        counts, frequent = join(work_dir, "counts"), join(work_dir, "frequent")
        maps = [CountShard(shard=s, counts_dir=counts, partitions=n, min_chars=self.min_chars) for s in shards]
        run_tasks(client, _count_shard, maps)
        reduces = [
            ReduceCounts(partition=p, counts_dir=counts, frequent_dir=frequent, max_occurrences=self.max_occurrences)
            for p in range(n)
        ]
        parts = run_tasks(client, _reduce_partition, reduces)
        return {
            "distinct lines": sum(p["distinct"] for p in parts),
            "frequent lines": sum(p["frequent"] for p in parts),
            "line occurrences removed": sum(p["removed"] for p in parts),
            "most documents sharing a line": max([p["largest"] for p in parts] + [0]),
            "partitions": n,
        }

    def applier(self, work_dir: str, analysis_id: str) -> RemoveFrequentLines:
        return RemoveFrequentLines(
            stage_label=self.stage_name,
            frequent_dir=join(work_dir, "frequent"),
            analysis_id=analysis_id,
            min_chars=self.min_chars,
        )


class RemoveFrequentLines(DocumentStage):
    """Drops the lines whose hashes the analysis found frequent; rejects a document left empty.

    `setup` loads every partition's frequent hashes into one sorted uint64 array (8 bytes per frequent line),
    shared by the tasks of a worker process through a small cache.
    """

    stage_label: str
    frequent_dir: str
    analysis_id: str
    min_chars: int
    _frequent: np.ndarray | None = PrivateAttr(default=None)

    @property
    def label(self) -> str:
        return self.stage_label

    def setup(self) -> None:
        self._frequent = _load_frequent(self.frequent_dir, self.analysis_id)

    def process(self, doc: Doc) -> str | None:
        if self._frequent is None:  # used from Python without the executor's setup call
            self.setup()
        frequent = self._frequent
        if len(frequent) == 0:
            return None
        hashes = np.array(line_hashes(doc.text, self.min_chars), dtype=np.uint64)
        at = np.minimum(np.searchsorted(frequent, hashes), len(frequent) - 1)
        drop = (frequent[at] == hashes) & (hashes != EXEMPT)
        if not drop.any():
            return None
        doc.text = remove_lines(doc.text, drop.tolist())
        return None if doc.text.strip() else "all_lines_repeated"


@functools.lru_cache(maxsize=2)
def _load_frequent(frequent_dir: str, analysis_id: str) -> np.ndarray:
    """Every partition's frequent hashes, sorted (the analysis id keys the cache: a new analysis reloads)."""
    arrays = [read_table(path, ["hash"]).column("hash").to_numpy() for path in list_files(frequent_dir)]
    return np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, np.uint64)


class _LineCounter:
    """Documents and occurrences per line hash for one shard, folded into numpy arrays as it grows."""

    def __init__(self) -> None:
        self._doc_hashes: list[int] = []  # each document's distinct hashes
        self._all_hashes: list[int] = []  # every occurrence
        self._folded: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, hashes: list[int]) -> None:
        counted = [h for h in hashes if h != EXEMPT]
        self._doc_hashes.extend(set(counted))
        self._all_hashes.extend(counted)
        if len(self._all_hashes) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if not self._all_hashes:
            return
        keys, docs = np.unique(np.array(self._doc_hashes, np.uint64), return_counts=True)
        same_keys, lines = np.unique(np.array(self._all_hashes, np.uint64), return_counts=True)
        assert np.array_equal(keys, same_keys)  # a document's distinct hashes are among its occurrences
        self._folded.append((keys, docs, lines))
        self._doc_hashes, self._all_hashes = [], []

    def table(self) -> pa.Table:
        self._fold()
        parts = self._folded or [(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64))]
        keys, docs, lines = (np.concatenate(column) for column in zip(*parts))
        keys, docs, lines = sum_by_key(keys, docs, lines)
        return pa.table({"hash": keys, "docs": docs, "lines": lines})


def sum_by_key(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted distinct `keys` and, for each of `values`, its integer sum per key (exact, no float weights)."""
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    if len(keys) == 0:
        return (keys, *(v.astype(np.int64) for v in values))
    starts = np.concatenate(([0], np.flatnonzero(keys[1:] != keys[:-1]) + 1))
    return (keys[starts], *(np.add.reduceat(v[order].astype(np.int64), starts) for v in values))


@dataclass(frozen=True, kw_only=True)
class CountShard:
    """The map task of one shard."""

    shard: ShardOutput
    counts_dir: str
    partitions: int
    min_chars: int


def _count_shard(task: CountShard) -> int:
    """Map: (hash, documents, occurrences) for every counted line of one shard, partitioned by hash."""
    counter = _LineCounter()
    for _, text in iter_shard_columns(task.shard, ["text"]):
        counter.add(line_hashes(text, task.min_chars))
    table = counter.table()
    write_partitioned(table, table.column("hash").to_numpy(), task.partitions, task.counts_dir, f"s{task.shard.key}")
    return table.num_rows


@dataclass(frozen=True, kw_only=True)
class ReduceCounts:
    """The reduce task of one hash partition."""

    partition: int
    counts_dir: str
    frequent_dir: str
    max_occurrences: int  # a line in more documents than this is frequent


def _reduce_partition(task: ReduceCounts) -> dict[str, int]:
    """Reduce: total the counts of one partition and write the hashes of lines in more than `max_occurrences`
    documents."""
    partition = task.partition
    summary = {"distinct": 0, "frequent": 0, "removed": 0, "largest": 0}
    table = read_partition(task.counts_dir, partition)
    if table is None or table.num_rows == 0:
        return summary
    keys, docs, lines = sum_by_key(*(table.column(c).to_numpy() for c in ("hash", "docs", "lines")))
    frequent = docs > task.max_occurrences
    summary.update(
        distinct=len(keys),
        frequent=int(frequent.sum()),
        removed=int(lines[frequent].sum()),
        largest=int(docs.max()),
    )
    if frequent.any():
        out = pa.table({"hash": keys[frequent], "docs": docs[frequent]})
        write_table(join(task.frequent_dir, f"p{partition:05d}.parquet"), out)
    return summary
