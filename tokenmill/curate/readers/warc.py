"""WARC (HTML responses, text extracted) and WET (conversion records) readers.

Records are framed here, not by warcio's iterator, because warcio trusts `Content-Length`: a length that is too
big silently swallows the next record, one that is too small leaves a truncated text to be kept, and any error
inside one record ends the file. Here each record is checked before it is used:

* its header block must parse and carry a valid `Content-Length`;
* the next record must start where that length says (`WARC/1.` after the `\\r\\n\\r\\n` separator, or the end
  of the file), and in a per-record gzip file no gzip member holding a new record may start inside the block;
* `WARC-Block-Digest` and `WARC-Payload-Digest` (sha1/sha256/md5, base32 or hex), when present, must match.

A record that fails is one error naming file, offset and WARC-Record-ID, and reading re-synchronises: it scans
forward from the end of the bad record's headers for the next record header (a line `WARC/1.x` at a line start,
or a gzip member starting with one) and continues there. Re-synchronising, rather than counting the records a
too-big length swallowed as errors, reads those records normally: they are intact, only their neighbour's
length is wrong, and the bad record itself is one error whatever its true extent. A block digest that matches
proves the length right even when junk follows the record; the junk is then its own error.

warcio still parses the header blocks (WARC and HTTP), so names and values are read as before. Bodies are
decoded here (chunked transfer coding; gzip, deflate, br, zstd content codings), strictly: a body that does not
decode is an `undecodable_body` error, never raw bytes passed off as HTML. ARC files are not read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

import zstandard
from warcio.recordloader import ArcWarcRecordLoader
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParser

from tokenmill.curate.readers.base import Reader, damage_summary, make_doc
from tokenmill.curate.readers.extract import Extractor, decode_html, extract_text
from tokenmill.engine.compressed import Damage, VerifiedReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.listing import display_path
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_HEADER_BYTES = 1 << 20  # a WARC header block longer than this is malformed
HOLD_SLACK = 1 << 20  # blocks up to max_doc_bytes + this are held in memory; longer ones are streamed past
_MAGIC = (b"WARC/1.", b"WARC/0.")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CANDIDATE = re.compile(rb"(?<=\n)WARC/[01]\.\d{1,2}\r?\n")
_WARC_PARSER = StatusAndHeadersParser(["WARC/1.1", "WARC/1.0", "WARC/0.17", "WARC/0.18"])
_LOADER = ArcWarcRecordLoader(verify_http=False, arc2warc=False)
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


class _Stream:
    """The decompressed bytes of one WARC file, read forward, with the positions (decompressed offsets) where
    gzip members start. A damaged member is a `hole`: data stops there until the hole is taken."""

    def __init__(self, url: str, start: int = 0, position: int = 0, codec: str | None = "sniff") -> None:
        reader = VerifiedReader(url, codec=codec, start=start)
        self.url = url
        self.codec = reader.codec
        self._items = iter(reader)
        self.buf = bytearray()
        self.base = self.pos = position
        self.members: list[tuple[int, int]] = []  # (position, compressed offset) of each member start seen
        self.heads: dict[int, bytes] = {}  # member start position -> its first bytes
        self.hole: Damage | None = None
        self.done = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def _pull(self) -> bool:
        if self.done or self.hole is not None:
            return False
        item = next(self._items, None)
        if item is None:
            self.done = True
            return False
        if isinstance(item, Damage):
            self.hole = item
            return False
        if self.codec is not None and item.first:
            self.members.append((self.end, item.offset))
            self.heads[self.end] = item.data[:8]
        self.buf += item.data
        return True

    def available(self, n: int, at: int | None = None) -> int:
        """Bytes available (up to `n`) from position `at` (default: the read position) before the end or a hole."""
        at = self.pos if at is None else at
        while self.end - at < n and self._pull():
            pass
        return max(0, min(n, self.end - at))

    def peek(self, n: int, at: int | None = None) -> bytes:
        at = self.pos if at is None else at
        got = self.available(n, at)
        return bytes(self.buf[at - self.base : at - self.base + got])

    def slice(self, start: int, stop: int) -> bytes:
        return bytes(self.buf[start - self.base : stop - self.base])

    def at_hole(self) -> bool:
        return self.hole is not None and self.pos >= self.end

    def exhausted(self) -> bool:
        return self.available(1) == 0

    def take_hole(self) -> Damage:
        damage, self.hole = self.hole, None
        assert damage is not None
        return damage

    def search_end(self, pattern: re.Pattern[bytes], start: int, limit: int) -> int | None:
        """Where the first match of `pattern` at or after position `start`, within `limit` bytes of it, ends."""
        while True:
            begin = start - self.base
            stop = min(len(self.buf), begin + limit)
            match = pattern.search(self.buf, begin, stop)
            if match is not None:
                return self.base + match.end()
            if stop - begin >= limit or not self._pull():
                return None

    def compact(self) -> None:
        """Forget bytes (and member starts) before the read position."""
        drop = self.pos - self.base
        if drop > 0:
            del self.buf[:drop]
            self.base = self.pos
        keep = [m for m in self.members if m[0] >= self.pos]
        earlier = [m for m in self.members if m[0] < self.pos]
        self.members = earlier[-1:] + keep
        self.heads = {p: h for p, h in self.heads.items() if p >= self.pos}

    def skip(self, n: int, sink: Callable[[bytes, int], None]) -> int:
        """Consume up to `n` bytes without keeping them, handing each stretch (and its position) to `sink`."""
        done = 0
        while done < n:
            got = self.available(min(n - done, 1 << 20))
            if not got:
                break
            sink(self.slice(self.pos, self.pos + got), self.pos)
            self.pos += got
            done += got
            del self.buf[: self.pos - self.base]
            self.base = self.pos
        return done

    def offset(self, position: int) -> str:
        """Where `position` is in the file, for messages: the byte offset (uncompressed), or the compressed offset
        of the gzip member holding it, plus how far into that member's data it lies when not at its start."""
        if self.codec is None:
            return str(position)
        holder = [m for m in self.members if m[0] <= position]
        if not holder:
            return f"? ({position} bytes into the decompressed data)"
        start, compressed = holder[-1]
        return str(compressed) if start == position else f"{compressed} (+{position - start} bytes into its member)"

    def restart(self, position: int) -> None:
        """Read again from `position` (behind the read position): from the member holding it, or the file offset."""
        if self.codec is None:
            fresh = _Stream(self.url, start=position, position=position, codec=None)
        else:
            start, compressed = [m for m in self.members if m[0] <= position][-1]
            fresh = _Stream(self.url, start=compressed, position=start, codec=self.codec)
        self.__dict__.update(fresh.__dict__)
        self.skip(position - self.pos, lambda data, at: None)

    def scan(self, start: int) -> int | None:
        """Move to the first record-start candidate at or after `start` (a `WARC/x.y` line at a line start, or a
        member whose data starts `WARC/`); None, at the end or a hole, when there is none."""
        self.pos = max(start, self.base)
        while True:
            i = self.pos - self.base
            found = [p for p, head in self.heads.items() if p >= self.pos and head.startswith(b"WARC/")]
            match = _CANDIDATE.search(self.buf, i)
            if match is not None:
                found.append(self.base + match.start())
            if found:
                self.pos = min(found)
                return self.pos
            if not self._pull():
                self.pos = self.end
                return None
            self.pos = max(self.pos, self.end - 32)  # what was searched and cannot start a candidate is dropped
            self.compact()


