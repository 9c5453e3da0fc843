"""Repeated-line removal (global, on a real LocalCluster) and evaluation-set decontamination."""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.curate.dedup.lines import (
    EXEMPT,
    RemoveFrequentLines,
    line_hashes,
    normalize_lines,
    remove_lines,
    sum_by_key,
)
from tokenmill.curate.dedup.partitions import write_table
from tokenmill.curate.filters.decontaminate import OOV, Decontaminate, ngram_hashes, sample_texts, word_hash, words
from tokenmill.engine.documents import Doc
from tokenmill.engine.spec import SpecError, parse_pipeline
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

from pipelines import pipeline_yaml, tree_bytes

NEWSLETTER = "Subscribe to our newsletter for weekly updates!"
COPYRIGHT = "Copyright {year} Example Corp. All rights reserved."
RIVERS = ["Nile", "Rhine", "Volga"]
TOWNS = ["Arles", "Bonn", "Cork", "Delft", "Essen", "Faro", "Genk", "Hull", "Ieper", "Jena"]


def write_docs(path: Path, docs: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for doc_id, text in docs:
            handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")


def rows(directory: Path) -> list[dict]:
    return [row for f in sorted(directory.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def run(tmp_path: Path, stages: list[dict], name: str = "p", client=None, **kw):
    spec = pipeline_yaml(tmp_path / f"{name}.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / name, stages=stages, **kw)
    return tokenmill.run(spec, client=client) if client else tokenmill.run(spec)


def boilerplate_corpus(tmp_path: Path) -> None:
    """3 shards x 10 documents: two boilerplate lines everywhere, one unique line each, one all-boilerplate doc."""
    for shard in range(3):
        docs = []
        for d in range(10):
            unique = f"The {RIVERS[shard]} river flooded the {TOWNS[d]} bank again."
            text = f"{NEWSLETTER}\n\n{unique}\n\n{COPYRIGHT.format(year=2000 + d)}"
            docs.append((f"s{shard}d{d}", text))
        docs.append((f"s{shard}-only-boilerplate", f"{NEWSLETTER}\n{COPYRIGHT.format(year=1999)}\n"))
        write_docs(tmp_path / f"in/{shard}.jsonl", docs)


# --- repeated-line removal ---------------------------------------------------------------------------------------


def test_boilerplate_lines_removed_unique_kept_and_empty_rejected(tmp_path, client):
    boilerplate_corpus(tmp_path)
    result = run(tmp_path, [{"dedup_lines": {}}], client=client)
    read, lines = result.stats
    assert lines.stage == "dedup_lines"
    assert (lines.docs_in, lines.kept, dict(lines.rejected)) == (33, 30, {"all_lines_repeated": 3})
    assert lines.docs_in == read.kept == lines.kept + lines.n_rejected + lines.n_errors
    assert lines.changed == 30 and lines.bytes_kept < lines.bytes_in
    kept = {r["id"]: r["text"] for r in rows(tmp_path / "p/curated")}
    assert kept["s1d2"] == "The Rhine river flooded the Cork bank again."  # no gap left where lines were
    assert not any("newsletter" in t or "Copyright" in t for t in kept.values())
    rejected = rows(tmp_path / "p/rejected/segment-01")
    assert {(r["id"], r["stage"], r["reason"]) for r in rejected} == {
        (f"s{s}-only-boilerplate", "dedup_lines", "all_lines_repeated") for s in range(3)
    }
    summary = result.analyses["dedup_lines"]
    assert summary["frequent lines"] == 2  # the copyright years differ only in digits: one normalized line
    assert summary["line occurrences removed"] == 66
    assert summary["distinct lines"] == 32 and summary["most documents sharing a line"] == 33

    again = run(tmp_path, [{"dedup_lines": {}}], client=client)
    assert again.shards_skipped == again.shards_total == 6  # both segments resume
    assert [s.to_dict() for s in again.stats] == [s.to_dict() for s in result.stats]


def test_threshold_is_a_document_count_with_an_exact_boundary(tmp_path, client):
    at_limit = "This line appears in exactly three documents."
    over_limit = "This line appears in exactly four documents."
    refrain = "A refrain repeated many times inside one single poem."
    docs = [(f"d{i}", f"Own line number {'abcdefgh'[i]} of this document.") for i in range(8)]
    for i in range(3):
        docs[i] = (docs[i][0], docs[i][1] + "\n" + at_limit)
    for i in range(3, 7):
        docs[i] = (docs[i][0], docs[i][1] + "\n" + over_limit)
    docs[7] = ("d7", "\n".join([refrain] * 6 + ["Why?"]))
    write_docs(tmp_path / "in/a.jsonl", docs[:4])
    write_docs(tmp_path / "in/b.jsonl", [*docs[4:], ("d8", "Why?\nWhy?\nWhy? Plenty of reasons, said the owl.")])
    write_docs(tmp_path / "in/c.jsonl", [("d9", "Why?"), ("d10", "Why?")])
    result = run(tmp_path, [{"dedup_lines": {"max_occurrences": 3, "partitions": 2}}], client=client)
    texts = {r["id"]: r["text"] for r in rows(tmp_path / "p/curated")}
    assert all(at_limit in texts[f"d{i}"] for i in range(3))
    assert not any(over_limit in t for t in texts.values())
    assert texts["d7"].count(refrain) == 6  # six times in one document is one document
    assert texts["d9"] == texts["d10"] == "Why?"  # shorter than min_chars: exempt however common
    assert result.analyses["dedup_lines"]["frequent lines"] == 1
    assert result.analyses["dedup_lines"]["line occurrences removed"] == 4
    assert result.stats[-1].changed == 4


def test_one_and_two_workers_give_identical_outputs(tmp_path, client):
    boilerplate_corpus(tmp_path)
    stages = [{"dedup_lines": {"max_occurrences": 5, "partitions": 3}}]
    run(tmp_path, stages, "two", client=client)
    run(tmp_path, stages, "one", n_workers=1)  # its own single-worker LocalCluster
    assert tree_bytes(tmp_path / "one/curated") == tree_bytes(tmp_path / "two/curated")
    assert tree_bytes(tmp_path / "one/rejected") == tree_bytes(tmp_path / "two/rejected")
    frequent = "_work/00-dedup_lines/frequent"
    assert tree_bytes(tmp_path / "one" / frequent) == tree_bytes(tmp_path / "two" / frequent) != {}


def test_real_pile_lines_agree_with_a_reference_count(tmp_path, client, pile_dir):
    """Webtext / MovieReviews / UDHR carry real repeated lines (reviewer sign-offs, UDHR headings). The stage must
    remove exactly the lines an independent in-memory count calls frequent, and nothing else."""
    source = pile_dir / "mini-pile-0000.jsonl.zst"
    spec = {
        "name": "pile-lines",
        "output": str(tmp_path / "out"),
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None},
        "stages": [
            {"read": {"format": "pile", "paths": [str(source)]}},
            {"dedup_lines": {"max_occurrences": 2, "min_chars": 5}},
            {"write": {"format": "parquet", "rejected": True}},
        ],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    result = tokenmill.run(tmp_path / "p.yaml", client=client)
    before = {d.id: d.text for d in _read_pile(source)}
    docs_per_line: collections.Counter = collections.Counter()
    for text in before.values():
        docs_per_line.update({line for line in normalize_lines(text) if len(line) >= 5})
    frequent = {line for line, n in docs_per_line.items() if n > 2}
    expected_removed = sum(
        1 for text in before.values() for line in normalize_lines(text) if line in frequent and len(line) >= 5
    )
    summary = result.analyses["dedup_lines"]
    assert summary["frequent lines"] == len(frequent) > 20
    assert summary["line occurrences removed"] == expected_removed
    after = {r["id"]: r["text"] for r in rows(tmp_path / "out/curated")}
    for doc_id, text in after.items():
        assert not frequent & set(normalize_lines(text))
        kept_lines = [line for line in before[doc_id].split("\n") if line.strip()]
        assert [line for line in text.split("\n") if line.strip()] == [
            line for line in kept_lines if normalize_lines(line)[0] not in frequent
        ]
    stats = result.stats[-1]
    assert stats.docs_in == len(before) == stats.kept + stats.n_rejected
    assert stats.changed > 0


def _read_pile(path: Path) -> list[Doc]:
    from tokenmill.curate.readers import PileReader

    reader = PileReader(paths=[str(path)])
    out = Outcomes(StageStats("read"))
    return [doc for shard in reader.shards() for doc in reader.read(shard, out)]


def test_line_normalization_matches_ccnet_rules():
    assert normalize_lines("  Hello\tWORLD  2024 \nOrder #12345\n\n") == ["hello world 0000", "order #00000", "", ""]
    assert normalize_lines("٣ apples") == ["0 apples"]  # every Unicode decimal digit
    hashes = line_hashes("Copyright 2019 X corp\ncopyright  2024 x CORP\nshort\n   ", min_chars=10)
    assert hashes[0] == hashes[1] != EXEMPT and hashes[2:] == [EXEMPT, EXEMPT]
    assert line_hashes("short", min_chars=0) != [EXEMPT]


def test_remove_lines_keeps_paragraph_breaks_without_gaps():
    text = "Intro\n\nNAV\n\nBody\nNAV\n\n\nEnd\n\nNAV\n"
    drop = [line == "NAV" for line in text.split("\n")]
    assert remove_lines(text, drop) == "Intro\n\nBody\n\n\nEnd"
    assert remove_lines("NAV\n\nBody", [True, False, False]) == "Body"
    assert remove_lines("a\nb", [False, False]) == "a\nb"


def test_sum_by_key_is_exact_for_large_counts():
    keys = np.array([5, 3, 5, 2**64 - 1], np.uint64)
    big = np.array([2**53, 1, 1, 7], np.int64)
    out_keys, out_big = sum_by_key(keys, big)
    assert out_keys.tolist() == [3, 5, 2**64 - 1] and out_big.tolist() == [1, 2**53 + 1, 7]


def frequent_stage(tmp_path: Path, lines: list[str], min_chars: int = 0) -> RemoveFrequentLines:
    hashes = sorted({h for line in lines for h in line_hashes(line, min_chars) if h != EXEMPT})
    write_table(str(tmp_path / "frequent/p00000.parquet"), pa.table({"hash": pa.array(hashes, pa.uint64())}))
    stage = RemoveFrequentLines(
        stage_label="dedup_lines", frequent_dir=str(tmp_path / "frequent"), analysis_id=str(tmp_path), min_chars=0
    )
    stage.setup()
    return stage


def test_bad_input_never_raises_in_the_applier(tmp_path):
    stage = frequent_stage(tmp_path, ["boilerplate", "x" * 100])
    docs = [
        Doc("empty", ""),
        Doc("blank", "\n\n \t\n"),
        Doc("huge", "word " * 2_000_000),  # one 10 MB line
        Doc("huge-boiler", "x" * 100 + "\n" + "y" * 10_000_000),
        Doc("garbage", bytes(range(256)).decode("latin-1") + "\ud800\n\x00boilerplate"),
        Doc("mixed", "Ελληνικά 中文 العربية\nBOILERPLATE"),
        Doc("only", "boilerplate\r\n\nBoilerplate"),
    ]
    out = Outcomes(StageStats("dedup_lines"))
    kept = stage.process_batch(docs, out)
    out.stats.check()
    assert out.stats.errors == {}
    assert dict(out.stats.rejected) == {"all_lines_repeated": 1}
    texts = {d.id: d.text for d in kept}
    assert texts["empty"] == "" and texts["blank"] == "\n\n \t\n"
    assert texts["huge-boiler"] == "y" * 10_000_000
    assert texts["garbage"].endswith("\ud800") and texts["mixed"] == "Ελληνικά 中文 العربية"
    assert out.stats.changed == 3


TEXTS = st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=127)))  # ASCII takes a faster path


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, min_chars=st.integers(min_value=0, max_value=12), data=st.data())
def test_line_functions_never_raise_and_stay_aligned(text, min_chars, data):
    hashes = line_hashes(text, min_chars)
    shortest = max(min_chars, 1)
    assert hashes == [
        EXEMPT if len(line) < shortest else xxhash.xxh3_64_intdigest(line.encode("utf-8", "surrogatepass")) or 1
        for line in normalize_lines(text)
    ]
    assert len(hashes) == len(text.split("\n")) == len(normalize_lines(text))
    assert hashes == line_hashes(text, min_chars)
    assert all(0 <= h < 2**64 for h in hashes)
    assert remove_lines(text, [False] * len(hashes)) == text
    drop = data.draw(st.lists(st.booleans(), min_size=len(hashes), max_size=len(hashes)))
    result = remove_lines(text, drop)
    survivors = [line for line, gone in zip(text.split("\n"), drop) if not gone and line.strip()]
    assert [line for line in result.split("\n") if line.strip()] == survivors


