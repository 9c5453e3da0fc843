"""Issue 9's engine-side holes, each from a hostile input the test builds: columns lost at segment boundaries,
strings Arrow cannot store, files tokenmill did not write, two runs on one output, outputs inside inputs,
stale outputs after a config change, in-place edits that keep size and mtime, full disks, YAML bombs."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.engine.config_file import MAX_NODES, SpecError
from tokenmill.engine.executor import process_shard
from tokenmill.engine.output_dir import LOCK, OutputError, OutputLock, OutputLocked
from tokenmill.engine.shard_writer import ShardWriter
from tokenmill.engine.spec import parse_pipeline

from pipelines import pipeline_yaml, write_jsonl_shards

ROOT = Path(__file__).resolve().parent.parent

PEOPLE = [
    "Write to alice@example.com about the meeting on Thursday; the agenda follows in the next message.",
    "The server at 203.0.113.7 answered slowly, so the team moved the service to a second machine.",
    "A long walk along the river ends at the old mill, where the water still turns the wheel every day.",
]


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def columns_of(directory: Path) -> set[str]:
    names = set()
    for file in directory.glob("*.parquet"):
        names |= set(pq.read_schema(file).names)
    return names


# --- 1. annotations survive every segment; one rejected schema ---------------------------------------------------


def test_every_declared_column_reaches_the_final_output_across_global_stages(tmp_path, client):
    docs = [{"id": f"d{i}", "text": text} for i, text in enumerate(PEOPLE * 2)]  # three exact duplicates
    write_docs(tmp_path / "in/a.jsonl", docs)
    stages = [
        {"language": {"keep": ["en"], "min_score": 0.1}},
        {"pii": {}},
        {"dedup_exact": {}},
        {"dedup_minhash": {"threshold": 0.8}},
    ]
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=stages)
    result = tokenmill.run(spec, client=client)
    assert result.ok
    curated = pq.read_table(tmp_path / "out/curated/part-00000-0000.parquet").to_pylist()
    assert {"language", "language_score", "pii_emails", "pii_ips", "minhash_cluster"} <= set(curated[0])
    assert [row["language"] for row in curated] == ["en"] * 3
    assert sorted(row["pii_emails"] for row in curated) == [0, 0, 1]
    before = pq.read_table(next((tmp_path / "out/_work").glob("00-before-*/part-00000-0000.parquet"))).to_pylist()
    by_id = {row["id"]: row for row in before}
    for row in curated:  # the values, not only the names, cross the boundary
        assert row["language_score"] == by_id[row["id"]]["language_score"]
    # every rejected file of every segment has one schema, so the whole tree reads as one dataset
    rejected = sorted((tmp_path / "out/rejected").rglob("*.parquet"))
    assert len({pq.read_schema(f) for f in rejected}) == 1
    table = ds.dataset(str(tmp_path / "out/rejected"), format="parquet").to_table()
    assert table.num_rows == 3 and set(table.column("stage").to_pylist()) == {"dedup_exact"}


# --- 2. strings Arrow cannot store -------------------------------------------------------------------------------


def test_lone_surrogates_in_any_field_cost_nothing(tmp_path, client):
    lines = [
        '{"text": "good", "note": "\\udc00"}',
        '{"text": "fine text", "id": "x\\ud800y", "url": "http://e.com/\\udfff", "source": "s\\udc80"}',
        '{"text": "nested", "meta": {"a": ["\\ud834", {"b": "\\udd1e"}]}}',
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for fmt in ("parquet", "jsonl"):
        out = tmp_path / f"out-{fmt}"
        spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), out)
        data = yaml.safe_load(spec.read_text())
        data["stages"][0]["read"].pop("id_field")
        data["stages"][-1]["write"]["format"] = fmt
        spec.write_text(yaml.safe_dump(data))
        result = tokenmill.run(spec, client=client)
        assert result.ok and result.stats[0].docs_in == 3 and result.stats[-1].kept == 3
        (written,) = [f for f in (out / "curated").iterdir() if f.name.startswith("part-")]
        raw = written.read_bytes()
        if fmt == "jsonl":
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
        else:
            raw = json.dumps(pq.read_table(written).to_pylist(), ensure_ascii=False).encode()
        text = raw.decode("utf-8")  # strict: the file is valid UTF-8
        assert "\ufffd" in text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"text": st.text(), "id": st.text(), "url": st.text(), "source": st.text()},
            optional={"extra": st.text(), "meta": st.dictionaries(st.text(max_size=5), st.text(), max_size=3)},
        ),
        min_size=1,
        max_size=8,
    )
)
def test_conservation_holds_for_arbitrary_strings_in_every_column(tmp_path_factory, rows):
    tmp_path = tmp_path_factory.mktemp("any")
    path = tmp_path / "in/a.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    read = {"format": "jsonl", "paths": [str(path)], "id_field": "id", "url_field": "url", "source_field": "source"}
    spec = {
        "name": "any",
        "output": str(tmp_path / "out"),
        "stages": [{"read": read}, {"normalize": {}}, {"pii": {}}, {"write": {"rejected": True}}],
    }
    (result,) = [process_shard(t) for t in parse_pipeline(yaml.safe_dump(spec)).plan.first_tasks()]
    for stage in result["stats"]:
        assert stage["docs_in"] == stage["kept"] + sum(stage["rejected"].values()) + sum(stage["errors"].values())
    assert result["stats"][0]["docs_in"] == len(rows)
    kept = sum(pq.read_table(f).num_rows for f in result["files"])
    assert kept == result["stats"][-1]["kept"]


# --- 9. files tokenmill did not write ----------------------------------------------------------------------------


def test_foreign_files_in_the_output_are_refused_and_never_removed(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    mine = tmp_path / "out/notes.txt"
    mine.parent.mkdir()
    mine.write_text("my notes")
    with pytest.raises(OutputError, match="already holds files tokenmill did not write"):
        tokenmill.run(spec, client=client)
    assert tokenmill.run(spec, client=client, force=True).ok  # --force: runs, and leaves the file alone
    assert mine.read_text() == "my notes"

    curated = tmp_path / "out/curated"
    lookalikes = [curated / ".tmp-report.txt", curated / "part-00007-final.csv", curated / "readme.md"]
    for file in lookalikes:
        file.write_text("user data")
    with pytest.raises(OutputError, match="holds a file tokenmill did not write"):
        tokenmill.run(spec, client=client)
    assert tokenmill.run(spec, client=client, force=True).ok
    assert all(f.read_text() == "user data" for f in lookalikes)  # not pruned, not cleaned as temporaries


def test_a_file_with_a_part_name_in_a_foreign_directory_is_never_overwritten(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    data = yaml.safe_load(spec.read_text())
    data["stages"][-1]["write"]["path"] = str(tmp_path / "elsewhere")
    spec.write_text(yaml.safe_dump(data))
    theirs = tmp_path / "elsewhere/part-00000-0000.parquet"
    theirs.parent.mkdir()
    theirs.write_bytes(b"not ours")
    with pytest.raises(OutputError, match="would overwrite"):
        tokenmill.run(spec, client=client, force=True)
    assert theirs.read_bytes() == b"not ours"


# --- 10. one run per output --------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_output_stops_at_once(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    (tmp_path / "out").mkdir()
    with OutputLock(str(tmp_path / "out")):  # held by this (live) process
        started = time.perf_counter()
        with pytest.raises(OutputLocked, match=r"in use by another run \(host .*, pid \d+"):
            tokenmill.run(spec, client=client)
        assert time.perf_counter() - started < 10
    assert not (tmp_path / "out" / LOCK).exists()
    assert tokenmill.run(spec, client=client).ok


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "out").mkdir()
    holder = {"host": socket.gethostname(), "pid": dead.pid, "started": time.time() - 60}
    (tmp_path / "out" / LOCK).write_text(json.dumps(holder))
    assert tokenmill.run(spec, client=client).ok
    assert not (tmp_path / "out" / LOCK).exists()


def test_two_concurrent_cli_runs_one_refused_with_one_line(tmp_path):
    write_jsonl_shards(tmp_path / "in", 4, 200)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", n_workers=1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "tokenmill", "run", str(spec), "--quiet"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "out" / LOCK).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 1
    assert "is in use by another run" in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1


# --- 11. output inside an input directory ------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["{root}", "{root}/**/*.parquet", "{root}/**"])
def test_an_output_inside_an_input_tree_is_refused_before_any_work(tmp_path, client, pattern):
    root = tmp_path / "data"
    write_jsonl_shards(root, 2, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", pattern.format(root=root), root / "out")
    with pytest.raises(OutputError, match="inside"):
        tokenmill.run(spec, client=client)
    assert not (root / "out/curated").exists()


def test_an_input_glob_matching_files_in_the_output_is_refused(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    assert tokenmill.run(spec, client=client).ok
    data = yaml.safe_load(spec.read_text())
    data["stages"][0]["read"] = {"format": "parquet", "paths": [str(tmp_path / "out/curated/*.parquet")]}
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(OutputError, match="inside the output directory"):
        tokenmill.run(spec, client=client)


# --- 12. after a run, the output holds exactly this run's files --------------------------------------------------


def test_a_format_change_leaves_only_this_runs_files(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 30)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    assert tokenmill.run(spec, client=client).ok
    data = yaml.safe_load(spec.read_text())
    data["stages"][-1]["write"] = {"format": "jsonl", "rejected": False, "shard_size_mb": 0.0005}
    spec.write_text(yaml.safe_dump(data))
    assert tokenmill.run(spec, client=client).ok
    curated = sorted(p.name for p in (tmp_path / "out/curated").iterdir() if not p.name.startswith("."))
    assert curated and all(name.endswith(".jsonl.zst") for name in curated)
    assert not list((tmp_path / "out/rejected").glob("*.parquet"))
    data["stages"][-1]["write"] = {"format": "jsonl", "rejected": False}  # fewer, larger parts
    spec.write_text(yaml.safe_dump(data))
    assert tokenmill.run(spec, client=client).ok
    assert sorted(p.name for p in (tmp_path / "out/curated").glob("part-*")) == [
        "part-00000-0000.jsonl.zst",
        "part-00001-0000.jsonl.zst",
    ]


def test_dropping_a_global_stage_removes_its_segments_leftovers(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 10)
    two = [{"normalize": {}}, {"dedup_exact": {}}, {"dedup_minhash": {}}]
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=two)
    assert tokenmill.run(spec, client=client).ok
    assert list((tmp_path / "out/rejected/segment-02").glob("*.parquet"))
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=two[:2])
    assert tokenmill.run(spec, client=client).ok
    assert not (tmp_path / "out/rejected/segment-02").exists()
    assert not (tmp_path / "out/_manifest/curate/segment-02").exists()


# --- 13. content changes that keep size and mtime ----------------------------------------------------------------


def test_verify_content_notices_an_edit_that_keeps_size_and_mtime(tmp_path, client):
    (path,) = write_jsonl_shards(tmp_path / "in", 1, 5)
    for verify, recomputed in (("metadata", False), ("content", True)):
        out = tmp_path / f"out-{verify}"
        spec = pipeline_yaml(tmp_path / "p.yaml", str(path), out, resume={"verify": verify})
        path.write_text(path.read_text().replace("Document", "Dokument"))
        os.utime(path, (1_000_000_000, 1_000_000_000))
        first = tokenmill.run(spec, client=client)
        path.write_text(path.read_text().replace("Dokument", "Document"))  # same size
        os.utime(path, (1_000_000_000, 1_000_000_000))  # same mtime
        again = tokenmill.run(spec, client=client)
        assert first.ok and again.shards_skipped == (0 if recomputed else 1)
        texts = pq.read_table(out / "curated/part-00000-0000.parquet").column("text").to_pylist()
        assert all(t.startswith("Document") for t in texts) == recomputed


# --- 14. outputs that cannot be written --------------------------------------------------------------------------


def test_an_output_that_is_a_file_or_read_only_is_refused_before_any_work(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 1, 5)
    (tmp_path / "a-file").write_text("x")
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "a-file")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        tokenmill.run(spec, client=client)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "a-file/out")
    with pytest.raises(OutputError, match="is a file"):
        tokenmill.run(spec, client=client)
    if os.geteuid() != 0:  # root writes anywhere: the permission check cannot fail for it
        (tmp_path / "ro").mkdir(mode=0o555)
        spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "ro/out")
        with pytest.raises(OutputError, match="not writable"):
            tokenmill.run(spec, client=client)


def test_a_full_disk_names_the_path_and_leaves_no_temporaries(tmp_path, monkeypatch):
    write_jsonl_shards(tmp_path / "in", 1, 50)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")

    def full(self, docs, reasons=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardWriter, "write", full)
    (task,) = tokenmill.load_pipeline(spec).plan.first_tasks()
    with pytest.raises(OSError, match=r"disk full writing .*out/curated \([\d,.]+ MB free; about .* MB more") as err:
        process_shard(task)
    assert err.value.errno == errno.ENOSPC and "shard part-000.jsonl" in str(err.value)
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert leftovers == []


# --- 15. YAML bombs ----------------------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_quickly_and_briefly(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\nname: *a8\noutput: o\nstages: [{read: {format: jsonl, paths: [x]}}]\n"
    assert len(bomb) < 1000
    started = time.perf_counter()
    with pytest.raises(SpecError) as raised:
        parse_pipeline(bomb)
    assert time.perf_counter() - started < 5
    assert f"expands to over {MAX_NODES:,} YAML nodes" in str(raised.value) and len(str(raised.value)) < 300
    with pytest.raises(SpecError, match="expands to over"):
        parse_pipeline("a: &a [*a]\nname: x\n")  # a recursive alias


def test_an_error_never_prints_an_unbounded_input(tmp_path):
    huge = "x" * 100_000
    with pytest.raises(SpecError) as raised:
        parse_pipeline(f"name: p\noutput: o\nbatch_docs: {huge}\nstages: [{{read: {{format: jsonl, paths: [a]}}}}]\n")
    assert "batch_docs" in str(raised.value) and len(str(raised.value)) < 400


# --- 8. input listing problems reach the run's warnings ----------------------------------------------------------


def test_a_symlink_loop_in_the_inputs_is_a_warning_of_the_run(tmp_path, client):
    write_jsonl_shards(tmp_path / "in/sub", 1, 5)
    (tmp_path / "in/sub/loop").symlink_to(tmp_path / "in", target_is_directory=True)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in"), tmp_path / "out")
    result = tokenmill.run(spec, client=client)
    assert result.ok and result.stats[0].docs_in == 5
    assert any("symlink loop" in w for w in result.warnings)
    assert "symlink loop" in (tmp_path / "out/report.md").read_text()
