"""Verified decompression: compressed bytes are handed out only once the member they belong to has passed its check.

gzip (and zstd, bz2, xz) check a member's integrity only at its end: a decompressor hands out bytes decoded from
a corrupt member long before its CRC fails. VerifiedReader decodes one member (gzip member, zstd frame, bz2/xz
stream) at a time and releases its bytes only once the member's check has passed. A member is held in memory up
to VERIFY_BUFFER_BYTES of output; a larger one is decoded twice: once to check it (output counted, not kept),
then again, streaming, to hand it out. So memory stays bounded and nothing unverified is ever released.

Readers that report damage per member iterate `VerifiedReader` (`Piece`s and `Damage`s); everything else opens a
file with `open_decompressed`, a byte stream that raises `CorruptInput` at a damaged member. The codec-level parts
(detection, the decoder, recounting a bad member, re-synchronising) are in `member_decoding`.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec

from tokenmill.engine.listing import display_path
from tokenmill.engine.member_decoding import (
    DECODE_ERRORS,
    MAGIC,
    READ_BYTES,
    RESYNC_MAGIC,
    MemberDecoder,
    codec_for,
    recount,
    resync,
    sniff_codec,
    zstd_skippable,
)

VERIFY_BUFFER_BYTES = 64 << 20


class CorruptInput(OSError):
    """A compressed input failed its integrity check (or was cut off); raised by `open_decompressed` streams."""


@dataclass(frozen=True)
class Piece:
    """Verified decompressed bytes. `member` is the index of the member (gzip member, zstd frame, bz2/xz stream)
    they belong to and `offset` its compressed offset; `first` marks the piece that starts the member. For an
    uncompressed file `member` is 0 and `offset` is the file offset of `data[0]`."""

    data: bytes
    member: int
    offset: int
    first: bool


@dataclass(frozen=True)
class Damage:
    """A member whose bytes cannot be trusted: none of its output was handed out.

    `lost_bytes`/`lost_lines` describe the output decoded from it before the failure (discarded); `ends_line` is
    True when that output ends with a newline (or is empty). `resume` is the compressed offset of the next member
    that decodes and verifies (reading continues there), or None when the rest of the file is lost.
    """

    member: int
    offset: int
    reason: str  # "corrupt_stream" (bad data or checksum) or "truncated_stream" (the file ends inside the member)
    detail: str
    lost_bytes: int
    lost_lines: int
    ends_line: bool
    resume: int | None


@contextlib.contextmanager
def open_decompressed(url: str) -> Iterator[IO[bytes]]:
    """Open `url` for reading bytes, decompressing by extension (.gz, .zst/.zstd, .bz2, .xz).

    Compressed data is handed out only after the integrity check of the member it belongs to has passed (see
    `VerifiedReader`); a member that fails raises `CorruptInput` naming the file and offset, so no caller ever
    sees bytes decoded from a corrupt stream.
    """
    codec = codec_for(url)
    if codec is None:
        with fsspec.open(url, "rb") as raw:
            yield raw
        return
    raw_stream = _VerifiedRaw(VerifiedReader(url, codec))
    stream = io.BufferedReader(raw_stream, buffer_size=1 << 20)
    try:
        yield stream
    finally:
        stream.close()


class VerifiedReader:
    """Iterate a file's decompressed bytes as `Piece`s, each released only after its member verified; a member
    that fails is one `Damage` in the stream, after which reading resumes at the next good member if one can be
    found (gzip, zstd), else stops.

    `codec` is a codec name, None (uncompressed), "ext" (by extension) or "sniff" (by magic bytes). `start` is a
    compressed offset (a member start) to begin at. `buffer_bytes` caps the output held per member (default
    VERIFY_BUFFER_BYTES, read when iteration starts).
    """

    def __init__(self, url: str, codec: str | None = "ext", start: int = 0, buffer_bytes: int | None = None) -> None:
        self.url = url
        self.start = start
        self.buffer_bytes = buffer_bytes
        if codec == "ext":
            codec = codec_for(url)
        elif codec == "sniff":
            with fsspec.open(url, "rb") as raw:
                raw.seek(start)
                codec = sniff_codec(raw.read(8))
        self.codec = codec

    def __iter__(self) -> Iterator[Piece | Damage]:
        with fsspec.open(self.url, "rb") as raw:
            if self.start:
                raw.seek(self.start)
            if self.codec is None:
                offset = self.start
                while chunk := raw.read(READ_BYTES):
                    yield Piece(chunk, 0, offset, offset == 0)
                    offset += len(chunk)
                return
            yield from self._members(raw)

    def _members(self, raw: Any) -> Iterator[Piece | Damage]:
        cap = VERIFY_BUFFER_BYTES if self.buffer_bytes is None else self.buffer_bytes
        offset, index, leftover = self.start, 0, b""
        while True:
            outcome = yield from self._member(raw, offset, index, leftover, cap)
            if outcome[0] == "end":
                return
            if outcome[0] == "ok":
                _, offset, leftover = outcome
                index += 1
                continue
            _, start, reason, detail, lost, lines, ends_line = outcome
            resume = resync(raw, self.codec, start + 1) if self.codec in RESYNC_MAGIC else None
            yield Damage(index, start, reason, detail, lost, lines, ends_line, resume)
            if resume is None:
                return
            raw.seek(resume)
            offset, index, leftover = resume, index + 1, b""

    def _member(self, raw: Any, offset: int, index: int, leftover: bytes | memoryview, cap: int) -> Iterator[Piece]:
        """Decode the member at `offset`; yields its pieces once verified and returns ('ok', next offset, unread
        bytes), ('end',) at a clean end of file, or ('damaged', offset, reason, detail, lost, lines, ends_line).
        Input is sliced as memoryviews, so the bytes after a member are never copied (small members are many)."""
        codec = self.codec
        assert codec is not None
        chunk = memoryview(leftover if len(leftover) else raw.read(READ_BYTES))
        if (index or offset) and len(chunk) and chunk[0] == 0:  # gzip allows zero padding after a member
            while len(chunk) and not bytes(chunk).strip(b"\0"):
                offset += len(chunk)
                chunk = memoryview(raw.read(READ_BYTES))
            padding = len(chunk) - len(bytes(chunk).lstrip(b"\0"))
            offset, chunk = offset + padding, chunk[padding:]
        if not len(chunk):
            return ("end",)
        magic = MAGIC[codec]
        while len(chunk) < len(magic) and (more := raw.read(READ_BYTES)):
            chunk = memoryview(bytes(chunk) + more)
        what = {"gzip": "gzip member", "zstd": "zstd frame", "bz2": "bz2 stream", "xz": "xz stream"}[codec]
        head = bytes(chunk[:8])
        if not head.startswith(magic) and not (codec == "zstd" and zstd_skippable(head)):
            return ("damaged", offset, "corrupt_stream", f"{what} {index}: not {codec} data", 0, 0, True)
        decoder = MemberDecoder(codec)
        held: list[bytes] = []
        held_bytes = spilled_lines = produced = 0
        spilled = False
        last = b"\n"
        fed = offset
        while True:
            if not len(chunk):
                lines = spilled_lines + sum(part.count(b"\n") for part in held)
                detail = f"{what} {index} is cut off (the file ends inside it)"
                return ("damaged", offset, "truncated_stream", detail, produced, lines, last == b"\n")
            try:
                for out in decoder.feed(chunk):
                    produced += len(out)
                    last = out[-1:]
                    if spilled:
                        spilled_lines += out.count(b"\n")
                        continue
                    held.append(out)
                    held_bytes += len(out)
                    if held_bytes > cap:  # too big to hold: check it to its end now, hand it out on a second pass
                        spilled, spilled_lines, held = True, sum(part.count(b"\n") for part in held), []
            except DECODE_ERRORS as exc:
                # The output of the call that failed is lost: count what the member holds on a lenient re-read.
                produced, lines, ends_line = recount(raw, codec, offset)
                kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
                detail = f"{what} {index} fails its integrity check ({kind}: {exc})"
                return ("damaged", offset, "corrupt_stream", detail, produced, lines, ends_line)
            if decoder.eof:
                end = fed + decoder.consumed
                unread = chunk[decoder.consumed :]
                break
            fed += len(chunk)
            chunk = memoryview(raw.read(READ_BYTES))
        if not spilled:
            for i, part in enumerate(held):
                yield Piece(part, index, offset, i == 0)
            return ("ok", end, unread)
        # Second pass over a member that verified: stream it out as it decodes.
        raw.seek(offset)
        decoder, again, first = MemberDecoder(codec), 0, True
        try:
            while again < produced and (data := raw.read(READ_BYTES)):
                for out in decoder.feed(data):
                    again += len(out)
                    yield Piece(out, index, offset, first)
                    first = False
                if decoder.eof:
                    break
        except DECODE_ERRORS:
            decoder = None  # type: ignore[assignment]
        if decoder is None or not decoder.eof or again != produced:
            detail = f"{what} {index} changed while it was being read"
            return ("damaged", offset, "corrupt_stream", detail, 0, 0, True)
        raw.seek(end)
        return ("ok", end, b"")


class _VerifiedRaw(io.RawIOBase):
    """A read-only raw stream over a VerifiedReader; a damaged member raises CorruptInput."""

    def __init__(self, reader: VerifiedReader) -> None:
        self._reader = reader
        self._items = iter(reader)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            item = next(self._items, None)
            if item is None:
                return 0
            if isinstance(item, Damage):
                raise CorruptInput(f"{display_path(self._reader.url)} @ offset {item.offset}: {item.detail}")
            self._pending = memoryview(item.data)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()
        super().close()
