"""Per-shard manifests: what a finished shard wrote, its stats, and the fingerprint of the work that made it.

A shard is skipped on re-run only when its manifest's fingerprint matches the current input file, stage
configuration and code version, and every file it lists is still there with the recorded size.
"""

from __future__ import annotations

from typing import Any

from fsspec.core import url_to_fs

from tokenmill._version import __version__
from tokenmill.engine.fsio import atomic_write_json, join, read_json
from tokenmill.engine.identity import stable_id
from tokenmill.engine.stage import Shard, Stage


def fingerprint(
    shard: Shard, stages: list[Stage], batch: tuple[int, int], columns: tuple[tuple[str, Any], ...] = ()
) -> str:
    """Changes with the input file, any stage's class or configuration, the batch settings, the output columns
    (a stage added later in the pipeline adds a column to every segment) and the tokenmill version."""
    payload = {
        "tokenmill": __version__,
        "input": [shard.path, shard.fingerprint],
        "stages": [[type(s).__module__, type(s).__qualname__, s.model_dump(mode="json")] for s in stages],
        "batch": list(batch),
        "columns": [[name, str(dtype)] for name, dtype in columns],
    }
    return stable_id(payload)


def manifest_path(directory: str, shard: Shard) -> str:
    return join(directory, f"{shard.key}.json")


def write_manifest(directory: str, shard: Shard, result: dict[str, Any]) -> None:
    fs, _ = url_to_fs(directory)
    result = dict(result)
    result["file_sizes"] = {path: fs.size(path) for path in result["files"] + result["rejected_files"]}
    atomic_write_json(manifest_path(directory, shard), result)


def finished(directory: str, shard: Shard, expected: str) -> dict[str, Any] | None:
    """The stored result for `shard` if it is complete and current, else None."""
    path = manifest_path(directory, shard)
    fs, _ = url_to_fs(path)
    if not fs.exists(path):
        return None
    try:
        result = read_json(path)
    except (OSError, ValueError):
        return None
    if result.get("fingerprint") != expected:
        return None
    for file, size in result.get("file_sizes", {}).items():
        if not fs.exists(file) or fs.size(file) != size:
            return None
    return result
