"""Owning an output directory: what tokenmill wrote there, the lock one run holds, and what may be removed.

tokenmill never deletes or overwrites a file it did not write. It knows its files three ways: the run marker
(`<output>/.tokenmill.json`, written when a run first uses the directory), the shard manifests (every part file
a shard wrote, in `_manifest/curate/**`), and the exact shape of its temporary names (`.tmp-<12 hex>-<name>`,
see fsio.tmp_name). Before any work, `prepare_output` refuses an output that is not a writable directory, that
holds files of someone else (unless `--force`; even then no such file is ever removed or overwritten), and
`check_inputs_outside_output` one that lies inside an input tree; `OutputLock` keeps a second run off the same
output. `sweep` removes only tokenmill's own names that no current manifest lists.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import re
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fsspec.core import url_to_fs

from tokenmill._version import __version__
from tokenmill.engine.fsio import atomic_write_json, is_local_fs
from tokenmill.engine.plan import Plan, ShardTask

MARKER = ".tokenmill.json"
LOCK = ".tokenmill.lock"
# What tokenmill itself writes directly in a part-file directory (curated, rejected, intermediate segments).
_PART = re.compile(r"^part-\d{5}-\d{4}\.(parquet|jsonl\.zst)$")
_MANIFEST = re.compile(r"^\d{5}\.json$")  # a shard manifest, in _manifest/curate/**
_TEMPORARY = re.compile(r"^\.tmp-[0-9a-f]{12}-")


class OutputError(RuntimeError):
    """The output directory cannot be used as it is; the message says why and what to do (one line)."""


class OutputLocked(OutputError):
    """Another run holds the output's lock."""


def is_temporary(name: str) -> bool:
    """A temporary name made by fsio.tmp_name (a uuid part no person types)."""
    return bool(_TEMPORARY.match(name))


def is_local(url: str) -> bool:
    return is_local_fs(url_to_fs(url)[0])


def _nearest_existing(path: str) -> str:
    """`path` itself, or its nearest ancestor that exists (where a new directory would be created)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return probe


def check_writable(output: str) -> None:
    """An output that exists must be a directory; a local one (or its nearest existing parent) must be writable."""
    fs, path = url_to_fs(output)
    if fs.exists(path) and not fs.isdir(path):
        raise OutputError(f"output {output} exists and is not a directory")
    if not is_local(output):
        return
    probe = _nearest_existing(path)
    if not os.path.isdir(probe):
        raise OutputError(f"output {output}: {probe} is a file, so the directory cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output {output} is not writable ({probe}: permission denied)")


def check_foreign_root(output: str, force: bool) -> None:
    """A non-empty output directory that no tokenmill run has used is someone's data: refuse unless `force`."""
    fs, path = url_to_fs(output)
    if not fs.exists(path) or fs.exists(posixpath.join(path, MARKER)):
        return
    entries = [name.rsplit("/", 1)[-1] for name in fs.ls(path, detail=False)]
    entries = [name for name in entries if name not in (LOCK, MARKER)]
    if not entries or "_manifest" in entries:  # empty, or written by a tokenmill from before the marker
        return
    if not force:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputError(
            f"output {output} already holds files tokenmill did not write ({shown}): choose an empty or new "
            "directory, or pass --force (nothing there is removed or overwritten)"
        )


def owns(directory: str, output: str) -> bool:
    """Whether tokenmill owns `directory`: a run marker in it, or it lies in an output that has one (or a
    `_manifest/`, as outputs of versions before the marker have)."""
    fs, path = url_to_fs(directory)
    _, root = url_to_fs(output)
    if fs.exists(posixpath.join(path, MARKER)):
        return True
    inside = path == root or path.startswith(root.rstrip("/") + "/")
    return inside and (fs.exists(posixpath.join(root, MARKER)) or fs.exists(posixpath.join(root, "_manifest")))


