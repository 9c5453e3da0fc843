"""A rich progress bar over shards: done/total, documents/s and MB/s of input."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ShardProgress:
    """Advances once per finished shard; rates count only shards processed in this run (not skipped ones)."""

    def __init__(
        self, total: int, skipped: int, dashboard: str | None, enabled: bool = True, label: str = "shards"
    ) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.docs = 0
        self.bytes = 0
        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("shards", total=total, completed=skipped, rate="")
        if enabled and dashboard:
            self.console.print(f"Dask dashboard: {dashboard}")
        if enabled and skipped:
            self.console.print(f"resuming: {skipped} of {total} {label} already finished, skipped")

    def __enter__(self) -> ShardProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def advance(self, read_stats: dict[str, Any] | None) -> None:
        if read_stats:
            self.docs += read_stats["docs_in"]
            self.bytes += read_stats["bytes_in"]
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{self.docs / elapsed:,.0f} docs/s  {self.bytes / elapsed / 1e6:,.2f} MB/s"
        self.progress.update(self.task, advance=1, rate=rate)
