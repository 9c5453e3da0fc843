"""The Python API: `tokenmill.run(...)` does what `tokenmill run` does."""

from __future__ import annotations

import os
from typing import Any

from distributed import Client

from tokenmill.engine.report import emptied_warnings, write_report
from tokenmill.engine.result import RunResult
from tokenmill.engine.runner import execute
from tokenmill.engine.spec import Pipeline, load_pipeline


class EmptyOutputError(RuntimeError):
    """Raised under `strict=True` when a stage turned non-empty input into empty output."""


def run(
    pipeline: Pipeline | str | os.PathLike[str],
    *,
    client: Client | None = None,
    address: str | None = None,
    force: bool = False,
    strict: bool = False,
    progress: bool = False,
    overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Run a pipeline (a YAML path or a `Pipeline` built in code) and write its outputs and report.

    `client` reuses a Dask client you own; `address` connects to a running scheduler; otherwise the YAML's
    `cluster:` decides. Finished shards are skipped unless `force`. With `strict`, a stage that empties
    non-empty input raises EmptyOutputError (after the report is written).
    """
    if not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline, overrides)
    result = execute(pipeline, client=client, address=address, force=force, progress=progress)
    result.warnings = result.warnings + emptied_warnings(result.stats)
    result.report = write_report(result)
    if strict and result.warnings:
        raise EmptyOutputError("; ".join(result.warnings))
    return result


__all__ = ["Pipeline", "RunResult", "load_pipeline", "run"]