class _Digest:
    """A `WARC-*-Digest` value: `algorithm:value`, the value base32 or hex. Unknown algorithms are not checked."""

    def __init__(self, value: str | None) -> None:
        self.value = (value or "").strip()
        algorithm, _, self.expected = self.value.partition(":")
        algorithm = algorithm.lower().replace("-", "")
        self.hash = (
            hashlib.new(algorithm) if algorithm in ("sha1", "sha256", "sha512", "md5") and self.expected else None
        )

    def update(self, data: bytes) -> None:
        if self.hash is not None:
            self.hash.update(data)

    def matches(self) -> bool | None:
        """True or False when checkable, None when absent or unknown."""
        if self.hash is None:
            return None
        digest = self.hash.digest()
        expected = self.expected.strip()
        if len(expected) == 2 * len(digest):
            return expected.lower() == digest.hex()
        return expected.upper().rstrip("=") == base64.b32encode(digest).decode().rstrip("=")


class BodyError(ValueError):
    """An HTTP payload whose transfer or content coding does not decode."""


class BodyTooLarge(ValueError):
    """A decoded payload over the size limit."""


def decode_body(payload: bytes, http_headers: StatusAndHeaders | None, limit: int, truncated: bool = False) -> bytes:
    """The entity body of an HTTP payload: de-chunked and content-decoded (gzip, x-gzip, deflate, br, zstd,
    identity), strictly. Raises BodyError when a coding does not decode, is unsupported, or stops before its end
    (unless `truncated`: the record says the crawler cut the payload, `WARC-Truncated`; then the part there is is
    kept); BodyTooLarge when the body would exceed `limit` bytes. A payload that does not even start like chunked
    data despite a chunked Transfer-Encoding is taken as already de-chunked (crawlers often store it so)."""
    if http_headers is None:
        return payload
    if "chunked" in (http_headers.get_header("Transfer-Encoding") or "").lower():
        payload = _dechunk(payload, truncated)
    codings = [c.strip().lower() for c in (http_headers.get_header("Content-Encoding") or "").split(",")]
    for coding in reversed([c for c in codings if c and c not in ("identity", "none")]):
        payload = _decode_coding(payload, coding, limit, truncated)
    return payload


