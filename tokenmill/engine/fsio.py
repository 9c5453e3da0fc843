"""Filesystem edges through fsspec: glob expansion, decompressing readers, atomic writes."""

from __future__ import annotations

import bz2
import contextlib
import errno
import io
import json
import lzma
import os
import posixpath
import re
import stat
import uuid
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import zstandard
from fsspec.core import url_to_fs

TMP_PREFIX = ".tmp-"


class InputNotFound(FileNotFoundError):
    """A configured input path or glob matched nothing."""


def expand_paths(patterns: list[str]) -> list[tuple[str, int, str]]:
    """Expand globs to sorted (url, size, identity) triples; identity changes when the file does.

    Local paths become absolute so that remote workers and later runs see the same names. Local directories and
    globs are walked by `walk_local` (fsspec's local glob does not follow symlinked directories): symlinked
    directories are followed; a link back to a directory being walked (a loop), or a second link to a directory
    already walked, is reported as one `InputWarning` naming the link and not followed. A broken symlink (or a
    self-referencing one) is listed like a file, with size 0 and identity `["broken-symlink", target]`: reading
    it gives one `broken_symlink` error record naming the link, so it shows in the run's counts instead of
    vanishing.
    """
    found: dict[str, tuple[int, str]] = {}
    for pattern in patterns:
        fs, root = url_to_fs(pattern)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        local = protocol in ("file", "local")
        if local:
            entries = walk_local(os.path.abspath(os.path.expanduser(root)))
        else:
            if fs.isfile(root):
                files = [root]
            else:
                pattern_root = posixpath.join(root, "**") if fs.isdir(root) else root
                files = [m for m in fs.glob(pattern_root) if fs.isfile(m)]
            entries = []
            for path in files:
                info = fs.info(path)
                identity = json.dumps([info.get("size"), info.get("mtime") or info.get("LastModified")], default=str)
                entries.append((fs.unstrip_protocol(path), int(info.get("size") or 0), identity))
        if not entries:
            raise InputNotFound(f"no input files match {pattern!r}")
        for url, size, identity in entries:
            found[url] = (size, identity)
    return [(url, size, identity) for url, (size, identity) in sorted(found.items())]


@contextlib.contextmanager
def open_raw(url: str) -> Iterator[IO[bytes]]:
    with fsspec.open(url, "rb") as handle:
        yield handle


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


def relative_name(url: str, common: str) -> str:
    """The part of `url` below `common`, used in stable document ids."""
    if common and url.startswith(common):
        return url[len(common) :].lstrip("/")
    return posixpath.basename(url)


def common_root(urls: list[str]) -> str:
    if not urls:
        return ""
    if len(urls) == 1:
        return posixpath.dirname(urls[0])
    protocol, sep, _ = urls[0].partition("://")
    prefix = protocol + sep if sep else ""
    return prefix + posixpath.commonpath([url[len(prefix) :] for url in urls])


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def tmp_name(final: str) -> str:
    """A unique temporary sibling of `final`: a retried task never collides with a zombie attempt."""
    head, tail = posixpath.split(final)
    return posixpath.join(head, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{tail}")


def atomic_write_bytes(url: str, data: bytes) -> None:
    fs, path = url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = tmp_name(path)
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)


