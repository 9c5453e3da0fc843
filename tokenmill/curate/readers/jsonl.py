"""JSON-lines readers: generic JSONL (plain, .gz, .zst, .bz2, .xz) and The Pile's format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from tokenmill.curate.readers.base import Reader, count_errors, damage_summary, make_doc
from tokenmill.engine.compressed import Damage, VerifiedReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.listing import display_path
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard

_BOM = b"\xef\xbb\xbf"


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def numbered_lines(url: str) -> Iterator[tuple[int, bytes] | tuple[int, int, Damage]]:
    """The lines of a (compressed) file as (line number, bytes with their newline), from verified bytes only.

    A damaged member (see `compressed.VerifiedReader`) appears as (first line number, number of lines, damage): the
    lines it touches, from the start of the line it interrupts to the end of the line it leaves unfinished (at
    least one), none of which is returned. When reading resumes at a later member whose start lies inside such an
    unfinished line, the rest of that line is skipped (it is part of the count).
    """
    lineno = 1
    pending: list[bytes] = []
    skip_fragment = False
    for item in VerifiedReader(url):
        if isinstance(item, Damage):
            open_tail = not item.ends_line if item.lost_bytes else bool(pending)
            lost = item.lost_lines + (1 if open_tail else 0)
            if pending and not item.lost_bytes:
                lost = 1
            lost = max(1, lost)
            yield lineno, lost, item
            lineno += lost
            pending = []
            skip_fragment = open_tail
            continue
        data = item.data
        start = 0
        if skip_fragment:
            newline = data.find(b"\n")
            if newline < 0:
                continue
            start, skip_fragment = newline + 1, False
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                if start < len(data):
                    pending.append(data[start:])
                break
            if pending:
                pending.append(data[start : newline + 1])
                line = b"".join(pending)
                pending = []
            else:
                line = data[start : newline + 1]
            yield lineno, line
            lineno += 1
            start = newline + 1
        del data, item  # a long line's pieces are not held twice
    if pending:
        line = b"".join(pending)
        pending = []
        yield lineno, line


@register_reader("jsonl")
class JsonlReader(Reader):
    """One JSON object per line. `text_field`, `id_field`, `url_field` and `source_field` accept dotted paths
    (`meta.pile_set_name`); every other top-level key is kept in `meta`.

    A line that is not UTF-8, not JSON, not an object, or lacks a string text is one error naming file and line.
    A UTF-8 byte-order mark before the first line is ignored. Strings that are not valid Unicode (a lone
    surrogate escape such as `"\\udc00"`, in any field) are kept with U+FFFD in its place.

    Compressed files are read member by member (gzip members, zstd frames): a line is parsed only once the member
    holding it passed its integrity check. The lines of a member that fails are errors (`corrupt_stream`, or
    `truncated_stream` when the file is cut off) counted in one message naming the file, offset and line range;
    none of them is kept, and reading resumes at the next member that verifies.
    """

    format: Literal["jsonl"] = "jsonl"
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    source_field: str | None = None

    def read_file(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        for item in numbered_lines(shard.path):
            if len(item) == 3:
                first, lost, damage = item  # type: ignore[misc]
                last = first + lost - 1
                span = f"line {first}" if lost == 1 else f"lines {first}-{last}"
                message = (
                    f"read: {display_path(shard.path)} @ offset {damage.offset}: {damage.detail}; {span} "
                    f"({lost} {'line' if lost == 1 else 'lines'}) counted as errors, none kept; "
                    f"{damage_summary(damage)}"
                )
                count_errors(out, lost, damage.reason, message, damage.lost_bytes)
                continue
            lineno, raw = item  # type: ignore[misc]
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
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
        return make_doc(
            doc_id if doc_id is not None else where,
            _lookup(record, self.text_field),
            self._source_label(source),
            url,
            {key: value for key, value in record.items() if key not in named},
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
        if isinstance(record.get("meta"), dict):
            doc.meta = make_doc("", "", "", meta=record["meta"]).meta
        return doc

    def _source_label(self, value: Any) -> str:
        if self.source:
            return self.source
        return f"pile/{value}" if value is not None else "pile"