def _dechunk(data: bytes, truncated: bool) -> bytes:
    if not _CHUNK_SIZE.match(data):
        return data
    out, pos = [], 0
    while True:
        match = _CHUNK_SIZE.match(data, pos)
        if match is None:
            if pos >= len(data) and truncated:
                break
            what = "ends before its last chunk" if pos >= len(data) else "is malformed"
            raise BodyError(f"chunked transfer coding {what} (payload byte {pos})")
        size, pos = int(match.group(1), 16), match.end()
        if size == 0:
            break
        out.append(data[pos : pos + size])
        pos += size
        if data[pos : pos + 2] != b"\r\n":
            if pos >= len(data) and truncated:
                break
            what = "ends inside a chunk" if pos >= len(data) else "has a chunk not followed by CRLF"
            raise BodyError(f"chunked transfer coding {what} (payload byte {min(pos, len(data))})")
        pos += 2
    return b"".join(out)


def _decode_coding(data: bytes, coding: str, limit: int, truncated: bool) -> bytes:
    try:
        if coding in ("gzip", "x-gzip", "deflate"):
            return _inflate(data, coding, limit, truncated)
        if coding == "br":
            try:
                import brotli
            except ImportError:
                raise BodyError("Content-Encoding br is not supported (the brotli module is not installed)") from None
            decoder = brotli.Decompressor()
            try:
                out = decoder.process(data)
            except brotli.error as exc:
                raise BodyError(f"br body does not decode ({exc})") from None
            if not decoder.is_finished() and not truncated:
                raise BodyError("br body ends before the end of its stream")
        elif coding == "zstd":
            decoder = zstandard.ZstdDecompressor().decompressobj()
            parts, size = [], 0
            for start in range(0, len(data), 1 << 16):
                parts.append(decoder.decompress(data[start : start + (1 << 16)]))
                size += len(parts[-1])
                if size > limit:
                    raise BodyTooLarge(coding)
            out = b"".join(parts)
            if not decoder.eof and not truncated:
                raise BodyError("zstd body ends before the end of its frame")
        else:
            raise BodyError(f"unsupported Content-Encoding {coding!r}")
    except zstandard.ZstdError as exc:
        raise BodyError(f"{coding} body does not decode ({exc})") from None
    if len(out) > limit:
        raise BodyTooLarge(coding)
    return out


