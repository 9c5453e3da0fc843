"""JSON-lines readers: generic JSONL (plain, .gz, .zst) and The Pile's format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from tokenmill.curate.readers.base import Reader
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import open_decompressed
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@register_reader("jsonl")
class JsonlReader(Reader):
    """One JSON object per line. `text_field`, `id_field`, `url_field` and `source_field` accept dotted paths
    (`meta.pile_set_name`); every other top-level key is kept in `meta`.

    A line that is not UTF-8, not JSON, not an object, or lacks a string text is one error naming file and line.
    """

    format: Literal["jsonl"] = "jsonl"
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    source_field: str | None = None

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        with open_decompressed(shard.path) as stream:
            for lineno, raw in enumerate(stream, 1):
                if not raw.strip():
                    continue
                where = f"{shard.name}:{lineno}"
                record = self._parse(raw, where, out)
                if record is None:
                    continue
                doc = self._to_document(record, where)
                if self.admit(doc, out, len(raw), where):
                    yield doc

    def _parse(self, raw: bytes, where: str, out: Outcomes) -> dict[str, Any] | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._fail(out, raw, "invalid_utf8", f"read: {where}: invalid UTF-8 at byte {exc.start}")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return self._fail(out, raw, "malformed_json", f"read: {where}: malformed JSON ({exc.msg}, col {exc.colno})")
        except (ValueError, RecursionError) as exc:  # too deeply nested, or an integer over Python's digit limit
            message = f"read: {where}: malformed JSON ({type(exc).__name__}: {exc})"[:500]
            return self._fail(out, raw, "malformed_json", message)
        if not isinstance(record, dict):
            return self._fail(out, raw, "not_an_object", f"read: {where}: line is {type(record).__name__}, not object")
        text = _lookup(record, self.text_field)
        if not isinstance(text, str):
            found = "missing" if text is None else type(text).__name__
            return self._fail(out, raw, "missing_text", f"read: {where}: field {self.text_field!r} is {found}")
        return record

    @staticmethod
    def _fail(out: Outcomes, raw: bytes, reason: str, message: str) -> None:
        out.seen(len(raw))
        out.error(None, reason, message)
        return None

    def _to_document(self, record: dict[str, Any], where: str) -> Doc:
        named = {self.text_field, self.id_field, self.url_field, self.source_field}
        doc_id = _lookup(record, self.id_field) if self.id_field else None
        url = _lookup(record, self.url_field) if self.url_field else None
        source = _lookup(record, self.source_field) if self.source_field else None
        return Doc(
            id=str(doc_id) if doc_id is not None else where,
            text=_lookup(record, self.text_field),
            source=self._source_label(source),
            url=str(url) if url is not None else None,
            meta={key: value for key, value in record.items() if key not in named},
        )

    def _source_label(self, value: Any) -> str:
        if self.source:
            return self.source
        return str(value) if value is not None else "jsonl"


@register_reader("pile")
class PileReader(JsonlReader):
    """The Pile's `.jsonl.zst` shards: `text` plus `meta.pile_set_name`, which becomes `source = pile/<set>`."""

    format: Literal["pile"] = "pile"  # type: ignore[assignment]
    source_field: str | None = "meta.pile_set_name"

    def _to_document(self, record: dict[str, Any], where: str) -> Doc:
        doc = super()._to_document(record, where)
        doc.meta = record.get("meta") if isinstance(record.get("meta"), dict) else doc.meta
        return doc

    def _source_label(self, value: Any) -> str:
        if self.source:
            return self.source
        return f"pile/{value}" if value is not None else "pile"
