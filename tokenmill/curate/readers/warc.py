"""WARC (HTML responses, text extracted) and WET (conversion records) readers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from warcio.archiveiterator import ArchiveIterator

from tokenmill.curate.readers.base import Reader
from tokenmill.curate.readers.extract import Extractor, decode_html, extract_text
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import open_raw
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard

HTML_TYPES = ("text/html", "application/xhtml+xml")


def _valid_length(record) -> bool:
    # warcio reads a missing Content-Length as "to the end of the file" and an unparsable one as 0 bytes.
    declared = record.rec_headers.get_header("Content-Length")
    return record.length is not None and declared is not None and declared.strip().isdigit()


def _truncated(record) -> bool:
    """The record's body ended before its Content-Length, or that length is missing (its headers were cut off)."""
    return not _valid_length(record) or bool(getattr(record.raw_stream, "limit", 0))


def _cut_off(shard: Shard, offset: int, index: int, record) -> str:
    where = f"read: {shard.path} @ offset {offset}: record {index}"
    if not _valid_length(record):
        return f"{where} has no valid Content-Length (headers cut off or malformed)"
    return f"{where} cut off ({record.raw_stream.limit:,} of {record.length:,} bytes missing)"


class _ArchiveReader(Reader):
    """Walks a (gzip) WARC file; each record is one input unit, whatever its type.

    Records of the wrong type are rejected (`non_document_record`) so the counts still add up. A record whose
    body ends before its declared length, or a stream that breaks mid-file, is one error naming file and offset;
    the records before it are kept.
    """

    record_type: ClassVar[str] = "response"

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        offset = 0
        with open_raw(shard.path) as handle:
            size = getattr(handle, "size", None) or shard.size
            records = ArchiveIterator(handle, arc2warc=True)
            index = -1
            try:
                for index, record in enumerate(records):
                    offset = records.offset  # start of this record; get_record_offset() would consume it
                    doc = self._document(shard, index, offset, record, out)
                    if doc is not None and self.admit(doc, out, doc.meta.pop("_payload_bytes")):
                        yield doc
            except Exception as exc:  # a corrupt stream ends this file, not the run
                out.seen(0)
                out.error(
                    None,
                    "corrupt_stream",
                    f"read: {shard.path} @ offset {offset} (after record {index}): {type(exc).__name__}: {exc}",
                )
                return
            # warcio ends iteration silently (as at a clean EOF) when the file stops inside a record's headers;
            # bytes left after the last complete record are that cut-off record.
            end = records.offset if index >= 0 else 0
            if size and end < size:
                out.seen(size - end)
                out.error(
                    None,
                    "truncated_record",
                    f"read: {shard.path} @ offset {end}: file ends inside record {index + 1} "
                    f"({size - end:,} trailing bytes do not form a complete record)",
                )

    def _document(self, shard: Shard, index: int, offset: int, record, out: Outcomes) -> Doc | None:
        doc_id = f"{shard.name}:{index}"
        url = (record.rec_headers.get_header("WARC-Target-URI") or "").strip("<>") or None
        if record.rec_type != self.record_type:
            out.seen(0)
            while record.raw_stream.read(1 << 16):  # drained here (warcio would anyway) to see if it is cut off
                pass
            if _truncated(record):
                out.error(None, "truncated_record", _cut_off(shard, offset, index, record))
            else:
                out.reject(Doc(id=doc_id, text="", source=self.source_label, url=url), "non_document_record")
            return None
        body = record.content_stream().read(self.max_doc_bytes + 1)
        if len(body) > self.max_doc_bytes:
            out.seen(len(body))
            out.reject(
                Doc(id=doc_id, text="", source=self.source_label, url=url),
                "too_large",
                f"read: {doc_id}: payload over max_doc_bytes {self.max_doc_bytes:,}",
            )
            return None
        if _truncated(record):
            out.seen(len(body))
            out.error(None, "truncated_record", _cut_off(shard, offset, index, record))
            return None
        meta = {
            "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
            "warc_date": record.rec_headers.get_header("WARC-Date"),
        }
        doc = self._to_document(doc_id, url, record, body, meta, out)
        if doc is not None:
            doc.meta["_payload_bytes"] = len(body)
        return doc

    @property
    def source_label(self) -> str:
        return self.source or "commoncrawl"

    def _to_document(self, doc_id, url, record, body: bytes, meta: dict, out: Outcomes) -> Doc | None:
        raise NotImplementedError


@register_reader("warc")
class WarcReader(_ArchiveReader):
    """HTML response records of `.warc` / `.warc.gz` files, decoded by charset and reduced to main text."""

    format: Literal["warc"] = "warc"
    extract: Extractor = "trafilatura"

    def _to_document(self, doc_id, url, record, body: bytes, meta: dict, out: Outcomes) -> Doc | None:
        headers = record.http_headers
        status = headers.get_statuscode() if headers else None
        content_type = headers.get_header("Content-Type") if headers else None
        meta["content_type"] = content_type
        stub = Doc(id=doc_id, text="", source=self.source_label, url=url, meta=meta)
        if status and not status.startswith("2"):
            out.seen(len(body))
            out.reject(stub, "http_status_not_2xx")
            return None
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime not in HTML_TYPES:
            out.seen(len(body))
            out.reject(stub, "non_html_content")
            return None
        html, charset = decode_html(body, content_type)
        meta["charset"] = charset
        text = extract_text(html, self.extract, url)
        if not text.strip():
            out.seen(len(body))
            stub.text = text
            out.reject(stub, "empty_extraction")
            return None
        return Doc(id=doc_id, text=text, source=self.source_label, url=url, meta=meta)


@register_reader("wet")
class WetReader(_ArchiveReader):
    """Conversion records of Common Crawl `.wet` / `.wet.gz` files (text already extracted, UTF-8)."""

    format: Literal["wet"] = "wet"
    record_type: ClassVar[str] = "conversion"

    def _to_document(self, doc_id, url, record, body: bytes, meta: dict, out: Outcomes) -> Doc | None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.seen(len(body))
            out.error(None, "invalid_utf8", f"read: {doc_id}: invalid UTF-8 at byte {exc.start}")
            return None
        return Doc(id=doc_id, text=text, source=self.source_label, url=url, meta=meta)
