"""WARC record framing: each record's headers, Content-Length and digests are checked before it is used.

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

warcio still parses the WARC header blocks, so names and values are read as before. `read_records` yields the
records that pass; the payload digest is checked by the reader (`warc._ArchiveReader`), once the HTTP headers are
off the payload.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParser

from tokenmill.curate.readers.base import damage_summary
from tokenmill.curate.readers.warc_stream import CANDIDATE, WarcStream
from tokenmill.engine.compressed import Damage
from tokenmill.engine.listing import display_path
from tokenmill.engine.stage import Outcomes

MAX_HEADER_BYTES = 1 << 20  # a WARC header block longer than this is malformed
_MAGIC = (b"WARC/1.", b"WARC/0.")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_WARC_PARSER = StatusAndHeadersParser(["WARC/1.1", "WARC/1.0", "WARC/0.17", "WARC/0.18"])


class Digest:
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


@dataclass(frozen=True)
class Record:
    """A record that passed the framing checks. `where` names file, offset, record index and (when it has one) the
    WARC-Record-ID, for messages; `block` is None when the block was longer than the reader holds in memory (it was
    streamed past: its framing and block digest are still checked)."""

    index: int
    where: str
    headers: StatusAndHeaders
    block: bytes | None
    length: int


def read_records(path: str, hold_bytes: int, out: Outcomes) -> Iterator[Record]:
    """The records of the WARC file at `path` (plain or gzip) that pass the framing checks, in order. Every record
    is one input unit: one that fails is one error in `out` (see `warc._ArchiveReader` for the reasons), and so is
    a damaged gzip member. Blocks of up to `hold_bytes` are held in memory; longer ones are streamed past."""
    stream = WarcStream(path)
    index = 0
    while True:
        stream.compact()
        while (blank := stream.peek(64)) and blank[:1] in b"\r\n" and blank[:1]:
            stream.pos += len(blank) - len(blank.lstrip(b"\r\n"))
        if stream.at_hole():
            _lost_member(path, stream.take_hole(), out)
            index += 1
            continue
        if stream.exhausted():
            return
        found = _frame(path, stream, index, hold_bytes, out)
        if found is not None:
            yield found
        index += 1


def record_error(out: Outcomes, reason: str, message: str, nbytes: int = 0) -> None:
    """One record lost: seen (`nbytes` of input) and counted as an error under `reason`."""
    out.seen(nbytes)
    out.error(None, reason, message)


def _lost_member(path: str, damage: Damage, out: Outcomes) -> None:
    out.seen(0)
    reason = "truncated_record" if damage.reason == "truncated_stream" else damage.reason
    out.error(
        None,
        reason,
        f"read: {display_path(path)} @ offset {damage.offset}: {damage.detail}; "
        f"the record(s) in it are lost (one error); {damage_summary(damage)}",
    )


def _frame(path: str, stream: WarcStream, index: int, hold_bytes: int, out: Outcomes) -> Record | None:
    """Frame the record at the read position: the `Record` when it passes, else None once it is one error (and
    the stream is where reading goes on)."""
    start = stream.pos
    where = f"read: {display_path(path)} @ offset {stream.offset(start)}: record {index}"
    head = stream.peek(8)
    if not head.startswith(_MAGIC):
        if len(head) < 7 and b"WARC/1.".startswith(head):  # the data ends inside the first line
            stream.pos = stream.end
            _cut(stream, out, f"{where} cut off inside its first line", len(head))
            return None
        found = stream.scan(start + 1)
        record_error(
            out,
            "malformed_record",
            f"{where}: {(found if found is not None else stream.pos) - start:,} bytes that are not a WARC "
            f"record (starting {head!r}); " + _resumed(stream, found),
        )
        return None
    found_end = stream.search_end(_HEADER_END, start, MAX_HEADER_BYTES)
    if found_end is None:
        if stream.end - start < MAX_HEADER_BYTES:  # the file (or a damaged member) ends inside the headers
            size = stream.end - start
            stream.pos = stream.end
            _cut(stream, out, f"{where} cut off inside its WARC headers", size)
            return None
        found = stream.scan(start + 1)
        message = f"{where}: no end of WARC headers within {MAX_HEADER_BYTES:,} bytes; "
        record_error(out, "malformed_record", message + _resumed(stream, found))
        return None
    header_end = found_end
    try:
        rec_headers = _WARC_PARSER.parse(io.BytesIO(stream.slice(start, header_end)))
    except Exception as exc:
        found = stream.scan(start + 1)
        message = f"{where}: WARC headers do not parse ({type(exc).__name__}: {exc}); "[:300]
        record_error(out, "malformed_record", message + _resumed(stream, found))
        return None
    record_id = rec_headers.get_header("WARC-Record-ID")
    if record_id:
        where = f"{where} (WARC-Record-ID {record_id})"
    declared = (rec_headers.get_header("Content-Length") or "").strip()
    if not declared.isdigit():
        found = stream.scan(header_end)
        message = f"{where}: no valid Content-Length ({declared!r}); "
        record_error(out, "malformed_record", message + _resumed(stream, found))
        return None
    length = int(declared)
    block_digest = Digest(rec_headers.get_header("WARC-Block-Digest"))
    hold = length <= hold_bytes
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
                match = CANDIDATE.search(joined)
                if match is not None:
                    streamed_candidates.append(at - len(tail[0]) + match.start())
                tail[0] = joined[-32:]

        got = stream.skip(length, sink)
    if got < length:  # the data ends (or a damaged member starts) inside the block
        inside = _candidate_in_block(stream, header_end, header_end + got, streamed_candidates, hold)
        if inside is not None:
            message = (
                f"{where}: Content-Length {length:,} runs past the end of the readable data; the next record "
                f"starts at offset {stream.offset(inside)}, {inside - header_end:,} bytes into the block"
            )
            record_error(out, "bad_content_length", message, got)
            return None
        stream.pos = header_end + got
        what = f"{where} cut off ({length - got:,} of {length:,} bytes missing)"
        _cut(stream, out, what, got)
        return None
    stream.pos = block_end
    framing = _framing(stream, header_end, block_end)
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
            detail = f"Content-Length {length:,} is too big: the next record starts at offset {stream.offset(found)}"
        else:
            detail = f"Content-Length {length:,} is wrong: {framing}"
        message = f"{where}: {detail}; " + _resumed(stream, found)
        record_error(out, "bad_content_length", message, length)
        return None
    if digest_ok is False:
        # A length too big by exactly the following record(s) passes the framing check; the digest catches it,
        # and a record header inside the block says the length (not the data) is what is wrong.
        inside = _candidate_in_block(stream, header_end, block_end, streamed_candidates, hold)
        if inside is not None:
            message = (
                f"{where}: Content-Length {length:,} is too big (the block does not match its "
                f"WARC-Block-Digest and holds the next record, at offset {stream.offset(inside)}); "
                + _resumed(stream, inside)
            )
            record_error(out, "bad_content_length", message, length)
            return None
        stream.pos = block_end
        message = f"{where}: block does not match its WARC-Block-Digest {block_digest.value}"
        record_error(out, "digest_mismatch", message, length)
        return None
    return Record(index, where, rec_headers, block, length)


def _cut(stream: WarcStream, out: Outcomes, what: str, nbytes: int) -> None:
    """A record the data stops inside: at the end of the file, or at a damaged gzip member (then taken)."""
    if stream.at_hole():
        damage = stream.take_hole()
        reason = "truncated_record" if damage.reason == "truncated_stream" else damage.reason
        record_error(out, reason, f"{what}: {damage.detail}; {damage_summary(damage)}", nbytes)
    else:
        record_error(out, "truncated_record", what, nbytes)


def _candidate_in_block(stream: WarcStream, header_end: int, stop: int, streamed: list[int], held: bool) -> int | None:
    """The first record start inside the block between `header_end` and `stop` (then read from there), if any."""
    if not held:
        if streamed:
            stream.restart(streamed[0])
            return streamed[0]
        return None
    members = [p for p, head in stream.heads.items() if header_end < p < stop and head.startswith(b"WARC/")]
    match = CANDIDATE.search(stream.buf, header_end - stream.base, stop - stream.base)
    found = members + ([stream.base + match.start()] if match else [])
    if not found:
        return None
    stream.pos = min(found)
    return stream.pos


def _framing(stream: WarcStream, header_end: int, block_end: int) -> str | None:
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


def _resumed(stream: WarcStream, found: int | None) -> str:
    if found is not None:
        return f"reading resumes at the next record, offset {stream.offset(found)}"
    return "no record follows"