# --- decontamination ---------------------------------------------------------------------------------------------

SAMPLE = (
    "Which planet in our solar system has the largest number of confirmed moons orbiting it "
    "according to the most recent astronomical survey"
)
SHORT_SAMPLE = "Name the longest river flowing through ancient Egypt today"  # 9 words: one full-length gram
TOO_SHORT = "What is seven"  # fewer than min_words: ignored


def write_eval_files(tmp_path: Path) -> tuple[Path, Path]:
    jsonl = tmp_path / "evals/quiz.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    records = [{"question": {"text": SAMPLE}}, {"question": {"text": TOO_SHORT}}, {"question": {"text": 7}}]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    txt = tmp_path / "evals/lines.txt.gz"
    with gzip.open(txt, "wt", encoding="utf-8") as handle:
        handle.write(f"{SHORT_SAMPLE}\n\nAn unrelated final evaluation line about nothing in particular here\n")
    return jsonl, txt


def test_decontamination_pipeline_names_the_matching_file(tmp_path, client):
    jsonl, txt = write_eval_files(tmp_path)
    sample = SAMPLE.split()
    docs = [
        ("hit13", "Trivia night! " + " ".join(sample[3:16]).upper() + ", said the host."),
        ("hit-punct", "which-planet, in OUR solar system; has the largest number of confirmed moons... orbiting"),
        ("only12", "Quiz: " + " ".join(sample[3:15]) + " - guess."),
        ("short", "Homework: name the longest river flowing through ancient Egypt today, please."),
        ("unrelated", "Gardening tips for the spring season: water early and mulch generously."),
        ("tiny", "What is seven"),
        ("empty", ""),
    ]
    write_docs(tmp_path / "in/a.jsonl", docs[:4])
    write_docs(tmp_path / "in/b.jsonl", docs[4:])
    stage = {"decontaminate": {"eval_files": [str(jsonl), str(txt)], "text_field": "question.text"}}
    result = run(tmp_path, [stage], client=client)
    read, decon = result.stats
    assert dict(decon.rejected) == {"contaminated:quiz.jsonl": 2, "contaminated:lines.txt.gz": 1}
    assert read.rejected == {"empty_document": 1}
    assert decon.docs_in == read.kept == decon.kept + decon.n_rejected == 6
    assert sorted(r["id"] for r in rows(tmp_path / "p/curated")) == ["only12", "tiny", "unrelated"]
    reasons = {r["id"]: r["reason"] for r in rows(tmp_path / "p/rejected") if r["stage"] == "decontaminate"}
    assert reasons == {
        "hit13": "contaminated:quiz.jsonl",
        "hit-punct": "contaminated:quiz.jsonl",
        "short": "contaminated:lines.txt.gz",
    }

    assert run(tmp_path, [stage], client=client).shards_skipped == 2
    jsonl.write_text(json.dumps({"question": {"text": "Gardening tips for the spring season: water early"}}) + "\n")
    changed = run(tmp_path, [stage], client=client)  # an edited evaluation file invalidates finished shards
    assert changed.shards_skipped == 0
    assert dict(changed.stats[1].rejected) == {"contaminated:quiz.jsonl": 1, "contaminated:lines.txt.gz": 1}


