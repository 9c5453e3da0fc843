"""Exact deduplication: xxh3-128 of the (optionally normalized) text, global over all shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from tokenmill.curate.dedup.apply import ApplyDecisions, decisions_table
from tokenmill.curate.dedup.partitions import default_partitions, read_partition, write_partitioned, write_table
from tokenmill.engine.fsio import join
from tokenmill.engine.registry import register
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import GlobalStage, ShardOutput
from tokenmill.engine.tasks import clean_work_dir, run_tasks

TEXT, URL = 0, 1
REASONS = {TEXT: "exact_duplicate", URL: "duplicate_url"}


def text_key(text: str, normalize: bool) -> bytes:
    """24-byte identity of a text: xxh3-128 of its (normalized) UTF-8 bytes plus their length.

    Two different texts are confused only if they have the same length and collide on a 128-bit hash: for a
    billion documents the probability is about 1e-21, far below the rate of undetected disk errors.
    """
    if normalize:
        text = " ".join(text.lower().split())
    data = text.encode("utf-8", "surrogatepass")
    return xxhash.xxh3_128_digest(data) + len(data).to_bytes(8, "little")


@register("dedup_exact")
class ExactDedup(GlobalStage):
    """Removes every document whose text (whitespace-collapsed and lowercased when `normalize`) occurred
    before it in (shard, row) order; the removed document records the kept one in `meta.duplicate_of`.
    With `url: true`, documents repeating an earlier URL are removed too (`duplicate_url`).
    """

    normalize: bool = True
    url: bool = False
    partitions: int | None = Field(None, gt=0, description="hash partitions; default: one per shard, at most 256")

    def analyze(self, client: Any, shards: list[ShardOutput], work_dir: str) -> dict[str, Any]:
        clean_work_dir(work_dir)
        n = self.partitions or default_partitions(shards)
        hashes, decisions = join(work_dir, "hashes"), join(work_dir, "decisions")
        maps = [
            HashShard(index=i, shard=s, hashes_dir=hashes, partitions=n, normalize=self.normalize, url=self.url)
            for i, s in enumerate(shards)
        ]
        run_tasks(client, _hash_shard, maps)
        reduces = [ReduceHashes(partition=p, hashes_dir=hashes, decisions_dir=decisions) for p in range(n)]
        parts = run_tasks(client, _reduce_partition, reduces)
        return {
            "documents removed": sum(p["removed"] for p in parts),
            "duplicate texts (groups)": sum(p["groups"] for p in parts),
            "largest group": max([p["largest"] for p in parts] + [0]),
            "url duplicates removed": sum(p["url_removed"] for p in parts),
            "partitions": n,
        }

    def applier(self, work_dir: str, analysis_id: str) -> ApplyDecisions:
        return ApplyDecisions(
            stage_label=self.stage_name, decisions_dir=join(work_dir, "decisions"), analysis_id=analysis_id
        )


@dataclass(frozen=True, kw_only=True)
class HashShard:
    """The map task of one shard."""

    index: int  # the shard's position: ties between equal keys go to the lowest (index, row)
    shard: ShardOutput
    hashes_dir: str
    partitions: int
    normalize: bool
    url: bool


def _hash_shard(task: HashShard) -> int:
    """Map: one row per document (and per URL) with its key, partitioned by key."""
    shard = task.shard
    keys, kinds, rows, ids = [], [], [], []
    for row, doc_id, text, url in iter_shard_columns(shard, ["id", "text", "url"]):
        keys.append(text_key(text, task.normalize))
        kinds.append(TEXT)
        rows.append(row)
        ids.append(doc_id)
        if task.url and url:
            keys.append(b"U" + xxhash.xxh3_128_digest(url.encode("utf-8", "surrogatepass")))
            kinds.append(URL)
            rows.append(row)
            ids.append(doc_id)
    table = pa.table(
        {
            "key": pa.array(keys, pa.binary()),
            "kind": pa.array(kinds, pa.int8()),
            "shard": pa.array([shard.key] * len(keys), pa.string()),
            "order": pa.array([task.index] * len(keys), pa.int32()),
            "row": pa.array(rows, pa.int64()),
            "id": pa.array(ids, pa.string()),
        }
    )
    spread = np.frombuffer(b"".join(k[:8].ljust(8, b"\0") for k in keys), dtype="<u8") if keys else np.zeros(0, "<u8")
    write_partitioned(table, spread, task.partitions, task.hashes_dir, f"s{shard.key}")
    return len(keys)


@dataclass(frozen=True, kw_only=True)
class ReduceHashes:
    """The reduce task of one hash partition."""

    partition: int
    hashes_dir: str
    decisions_dir: str


def _reduce_partition(task: ReduceHashes) -> dict[str, int]:
    """Reduce: within one partition, keep the first (shard, row) of each key; the rest become removals."""
    partition = task.partition
    table = read_partition(task.hashes_dir, partition)
    summary = {"removed": 0, "groups": 0, "largest": 0, "url_removed": 0}
    if table is None or table.num_rows == 0:
        return summary
    table = table.sort_by([("key", "ascending"), ("order", "ascending"), ("row", "ascending")])
    key = table.column("key")
    starts = np.ones(table.num_rows, dtype=bool)
    if table.num_rows > 1:
        starts[1:] = pc.not_equal(key.slice(1), key.slice(0, table.num_rows - 1)).to_numpy(zero_copy_only=False)
    start_of = np.maximum.accumulate(np.where(starts, np.arange(table.num_rows), 0))
    dup = np.flatnonzero(~starts)
    if len(dup) == 0:
        return summary
    kinds = table.column("kind").to_numpy()
    text_groups = np.bincount(start_of[kinds == TEXT], minlength=table.num_rows)  # group sizes at group starts
    summary.update(
        removed=int(np.sum(kinds[dup] == TEXT)),
        url_removed=int(np.sum(kinds[dup] == URL)),
        groups=int(np.sum(text_groups > 1)),
        largest=int(text_groups.max()),
    )
    removals = pa.table(
        {
            "shard": table.column("shard").take(pa.array(dup)),
            "row": table.column("row").take(pa.array(dup)),
            "reason": pa.array([REASONS[int(k)] for k in kinds[dup]], pa.string()),
            "ref": table.column("id").take(pa.array(start_of[dup])),
        }
    ).sort_by([("shard", "ascending"), ("row", "ascending")])
    for shard_key in pc.unique(removals.column("shard")).to_pylist():
        part = removals.filter(pc.equal(removals.column("shard"), shard_key))
        table_out = decisions_table(
            part.column("row").to_pylist(), part.column("reason").to_pylist(), part.column("ref").to_pylist()
        )
        write_table(join(task.decisions_dir, f"s{shard_key}", f"p{partition:05d}.parquet"), table_out)
    return summary
