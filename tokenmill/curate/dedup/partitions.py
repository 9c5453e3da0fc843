"""Hash-partitioned Parquet files on the shared filesystem: the shuffle that dedup stages are built from.

A map task splits its rows by `hash % n_partitions` and writes one small file per non-empty partition; a reduce
task reads one partition (about 1/n of the data) from every map task. Memory per task is bounded by the choice
of `n_partitions`, and nothing passes through the driver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from tokenmill.engine.fsio import join, tmp_name
from tokenmill.engine.stage import ShardOutput

MAX_SHARD_PARTITIONS = 256  # the one-per-shard default stops here (more shards share partitions)


def default_partitions(shards: Sequence[ShardOutput], docs_per_partition: int | None = None) -> int:
    """The partition count a dedup stage uses when its config gives none: one per shard, at least 1 and at
    most 256; with `docs_per_partition`, also at least enough partitions that none receives more than about that
    many documents (counted from the shards' Parquet metadata), which may exceed 256."""
    per_shard = min(MAX_SHARD_PARTITIONS, max(1, len(shards)))
    if docs_per_partition is None:
        return per_shard
    return max(per_shard, math.ceil(count_documents(shards) / docs_per_partition))


def count_documents(shards: Sequence[ShardOutput]) -> int:
    """Rows in every file of `shards`, from the Parquet footers (no data is read)."""
    docs = 0
    for shard in shards:
        for path in shard.files:
            fs, local = url_to_fs(path)
            with fs.open(local, "rb") as handle:
                docs += pq.ParquetFile(handle).metadata.num_rows
    return docs


def write_table(path: str, table: pa.Table) -> None:
    """Write a Parquet file atomically (temporary name, then rename)."""
    fs, local = url_to_fs(path)
    fs.makedirs(local.rsplit("/", 1)[0], exist_ok=True)
    tmp = tmp_name(local)
    with fs.open(tmp, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")
    fs.mv(tmp, local)


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, local = url_to_fs(path)
    with fs.open(local, "rb") as handle:
        return pq.read_table(handle, columns=columns)


def write_partitioned(table: pa.Table, hashes: np.ndarray, n_partitions: int, directory: str, name: str) -> None:
    """Split `table` by `hashes % n_partitions` into `directory/p<k>/<name>.parquet` (empty parts are skipped)."""
    parts = (hashes % np.uint64(n_partitions)).astype(np.int64)
    order = np.argsort(parts, kind="stable")
    sorted_parts = parts[order]
    bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
    for chunk in np.split(order, bounds) if len(order) else []:
        partition = int(parts[chunk[0]])
        write_table(join(directory, f"p{partition:05d}", f"{name}.parquet"), table.take(pa.array(chunk)))


def read_partition(directory: str, partition: int, columns: list[str] | None = None) -> pa.Table | None:
    """Every map task's file for one partition, concatenated in name order (deterministic), or None."""
    fs, local = url_to_fs(join(directory, f"p{partition:05d}"))
    if not fs.exists(local):
        return None
    files = sorted(f for f in fs.ls(local, detail=False) if f.endswith(".parquet") and "/.tmp-" not in f)
    tables = [read_table(f, columns) for f in files]
    return pa.concat_tables(tables) if tables else None


def list_files(directory: str) -> list[str]:
    fs, local = url_to_fs(directory)
    if not fs.exists(local):
        return []
    return sorted(f for f in fs.ls(local, detail=False) if f.endswith(".parquet") and "/.tmp-" not in f)
