"""Where stages run: a LocalCluster (default), an existing scheduler, or a dask-jobqueue Slurm cluster.

Every way of not getting a working cluster ends in a ClusterError whose message is one line saying what and why:
an unreachable scheduler (within `connect_timeout`), a Slurm cluster where `sbatch` is missing, no worker joining
within `worker_timeout`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from typing import Any

from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Log level of a LocalCluster's workers: a failing shard is reported by the run itself (one line per shard), so
# Dask's own "Compute Failed" tracebacks stay silent; `tokenmill --debug` lowers this to logging.ERROR.
worker_log_level = logging.CRITICAL


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says why, in one line."""


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
    connect_timeout: float = Field(10, gt=0, le=3600, description="seconds to wait for the scheduler at `address`")
    worker_timeout: float = Field(
        600, gt=0, le=7 * 24 * 3600, description="seconds to wait for the first worker (Slurm jobs, `address`)"
    )

    @field_validator("memory_limit")
    @classmethod
    def _dask_size(cls, value: str | float | int) -> str | float | int:
        """What Dask accepts: 'auto', a number of bytes (0 for no limit, a fraction of the machine at most 1) or a
        size such as '4GB'; checked here rather than when the cluster starts."""
        if isinstance(value, bool):
            raise ValueError(f"must be 'auto', a number of bytes or a size such as '4GB' (got {value!r})")
        if isinstance(value, str) and value.strip().lower() != "auto":
            try:
                parse_bytes(value)
            except (ValueError, TypeError):
                raise ValueError(f"must be 'auto', a number of bytes or a size such as '4GB' (got {value!r})") from None
        if isinstance(value, (int, float)) and not value >= 0:
            raise ValueError(f"must be 'auto', a number of bytes or a size such as '4GB' (got {value!r})")
        return value


def build_slurm_cluster(options: dict[str, Any]):
    """A SLURMCluster from YAML options (`jobs` is how many to submit); raises if dask-jobqueue is absent."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ClusterError(
            "cluster.slurm needs dask-jobqueue, which is not installed: pip install dask-jobqueue"
        ) from exc
    kwargs = {k: v for k, v in options.items() if k != "jobs"}
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "4GB")
    return SLURMCluster(**kwargs)


@contextlib.contextmanager
def connect(spec: ClusterSpec, address: str | None = None) -> Iterator[Client]:
    """Yield a Client for the spec; clusters started here are closed on exit, external ones are left alone."""
    address = address or spec.address
    if address:
        with _external(address, spec.connect_timeout) as client:
            wait_for_workers(client, spec.worker_timeout, f"the scheduler at {address}")
            yield client
        return
    if spec.slurm is not None:
        if shutil.which("sbatch") is None:
            raise ClusterError(
                "cluster.slurm: `sbatch` is not on PATH; run tokenmill on a Slurm login node, "
                "or remove cluster.slurm to run on this machine"
            )
        jobs = int(spec.slurm.get("jobs", 1))
        cluster = build_slurm_cluster(spec.slurm)
        with cluster, Client(cluster) as client:
            cluster.scale(jobs=jobs)
            wait_for_workers(client, spec.worker_timeout, f"{jobs} Slurm job(s) (see `squeue` and the job logs)")
            yield client
        return
    # With the dashboard off, the scheduler's HTTP endpoints still need a port: a free one, not 8787.
    dashboard = {"dashboard_address": spec.dashboard_address}
    if spec.dashboard_address is None:
        dashboard = {"dashboard_address": ":0", "scheduler_kwargs": {"dashboard": False}}
    cluster = LocalCluster(
        n_workers=spec.n_workers,
        threads_per_worker=spec.threads_per_worker,
        memory_limit=spec.memory_limit,
        processes=True,
        silence_logs=worker_log_level,
        **dashboard,
    )
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _external(address: str, timeout: float) -> Iterator[Client]:
    """A Client of a running scheduler; ClusterError (one line) when none answers at `address` within `timeout`."""
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} (no answer within {timeout:g} s)") from exc
    except (ValueError, TypeError) as exc:  # not an address at all
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    with client:
        yield client


def wait_for_workers(client: Client, timeout: float, where: str) -> None:
    """Return once a worker has joined; ClusterError after `timeout` seconds instead of waiting forever."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as exc:
        raise ClusterError(f"no Dask worker joined within {timeout:g} s from {where}") from exc