def test_missing_or_unsupported_eval_file_is_a_validation_error(tmp_path):
    base = {"name": "x", "output": str(tmp_path / "out"), "stages": [{"read": {"format": "jsonl", "paths": ["."]}}]}
    missing = dict(base, stages=[*base["stages"], {"decontaminate": {"eval_files": [str(tmp_path / "nope.jsonl")]}}])
    with pytest.raises(SpecError) as err:
        parse_pipeline(yaml.safe_dump(missing))
    assert "stages[1].decontaminate" in str(err.value) and "evaluation file not found" in str(err.value)
    (tmp_path / "eval.csv").write_text("a,b\n")
    csv = dict(base, stages=[*base["stages"], {"decontaminate": {"eval_files": [str(tmp_path / "eval.csv")]}}])
    with pytest.raises(SpecError, match=r"\.jsonl/\.json/\.ndjson or \.txt"):
        parse_pipeline(yaml.safe_dump(csv))


def test_eval_file_formats_and_errors(tmp_path):
    (tmp_path / "array.json").write_text(json.dumps([{"q": "one two"}, {"q": ["three", 4, "five"]}, "stray"]))
    assert sample_texts(str(tmp_path / "array.json"), ["q"]) == ["one two", "three", "five"]
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON"):
        sample_texts(str(tmp_path / "bad.jsonl"), ["text"])
    (tmp_path / "wrong.jsonl").write_text('{"body": "no text field"}\n')
    stage = Decontaminate(eval_files=[str(tmp_path / "wrong.jsonl")])
    with pytest.raises(ValueError, match="no samples"):
        stage.setup()


