"""Writing a shard's documents as part files (Parquet with zstd, or JSONL.zst), committed atomically.

`FileSink` is the engine's sink: the `write` stage (curate/writers.py) is it with its YAML name, and segments
before a global stage are materialised with it. Each input shard becomes one or more files
`part-<shard>-<k>.<ext>`, a new file starting when `shard_size_mb` of text is reached; parts are written under
temporary names and renamed into place only when the whole shard succeeded.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from fsspec.core import url_to_fs
from pydantic import Field

from tokenmill.engine.documents import Doc, docs_to_table, storable
from tokenmill.engine.fsio import tmp_name
from tokenmill.engine.stage import ShardSink, SinkStage


class FileSink(SinkStage):
    """Parquet (zstd) or JSONL.zst part files, rolled over every `shard_size_mb` of text."""

    format: Literal["parquet", "jsonl"] = "parquet"
    shard_size_mb: float = Field(256, gt=0)
    compression_level: int = Field(3, ge=1, le=19)

    @property
    def extension(self) -> str:
        return "parquet" if self.format == "parquet" else "jsonl.zst"

    def open_writer(self, directory: str, shard_key: str, schema: pa.Schema) -> ShardWriter:
        return ShardWriter(directory, shard_key, schema, self)


class ShardWriter(ShardSink):
    """Writes one shard's documents to temporary files; `commit` renames them into place, `abort` removes them."""

    def __init__(self, directory: str, shard_key: str, schema: pa.Schema, sink: FileSink) -> None:
        self.fs, self.directory = url_to_fs(directory)
        self.fs.makedirs(self.directory, exist_ok=True)
        self.shard_key = shard_key
        self.schema = schema
        self.sink = sink
        self.limit = int(sink.shard_size_mb * 1024 * 1024)
        self.parts: list[tuple[str, str]] = []  # (temporary, final)
        self._handle: Any = None
        self._writer: Any = None
        self._bytes = 0

    def _final(self, k: int) -> str:
        return f"{self.directory}/part-{self.shard_key}-{k:04d}.{self.sink.extension}"

    def _open(self) -> None:
        final = self._final(len(self.parts))
        tmp = tmp_name(final)
        self.parts.append((tmp, final))
        self._handle = self.fs.open(tmp, "wb")
        level = self.sink.compression_level
        if self.sink.format == "parquet":
            self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd", compression_level=level)
        else:
            self._writer = zstandard.ZstdCompressor(level=level).stream_writer(self._handle, closefd=False)
        self._bytes = 0

    def _close_part(self) -> None:
        self._writer.close()
        self._handle.close()
        self._writer = self._handle = None

    def write(self, docs: list[Doc], reasons: list[tuple[str, str]] | None = None) -> None:
        if self._writer is None:
            self._open()
        if self.sink.format == "parquet":
            self._writer.write_table(docs_to_table(docs, self.schema, reasons))
        else:
            self._writer.write(_jsonl(docs, self.schema, reasons))
        self._bytes += sum(doc.nbytes for doc in docs)
        if self._bytes >= self.limit:
            self._close_part()

    def commit(self) -> list[str]:
        """Close and rename every part into place; a shard with no documents still gets one empty file. Parts of
        an earlier, larger output of this shard are removed by the runner's sweep (they are in no manifest)."""
        if self._writer is None and not self.parts:
            self._open()
        if self._writer is not None:
            self._close_part()
        for tmp, final in self.parts:
            self.fs.mv(tmp, final)
        return [final for _, final in self.parts]

    def abort(self) -> None:
        if self._writer is not None:
            self._close_part()
        for tmp, _ in self.parts:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)


def _jsonl(docs: list[Doc], schema: pa.Schema, reasons: list[tuple[str, str]] | None) -> bytes:
    extra = [name for name in schema.names if name not in ("id", "text", "source", "url", "meta", "stage", "reason")]
    lines = []
    for i, doc in enumerate(docs):
        row: dict[str, Any] = {
            "id": doc.id,
            "text": doc.text,
            "source": doc.source,
            "url": doc.url,
            "meta": doc.meta,
        }
        row.update({name: doc.annotations.get(name) for name in extra})
        if reasons is not None:
            row["stage"], row["reason"] = reasons[i]
        lines.append(json.dumps(row, ensure_ascii=False, default=str))
    # As in Parquet, lone surrogates anywhere in a row become U+FFFD: the file is valid UTF-8.
    return storable("\n".join(lines) + "\n").encode("utf-8") if lines else b""
