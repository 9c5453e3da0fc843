"""Exact dedup as a global stage on a real LocalCluster: first occurrence kept, ids recorded, deterministic."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.curate.dedup.exact import text_key

from pipelines import pipeline_yaml, tree_bytes


def write_docs(path, docs: list[tuple[str, str, str | None]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for doc_id, text, url in docs:
            handle.write(json.dumps({"id": doc_id, "text": text, "url": url}) + "\n")


def table_rows(directory) -> list[dict]:
    return [row for f in sorted(directory.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def spec_for(tmp_path, name="p", stages=None, **kw):
    stages = stages if stages is not None else [{"dedup_exact": {}}]
    spec = pipeline_yaml(tmp_path / f"{name}.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / name, stages=stages, **kw)
    text = spec.read_text().replace("id_field: id", "id_field: id\n    url_field: url")
    spec.write_text(text)
    return spec


def test_keeps_first_occurrence_across_shards_and_records_kept_id(tmp_path, client):
    write_docs(tmp_path / "in/a.jsonl", [("a0", "The same text.", None), ("a1", "Unique one.", None)])
    write_docs(tmp_path / "in/b.jsonl", [("b0", "the  SAME text.", None), ("b1", "The same text.", None)])
    result = tokenmill.run(spec_for(tmp_path), client=client)
    _, dedup = result.stats
    assert (dedup.docs_in, dedup.kept, dict(dedup.rejected)) == (4, 2, {"exact_duplicate": 2})
    assert [r["id"] for r in table_rows(tmp_path / "p/curated")] == ["a0", "a1"]
    rejected = table_rows(tmp_path / "p/rejected/segment-01")
    assert {(r["id"], r["reason"], json.loads(r["meta"])["duplicate_of"]) for r in rejected} == {
        ("b0", "exact_duplicate", "a0"),
        ("b1", "exact_duplicate", "a0"),
    }
    assert result.analyses["dedup_exact"]["largest group"] == 3


def test_url_dedup_and_rerun_resumes(tmp_path, client):
    write_docs(tmp_path / "in/a.jsonl", [("a0", "first page", "http://x/1"), ("a1", "second page", "http://x/1")])
    write_docs(tmp_path / "in/b.jsonl", [("b0", "third page", None), ("b1", "fourth page", "http://x/2")])
    spec = spec_for(tmp_path, stages=[{"dedup_exact": {"url": True}}, {"normalize": {"lowercase": True}}])
    first = tokenmill.run(spec, client=client)
    assert first.stats[1].rejected == {"duplicate_url": 1}
    assert first.analyses["dedup_exact"]["url duplicates removed"] == 1
    before = tree_bytes(tmp_path / "p/curated")
    again = tokenmill.run(spec, client=client)
    assert again.shards_skipped == again.shards_total == 4  # two segments of two shards
    assert tree_bytes(tmp_path / "p/curated") == before
    write_docs(tmp_path / "in/c.jsonl", [("c0", "FIRST page", None)])  # a new shard changes the analysis
    third = tokenmill.run(spec, client=client)
    assert third.stats[1].rejected == {"duplicate_url": 1, "exact_duplicate": 1}
    assert third.shards_skipped == 2  # segment one: a and b unchanged; segment two: all recomputed


def test_one_and_two_workers_identical(tmp_path, client):
    docs = [(f"d{i}", f"text number {i % 7}", None) for i in range(60)]
    for k in range(3):
        write_docs(tmp_path / f"in/{k}.jsonl", docs[k * 20 : (k + 1) * 20])
    tokenmill.run(spec_for(tmp_path, "two", stages=[{"dedup_exact": {"partitions": 3}}]), client=client)
    tokenmill.run(spec_for(tmp_path, "one", stages=[{"dedup_exact": {"partitions": 3}}], n_workers=1))
    assert tree_bytes(tmp_path / "one/curated") == tree_bytes(tmp_path / "two/curated")
    assert [r["id"] for r in table_rows(tmp_path / "one/curated")] == [f"d{i}" for i in range(7)]


def test_text_key_normalization_and_length():
    assert text_key("A  b\nc", True) == text_key("a b c", True)
    assert text_key("A  b", False) != text_key("a b", False)
    assert len(text_key("", True)) == 24


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "alpha ", "BETA"]), min_size=1, max_size=30),
    split=st.integers(min_value=1, max_value=3),
)
def test_keeps_exactly_one_of_each_distinct_text(tmp_path_factory, client, texts, split):
    tmp = tmp_path_factory.mktemp("exact")
    docs = [(f"d{i}", t, None) for i, t in enumerate(texts)]
    size = -(-len(docs) // split)
    for k in range(split):
        if docs[k * size : (k + 1) * size]:
            write_docs(tmp / f"in/{k}.jsonl", docs[k * size : (k + 1) * size])
    spec = spec_for(tmp, stages=[{"dedup_exact": {"normalize": False}}])
    result = tokenmill.run(spec, client=client)
    kept = [r["text"] for r in table_rows(tmp / "p/curated")]
    assert sorted(kept) == sorted(set(texts))
    first = {}
    for doc_id, text, _ in docs:
        first.setdefault(text, doc_id)
    assert sorted(r["id"] for r in table_rows(tmp / "p/curated")) == sorted(first.values())
    assert result.stats[-1].docs_in == len(texts)
