"""Where stages run: a LocalCluster (default), an existing scheduler, or a dask-jobqueue Slurm cluster."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from distributed import Client, LocalCluster
from pydantic import BaseModel, ConfigDict, Field


class ClusterSpec(BaseModel):
    """`cluster:` in the pipeline YAML. `address` (or `--address`) connects to a running scheduler; `slurm`
    holds `dask_jobqueue.SLURMCluster` arguments plus `jobs`, the number of batch jobs to submit."""

    model_config = ConfigDict(extra="forbid")
    n_workers: int = Field(2, gt=0)
    threads_per_worker: int = Field(1, gt=0)
    memory_limit: str | float | int = "auto"
    address: str | None = None
    slurm: dict[str, Any] | None = None
    dashboard_address: str | None = ":8787"


def build_slurm_cluster(options: dict[str, Any]):
    """A SLURMCluster from YAML options (`jobs` is how many to submit); raises if dask-jobqueue is absent."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise RuntimeError("cluster.slurm needs dask-jobqueue: pip install dask-jobqueue") from exc
    kwargs = {k: v for k, v in options.items() if k != "jobs"}
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "4GB")
    return SLURMCluster(**kwargs)


@contextlib.contextmanager
def connect(spec: ClusterSpec, address: str | None = None) -> Iterator[Client]:
    """Yield a Client for the spec; clusters started here are closed on exit, external ones are left alone."""
    address = address or spec.address
    if address:
        with Client(address) as client:
            yield client
        return
    if spec.slurm is not None:
        cluster = build_slurm_cluster(spec.slurm)
        cluster.scale(jobs=int(spec.slurm.get("jobs", 1)))
    else:
        # With the dashboard off, the scheduler's HTTP endpoints still need a port: a free one, not 8787.
        dashboard = {"dashboard_address": spec.dashboard_address}
        if spec.dashboard_address is None:
            dashboard = {"dashboard_address": ":0", "scheduler_kwargs": {"dashboard": False}}
        cluster = LocalCluster(
            n_workers=spec.n_workers,
            threads_per_worker=spec.threads_per_worker,
            memory_limit=spec.memory_limit,
            processes=True,
            silence_logs=logging.ERROR,
            **dashboard,
        )
    with cluster, Client(cluster) as client:
        yield client
