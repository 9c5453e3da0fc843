"""Filesystem edges through fsspec: glob expansion, decompressing readers, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
import zstandard
from fsspec.core import url_to_fs

TMP_PREFIX = ".tmp-"


class InputNotFound(FileNotFoundError):
    """A configured input path or glob matched nothing."""


def expand_paths(patterns: list[str]) -> list[tuple[str, int, str]]:
    """Expand globs to sorted (url, size, identity) triples; identity changes when the file does.

    Local paths become absolute so that remote workers and later runs see the same names.
    """
    found: dict[str, tuple[int, str]] = {}
    for pattern in patterns:
        fs, root = url_to_fs(pattern)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        local = protocol in ("file", "local")
        if local:
            root = os.path.abspath(os.path.expanduser(root))
        if fs.isfile(root):
            files = [root]
        else:
            pattern_root = posixpath.join(root, "**") if fs.isdir(root) else root
            files = [m for m in fs.glob(pattern_root) if fs.isfile(m)]
        if not files:
            raise InputNotFound(f"no input files match {pattern!r}")
        for path in files:
            info = fs.info(path)
            url = path if local else fs.unstrip_protocol(path)
            identity = json.dumps([info.get("size"), info.get("mtime") or info.get("LastModified")], default=str)
            found[url] = (int(info.get("size") or 0), identity)
    return [(url, size, identity) for url, (size, identity) in sorted(found.items())]


@contextlib.contextmanager
def open_raw(url: str) -> Iterator[IO[bytes]]:
    with fsspec.open(url, "rb") as handle:
        yield handle


@contextlib.contextmanager
def open_decompressed(url: str) -> Iterator[IO[bytes]]:
    """Open `url` for reading bytes, decompressing by extension (.gz, .zst/.zstd, .bz2, .xz)."""
    with fsspec.open(url, "rb") as raw:
        if url.endswith(".gz"):
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw)
        elif url.endswith((".zst", ".zstd")):
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            stream = io.BufferedReader(reader, buffer_size=1 << 20)
        elif url.endswith((".bz2", ".xz")):
            stream = fsspec.open(url, "rb", compression="infer").open()
        else:
            stream = raw
        try:
            yield stream
        finally:
            if stream is not raw:
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
