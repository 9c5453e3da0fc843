"""The `write` stage: where curated documents go."""

from __future__ import annotations

from tokenmill.engine.registry import register
from tokenmill.engine.shard_writer import FileSink


@register("write")
class Write(FileSink):
    """Where curated documents go. Each input shard becomes one or more files `part-<shard>-<k>.<ext>`
    (`format: parquet` with zstd, or `jsonl` compressed with zstd), a new file starting when `shard_size_mb` of
    text is reached; `path` replaces the default `<output>/curated`. `rejected: true` also writes every rejected
    (and failed) document, with its `stage` and `reason`, under `<output>/rejected`.
    """