def _inflate(data: bytes, coding: str, limit: int, truncated: bool) -> bytes:
    """gzip (a gzip or zlib stream; concatenated members too) or deflate (zlib-wrapped or raw), bounded by `limit`.
    A stream that stops before its end is an error unless the payload is known to be `truncated`."""
    modes = [47] if coding != "deflate" else [15, -15]  # 47: gzip or zlib header, detected
    for i, wbits in enumerate(modes):
        decoder = zlib.decompressobj(wbits)
        parts, size, rest = [], 0, data
        try:
            while rest:
                out = decoder.decompress(rest, limit + 1 - size)
                parts.append(out)
                size += len(out)
                if size > limit:
                    raise BodyTooLarge(coding)
                if decoder.eof:
                    rest = decoder.unused_data
                    if rest[:2] != b"\x1f\x8b" or coding == "deflate":
                        break
                    decoder = zlib.decompressobj(wbits)
                    continue
                rest = decoder.unconsumed_tail
                if not rest:
                    parts.append(decoder.flush())
                    if not decoder.eof and not truncated:
                        raise BodyError(f"{coding} body ends before the end of its stream")
            return b"".join(parts)
        except zlib.error as exc:
            if i + 1 < len(modes) and size == 0:
                continue
            raise BodyError(f"{coding} body does not decode ({exc})") from None
    raise AssertionError("unreachable")