def check_part_directories(directories: Iterable[str], output: str, force: bool) -> None:
    """A part-file directory (curated, rejected, intermediate) may hold only tokenmill's files: in a directory it
    owns, files named like its parts or temporaries. Anything else is an error unless `force` (and is then left
    alone); a file with a part's name in a directory tokenmill does not own is an error even then, since
    writing would replace it."""
    for directory in directories:
        fs, path = url_to_fs(directory)
        if not fs.exists(path):
            continue
        owned = owns(directory, output)
        for entry in fs.ls(path, detail=True):
            name = entry["name"].rsplit("/", 1)[-1]
            if entry.get("type") == "directory" or name == MARKER or is_temporary(name):
                continue
            if _PART.match(name):
                if owned:
                    continue
                raise OutputError(
                    f"{directory} holds {name}, which tokenmill did not write and would overwrite: move it away"
                )
            if not force:
                raise OutputError(
                    f"{directory} holds a file tokenmill did not write ({name}): move it away or pass --force "
                    "(it is left alone)"
                )


def write_marker(directory: str, pipeline: str) -> None:
    """Mark `directory` as written by tokenmill (once; the marker is never rewritten)."""
    fs, path = url_to_fs(directory)
    marker = posixpath.join(path, MARKER)
    if not fs.exists(marker):
        fs.makedirs(path, exist_ok=True)
        atomic_write_json(_url(fs, marker), {"tokenmill": __version__, "pipeline": pipeline, "created": time.time()})


def sweep(directory: str, keep: set[str]) -> list[str]:
    """Remove tokenmill's part files and temporaries in `directory` that `keep` does not list (outputs of shards
    that no longer exist, of an earlier format or size, of a killed run); other files are never touched.
    Returns what was removed."""
    fs, path = url_to_fs(directory)
    if not fs.exists(path):
        return []
    kept = {url_to_fs(file)[1] for file in keep}  # compared as the filesystem's own (absolute) paths
    removed = []
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rsplit("/", 1)[-1]
        full = _url(fs, entry["name"])
        if entry.get("type") == "directory" or entry["name"] in kept:
            continue
        if _PART.match(name) or _MANIFEST.match(name) or is_temporary(name):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(entry["name"])
            removed.append(full)
    return removed


def _url(fs: Any, path: str) -> str:
    return path if is_local_fs(fs) else fs.unstrip_protocol(path)


class OutputLock:
    """`<output>/.tokenmill.lock` holding host, pid and start time, created exclusively.

    A lock left by a process that no longer runs on this host is stale and taken over (with a note); a live one,
    or one from another host (which cannot be checked), makes the second run stop at once with one line. On
    object stores the lock is best effort (no exclusive create): a check, then a write.
    """

    def __init__(self, output: str) -> None:
        self.fs, root = url_to_fs(output)
        self.path = posixpath.join(root, LOCK)
        self.output = output
        self.took_over: str | None = None

    def __enter__(self) -> OutputLock:
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        for _ in range(2):
            if self._create(json.dumps(mine).encode()):
                return self
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                raise OutputLocked(
                    f"output {self.output} is in use by another run (host {holder.get('host')}, pid "
                    f"{holder.get('pid')}, since {since}); if that run is gone, remove {self.path}"
                )
            self.took_over = f"took over a stale lock of pid {holder.get('pid') if holder else '?'}"
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)
        raise OutputLocked(f"output {self.output}: could not take the lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path)

    def _create(self, data: bytes) -> bool:
        if is_local(self.output):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        if self.fs.exists(self.path):
            return False
        with self.fs.open(self.path, "wb") as handle:
            handle.write(data)
        return True

    def _holder(self) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path, "rb") as handle:
                return json.loads(handle.read() or b"{}")
        except (OSError, ValueError):
            return None  # unreadable or half-written: treated as stale

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # another machine's process cannot be checked from here
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


