"""datatrove filters and formatters as tokenmill stages: same decisions as datatrove itself on mini-pile documents,
text changes counted, per-document errors, metadata round trip, validation messages, and a real pipeline run."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from datatrove.pipeline.filters.base_filter import BaseFilter
from hypothesis import given
from hypothesis import strategies as st

import tokenmill
from tokenmill.curate.datatrove_steps import DatatroveStep, jsonable, reason_name
from tokenmill.curate.readers import PileReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.spec import SpecError, parse_pipeline
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

from pipelines import pipeline_yaml


class ExplodingFilter(BaseFilter):
    """Raises on documents containing EXPLODE, keeps the rest (loaded by import path, like a user's filter)."""

    def filter(self, doc):
        if "EXPLODE" in doc.text:
            raise RuntimeError("boom")
        return True


class TaggingFilter(BaseFilter):
    """Adds metadata the way datatrove's model-based filters do (NumPy scalars) and records what it saw."""

    def filter(self, doc):
        doc.metadata["score"] = np.float32(0.25)
        doc.metadata["seen"] = [doc.metadata.get("url"), doc.metadata.get("source")]
        return True


@pytest.fixture(scope="module")
def pile_texts(pile_dir) -> list[tuple[str, str, str]]:
    """100 real mini-pile documents under 3 kB, taken in turn from each source of the first shard (spaCy word
    tokenization makes larger ones slow): (id, source, text)."""
    reader = PileReader(paths=[str(pile_dir / "mini-pile-0000.jsonl.zst")])
    (shard,) = reader.shards()
    by_source: dict[str, list[Doc]] = {}
    for doc in reader.read(shard, Outcomes(StageStats("read"))):
        if len(doc.text) < 3000:
            by_source.setdefault(doc.source, []).append(doc)
    mixed = [doc for group in itertools.zip_longest(*by_source.values()) for doc in group if doc is not None]
    return [(d.id, d.source, d.text) for d in mixed[:100]]


def fresh(texts: list[tuple[str, str, str]]) -> list[Doc]:
    return [Doc(id=i, source=source, text=text) for i, source, text in texts]


def run_stage(stage: DatatroveStep, docs: list[Doc]) -> tuple[list[Doc], Outcomes]:
    stage.setup()
    out = Outcomes(StageStats(stage.label), [])
    kept = stage.process_batch(docs, out)
    out.stats.check()
    return kept, out


def decisions(kept: list[Doc], out: Outcomes) -> dict[str, str | None]:
    return {**{d.id: None for d in kept}, **{d.id: reason for d, reason in out.rejected}}


# --- Same decisions as datatrove -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "args", "n_docs"),
    [
        ("GopherQualityFilter", {}, 100),
        ("datatrove.pipeline.filters.GopherQualityFilter", {"min_doc_words": 120, "min_stop_words": 4}, 30),
    ],
)
def test_gopher_filter_decides_like_datatrove(pile_texts, step, args, n_docs) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    pile_texts = pile_texts[:n_docs]
    direct = GopherQualityFilter(**args)
    expected = {}
    for doc_id, _, text in pile_texts:
        result = direct.filter(Document(text=text, id=doc_id))
        keep, reason = result if isinstance(result, tuple) else (result, None)
        expected[doc_id] = None if keep else f"datatrove:GopherQualityFilter:{reason}"

    kept, out = run_stage(DatatroveStep(step=step, args=args), fresh(pile_texts))
    assert decisions(kept, out) == expected  # 100% agreement, reasons included
    assert out.stats.kept and out.stats.n_rejected and out.stats.changed == 0
    assert out.stats.stage == "datatrove:GopherQualityFilter"


# --- Formatters ------------------------------------------------------------------------------------------------------


def test_formatter_changes_text_and_counts_changed() -> None:
    docs = [
        Doc(id="a", text="write to jane.doe@example.net or call 8.8.8.8 today"),
        Doc(id="b", text="nothing personal here"),
    ]
    kept, out = run_stage(DatatroveStep(step="PIIFormatter"), docs)
    assert [d.id for d in kept] == ["a", "b"] and out.stats.changed == 1
    assert "jane.doe@example.net" not in kept[0].text and "8.8.8.8" not in kept[0].text
    assert kept[1].text == "nothing personal here"


def test_formatter_that_empties_a_document_rejects_it() -> None:
    docs = [Doc(id="symbols", text="!!!\n???\n..."), Doc(id="mixed", text="a line\n***\nanother line")]
    kept, out = run_stage(DatatroveStep(step="SymbolLinesFormatter"), docs)
    assert [d.text for d in kept] == ["a line\nanother line"]
    assert out.stats.rejected == {"datatrove:SymbolLinesFormatter:empty_after_format": 1}


