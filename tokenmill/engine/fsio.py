"""Filesystem edges through fsspec: glob expansion, stable names, raw opens, atomic writes, small JSON files.

Reading compressed inputs (verified member by member) is `compressed`; the local walker that follows symlinked
directories, and `display_path` for file names that are not UTF-8, are `listing`.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

from tokenmill.engine.listing import walk_local

TMP_PREFIX = ".tmp-"


class InputNotFound(FileNotFoundError):
    """A configured input path or glob matched nothing."""


def is_local_fs(fs: Any) -> bool:
    """Whether an fsspec filesystem is this machine's disk (paths there are made absolute, os calls apply)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return any(protocol in ("file", "local") for protocol in protocols)


def expand_paths(patterns: list[str]) -> list[tuple[str, int, str]]:
    """Expand globs to sorted (url, size, identity) triples; identity changes when the file does.

    Local paths become absolute so that remote workers and later runs see the same names. Local directories and
    globs are walked by `listing.walk_local` (fsspec's local glob does not follow symlinked directories): symlinked
    directories are followed; a link back to a directory being walked (a loop), or a second link to a directory
    already walked, is reported as one `InputWarning` naming the link and not followed. A broken symlink (or a
    self-referencing one) is listed like a file, with size 0 and identity `["broken-symlink", target]`: reading
    it gives one `broken_symlink` error record naming the link, so it shows in the run's counts instead of
    vanishing.
    """
    found: dict[str, tuple[int, str]] = {}
    for pattern in patterns:
        fs, root = url_to_fs(pattern)
        if is_local_fs(fs):
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
