"""Columnar readers: Parquet files and Hugging Face datasets saved with `save_to_disk`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tokenmill.curate.readers.base import Reader, make_doc
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import InputNotFound, exists, expand_paths, join, read_json
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard


class _TableReader(Reader):
    """Rows of Arrow record batches become documents; columns other than the named ones go to `meta`."""

    text_field: str = "text"
    id_field: str | None = "id"
    url_field: str | None = "url"
    source_field: str | None = "source"
    batch_rows: int = Field(1024, gt=0)

    def batches(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def read_file(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        row = 0
        for batch in self.batches(shard):
            columns = batch.schema.names
            if self.text_field not in columns:
                out.seen(0)
                out.error(None, "missing_text", f"read: {shard.name}: no column {self.text_field!r} ({columns})")
                return
            for record in batch.to_pylist():
                where = f"{shard.name}:{row}"
                row += 1
                doc = self._to_document(record, where, out)
                if doc is not None and self.admit(doc, out, where=where):
                    yield doc

    def _to_document(self, record: dict[str, Any], where: str, out: Outcomes) -> Doc | None:
        text = record.get(self.text_field)
        if not isinstance(text, str):
            out.seen(0)
            out.error(None, "missing_text", f"read: {where}: {self.text_field!r} is {type(text).__name__}")
            return None
        named = {self.text_field, self.id_field, self.url_field, self.source_field}
        meta = {key: value for key, value in record.items() if key not in named}
        if isinstance(meta.get("meta"), str):  # tokenmill's own output stores meta as a JSON string
            try:
                stored = json.loads(meta["meta"])
            except ValueError:  # not ours after all: kept as the string it is
                stored = None
            if isinstance(stored, dict):
                meta.pop("meta")
                meta = {**stored, **meta}
        doc_id = record.get(self.id_field) if self.id_field else None
        source = record.get(self.source_field) if self.source_field else None
        url = record.get(self.url_field) if self.url_field else None
        return make_doc(
            doc_id if doc_id is not None else where,
            text,
            self.source or (str(source) if source else self.format),
            url if url else None,
            json.loads(json.dumps(meta, default=str)),
        )


@register_reader("parquet")
class ParquetReader(_TableReader):
    """Parquet files, streamed by record batch."""

    format: Literal["parquet"] = "parquet"

    def batches(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        with fsspec.open(shard.path, "rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=self.batch_rows)


@register_reader("hf")
class HFDatasetReader(_TableReader):
    """A `datasets` dataset saved on disk (`save_to_disk`): one shard per Arrow file of the chosen split."""

    format: Literal["hf"] = "hf"
    split: str = "train"

    def input_files(self) -> list[tuple[str, int, str]]:
        files: list[str] = []
        for root in self.paths:
            root = root.rstrip("/")
            folder = root
            if exists(join(root, "dataset_dict.json")):
                splits = read_json(join(root, "dataset_dict.json"))["splits"]
                if self.split not in splits:
                    raise InputNotFound(f"{root}: no split {self.split!r} (has {', '.join(splits)})")
                folder = join(root, self.split)
            try:
                state = read_json(join(folder, "state.json"))
            except FileNotFoundError as exc:
                raise InputNotFound(f"{root}: not a dataset saved with save_to_disk (no state.json)") from exc
            files += [join(folder, entry["filename"]) for entry in state["_data_files"]]
        return expand_paths(files)

    def batches(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        with fsspec.open(shard.path, "rb") as handle:
            yield from pa.ipc.open_stream(handle)