# --- Errors and metadata ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4])
def test_an_exception_costs_only_its_document(batch_size: int) -> None:
    docs = [Doc(id=str(i), text="EXPLODE" if i == 5 else f"fine {i}") for i in range(10)]
    stage = DatatroveStep(step="test_datatrove_steps:ExplodingFilter", args={"batch_size": batch_size})
    kept, out = run_stage(stage, docs)
    assert len(kept) == 9 and out.stats.errors == {"exception:RuntimeError": 1}
    assert out.stats.messages == ["datatrove:ExplodingFilter: 5: RuntimeError('boom')"]


def test_metadata_round_trip() -> None:
    doc = Doc(id="d", text="some text", source="pile/Brown", url="https://example.org/x", meta={"genre": "news"})
    (kept,), _ = run_stage(DatatroveStep(step="test_datatrove_steps:TaggingFilter"), [doc])
    assert kept.meta == {"genre": "news", "score": 0.25, "seen": ["https://example.org/x", "pile/Brown"]}
    assert (kept.url, kept.source) == ("https://example.org/x", "pile/Brown")
    json.dumps(kept.meta)


def test_jsonable_and_reason_names() -> None:
    value = {"a": np.int64(3), "b": (np.float32(0.5), {1: np.array([1, 2])}), "c": object}
    assert jsonable(value) == {"a": 3, "b": [0.5, {"1": [1, 2]}], "c": str(object)}
    assert reason_name("C4ParagraphFilter", "< 3 paragraphs") == "datatrove:C4ParagraphFilter:lt_3_paragraphs"
    assert reason_name("URLFilter", None) == reason_name("URLFilter", "!!") == "datatrove:URLFilter"


@given(reason=st.one_of(st.none(), st.text(), st.integers()))
def test_reason_names_are_snake_case_keys(reason) -> None:
    assert re.fullmatch(r"datatrove:Step(:[a-z0-9_]{1,64})?", reason_name("Step", reason))


# --- Validation ------------------------------------------------------------------------------------------------------


def problems_for(stage_yaml: str) -> list[str]:
    text = f"name: t\noutput: out\nstages:\n  - read: {{format: jsonl, paths: [x]}}\n  - {stage_yaml}\n"
    with pytest.raises(SpecError) as caught:
        parse_pipeline(text)
    return caught.value.problems


def test_unknown_step_lists_the_available_ones() -> None:
    (problem,) = problems_for("datatrove: {step: GopherQualityFiltr}")
    assert problem.startswith("stages[1].datatrove.step (line 5): value error, unknown datatrove step")
    assert "'GopherQualityFiltr'; available: C4BadWordsFilter," in problem
    assert "GopherQualityFilter" in problem and "PIIFormatter" in problem


def test_bad_arguments_and_non_steps_are_one_line_each() -> None:
    (problem,) = problems_for("datatrove: {step: GopherQualityFilter, args: {min_words: 5}}")
    assert "args for GopherQualityFilter: got an unexpected keyword argument 'min_words'" in problem
    (problem,) = problems_for("datatrove: {step: datatrove.pipeline.readers.JsonlReader}")
    assert "'datatrove.pipeline.readers.JsonlReader' is not a datatrove filter or formatter" in problem
    (problem,) = problems_for("datatrove: {step: GopherQualityFilter, args: {exclusion_writer: x}}")
    assert "exclusion_writer: not supported" in problem


# --- In a pipeline ---------------------------------------------------------------------------------------------------


def test_datatrove_steps_in_a_pipeline(tmp_path, pile_texts, client) -> None:
    (tmp_path / "in").mkdir()
    with (tmp_path / "in/docs.jsonl").open("w") as handle:
        for doc_id, source, text in pile_texts[:30]:
            handle.write(json.dumps({"id": doc_id, "text": text, "source": source}) + "\n")
    stages = [
        {"datatrove": {"step": "GopherQualityFilter"}},
        {"datatrove": {"step": "PIIFormatter"}},
    ]
    spec = pipeline_yaml(tmp_path / "p.yaml", str(tmp_path / "in/*.jsonl"), tmp_path / "out", stages=stages)
    result = tokenmill.run(spec, client=client)
    assert result.ok
    read, gopher, pii = result.stats
    assert (gopher.stage, pii.stage) == ("datatrove:GopherQualityFilter", "datatrove:PIIFormatter")
    assert gopher.docs_in == read.kept == 30 and gopher.n_rejected > 0 and pii.docs_in == gopher.kept
    assert all(reason.startswith("datatrove:GopherQualityFilter:gopher_") for reason in gopher.rejected)
    stats = json.loads((tmp_path / "out/stats/run.json").read_text())
    assert [s["stage"] for s in stats["stages"]] == ["read", "datatrove:GopherQualityFilter", "datatrove:PIIFormatter"]
    rejected = pq.read_table(next((tmp_path / "out/rejected").glob("*.parquet"))).to_pydict()
    assert set(rejected["stage"]) == {"datatrove:GopherQualityFilter"}
    assert len(rejected["id"]) == gopher.n_rejected
