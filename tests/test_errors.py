"""Errors a person can read: every hostile input below ends in one line naming what failed and why (exit status 1,
no traceback), `validate` catches what `run` would reject without importing user code, and a stage's unusable
output costs its document, never the shard (issue 9, points 14, 16, 17, 18)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tokenmill.curate.custom import CustomStage
from tokenmill.curate.filters.language import LanguageID, bundled_model_path, fasttext_model_problem
from tokenmill.engine.documents import Doc
from tokenmill.engine.executor import process_shard
from tokenmill.engine.spec import parse_pipeline
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

TESTS = Path(__file__).resolve().parent


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m tokenmill ARGS` in `cwd`, importing this tree (and tests/ for the test stages)."""
    path = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tokenmill", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    """The `error:` lines (and the problem lines under a spec error) of a failed command, which must not have
    printed a traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    return lines[start:]


def write_yaml(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def jsonl_inputs(directory: Path, n_files: int = 1, n_docs: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        lines = [
            json.dumps({"id": f"f{f}d{d}", "text": f"document {d} of file {f} has some words"}) for d in range(n_docs)
        ]
        (directory / f"part-{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def local_pipeline(tmp_path: Path, stages: list[dict] | None = None, **top) -> dict:
    jsonl_inputs(tmp_path / "in")
    return {
        "name": "hostile",
        "output": str(tmp_path / "out"),
        "cluster": {"n_workers": 1, "dashboard_address": None, **top.pop("cluster", {})},
        "stages": [{"read": {"format": "jsonl", "paths": [str(tmp_path / "in/*.jsonl")], "id_field": "id"}}]
        + (stages or []),
        **top,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 14: one line per failure, `--debug` for the traceback ---------------------------------------------------


def test_unreachable_scheduler_is_one_line_within_the_connect_timeout(tmp_path: Path) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", local_pipeline(tmp_path, cluster={"connect_timeout": 1}))
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = cli("run", str(pipeline), "--address", address, "--quiet", cwd=tmp_path)
    assert errors(proc) == [f"error: cannot reach the Dask scheduler at {address} (no answer within 1 s)"]
    assert time.monotonic() - started < 30  # was: Dask's 30 s connect timeout, then a traceback
    debug = cli("--debug", "run", str(pipeline), "--address", address, "--quiet", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"error: cannot reach the Dask scheduler at {address} (no answer within 1 s)")


@pytest.mark.parametrize(
    ("url", "package", "extra"), [("s3://corpus/cc/*.jsonl.gz", "s3fs", "s3"), ("gs://corpus/*.jsonl", "gcsfs", "gcs")]
)
def test_object_store_path_without_its_filesystem_names_the_package(
    tmp_path: Path, url: str, package: str, extra: str
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    spec = local_pipeline(tmp_path)
    spec["stages"][0]["read"]["paths"].append(url)
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    protocol = url.split(":")[0]
    expected = [
        f"error: {pipeline}: 1 problem(s)",
        f"  stages[0].read.paths[1] (line 11): {protocol}:// paths need the {package} package, which is not installed: "
        f'pip install "tokenmill[{extra}]" (got {url!r})',
    ]
    assert errors(cli("validate", str(pipeline), cwd=tmp_path)) == expected
    assert errors(cli("run", str(pipeline), "--quiet", cwd=tmp_path)) == expected


def test_slurm_without_sbatch_fails_at_once(tmp_path: Path) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", local_pipeline(tmp_path, cluster={"slurm": {"queue": "cpu", "jobs": 2}}))
    (tmp_path / "bin").mkdir()
    started = time.monotonic()
    proc = cli("run", str(pipeline), "--quiet", cwd=tmp_path, env={"PATH": str(tmp_path / "bin")}, timeout=60)
    assert errors(proc) == [
        "error: cluster.slurm: `sbatch` is not on PATH; run tokenmill on a Slurm login node, "
        "or remove cluster.slurm to run on this machine"
    ]
    assert time.monotonic() - started < 30  # was: a loop of tracebacks that never ended


def test_slurm_jobs_that_never_start_are_bounded_by_worker_timeout(tmp_path: Path) -> None:
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (dev extra)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"sbatch": "echo 'Submitted batch job 4242'", "scancel": "true", "squeue": "true"}.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")  # a queue that accepts jobs and never runs them
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    spec = local_pipeline(tmp_path, cluster={"slurm": {"queue": "cpu", "jobs": 1}, "worker_timeout": 2})
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    proc = cli("run", str(pipeline), "--quiet", cwd=tmp_path, env={"PATH": path}, timeout=90)
    assert errors(proc) == [
        "error: no Dask worker joined within 2 s from 1 Slurm job(s) (see `squeue` and the job logs)"
    ]


def test_custom_stage_missing_on_the_workers_fails_each_shard_with_one_line(tmp_path: Path, client) -> None:
    # The module exists beside the pipeline (the driver imports it from its working directory) but not on the
    # workers, which were started elsewhere: the classic "works on my machine" custom stage.
    module = "tm_hostile_user_filters"
    (tmp_path / f"{module}.py").write_text("def keep(doc):\n    return None\n")
    spec = local_pipeline(tmp_path, [{"custom": {"callable": f"{module}:keep"}}])
    jsonl_inputs(tmp_path / "in", n_files=2)
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    proc = cli("run", str(pipeline), "--address", client.scheduler.address, "--quiet", cwd=tmp_path)
    why = (
        f"ImportError: custom:keep: cannot import module {module!r}: No module named {module!r} "
        "(it must be importable on every worker)"
    )
    assert errors(proc) == [
        f"error: shard part-000.jsonl: {why}",
        f"error: shard part-001.jsonl: {why}",
        f"error: 2 shard(s) failed; see {tmp_path}/out/report.md",
    ]
    assert "KilledWorker" not in proc.stderr


def test_datatrove_step_with_a_missing_optional_dependency_is_caught_at_validate(tmp_path: Path) -> None:
    if all(importlib.util.find_spec(m) for m in ("tldextract", "fasteners", "ahocorasick")):
        pytest.skip("URLFilter's optional dependencies are installed")
    pipeline = write_yaml(tmp_path / "p.yaml", local_pipeline(tmp_path, [{"datatrove": {"step": "URLFilter"}}]))
    line = errors(cli("validate", str(pipeline), cwd=tmp_path))[1]
    assert line.startswith(
        "  stages[1].datatrove.step (line 13): value error, URLFilter needs optional packages that are not installed: "
        "pip install "
    )
    assert {"pyahocorasick", "fasteners", "tldextract"} >= set(line.split("pip install ")[1].split()) != set()


@pytest.mark.parametrize("stage", ["language", "quality"])
def test_truncated_fasttext_model_is_refused_before_any_worker_loads_it(tmp_path: Path, stage: str) -> None:
    # fastText's loader on this file allocates without bound, spins or segfaults: it must never be loaded.
    model = tmp_path / "model.ftz"
    model.write_bytes(bundled_model_path().read_bytes()[:400_000])
    args = {"model": str(model)} if stage == "language" else {"model": str(model), "label": "__label__en"}
    pipeline = write_yaml(tmp_path / "p.yaml", local_pipeline(tmp_path, [{stage: args}]))
    expected = [
        f"error: {pipeline}: 1 problem(s)",
        f"  stages[1].{stage}.model (line 13): value error, {stage}: {model} is not a usable fastText model: "
        "the file is truncated: its 400,000 bytes end inside the dictionary",
    ]
    assert errors(cli("validate", str(pipeline), cwd=tmp_path)) == expected
    assert errors(cli("run", str(pipeline), "--quiet", cwd=tmp_path)) == expected


def test_model_damaged_after_validation_fails_on_the_worker_without_loading(tmp_path: Path) -> None:
    model = tmp_path / "lid.ftz"
    shutil.copy(bundled_model_path(), model)
    stage = LanguageID(model=str(model))
    with model.open("r+b") as handle:  # replaced by a partial copy between validation and the task
        handle.truncate(900_000)
    with pytest.raises(ValueError, match=r"language: .*lid\.ftz is not a usable fastText model: the file is truncated"):
        stage.setup()


def test_fasttext_layout_check_accepts_real_models_and_refuses_damage(tmp_path: Path) -> None:
    good = bundled_model_path().read_bytes()
    assert fasttext_model_problem(str(bundled_model_path())) is None
    damaged = {
        "empty": (b"", "the file has 0 bytes; a fastText model starts with an 8-byte header"),
        "header": (good[:8], "the file is truncated: its 8 bytes end inside the header"),
        "text": (b"__label__en hello\n" * 10, "not a fastText model (the file does not start with fastText's magic"),
        "tail": (good[:-1], "the file is truncated: its 938,012 bytes end inside the output matrix"),
        "extra": (good + b"\0\0", "the file is corrupt: 2 bytes follow the end of the model"),
    }
    for name, (data, message) in damaged.items():
        path = tmp_path / f"{name}.ftz"
        path.write_bytes(data)
        assert (fasttext_model_problem(str(path)) or "").startswith(message), name


def test_batch_mb_overflow_and_memory_limit_nonsense_are_validation_lines(tmp_path: Path) -> None:
    spec = local_pipeline(tmp_path, cluster={"memory_limit": "lots"}, batch_mb=1e308)
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    expected = [
        f"error: {pipeline}: 2 problem(s)",
        "  cluster.memory_limit (line 6): value error, must be 'auto', a number of bytes or a size such as '4GB' "
        "(got 'lots')",
        "  batch_mb (line 13): input should be less than or equal to 65536 (got 1e+308)",
    ]
    assert errors(cli("validate", str(pipeline), cwd=tmp_path)) == expected
    assert errors(cli("run", str(pipeline), "--quiet", cwd=tmp_path)) == expected
    ok = parse_pipeline(yaml.safe_dump({**spec, "batch_mb": 65536, "cluster": {"memory_limit": "4 GiB"}}))
    assert ok.plan.batch_bytes == 65536 * 1024 * 1024


# --- 16: validate catches what run would reject, every line with its key path and YAML line ---------------------


def test_validate_expands_input_globs(tmp_path: Path) -> None:
    jsonl_inputs(tmp_path / "in")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""\
            name: globs
            output: {tmp_path}/out
            stages:
              - read:
                  - {{format: jsonl, paths: "{tmp_path}/in/*.jsonl"}}
                  - {{format: jsonl, paths: ["{tmp_path}/in/*.jsonl", "{tmp_path}/typo/*.jsonl"]}}
                  - {{format: parquet, paths: "{tmp_path}/in/*.parquet"}}
              - normalize: {{}}
            """
        )
    )
    assert errors(cli("validate", str(pipeline), cwd=tmp_path)) == [
        f"error: {pipeline}: 2 problem(s)",
        f"  stages[0].read[1].paths[1] (line 6): no input files match '{tmp_path}/typo/*.jsonl'",
        f"  stages[0].read[2].paths (line 7): no input files match '{tmp_path}/in/*.parquet'",
    ]


def test_stage_order_problems_name_their_yaml_entry(tmp_path: Path) -> None:
    jsonl_inputs(tmp_path / "in")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""\
            name: order
            output: {tmp_path}/out
            stages:
              - read:
                  - {{format: jsonl, paths: "{tmp_path}/in/*.jsonl"}}
                  - {{format: jsonl, paths: "{tmp_path}/in/*.jsonl"}}
              - normalize: {{}}
              - write: {{}}
              - train: {{max_steps: 1}}
              - tokenize: {{}}
              - dedup_exact: {{}}
              - read: {{format: jsonl, paths: "{tmp_path}/in/*.jsonl"}}
            """
        )
    )
    assert errors(cli("validate", str(pipeline), cwd=tmp_path)) == [
        f"error: {pipeline}: 7 problem(s)",
        "  stages[6] (line 12): `read` stages must come first",
        "  stages[2] (line 8): after `write` only dataset stages (tokenizer, tokenize, train, ...) may follow",
        "  stages[5] (line 11): document and dedup stages must come before `write` and dataset stages",
        "  stages[6] (line 12): document and dedup stages must come before `write` and dataset stages",
        "  stages[3] (line 9): train needs the tokens, which no earlier stage makes: put tokenize before it",
        "  stages[3] (line 9): train needs the tokenizer, which no earlier stage makes: put tokenizer_train before it",
        "  stages[4] (line 10): tokenize needs the tokenizer, which no earlier stage makes: put tokenizer_train "
        "before it or set `tokenize.tokenizer`",
    ]


def test_tokenize_with_its_own_tokenizer_needs_no_tokenizer_train() -> None:
    text = "name: x\noutput: o\nstages:\n  - read: {format: jsonl, paths: [a]}\n  - tokenize: {tokenizer: t.json}\n"
    assert parse_pipeline(text).plan.dataset_stages[0].tokenizer == "t.json"


# --- 17: an unusable stage output costs that document, never the shard ------------------------------------------

HOSTILE_STAGES = """
from tokenmill.engine.stage import DocumentStage


def returns_bool(doc):
    return "keep" not in doc.text  # datatrove's convention (True keeps), not ours


def nulls_text(doc):
    if "null" in doc.text:
        doc.text = None


def numeric_id(doc):
    if "number" in doc.text:
        doc.id = 12345


def meta_string(doc):
    if "meta" in doc.text:
        doc.meta = "oops"


class OwnLoop(DocumentStage):
    def process_batch(self, docs, out):
        for doc in docs:
            out.seen(doc.nbytes)
            out.keep(doc)
            if "bytes" in doc.text:
                doc.text = doc.text.encode()
        return docs
"""


@pytest.fixture
def hostile_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "tm_hostile_outputs"
    (tmp_path / f"{name}.py").write_text(HOSTILE_STAGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("function", "text", "reason", "message"),
    [
        ("returns_bool", "please keep me", "invalid_output:return", "returned False (bool); return None to keep"),
        ("nulls_text", "null me", "invalid_output:text", "set text to NoneType, not str"),
        ("numeric_id", "a number", "invalid_output:id", "set id to int, not str"),
        ("meta_string", "meta data", "invalid_output:meta", "set meta to str, not dict"),
        ("OwnLoop", "some bytes", "invalid_output:text", "text is bytes, not str"),
    ],
)
def test_unusable_output_is_the_documents_error(hostile_module, function, text, reason, message) -> None:
    stage = CustomStage(callable=f"{hostile_module}:{function}")
    docs = [Doc(id="good", text="fine words"), Doc(id="bad", text=text), Doc(id="after", text="more words")]
    out = Outcomes(StageStats(stage.label), [])
    kept = stage.process_batch(docs, out)
    if function == "returns_bool":  # a bool is refused whatever its value: True does not mean "keep" here
        assert kept == [] and out.stats.errors[reason] == 3
    else:
        assert [d.id for d in kept] == ["good", "after"] and out.stats.errors[reason] == 1
    assert any(m.startswith(f"custom:{function}: bad: {message}") for m in out.stats.messages), out.stats.messages
    out.stats.check()


def test_a_shard_with_hostile_outputs_still_writes_every_good_document(hostile_module, tmp_path: Path) -> None:
    texts = ["plain words", "null me", "a number", "meta data", "plain again"]
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    spec = {
        "name": "hostile-shard",
        "output": str(tmp_path / "out"),
        "stages": [
            {"read": {"format": "jsonl", "paths": [str(tmp_path / "in.jsonl")], "id_field": "id"}},
            *({"custom": {"callable": f"{hostile_module}:{fn}"}} for fn in ("nulls_text", "numeric_id", "meta_string")),
            {"write": {"format": "parquet", "rejected": True}},
        ],
    }
    (task,) = parse_pipeline(yaml.safe_dump(spec)).plan.first_tasks()
    result = process_shard(task)  # used to fail the whole shard in the Parquet writer
    curated = [t for f in result["files"] for t in pq.read_table(f)["text"].to_pylist()]
    assert curated == ["plain words", "plain again"]
    rejected = pq.read_table(result["rejected_files"][0]).to_pylist()
    assert [(r["id"], r["text"], r["reason"]) for r in rejected] == [
        ("d1", "null me", "error:invalid_output:text"),
        ("d2", "a number", "error:invalid_output:id"),
        ("d3", "meta data", "error:invalid_output:meta"),
    ]


# --- 18: a pipeline YAML is code: validate imports none of it unless --import ------------------------------------

TRAP = """
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("validate ran my module")


def keep(doc):
    return None
"""


def test_validate_does_not_import_user_modules_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "tm_trap.py").write_text(TRAP)
    spec = local_pipeline(tmp_path, [{"custom": {"callable": "tm_trap:keep"}}, {"datatrove": {"step": "tm_trap:Step"}}])
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    proc = cli("validate", str(pipeline), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "IMPORTED").exists()
    assert proc.stderr.splitlines()[1:] == [
        "note: stages[1].custom.callable (line 13): 'tm_trap:keep' is user code and was not imported; "
        "`tokenmill validate --import` imports and checks it",
        "note: stages[2].datatrove.step (line 15): 'tm_trap:Step' is user code and was not imported; "
        "`tokenmill validate --import` imports and checks it",
    ]
    checked = cli("validate", "--import", str(pipeline), cwd=tmp_path)
    assert (tmp_path / "IMPORTED").exists()
    assert errors(checked) == [
        f"error: {pipeline}: 1 problem(s)",
        "  stages[2].datatrove.step (line 15): value error, module 'tm_trap' has no attribute 'Step'",
    ]


def test_validate_import_reports_a_custom_callable_that_cannot_be_imported(tmp_path: Path) -> None:
    spec = local_pipeline(tmp_path, [{"custom": {"callable": "tm_not_installed.filters:keep"}}])
    pipeline = write_yaml(tmp_path / "p.yaml", spec)
    assert cli("validate", str(pipeline), cwd=tmp_path).returncode == 0
    assert errors(cli("validate", "--import", str(pipeline), cwd=tmp_path)) == [
        f"error: {pipeline}: 1 problem(s)",
        "  stages[1].custom.callable (line 13): value error, cannot import module 'tm_not_installed.filters': "
        "No module named 'tm_not_installed'",
    ]


def test_yaml_alias_bomb_and_python_tags_are_refused_by_validate(tmp_path: Path) -> None:
    bomb = ["name: bomb", "output: o", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\nstages: [*a8]\n")
    assert errors(cli("validate", "bomb.yaml", cwd=tmp_path)) == [
        "error: bomb.yaml: 1 problem(s)",
        "  the document expands to over 100,000 YAML nodes (aliases of aliases?)",
    ]
    (tmp_path / "tag.yaml").write_text("name: !!python/object/apply:os.system ['touch PWNED']\noutput: o\nstages: []\n")
    (line,) = errors(cli("validate", "tag.yaml", cwd=tmp_path))[1:]
    assert "invalid YAML" in line and not (tmp_path / "PWNED").exists()


def test_an_unexpected_failure_is_still_one_line_naming_its_type(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    import tokenmill.api
    from tokenmill.cli import main
    from tokenmill.engine.stats import ConservationError

    def broken(*args, **kwargs):
        raise ConservationError("stage normalize: 3 in != 2 kept + 0 rejected + 0 errors")

    monkeypatch.setattr(tokenmill.api, "execute", broken)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts its working directory on sys.path
    monkeypatch.chdir(tmp_path)
    pipeline = write_yaml(tmp_path / "p.yaml", local_pipeline(tmp_path))
    result = CliRunner().invoke(main, ["run", str(pipeline), "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: internal error: ConservationError: stage normalize: 3 in != 2 kept + 0 rejected + 0 errors "
        "(run `tokenmill --debug ...` for the traceback)"
    ]
    debug = CliRunner().invoke(main, ["--debug", "run", str(pipeline), "--quiet"])
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr
    again = CliRunner().invoke(main, ["run", str(pipeline), "--quiet"])  # --debug does not stick
    assert again.exit_code == 1 and "Traceback" not in again.stderr
