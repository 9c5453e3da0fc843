"""WARC (HTML responses, text extracted) and WET (conversion records) readers.

A file is read as a sequence of records, each one input unit. The records come from `warc_records`, which frames
them itself, not with warcio's iterator (warcio trusts `Content-Length`): a record whose headers, length or block
digest do not check out is one error, and reading re-synchronises at the next record. Here each record that
passes is turned into a document: its HTTP headers are parsed (by warcio), its `WARC-Payload-Digest` checked, and
its body decoded by `http_bodies` (chunked transfer coding; gzip, deflate, br, zstd content codings), strictly: a
body that does not decode is an `undecodable_body` error, never raw bytes passed off as HTML. ARC files are not
read.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from warcio.recordloader import ArcWarcRecordLoader
from warcio.statusandheaders import StatusAndHeaders

from tokenmill.curate.readers.base import Reader, make_doc
from tokenmill.curate.readers.extract import Extractor, decode_html, extract_text
from tokenmill.curate.readers.http_bodies import BodyError, BodyTooLarge, decode_body
from tokenmill.curate.readers.warc_records import Digest, read_records, record_error
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard

HTML_TYPES = ("text/html", "application/xhtml+xml")
HOLD_SLACK = 1 << 20  # blocks up to max_doc_bytes + this are held in memory; longer ones are streamed past
_LOADER = ArcWarcRecordLoader(verify_http=False, arc2warc=False)


class _ArchiveReader(Reader):
    """Walks a (gzip) WARC file; each record is one input unit, whatever its type.

    Records of the wrong type are rejected (`non_document_record`) so the counts still add up. A record that
    fails its framing checks (see `warc_records`) is one error: `truncated_record` (the file or a gzip
    member ends inside it), `malformed_record` (headers that do not parse, no valid Content-Length, bytes that are
    not a record), `bad_content_length` (the next record does not start where the length says), `digest_mismatch`,
    `corrupt_stream` (a gzip member that fails its CRC; reading resumes at the next good member). A body that does
    not decode is `undecodable_body`; an exception while extracting one record costs that record. Messages name
    file, offset and, once the headers are read, the WARC-Record-ID.
    """

    record_type: ClassVar[str] = "response"

    @property
    def source_label(self) -> str:
        return self.source or "commoncrawl"

    def read_file(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        for record in read_records(shard.path, self.max_doc_bytes + HOLD_SLACK, out):
            seen = out.stats.docs_in
            try:
                yield from self._dispatch(
                    shard, record.index, record.where, record.headers, record.block, record.length, out
                )
            except Exception as exc:  # one record's extraction failing must not end the file
                if out.stats.docs_in == seen:
                    out.seen(record.length)
                out.error(None, f"exception:{type(exc).__name__}", f"{record.where}: {exc!r}"[:500])

    def _dispatch(
        self,
        shard: Shard,
        index: int,
        where: str,
        rec_headers: StatusAndHeaders,
        block: bytes | None,
        length: int,
        out: Outcomes,
    ) -> Iterator[Doc]:
        doc_id = f"{shard.name}:{index}"
        url = (rec_headers.get_header("WARC-Target-URI") or "").strip().strip("<>") or None
        record_id = rec_headers.get_header("WARC-Record-ID")
        rec_type = rec_headers.get_header("WARC-Type")
        if rec_type != self.record_type:
            out.seen(0)
            out.reject(make_doc(doc_id, "", self.source_label, url), "non_document_record")
            return
        if block is None:
            out.seen(length)
            stub = make_doc(doc_id, "", self.source_label, url)
            out.reject(stub, "too_large", f"read: {doc_id}: payload over max_doc_bytes {self.max_doc_bytes:,}")
            return
        http_headers = None
        payload = block
        if block and rec_type in _LOADER.HTTP_RECORDS and (url or "").startswith(_LOADER.HTTP_SCHEMES):
            stream = io.BytesIO(block)
            try:
                http_headers = _LOADER.load_http_headers(rec_type, url, stream, length)
            except Exception as exc:
                record_error(out, "malformed_record", f"{where}: HTTP headers do not parse ({exc})"[:300], length)
                return
            payload = block[stream.tell() :]
        payload_digest = Digest(rec_headers.get_header("WARC-Payload-Digest"))
        if rec_type != "revisit" and not rec_headers.get_header("WARC-Truncated"):
            payload_digest.update(payload)
            if payload_digest.matches() is False:
                message = f"{where}: payload does not match its WARC-Payload-Digest {payload_digest.value}"
                record_error(out, "digest_mismatch", message, length)
                return
        try:
            body = decode_body(
                payload, http_headers, self.max_doc_bytes, bool(rec_headers.get_header("WARC-Truncated"))
            )
        except BodyTooLarge:
            body = None
        except BodyError as exc:
            record_error(out, "undecodable_body", f"{where}: {exc}", len(payload))
            return
        if body is None or len(body) > self.max_doc_bytes:
            out.seen(len(payload))
            stub = make_doc(doc_id, "", self.source_label, url)
            out.reject(stub, "too_large", f"read: {doc_id}: payload over max_doc_bytes {self.max_doc_bytes:,}")
            return
        meta = {"warc_record_id": record_id, "warc_date": rec_headers.get_header("WARC-Date")}
        doc = self._to_document(doc_id, url, http_headers, body, meta, out)
        if doc is not None and self.admit(doc, out, len(body)):
            yield doc

    def _to_document(
        self, doc_id: str, url: str | None, http_headers: Any, body: bytes, meta: dict, out: Outcomes
    ) -> Doc | None:
        raise NotImplementedError


@register_reader("warc")
class WarcReader(_ArchiveReader):
    """HTML response records of `.warc` / `.warc.gz` files, decoded by charset (WHATWG rules, see
    `extract.decode_html`) and reduced to main text. A page whose label names the WHATWG `replacement` encoding
    (iso-2022-kr, hz-gb-2312, iso-2022-cn) is rejected `replacement_encoding`: a browser shows it as one U+FFFD."""

    format: Literal["warc"] = "warc"
    extract: Extractor = "trafilatura"

    def _to_document(
        self, doc_id: str, url: str | None, http_headers: Any, body: bytes, meta: dict, out: Outcomes
    ) -> Doc | None:
        status = http_headers.get_statuscode() if http_headers else None
        content_type = http_headers.get_header("Content-Type") if http_headers else None
        meta["content_type"] = content_type
        stub = make_doc(doc_id, "", self.source_label, url, meta)
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
        if charset == "replacement":
            out.seen(len(body))
            out.reject(make_doc(doc_id, "", self.source_label, url, meta), "replacement_encoding")
            return None
        text = extract_text(html, self.extract, url)
        if not text.strip():
            out.seen(len(body))
            out.reject(make_doc(doc_id, text, self.source_label, url, meta), "empty_extraction")
            return None
        return make_doc(doc_id, text, self.source_label, url, meta)


@register_reader("wet")
class WetReader(_ArchiveReader):
    """Conversion records of Common Crawl `.wet` / `.wet.gz` files (text already extracted, UTF-8)."""

    format: Literal["wet"] = "wet"
    record_type: ClassVar[str] = "conversion"

    def _to_document(
        self, doc_id: str, url: str | None, http_headers: Any, body: bytes, meta: dict, out: Outcomes
    ) -> Doc | None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.seen(len(body))
            out.error(None, "invalid_utf8", f"read: {doc_id}: invalid UTF-8 at byte {exc.start}")
            return None
        return make_doc(doc_id, text, self.source_label, url, meta)
