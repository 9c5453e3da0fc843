"""The command line end to end: the quickstart pipeline on the offline sample corpus."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import pipeline_yaml, write_jsonl_shards

ROOT = Path(__file__).resolve().parent.parent


def tokenmill_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """`tokenmill sample-data` then `tokenmill run pipelines/quickstart.yaml`, as `make demo` does."""
    work = tmp_path_factory.mktemp("demo")
    made = tokenmill_cli("sample-data", "data/sample", cwd=work)
    assert made.returncode == 0, made.stderr
    ran = tokenmill_cli("run", str(ROOT / "pipelines/quickstart.yaml"), cwd=work)
    return work, ran


def test_quickstart_runs_on_sample_data(quickstart_run):
    work, ran = quickstart_run
    assert ran.returncode == 0, ran.stderr
    assert "Dask dashboard: http://" in ran.stderr
    assert "curated output: runs/quickstart/curated" in ran.stderr
    assert "report: runs/quickstart/report.md" in ran.stderr
    report = (work / "runs/quickstart/report.md").read_text()
    for reason in (
        "non_document_record",
        "empty_extraction",
        "non_html_content",
        "http_status_not_2xx",
        "empty_document",
    ):
        assert reason in report
    texts = [
        t
        for f in sorted((work / "runs/quickstart/curated").glob("*.parquet"))
        for t in pq.read_table(f)["text"].to_pylist()
    ]
    assert len(texts) > 50
    for section in (
        "## dedup_exact",
        "## dedup_minhash",
        "## tokenizer_train",
        "## tokenize",
        "## train",
        "## evaluate",
    ):
        assert section in report
    assert "- perplexity: " in report and "- sample: " in report
    lineage = json.loads((work / "runs/quickstart/lineage.json").read_text())
    assert [s["produces"] for s in lineage["stages"]] == ["tokenizer", "tokens", "checkpoint", "evaluation"]


# The quickstart's data outputs, digest by digest: a refactoring must leave them byte-identical. When a change
# means to alter them, regenerate with `TOKENMILL_UPDATE_GOLDEN=1 python -m pytest tests/test_cli.py -k byte_identical`
# and say why in the commit.
GOLDEN = Path(__file__).parent / "golden" / "quickstart.json"
GOLDEN_PATTERNS = [
    "curated/*.parquet",
    "rejected/**/*.parquet",
    "tokenizer/tokenizer.json",
    "tokens/*/*.arrow",
    "train/checkpoints/step-*/model.safetensors",
]


def test_quickstart_outputs_are_byte_identical_to_the_recorded_ones(quickstart_run):
    work, ran = quickstart_run
    assert ran.returncode == 0, ran.stderr
    run = work / "runs/quickstart"
    digests = {
        str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest()
        for pattern in GOLDEN_PATTERNS
        for f in sorted(run.glob(pattern))
    }
    if os.environ.get("TOKENMILL_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(digests) == sorted(recorded), "the quickstart writes other files than recorded"
    changed = [name for name in recorded if digests[name] != recorded[name]]
    assert not changed, f"outputs differ from tests/golden/quickstart.json: {changed}"


def test_quickstart_rerun_skips_everything(quickstart_run):
    work, _ = quickstart_run
    again = tokenmill_cli("run", str(ROOT / "pipelines/quickstart.yaml"), "--quiet", cwd=work)
    assert again.returncode == 0, again.stderr
    assert "(15 skipped)" in again.stderr  # 5 input shards in each of the three segments


def test_missing_input_is_one_clear_line(tmp_path):
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "nothing/*.jsonl"), tmp_path / "out")
    ran = tokenmill_cli("run", str(spec), cwd=tmp_path)
    assert ran.returncode == 1
    assert ran.stderr.strip() == f"error: no input files match '{tmp_path}/nothing/*.jsonl'"


def test_strict_fails_on_empty_output(tmp_path):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    stages = [{"custom": {"callable": "stages_for_tests:reject_all"}}]
    spec = pipeline_yaml(
        tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=stages, n_workers=1
    )
    ran = tokenmill_cli("run", str(spec), "--strict", "--quiet", cwd=tmp_path)
    assert ran.returncode == 1
    assert "WARNING: stage 'custom:reject_all' received 5 documents and kept none" in ran.stderr
    assert "error: --strict" in ran.stderr