def test_ngram_hashes_match_a_plain_python_reference():
    word_hashes = np.array([*(word_hash(w) for w in "abcde"), OOV, word_hash("f")], np.uint64)

    def reference(n: int) -> list[int]:
        out = []
        for i in range(len(word_hashes) - n + 1):
            window = [int(h) for h in word_hashes[i : i + n]]
            if OOV in window:
                continue
            value = 0
            for h in window:
                value = (value * 0x9E3779B97F4A7C15 + h) % 2**64
            out.append(value)
        return out

    for n in (1, 2, 3, 5, 7):
        assert ngram_hashes(word_hashes, n).tolist() == reference(n)
    assert words("Don't STOP—ｆｕｌｌwidth") == ["don", "t", "stop", "fullwidth"]


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, lowercase=st.booleans())
def test_words_are_regex_word_runs(text, lowercase):
    expected = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    assert words(text, lowercase) == re.findall(r"\w+", expected.lower() if lowercase else expected)


def decontaminator(tmp_path: Path) -> Decontaminate:
    write_eval_files(tmp_path)
    stage = Decontaminate(eval_files=[str(tmp_path / "evals/*")], text_field=["question.text"])
    stage.setup()
    return stage


def test_decontamination_bad_input_never_raises(tmp_path):
    stage = decontaminator(tmp_path)
    assert stage.eval_identity and len(stage.eval_identity) == 2
    docs = [
        Doc("empty", ""),
        Doc("huge", "planet " * 2_000_000),
        Doc("huge-hit", "x " * 1_000_000 + SAMPLE + " y" * 1_000_000),
        Doc("garbage", bytes(range(256)).decode("latin-1") + "\ud800"),
    ]
    out = Outcomes(StageStats("decontaminate"))
    kept = stage.process_batch(docs, out)
    out.stats.check()
    assert out.stats.errors == {} and dict(out.stats.rejected) == {"contaminated:quiz.jsonl": 1}
    assert [d.id for d in kept] == ["empty", "huge", "garbage"]


@pytest.fixture(scope="module")
def shared_decontaminator(tmp_path_factory) -> Decontaminate:
    return decontaminator(tmp_path_factory.mktemp("decon"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(), prefix=st.text(max_size=30))
def test_decontamination_never_raises_and_is_deterministic(shared_decontaminator, text, prefix):
    first = shared_decontaminator.reject_reason(Doc("d", text))
    assert first == shared_decontaminator.reject_reason(Doc("d", text))
    assert first in (None, "contaminated:quiz.jsonl", "contaminated:lines.txt.gz")
    embedded = shared_decontaminator.reject_reason(Doc("d", f"{prefix} {SAMPLE} {text}"))
    assert embedded == "contaminated:quiz.jsonl"


def test_eval_paths_become_absolute_for_remote_workers(tmp_path):
    write_eval_files(tmp_path)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        stage = Decontaminate(eval_files=["evals/quiz.jsonl"], text_field="question.text")
    finally:
        os.chdir(cwd)
    stage.setup()
    assert stage.reject_reason(Doc("d", SAMPLE)) == "contaminated:quiz.jsonl"
