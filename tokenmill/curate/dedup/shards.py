"""What every dedup analysis needs: streaming a materialised shard's columns, running Dask tasks, a clean work
directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.parquet as pq
from distributed import Client
from fsspec.core import url_to_fs

from tokenmill.engine.stage import ShardOutput


def iter_shard_columns(shard: ShardOutput, columns: list[str], batch_rows: int = 4096) -> Iterator[tuple]:
    """Yield (row, *values) for every document of a shard, in order, reading only `columns`."""
    row = 0
    for path in shard.files:
        fs, local = url_to_fs(path)
        with fs.open(local, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                data = [batch.column(name).to_pylist() for name in columns]
                for values in zip(*data):
                    yield (row, *values)
                    row += 1


def run_tasks(client: Client, function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """One Dask task per item; results (small summaries, never documents) in item order. Raises on failure."""
    if not items:
        return []
    futures = client.map(function, items, pure=False)
    return client.gather(futures)


def clean_work_dir(work_dir: str) -> None:
    """An analysis starts from scratch: its files from an older configuration or input must not mix in."""
    fs, local = url_to_fs(work_dir)
    if fs.exists(local):
        fs.rm(local, recursive=True)
