"""Faults survived: a killed worker, a killed driver, and a real scheduler + workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

import tokenmill

from pipelines import pipeline_yaml, tree_bytes, write_jsonl_shards

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent
SLOW = [{"normalize": {}}, {"custom": {"callable": "stages_for_tests:SlowStage", "args": {"seconds_per_doc": 0.02}}}]


def env_with_tests_on_path() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    """An undisturbed run of the slow pipeline: the outputs every faulty run must reproduce."""
    root = tmp_path_factory.mktemp("faults")
    write_jsonl_shards(root / "in", 6, 40)
    spec = pipeline_yaml(root / "ref.yaml", str(root / "in/*.jsonl"), root / "ref", stages=SLOW)
    tokenmill.run(spec, client=client)
    return root, tree_bytes(root / "ref/curated"), tree_bytes(root / "ref/rejected")


def test_killed_worker_is_survived(reference):
    root, curated, rejected = reference
    spec = pipeline_yaml(root / "kill-worker.yaml", str(root / "in/*.jsonl"), root / "kw", stages=SLOW)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(result=tokenmill.run(spec, client=client)))
        runner.start()
        deadline = time.time() + 30
        while not any(client.processing().values()) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let the task get well into its shard
        busy = next(addr for addr, keys in client.processing().items() if keys)
        pid = client.run(os.getpid, workers=[busy])[busy]
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    result = outcome["result"]
    assert result.ok and result.shards_skipped == 0
    assert result.stats[0].docs_in == 240
    assert tree_bytes(root / "kw/curated") == curated
    assert tree_bytes(root / "kw/rejected") == rejected


def test_killed_driver_then_rerun_resumes(reference):
    root, curated, rejected = reference
    spec = pipeline_yaml(root / "kill-driver.yaml", str(root / "in/*.jsonl"), root / "kd", stages=SLOW, n_workers=1)
    manifests = root / "kd/_manifest/curate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenmill", "run", str(spec), "--quiet"],
        env=env_with_tests_on_path(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(manifests.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster, mid-run
    proc.wait(timeout=30)
    finished = len(list(manifests.glob("*.json")))
    assert 2 <= finished < 6, "the kill must land mid-run"

    result = tokenmill.run(spec)
    assert result.shards_skipped == finished
    assert result.stats[0].docs_in == 240  # stats of skipped shards come from their manifests
    assert tree_bytes(root / "kd/curated") == curated
    assert tree_bytes(root / "kd/rejected") == rejected
    assert not [p for p in (root / "kd").rglob(".tmp-*")], "temporaries of the killed run are cleaned"


def test_real_scheduler_and_workers(reference, tmp_path):
    root, curated, rejected = reference
    scheduler_file = tmp_path / "scheduler.json"
    env = env_with_tests_on_path()
    common = ["--dashboard-address", ":0"]
    scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file"]
    procs = [
        subprocess.Popen(
            [*scheduler, str(scheduler_file), *common],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--host", "127.0.0.1", *common],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        spec = pipeline_yaml(root / "remote.yaml", str(root / "in/*.jsonl"), tmp_path / "remote", stages=SLOW)
        run = subprocess.run(
            [sys.executable, "-m", "tokenmill", "run", str(spec), "--address", address, "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr
        assert "6 shards (0 skipped)" in run.stderr
        assert tree_bytes(tmp_path / "remote/curated") == curated
        assert tree_bytes(tmp_path / "remote/rejected") == rejected
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
