"""The executor on a real LocalCluster: conservation, resume, determinism, user stages, empty-output alarms."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.api import EmptyOutputError
from tokenmill.curate.normalize import Normalize
from tokenmill.curate.readers import JsonlReader
from tokenmill.curate.writers import Write
from tokenmill.engine.executor import process_shard
from tokenmill.engine.spec import Pipeline, load_pipeline

from pipelines import pipeline_yaml, tree_bytes, write_jsonl_shards


def read_ids(directory) -> list[str]:
    return [i for f in sorted(directory.glob("*.parquet")) for i in pq.read_table(f).column("id").to_pylist()]


def test_run_writes_outputs_stats_and_report(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 3, 20)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    result = tokenmill.run(spec, client=client)
    assert result.ok and result.shards_total == 3 and result.shards_skipped == 0
    read, normalize = result.stats
    assert read.docs_in == read.kept == 60 and normalize.kept == 60
    assert len(read_ids(tmp_path / "out/curated")) == 60
    stats = json.loads((tmp_path / "out/stats/run.json").read_text())
    assert [s["stage"] for s in stats["stages"]] == ["read", "normalize"]
    report = (tmp_path / "out/report.md").read_text()
    assert "| read | 60 | 60 |" in report
    assert (tmp_path / "out/funnel.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out/report.html").exists()


def test_resume_skips_finished_shards_and_outputs_are_identical(tmp_path, client):
    inputs = write_jsonl_shards(tmp_path / "in", 4, 15)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    first = tokenmill.run(spec, client=client)
    before = tree_bytes(tmp_path / "out/curated")

    again = tokenmill.run(spec, client=client)
    assert again.shards_skipped == 4
    assert [s.to_dict() for s in again.stats] == [s.to_dict() for s in first.stats]

    os.remove(tmp_path / "out/curated/part-00002-0000.parquet")  # a lost output is recomputed
    with inputs[0].open("a") as handle:  # a changed input is recomputed
        handle.write(json.dumps({"text": "one more document here", "id": "extra"}) + "\n")
    third = tokenmill.run(spec, client=client)
    assert third.shards_skipped == 2
    assert third.stats[0].docs_in == 61

    forced = tokenmill.run(spec, client=client, force=True)
    assert forced.shards_skipped == 0
    after = tree_bytes(tmp_path / "out/curated")
    assert set(after) == set(before)
    assert after["part-00001-0000.parquet"] == before["part-00001-0000.parquet"]
    assert after["part-00002-0000.parquet"] == before["part-00002-0000.parquet"]


def test_changed_config_recomputes_and_shrunk_input_prunes(tmp_path, client):
    inputs = write_jsonl_shards(tmp_path / "in", 3, 10)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out")
    tokenmill.run(spec, client=client)
    lower = pipeline_yaml(
        tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=[{"normalize": {"lowercase": True}}]
    )
    assert tokenmill.run(lower, client=client).shards_skipped == 0
    inputs[2].unlink()
    result = tokenmill.run(lower, client=client)
    assert result.shards_total == 2
    assert sorted(p.name for p in (tmp_path / "out/curated").iterdir()) == [
        "part-00000-0000.parquet",
        "part-00001-0000.parquet",
    ]
    assert sorted(p.name for p in (tmp_path / "out/_manifest/curate").iterdir()) == ["00000.json", "00001.json"]


def test_one_worker_and_two_workers_give_identical_outputs(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 4, 25)
    two = pipeline_yaml(tmp_path / "two.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "two")
    one = pipeline_yaml(tmp_path / "one.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "one", n_workers=1)
    tokenmill.run(two, client=client)
    tokenmill.run(one)  # its own single-worker LocalCluster from the YAML
    assert tree_bytes(tmp_path / "two/curated") == tree_bytes(tmp_path / "one/curated")
    assert tree_bytes(tmp_path / "two/rejected") == tree_bytes(tmp_path / "one/rejected")


def test_user_stages_by_import_path(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 30)
    with (tmp_path / "in/part-000.jsonl").open("a") as handle:
        handle.write(json.dumps({"text": "EXPLODE " + "word " * 20, "id": "x"}) + "\n")
    stages = [
        {"custom": {"callable": "stages_for_tests:reject_short", "args": {"min_words": 12}}},
        {"custom": {"callable": "stages_for_tests:explode_on_marker"}},
        {"custom": {"callable": "stages_for_tests:CountWords"}},
    ]
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=stages)
    result = tokenmill.run(spec, client=client)
    _, short, explode, _ = result.stats
    assert short.stage == "custom:reject_short" and short.rejected["too_short"] > 0
    assert explode.errors == {"exception:ValueError": 1}
    assert "x: ValueError('boom')" in explode.messages[0]
    table = pq.read_table(sorted((tmp_path / "out/curated").glob("*.parquet"))[0])
    assert "n_words" in table.column_names and min(table.column("n_words").to_pylist()) >= 12
    rejected = pq.read_table(sorted((tmp_path / "out/rejected").glob("*.parquet"))[0]).to_pydict()
    assert ("custom:explode_on_marker", "error:exception:ValueError") in zip(rejected["stage"], rejected["reason"])
    assert tokenmill.run(spec, client=client).shards_skipped == 2


def test_empty_output_is_flagged_and_strict_fails(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 5)
    stages = [{"custom": {"callable": "stages_for_tests:reject_all"}}]
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=stages)
    result = tokenmill.run(spec, client=client)
    assert result.warnings == [
        "stage 'custom:reject_all' received 10 documents and kept none (rejected: always=10; errors: -)"
    ]
    assert "**stage 'custom:reject_all' received 10 documents and kept none" in (tmp_path / "out/report.md").read_text()
    with pytest.raises(EmptyOutputError):
        tokenmill.run(spec, client=client, strict=True)


def test_pipeline_built_in_code(tmp_path, client):
    write_jsonl_shards(tmp_path / "in", 2, 5)
    pipeline = Pipeline(
        name="in-code",
        output=str(tmp_path / "out"),
        stages=[JsonlReader(paths=[str(tmp_path / "in")]), Normalize(lowercase=True), Write(format="jsonl")],
    )
    result = tokenmill.run(pipeline, client=client)
    assert result.stats[1].changed == 10
    assert sorted(p.name for p in (tmp_path / "out/curated").iterdir()) == [
        "part-00000-0000.jsonl.zst",
        "part-00001-0000.jsonl.zst",
    ]


def test_target_shard_size_rolls_output_files(tmp_path):
    write_jsonl_shards(tmp_path / "in", 1, 400)
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", batch_docs=50)
    text = spec.read_text().replace("rejected: true", "rejected: true\n    shard_size_mb: 0.01")
    spec.write_text(text)
    (task,) = load_pipeline(spec).plan.first_tasks()
    result = process_shard(task)
    assert len(result["files"]) > 2
    assert len(read_ids(tmp_path / "out/curated")) == 400


texts = st.lists(
    st.one_of(st.text(max_size=60), st.just(""), st.just("   \n "), st.text(alphabet="ab \n", max_size=30)),
    min_size=0,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=texts, junk=st.lists(st.sampled_from([b"{not json", b"\xff\xfe bad", b"[1, 2]", b'{"no": 1}']), max_size=4)
)
def test_nothing_is_lost(tmp_path_factory, texts, junk):
    """Every input line is kept, rejected (and written with its reason) or an error with a message."""
    tmp = tmp_path_factory.mktemp("conservation")
    lines = [json.dumps({"text": t, "id": f"d{i}"}).encode() for i, t in enumerate(texts)] + list(junk)
    (tmp / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    stages = [{"normalize": {}}, {"custom": {"callable": "stages_for_tests:reject_short", "args": {"min_words": 3}}}]
    spec = pipeline_yaml(tmp / "p.yaml", str(tmp / "in.jsonl"), tmp / "out", stages=stages)
    (task,) = load_pipeline(spec).plan.first_tasks()
    result = process_shard(task)
    read = result["stats"][0]
    assert read["docs_in"] == len(texts) + len(junk)
    for stage in result["stats"]:
        assert stage["docs_in"] == stage["kept"] + sum(stage["rejected"].values()) + sum(stage["errors"].values())
    assert sum(read["errors"].values()) == len(junk) == len(read["messages"])
    kept = read_ids(tmp / "out/curated")
    rejected = read_ids(tmp / "out/rejected")
    assert sorted(kept + rejected) == sorted(f"d{i}" for i in range(len(texts)))