@contextlib.contextmanager
def disk_full_explained(path: str, needed_bytes: int | None = None) -> Iterator[None]:
    """Turn ENOSPC into one line naming the path, the free space and (when known) about how much is needed."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise OSError(errno.ENOSPC, disk_full_message(path, needed_bytes)) from exc


def disk_full_message(path: str, needed_bytes: int | None = None) -> str:
    free = None
    with contextlib.suppress(OSError):
        stats = os.statvfs(_nearest_existing(path))
        free = stats.f_bavail * stats.f_frsize
    need = f"; about {needed_bytes / 1e6:,.1f} MB more are needed" if needed_bytes else ""
    have = f"{free / 1e6:,.1f} MB free" if free is not None else "free space unknown"
    return f"disk full writing {path} ({have}{need}); temporaries were removed: free space and run again"


# --- the checks a run makes on its plan before any work -----------------------------------------------------------


def prepare_output(plan: Plan, force: bool) -> None:
    """Refuse, with one line, an output tokenmill must not use: not a writable directory, someone else's files,
    or files that a run would overwrite."""
    for directory in dict.fromkeys([plan.output, plan.curated_dir]):
        check_writable(directory)
    check_foreign_root(plan.output, force)
    check_output_outside_inputs(plan)
    part_dirs = [d for s in plan.segments for d in (s.output_dir, s.rejected_dir)]
    check_part_directories(part_dirs, plan.output, force)


def check_inputs_outside_output(plan: Plan, tasks: list[ShardTask]) -> None:
    """An input glob that reaches into the output would read the run's own outputs on every re-run."""
    root = _root(plan.output)
    inside = [t.shard.path for t in tasks if _under(t.shard.path, root, plan.output)]
    if inside:
        raise OutputError(
            f"the inputs match {len(inside)} file(s) inside the output directory {plan.output} (e.g. {inside[0]}): "
            "put the output outside the input directories or narrow the input globs"
        )


def check_output_outside_inputs(plan: Plan) -> None:
    """An output inside a directory that an input reads recursively would be read back by the next run."""
    root = _root(plan.output)
    for source in plan.sources:
        for pattern in getattr(source, "paths", None) or []:
            base = _glob_base(pattern)
            recursive = "**" in pattern or not any(c in pattern for c in "*?[")
            if recursive and _under(root, base, plan.output) and root != base:
                raise OutputError(
                    f"the output directory {plan.output} lies inside the input {pattern!r}, which a re-run would "
                    "read back: put the output outside the input directories"
                )


def sweep_stale_segments(plan: Plan) -> None:
    """After a complete run, remove what segments of an earlier, longer pipeline left (their part files and
    manifests); only tokenmill's own names are removed."""
    current = {d for s in plan.segments for d in (s.output_dir, s.rejected_dir, s.manifest_dir)}
    for parent, pattern in (
        (f"{plan.output}/rejected", re.compile(r"^segment-\d{2}$")),
        (f"{plan.output}/_manifest/curate", re.compile(r"^segment-\d{2}$")),
        (f"{plan.output}/_work", re.compile(r"^\d{2}-before-\w+$")),
    ):
        fs, path = url_to_fs(parent)
        if not fs.exists(path):
            continue
        for entry in fs.ls(path, detail=True):
            name = entry["name"].rsplit("/", 1)[-1]
            full = f"{parent}/{name}"
            if entry.get("type") == "directory" and pattern.match(name) and full not in current:
                sweep(full, set())
                with contextlib.suppress(OSError):  # removed only when nothing else is left in it
                    if not fs.ls(entry["name"]):
                        fs.rmdir(entry["name"])


def _glob_base(pattern: str) -> str:
    """The directory part of a pattern before its first wildcard, absolute for local paths."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    base = head if not any(c in pattern for c in "*?[") else posixpath.dirname(head)
    _, path = url_to_fs(base or ".")
    return os.path.abspath(os.path.expanduser(path)) if is_local(base or ".") else path


def _root(output: str) -> str:
    _, root = url_to_fs(output)
    return os.path.abspath(root) if is_local(output) else root


def _under(path: str, root: str, output: str) -> bool:
    if is_local(output):
        path = os.path.abspath(url_to_fs(path)[1])
    return path == root or path.startswith(root.rstrip("/") + "/")
