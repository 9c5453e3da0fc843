"""Cluster backends: Slurm through dask-jobqueue is tested by building its job script (no Slurm here)."""

from __future__ import annotations

import pytest

from tokenmill.engine.cluster import build_slurm_cluster
from tokenmill.engine.spec import parse_pipeline

SLURM_YAML = """
name: on-slurm
output: /shared/runs/x
cluster:
  slurm: {queue: cpu, account: lm-data, cores: 4, memory: 16GB, walltime: "02:00:00", jobs: 8,
          job_extra_directives: ["--exclusive"]}
stages:
  - read: {format: pile, paths: ["/shared/pile/*.jsonl.zst"]}
"""


def test_slurm_job_script_from_yaml():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (dev extra)")
    pipeline = parse_pipeline(SLURM_YAML)
    options = pipeline.cluster.slurm
    assert options["jobs"] == 8
    with build_slurm_cluster(options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p cpu" in script
    assert "#SBATCH -A lm-data" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --exclusive" in script
    assert "distributed.cli.dask_worker" in script or "dask worker" in script
    assert cluster.scheduler_address in script


def test_local_cluster_options_validated():
    pipeline = parse_pipeline(
        "name: x\noutput: o\ncluster: {n_workers: 3, threads_per_worker: 2, memory_limit: 2GB}\n"
        "stages:\n  - read: {format: pile, paths: [a]}\n"
    )
    assert (pipeline.cluster.n_workers, pipeline.cluster.threads_per_worker, pipeline.cluster.memory_limit) == (
        3,
        2,
        "2GB",
    )
