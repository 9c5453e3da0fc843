"""Listing local inputs: a walker that follows symlinked directories, and file names shown as text.

fsspec's local glob does not follow symlinked directories, so `fsio.expand_paths` lists local paths here.
Symlinked directories are followed, each real directory once; a loop, a second link to a directory already
walked, or a directory that cannot be listed is one `InputWarning` and the run goes on. Broken symlinks are
listed (and read as one error record each, see `broken_symlink`) so that they show in the run's counts.
`display_path` writes a file name that is not UTF-8 as valid text; every message naming an input file uses it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import warnings


class InputWarning(UserWarning):
    """A problem with the input listing that does not stop the run (a symlink loop, an unlistable directory)."""


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
    naming the link and not followed. Broken symlinks are listed (see `fsio.expand_paths`).
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