class _ArchiveReader(Reader):
    """Walks a (gzip) WARC file; each record is one input unit, whatever its type.

    Records of the wrong type are rejected (`non_document_record`) so the counts still add up. A record that
    fails its framing checks (see the module docstring) is one error: `truncated_record` (the file or a gzip
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
        stream = _Stream(shard.path)
        index = 0
        while True:
            stream.compact()
            while (blank := stream.peek(64)) and blank[:1] in b"\r\n" and blank[:1]:
                stream.pos += len(blank) - len(blank.lstrip(b"\r\n"))
            if stream.at_hole():
                self._lost_member(shard, stream, stream.take_hole(), out)
                index += 1
                continue
            if stream.exhausted():
                return
            yield from self._record(shard, stream, index, out)
            index += 1

    def _lost_member(self, shard: Shard, stream: _Stream, damage: Damage, out: Outcomes) -> None:
        out.seen(0)
        reason = "truncated_record" if damage.reason == "truncated_stream" else damage.reason
        out.error(
            None,
            reason,
            f"read: {display_path(shard.path)} @ offset {damage.offset}: {damage.detail}; "
            f"the record(s) in it are lost (one error); {damage_summary(damage)}",
        )

    @staticmethod
    def _fail(out: Outcomes, reason: str, message: str, nbytes: int = 0) -> None:
        out.seen(nbytes)
        out.error(None, reason, message)

    def _record(self, shard: Shard, stream: _Stream, index: int, out: Outcomes) -> Iterator[Doc]:
        start = stream.pos
        where = f"read: {display_path(shard.path)} @ offset {stream.offset(start)}: record {index}"
        head = stream.peek(8)
        if not head.startswith(_MAGIC):
            if len(head) < 7 and b"WARC/1.".startswith(head):  # the data ends inside the first line
                stream.pos = stream.end
                self._cut(stream, out, f"{where} cut off inside its first line", len(head))
                return
            found = stream.scan(start + 1)
            self._fail(
                out,
                "malformed_record",
                f"{where}: {(found if found is not None else stream.pos) - start:,} bytes that are not a WARC "
                f"record (starting {head!r}); " + self._resumed(stream, found),
            )
            return
        found_end = stream.search_end(_HEADER_END, start, MAX_HEADER_BYTES)
        if found_end is None:
            if stream.end - start < MAX_HEADER_BYTES:  # the file (or a damaged member) ends inside the headers
                size = stream.end - start
                stream.pos = stream.end
                self._cut(stream, out, f"{where} cut off inside its WARC headers", size)
                return
            found = stream.scan(start + 1)
            message = f"{where}: no end of WARC headers within {MAX_HEADER_BYTES:,} bytes; "
            self._fail(out, "malformed_record", message + self._resumed(stream, found))
            return
        header_end = found_end
        try:
            rec_headers = _WARC_PARSER.parse(io.BytesIO(stream.slice(start, header_end)))
        except Exception as exc:
            found = stream.scan(start + 1)
            message = f"{where}: WARC headers do not parse ({type(exc).__name__}: {exc}); "[:300]
            self._fail(out, "malformed_record", message + self._resumed(stream, found))
            return
        record_id = rec_headers.get_header("WARC-Record-ID")
        if record_id:
            where = f"{where} (WARC-Record-ID {record_id})"
        declared = (rec_headers.get_header("Content-Length") or "").strip()
        if not declared.isdigit():
            found = stream.scan(header_end)
            message = f"{where}: no valid Content-Length ({declared!r}); "
            self._fail(out, "malformed_record", message + self._resumed(stream, found))
            return
        length = int(declared)
        block_digest = _Digest(rec_headers.get_header("WARC-Block-Digest"))
        hold = length <= self.max_doc_bytes + HOLD_SLACK
        block: bytes | None = None
        block_end = header_end + length
        streamed_candidates: list[int] = []
        if hold:
            got = stream.available(length, header_end)
            block = stream.slice(header_end, header_end + got)
            block_digest.update(block)
        else:
            stream.pos = header_end
            tail = [b""]

            def sink(data: bytes, at: int) -> None:
                block_digest.update(data)
                if not streamed_candidates:
                    joined = tail[0] + data
                    match = _CANDIDATE.search(joined)
                    if match is not None:
                        streamed_candidates.append(at - len(tail[0]) + match.start())
                    tail[0] = joined[-32:]

            got = stream.skip(length, sink)
        if got < length:  # the data ends (or a damaged member starts) inside the block
            inside = self._candidate_in_block(stream, header_end, header_end + got, streamed_candidates, hold)
            if inside is not None:
                message = (
                    f"{where}: Content-Length {length:,} runs past the end of the readable data; the next record "
                    f"starts at offset {stream.offset(inside)}, {inside - header_end:,} bytes into the block"
                )
                self._fail(out, "bad_content_length", message, got)
                return
            stream.pos = header_end + got
            what = f"{where} cut off ({length - got:,} of {length:,} bytes missing)"
            self._cut(stream, out, what, got)
            return
        stream.pos = block_end
        framing = self._framing(stream, header_end, block_end)
        digest_ok = block_digest.matches()
        if framing is not None and digest_ok is not True:
            stream.pos = header_end
            if hold:
                found = stream.scan(header_end)
            elif streamed_candidates:
                stream.restart(streamed_candidates[0])
                found = stream.pos
            else:
                found = stream.scan(block_end)
            if found is not None and found < block_end:
                detail = (
                    f"Content-Length {length:,} is too big: the next record starts at offset {stream.offset(found)}"
                )
            else:
                detail = f"Content-Length {length:,} is wrong: {framing}"
            message = f"{where}: {detail}; " + self._resumed(stream, found)
            self._fail(out, "bad_content_length", message, length)
            return
        if digest_ok is False:
            # A length too big by exactly the following record(s) passes the framing check; the digest catches it,
            # and a record header inside the block says the length (not the data) is what is wrong.
            inside = self._candidate_in_block(stream, header_end, block_end, streamed_candidates, hold)
            if inside is not None:
                message = (
                    f"{where}: Content-Length {length:,} is too big (the block does not match its "
                    f"WARC-Block-Digest and holds the next record, at offset {stream.offset(inside)}); "
                    + self._resumed(stream, inside)
                )
                self._fail(out, "bad_content_length", message, length)
                return
            stream.pos = block_end
            message = f"{where}: block does not match its WARC-Block-Digest {block_digest.value}"
            self._fail(out, "digest_mismatch", message, length)
            return
        seen = out.stats.docs_in
        try:
            yield from self._dispatch(shard, index, where, rec_headers, block, length, out)
        except Exception as exc:  # one record's extraction failing must not end the file
            if out.stats.docs_in == seen:
                out.seen(length)
            out.error(None, f"exception:{type(exc).__name__}", f"{where}: {exc!r}"[:500])

    def _cut(self, stream: _Stream, out: Outcomes, what: str, nbytes: int) -> None:
        """A record the data stops inside: at the end of the file, or at a damaged gzip member (then taken)."""
        if stream.at_hole():
            damage = stream.take_hole()
            reason = "truncated_record" if damage.reason == "truncated_stream" else damage.reason
            self._fail(out, reason, f"{what}: {damage.detail}; {damage_summary(damage)}", nbytes)
        else:
            self._fail(out, "truncated_record", what, nbytes)

    def _candidate_in_block(
        self, stream: _Stream, header_end: int, stop: int, streamed: list[int], held: bool
    ) -> int | None:
        """The first record start inside the block between `header_end` and `stop` (then read from there), if any."""
        if not held:
            if streamed:
                stream.restart(streamed[0])
                return streamed[0]
            return None
        members = [p for p, head in stream.heads.items() if header_end < p < stop and head.startswith(b"WARC/")]
        match = _CANDIDATE.search(stream.buf, header_end - stream.base, stop - stream.base)
        found = members + ([stream.base + match.start()] if match else [])
        if not found:
            return None
        stream.pos = min(found)
        return stream.pos

    def _framing(self, stream: _Stream, header_end: int, block_end: int) -> str | None:
        """None if the next record starts where the block ends, else what is there instead."""
        for position, head in stream.heads.items():
            if header_end < position < block_end and head.startswith(b"WARC/"):
                return f"a gzip member holding a record starts inside the block, at offset {stream.offset(position)}"
        after = stream.peek(64, block_end)
        rest = after.lstrip(b"\r\n")
        while len(after) == 64 and not rest:  # a long run of blank lines
            block_end += 64
            after = stream.peek(64, block_end)
            rest = after.lstrip(b"\r\n")
        if not rest or rest.startswith(_MAGIC):
            return None
        if len(rest) < 7 and b"WARC/1.".startswith(rest) and len(after) < 64:
            return None  # the file ends inside the next record's first line: that record is the cut one
        return f"found {rest[:16]!r} where it ends, not a record"

    @staticmethod
    def _resumed(stream: _Stream, found: int | None) -> str:
        if found is not None:
            return f"reading resumes at the next record, offset {stream.offset(found)}"
        return "no record follows"

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
                self._fail(out, "malformed_record", f"{where}: HTTP headers do not parse ({exc})"[:300], length)
                return
            payload = block[stream.tell() :]
        payload_digest = _Digest(rec_headers.get_header("WARC-Payload-Digest"))
        if rec_type != "revisit" and not rec_headers.get_header("WARC-Truncated"):
            payload_digest.update(payload)
            if payload_digest.matches() is False:
                message = f"{where}: payload does not match its WARC-Payload-Digest {payload_digest.value}"
                self._fail(out, "digest_mismatch", message, length)
                return
        try:
            body = decode_body(
                payload, http_headers, self.max_doc_bytes, bool(rec_headers.get_header("WARC-Truncated"))
            )
        except BodyTooLarge:
            body = None
        except BodyError as exc:
            self._fail(out, "undecodable_body", f"{where}: {exc}", len(payload))
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
