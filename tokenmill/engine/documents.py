"""The document record that flows through fused stages, and its Arrow schema at the edges.

Inside a fused task documents are plain Python objects: heuristic stages decide per document in Python, so
converting a batch from Arrow to Python objects once at the reader and back once at the writer is cheaper than
converting at every stage boundary (see docs/architecture.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

BASE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("url", pa.string()),
        pa.field("meta", pa.string()),
    ]
)
_SURROGATE = re.compile("[\ud800-\udfff]")
REJECTED_FIELDS = [pa.field("stage", pa.string()), pa.field("reason", pa.string())]


@dataclass(slots=True)
class Doc:
    """One document: a stable `id`, its `text`, where it came from, and free-form metadata.

    `annotations` holds values that stages add (language, scores, cluster ids); each becomes an output column
    declared by the stage that writes it.
    """

    id: str
    text: str
    source: str = ""
    url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """UTF-8 size of the text; ASCII text (the common case) is measured without encoding."""
        text = self.text
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

    def words(self) -> list[str]:
        return self.text.split()


def output_schema(columns: dict[str, pa.DataType], rejected: bool = False) -> pa.Schema:
    """The base schema plus stage-declared annotation columns (sorted, so every shard has one schema)."""
    fields = list(BASE_SCHEMA) + [pa.field(name, columns[name]) for name in sorted(columns)]
    if rejected:
        fields += REJECTED_FIELDS
    return pa.schema(fields)


def docs_to_table(docs: list[Doc], schema: pa.Schema, reasons: list[tuple[str, str]] | None = None) -> pa.Table:
    """Build an Arrow table with `schema` from documents (and their stage/reason when writing rejections)."""
    columns: dict[str, list[Any]] = {
        "id": [storable(d.id) for d in docs],
        "text": [storable(d.text) for d in docs],
        "source": [storable(d.source) for d in docs],
        "url": [storable(d.url) for d in docs],
        "meta": [meta_json(d.meta) for d in docs],
    }
    base = {f.name for f in BASE_SCHEMA} | {f.name for f in REJECTED_FIELDS}
    for name in schema.names:
        if name not in base:
            columns[name] = [storable(d.annotations.get(name)) for d in docs]
    if reasons is not None:
        columns["stage"] = [storable(stage) for stage, _ in reasons]
        columns["reason"] = [storable(reason) for _, reason in reasons]
    arrays = [pa.array(columns[name], type=schema.field(name).type) for name in schema.names]
    return pa.Table.from_arrays(arrays, schema=schema)


def table_to_docs(table: pa.Table) -> list[Doc]:
    """Documents from an Arrow table with (at least) the base columns; other columns become annotations."""
    data = table.to_pydict()
    n = table.num_rows
    extra = [name for name in table.column_names if name not in BASE_SCHEMA.names]
    docs = []
    for i in range(n):
        meta = data["meta"][i] if "meta" in data else None
        docs.append(
            Doc(
                id=data["id"][i],
                text=data["text"][i],
                source=data["source"][i] if "source" in data else "",
                url=data["url"][i] if "url" in data else None,
                meta=json.loads(meta) if meta else {},
                annotations={name: data[name][i] for name in extra},
            )
        )
    return docs


def storable(value: Any) -> Any:
    """Arrow strings must be valid UTF-8: in a string, lone surrogates (from `surrogateescape` decoding, JSON
    `\\udc00` escapes, undecodable file names) become U+FFFD; any other value is returned as it is."""
    if not isinstance(value, str) or value.isascii() or not _SURROGATE.search(value):
        return value  # a scan, no copy: the common case of valid non-ASCII text
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def meta_json(meta: dict[str, Any]) -> str | None:
    """`meta` as the JSON string column: sorted keys, valid UTF-8 (lone surrogates anywhere inside become U+FFFD),
    and values JSON cannot hold (bytes, sets, objects) written as their `str` rather than failing the shard."""
    if not meta:
        return None
    return storable(json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str))