def atomic_write_json(url: str, data: Any) -> None:
    atomic_write_bytes(url, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(url: str) -> Any:
    with fsspec.open(url, "rb") as handle:
        return json.loads(handle.read())


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.exists(path)


# --- Verified decompression -------------------------------------------------------------------------------------
#
# gzip (and zstd, bz2, xz) check a member's integrity only at its end: a decompressor hands out bytes decoded from
# a corrupt member long before its CRC fails. VerifiedReader decodes one member (gzip member, zstd frame, bz2/xz
# stream) at a time and releases its bytes only once the member's check has passed. A member is held in memory up
# to VERIFY_BUFFER_BYTES of output; a larger one is decoded twice: once to check it (output counted, not kept),
# then again, streaming, to hand it out. So memory stays bounded and nothing unverified is ever released.

VERIFY_BUFFER_BYTES = 64 << 20
_READ_BYTES = 1 << 20
_FEED_BYTES = 1 << 16
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_RESYNC_MAGIC = {"gzip": b"\x1f\x8b\x08", "zstd": b"\x28\xb5\x2f\xfd"}  # members that can follow a damaged one
_DECODE_ERRORS = (zlib.error, zstandard.ZstdError, lzma.LZMAError, OSError, EOFError, ValueError)


class CorruptInput(OSError):
    """A compressed input failed its integrity check (or was cut off); raised by `open_decompressed` streams."""


class InputWarning(UserWarning):
    """A problem with the input listing that does not stop the run (a symlink loop, an unlistable directory)."""


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
    for codec, magic in _MAGIC.items():
        if head.startswith(magic):
            return codec
    return None


class _Decoder:
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
            out = self._d.decompress(data, _READ_BYTES)
            while True:
                if out:
                    yield out
                if self._d.eof:
                    self.consumed = len(data) - len(self._d.unused_data)
                    return
                if self._d.needs_input:
                    return
                out = self._d.decompress(b"", _READ_BYTES)
        for start in range(0, len(data), _FEED_BYTES):  # bounded input per call bounds the output per call
            piece = data[start : start + _FEED_BYTES]
            out = self._d.decompress(piece)
            if out:
                yield out
            if self._d.eof:
                self.consumed = start + len(piece) - len(self._d.unused_data)
                return


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
                while chunk := raw.read(_READ_BYTES):
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
            resume = self._resync(raw, start + 1) if self.codec in _RESYNC_MAGIC else None
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
        chunk = memoryview(leftover if len(leftover) else raw.read(_READ_BYTES))
        if (index or offset) and len(chunk) and chunk[0] == 0:  # gzip allows zero padding after a member
            while len(chunk) and not bytes(chunk).strip(b"\0"):
                offset += len(chunk)
                chunk = memoryview(raw.read(_READ_BYTES))
            padding = len(chunk) - len(bytes(chunk).lstrip(b"\0"))
            offset, chunk = offset + padding, chunk[padding:]
        if not len(chunk):
            return ("end",)
        magic = _MAGIC[codec]
        while len(chunk) < len(magic) and (more := raw.read(_READ_BYTES)):
            chunk = memoryview(bytes(chunk) + more)
        what = {"gzip": "gzip member", "zstd": "zstd frame", "bz2": "bz2 stream", "xz": "xz stream"}[codec]
        head = bytes(chunk[:8])
        if not head.startswith(magic) and not (codec == "zstd" and _zstd_skippable(head)):
            return ("damaged", offset, "corrupt_stream", f"{what} {index}: not {codec} data", 0, 0, True)
        decoder = _Decoder(codec)
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
            except _DECODE_ERRORS as exc:
                # The output of the call that failed is lost: count what the member holds on a lenient re-read.
                produced, lines, ends_line = self._recount(raw, offset)
                kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
                detail = f"{what} {index} fails its integrity check ({kind}: {exc})"
                return ("damaged", offset, "corrupt_stream", detail, produced, lines, ends_line)
            if decoder.eof:
                end = fed + decoder.consumed
                unread = chunk[decoder.consumed :]
                break
            fed += len(chunk)
            chunk = memoryview(raw.read(_READ_BYTES))
        if not spilled:
            for i, part in enumerate(held):
                yield Piece(part, index, offset, i == 0)
            return ("ok", end, unread)
        # Second pass over a member that verified: stream it out as it decodes.
        raw.seek(offset)
        decoder, again, first = _Decoder(codec), 0, True
        try:
            while again < produced and (data := raw.read(_READ_BYTES)):
                for out in decoder.feed(data):
                    again += len(out)
                    yield Piece(out, index, offset, first)
                    first = False
                if decoder.eof:
                    break
        except _DECODE_ERRORS:
            decoder = None  # type: ignore[assignment]
        if decoder is None or not decoder.eof or again != produced:
            detail = f"{what} {index} changed while it was being read"
            return ("damaged", offset, "corrupt_stream", detail, 0, 0, True)
        raw.seek(end)
        return ("ok", end, b"")

    def _recount(self, raw: Any, offset: int) -> tuple[int, int, bool]:
        """(bytes, newlines, ends with a newline) of what a damaged member decodes to, ignoring its checksum (gzip:
        the deflate body is decoded raw) and stopping at the first error; in small steps, so little is missed."""
        assert self.codec is not None
        if self.codec == "zstd":
            return _zstd_recount(raw, offset)
        raw.seek(offset)
        data = raw.read(_READ_BYTES)
        decoder: Any
        if self.codec == "gzip":
            body = _gzip_header_length(data)
            if body is None:
                return 0, 0, True
            decoder, data = zlib.decompressobj(-15), data[body:]
        else:
            decoder = _Decoder(self.codec)
        produced = lines = 0
        last = b"\n"
        try:
            while data:
                for start in range(0, len(data), 4096):
                    out = decoder.decompress(data[start : start + 4096])
                    produced, lines, last = produced + len(out), lines + out.count(b"\n"), out[-1:] or last
                    if decoder.eof:
                        return produced, lines, last == b"\n"
                data = raw.read(_READ_BYTES)
        except _DECODE_ERRORS:
            pass
        return produced, lines, last == b"\n"

    def _resync(self, raw: Any, start: int) -> int | None:
        """The offset of the first member at or after `start` that decodes to its end and verifies."""
        assert self.codec is not None
        magic = _RESYNC_MAGIC[self.codec]
        position = start
        while True:
            raw.seek(position)
            window = raw.read(_READ_BYTES)
            if len(window) < len(magic):
                return None
            hit = window.find(magic)
            if hit < 0:
                position += len(window) - len(magic) + 1
                continue
            candidate = position + hit
            if self._verifies(raw, candidate):
                return candidate
            position = candidate + 1

    def _verifies(self, raw: Any, offset: int) -> bool:
        assert self.codec is not None
        raw.seek(offset)
        decoder = _Decoder(self.codec)
        try:
            while chunk := raw.read(_READ_BYTES):
                for _ in decoder.feed(chunk):
                    pass
                if decoder.eof:
                    return True
        except _DECODE_ERRORS:
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
    except _DECODE_ERRORS:
        pass
    produced = lines = 0
    last = b"\n"
    stream = reader()
    try:
        while out := stream.read(1 << 16 if produced + (1 << 16) < decoded else 1):
            produced, lines, last = produced + len(out), lines + out.count(b"\n"), out[-1:]
    except _DECODE_ERRORS:
        pass
    return produced, lines, last == b"\n"


def _zstd_skippable(chunk: bytes) -> bool:
    return len(chunk) >= 4 and chunk[0] & 0xF0 == 0x50 and chunk[1:4] == b"\x2a\x4d\x18"


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


# --- Names that are not UTF-8 -----------------------------------------------------------------------------------


def display_path(path: str) -> str:
    """`path` as valid UTF-8 text. A file name byte that is not UTF-8 (which `os.fsdecode` turns into a lone
    surrogate U+DC80..U+DCFF) is written as a backslash escape `\\xNN` (Python's `backslashreplace` form), so
    the original bytes can be recovered from the name; any other lone surrogate becomes U+FFFD."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return path.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# --- Local listing that follows symlinks --------------------------------------------------------------------------

_GLOB_MAGIC = re.compile(r"[*?[]")


def walk_local(root: str) -> list[tuple[str, int, str]]:
    """Local files named by `root` (a file, a directory, or a glob), as (path, size, identity) triples.

    Symlinked directories are followed, each real directory once: a link to a directory that is an ancestor on
    the current path (a loop) or that was already walked through another path is reported as one InputWarning
    naming the link and not followed. Broken symlinks are listed (see `expand_paths`).
    """
    if not _GLOB_MAGIC.search(root):
        if os.path.islink(root) and not os.path.exists(root):
            return [_broken_entry(root)]
        if os.path.isfile(root):
            return [_file_entry(root)]
        if os.path.isdir(root):
            return _walk(root, None, None)
        return []
    parts = root.split("/")
    static = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    base = "/".join(parts[:static]) or "/"
    rest = parts[static:]
    if not os.path.isdir(base):
        return []
    depth = None if "**" in rest else len(rest)
    return _walk(base, _glob_regex(rest), depth)


def _walk(base: str, pattern: re.Pattern[str] | None, depth: int | None) -> list[tuple[str, int, str]]:
    """Walk real directories first, then symlinked ones (so a file reachable both ways is named by its real path);
    each real directory is read once."""
    found: list[tuple[str, int, str]] = []
    top = os.stat(base)
    visited = {(top.st_dev, top.st_ino): base}
    links: list[tuple[str, str, int]] = []  # symlinked directories seen, followed after the real tree

    def visit(directory: str, relative: str, level: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as exc:
            _warn(f"input directory {display_path(directory)} cannot be listed: {exc}")
            return
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            path = entry.path
            try:
                info = entry.stat()  # follows symlinks
            except OSError:
                if entry.is_symlink() and (pattern is None or pattern.match(name)):
                    found.append(_broken_entry(path))
                continue
            if stat.S_ISDIR(info.st_mode):
                if depth is not None and level + 1 >= depth:
                    continue
                if entry.is_symlink():
                    links.append((path, name, level + 1))
                    continue
                key = (info.st_dev, info.st_ino)
                if key not in visited:  # a bind mount seen twice is read once
                    visited[key] = path
                    visit(path, name, level + 1)
            elif stat.S_ISREG(info.st_mode) and (pattern is None or pattern.match(name)):
                found.append((path, info.st_size, json.dumps([info.st_size, info.st_mtime])))

    visit(base, "", 0)
    while links:
        path, name, level = links.pop(0)
        info = os.stat(path)
        key = (info.st_dev, info.st_ino)
        target = os.path.realpath(path)
        here = os.path.realpath(os.path.dirname(path))
        if here == target or here.startswith(target.rstrip("/") + "/"):
            _warn(f"symlink loop: {display_path(path)} -> {display_path(target)} (an ancestor); not followed")
        elif key in visited:
            _warn(
                f"{display_path(path)} -> {display_path(target)}: directory already read as "
                f"{display_path(visited[key])}; not read twice"
            )
        else:
            visited[key] = path
            visit(path, name, level)
    return found


def _warn(message: str) -> None:
    warnings.warn(message, InputWarning, stacklevel=4)


def _glob_regex(parts: list[str]) -> re.Pattern[str]:
    """fsspec-style glob segments as a regex over '/'-joined relative paths: `*`, `?` and `[...]` stay within a
    segment; a `**` segment matches any number of directories (the last one: anything below)."""
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]*/)*"
            continue
        j = 0
        while j < len(part):
            ch = part[j]
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "[" and (close := part.find("]", j + 2 if part[j + 1 : j + 2] in ("!", "]") else j + 1)) > 0:
                body = part[j + 1 : close]
                body = "^" + body[1:] if body.startswith("!") else body
                regex += "[" + body.replace("\\", "\\\\") + "]"
                j = close
            else:
                regex += re.escape(ch)
            j += 1
        if not last:
            regex += "/"
    return re.compile(regex + r"\Z", re.DOTALL)


def _file_entry(path: str) -> tuple[str, int, str]:
    info = os.stat(path)
    return path, info.st_size, json.dumps([info.st_size, info.st_mtime])


def _broken_entry(path: str) -> tuple[str, int, str]:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return path, 0, json.dumps(["broken-symlink", display_path(target)])


def broken_symlink(url: str) -> str | None:
    """Why the local file `url` cannot be read because it is a dangling or looping symlink (None if it is not)."""
    if "://" in url and not url.startswith("file://"):
        return None
    path = url.removeprefix("file://")
    if not os.path.islink(path) or os.path.exists(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        reason = "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"
    else:
        reason = "broken symlink"
    try:
        target = display_path(os.readlink(path))
    except OSError:
        target = "?"
    return f"{reason} (-> {target})"
