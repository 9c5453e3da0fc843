"""One compressed member at a time: which codec, a decoder with one interface, and what to do with a bad member.

A member is a gzip member, a zstd frame, or a bz2/xz stream. `compressed.VerifiedReader` builds on these: it
names the codec (`codec_for` by extension, `sniff_codec` by magic bytes), decodes each member through a
`MemberDecoder`, and when one fails its check, `recount` says how much output it held (all discarded) and
`resync` finds the next member that decodes to its end and verifies (gzip and zstd only: their members carry
magic bytes a damaged one can be skipped to).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from typing import Any

import zstandard

READ_BYTES = 1 << 20
_FEED_BYTES = 1 << 16
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
RESYNC_MAGIC = {"gzip": b"\x1f\x8b\x08", "zstd": b"\x28\xb5\x2f\xfd"}  # members that can follow a damaged one
DECODE_ERRORS = (zlib.error, zstandard.ZstdError, lzma.LZMAError, OSError, EOFError, ValueError)


def codec_for(url: str) -> str | None:
    """The compression of `url` by its extension, as `open_decompressed` reads it."""
    lowered = url.lower()
    if lowered.endswith(".gz"):
        return "gzip"
    if lowered.endswith((".zst", ".zstd")):
        return "zstd"
    if lowered.endswith(".bz2"):
        return "bz2"
    if lowered.endswith(".xz"):
        return "xz"
    return None


def sniff_codec(head: bytes) -> str | None:
    """The compression announced by a file's first bytes (None: not compressed)."""
    for codec, magic in MAGIC.items():
        if head.startswith(magic):
            return codec
    return None


class MemberDecoder:
    """One member's decompressor behind one interface: `feed` yields output and stops at the member's end."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        if codec == "gzip":
            self._d: Any = zlib.decompressobj(31)  # gzip wrapper: CRC32 and length are checked at the end
        elif codec == "zstd":
            self._d = zstandard.ZstdDecompressor().decompressobj()  # checksum checked when the frame has one
        elif codec == "bz2":
            self._d = bz2.BZ2Decompressor()
        else:
            self._d = lzma.LZMADecompressor()
        self.consumed = 0  # after the member's end: how much of the last `feed` input belonged to it

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    def decompress(self, data: bytes | memoryview) -> bytes:
        return b"".join(self.feed(data))

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        if self.codec in ("bz2", "xz"):
            out = self._d.decompress(data, READ_BYTES)
            while True:
                if out:
                    yield out
                if self._d.eof:
                    self.consumed = len(data) - len(self._d.unused_data)
                    return
                if self._d.needs_input:
                    return
                out = self._d.decompress(b"", READ_BYTES)
        for start in range(0, len(data), _FEED_BYTES):  # bounded input per call bounds the output per call
            piece = data[start : start + _FEED_BYTES]
            out = self._d.decompress(piece)
            if out:
                yield out
            if self._d.eof:
                self.consumed = start + len(piece) - len(self._d.unused_data)
                return


def recount(raw: Any, codec: str, offset: int) -> tuple[int, int, bool]:
    """(bytes, newlines, ends with a newline) of what a damaged member decodes to, ignoring its checksum (gzip:
    the deflate body is decoded raw) and stopping at the first error; in small steps, so little is missed."""
    if codec == "zstd":
        return _zstd_recount(raw, offset)
    raw.seek(offset)
    data = raw.read(READ_BYTES)
    decoder: Any
    if codec == "gzip":
        body = _gzip_header_length(data)
        if body is None:
            return 0, 0, True
        decoder, data = zlib.decompressobj(-15), data[body:]
    else:
        decoder = MemberDecoder(codec)
    produced = lines = 0
    last = b"\n"
    try:
        while data:
            for start in range(0, len(data), 4096):
                out = decoder.decompress(data[start : start + 4096])
                produced, lines, last = produced + len(out), lines + out.count(b"\n"), out[-1:] or last
                if decoder.eof:
                    return produced, lines, last == b"\n"
            data = raw.read(READ_BYTES)
    except DECODE_ERRORS:
        pass
    return produced, lines, last == b"\n"


def resync(raw: Any, codec: str, start: int) -> int | None:
    """The offset of the first member at or after `start` that decodes to its end and verifies."""
    magic = RESYNC_MAGIC[codec]
    position = start
    while True:
        raw.seek(position)
        window = raw.read(READ_BYTES)
        if len(window) < len(magic):
            return None
        hit = window.find(magic)
        if hit < 0:
            position += len(window) - len(magic) + 1
            continue
        candidate = position + hit
        if _verifies(raw, codec, candidate):
            return candidate
        position = candidate + 1


def _verifies(raw: Any, codec: str, offset: int) -> bool:
    raw.seek(offset)
    decoder = MemberDecoder(codec)
    try:
        while chunk := raw.read(READ_BYTES):
            for _ in decoder.feed(chunk):
                pass
            if decoder.eof:
                return True
    except DECODE_ERRORS:
        return False
    return False


def _gzip_header_length(data: bytes) -> int | None:
    """Length of the gzip member header at the start of `data` (RFC 1952), or None if it is not one."""
    if len(data) < 10 or data[:3] != b"\x1f\x8b\x08":
        return None
    flags, end = data[3], 10
    if flags & 4:  # FEXTRA
        end += 2 + int.from_bytes(data[end : end + 2], "little")
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = data.find(b"\0", end) + 1
            if end == 0:
                return None
    if flags & 2:  # FHCRC
        end += 2
    return end if end <= len(data) else None


def _zstd_recount(raw: Any, offset: int) -> tuple[int, int, bool]:
    """What a zstd frame that fails its checksum decodes to. The decoder withholds the last output before the
    error, so: one pass in large reads finds roughly how much decodes; a second pass reads up to there in large
    reads and the rest a byte at a time, which loses nothing."""

    def reader() -> Any:
        raw.seek(offset)
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1, read_across_frames=False)

    decoded = 0
    stream = reader()
    try:
        while out := stream.read(1 << 16):
            decoded += len(out)
    except DECODE_ERRORS:
        pass
    produced = lines = 0
    last = b"\n"
    stream = reader()
    try:
        while out := stream.read(1 << 16 if produced + (1 << 16) < decoded else 1):
            produced, lines, last = produced + len(out), lines + out.count(b"\n"), out[-1:]
    except DECODE_ERRORS:
        pass
    return produced, lines, last == b"\n"


def zstd_skippable(chunk: bytes) -> bool:
    """Whether `chunk` starts with the magic of a zstd skippable frame (a frame with no data to decode)."""
    return len(chunk) >= 4 and chunk[0] & 0xF0 == 0x50 and chunk[1:4] == b"\x2a\x4d\x18"
