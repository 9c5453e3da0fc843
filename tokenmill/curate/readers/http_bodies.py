"""HTTP entity bodies out of a WARC payload: chunked transfer coding and content codings, decoded strictly.

A body is de-chunked and content-decoded (gzip, x-gzip, deflate, br, zstd, identity) under a size limit. A
body that does not decode is a `BodyError` (the reader's `undecodable_body`), never raw bytes passed off as
HTML; one that would exceed the size limit is `BodyTooLarge`.
"""

from __future__ import annotations

import re
import zlib

import zstandard
from warcio.statusandheaders import StatusAndHeaders

_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


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
