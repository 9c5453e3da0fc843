"""Dask task helpers for stages that fan out work themselves (global analyses, dataset stages).

Task functions take one typed, frozen payload (a dataclass) rather than a positional tuple, so a payload's
fields are named where it is built and where it is used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distributed import Client
from fsspec.core import url_to_fs


def run_tasks(client: Client, function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """One Dask task per item; results (small summaries, never documents) in item order. Raises on failure.

    Each item is the task's payload: a frozen dataclass defined at module level beside `function` (so workers
    can unpickle it), naming its fields, and small (shard references, directories, counts, a stage config;
    never documents). `function` takes that one object.
    """
    if not items:
        return []
    futures = client.map(function, items, pure=False)
    return client.gather(futures)


def clean_work_dir(work_dir: str) -> None:
    """An analysis starts from scratch: its files from an older configuration or input must not mix in."""
    fs, local = url_to_fs(work_dir)
    if fs.exists(local):
        fs.rm(local, recursive=True)
