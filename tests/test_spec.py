"""Pipeline YAML validation: every problem is one line with its key path and YAML line, before any work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tokenmill.curate.normalize import Normalize
from tokenmill.curate.readers import PileReader
from tokenmill.curate.writers import Write
from tokenmill.engine.spec import Pipeline, SpecError, load_pipeline, parse_pipeline


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_pipeline(textwrap.dedent(text))
    return info.value.problems


GOOD = """
name: ok
output: runs/ok
stages:
  - read: {format: jsonl, paths: ["x/*.jsonl"]}
  - normalize: {unicode: NFKC}
  - write: {format: jsonl}
"""


def test_valid_pipeline_builds_stage_objects():
    pipeline = parse_pipeline(GOOD)
    assert [s.label for s in pipeline.stages] == ["read", "normalize", "write"]
    assert pipeline.stages[1].unicode == "NFKC"
    assert pipeline.cluster.n_workers == 2


def test_bad_enum_names_key_path_line_and_choices():
    lines = problems(
        """
        name: x
        output: out
        stages:
          - read: {format: jsonl, paths: [a]}
          - normalize:
              unicode: NFD
        """
    )
    assert lines == ["stages[1].normalize.unicode (line 7): must be one of NFC, NFKC (got 'NFD')"]


def test_unknown_stage_lists_known_ones_and_suggests():
    (line,) = problems("name: x\noutput: o\nstages:\n  - read: {format: jsonl, paths: [a]}\n  - normalise: {}\n")
    assert line.startswith("stages[1] (line 5): unknown stage 'normalise' (did you mean 'normalize'?)")
    known = line.split("; known: ")[1].split(", ")
    assert {"custom", "normalize", "read", "write", "dedup_exact"} <= set(known) and known == sorted(known)


def test_unknown_key_and_wrong_type_and_missing_key_reported_together():
    lines = problems(
        """
        name: x
        output: o
        stages:
          - read: {format: pile}
          - normalize: {lowercase: maybe, colapse_whitespace: false}
        """
    )
    assert "stages[0].read.paths (line 5): required key is missing" in lines
    assert any(
        line.startswith("stages[1].normalize.lowercase (line 6): input should be a valid boolean") for line in lines
    )
    unknown = [line for line in lines if "colapse_whitespace" in line]
    assert unknown and "did you mean 'collapse_whitespace'?" in unknown[0]
    assert len(lines) == 3


def test_unknown_reader_format_and_top_level_key():
    lines = problems("name: x\noutput: o\nstages:\n  - read: {format: csv, paths: [a]}\n")
    formats = "hf, jsonl, parquet, pile, text, warc, wet"
    assert lines == [f"stages[0].read.format (line 4): must be one of {formats} (got 'csv')"]
    lines = problems("name: x\noutput: o\nclustr: {}\nstages:\n  - read: {format: pile, paths: [a]}\n")
    assert lines[0].startswith("clustr (line 3): unknown key (did you mean 'cluster'?)")


def test_structure_rules():
    lines = problems("name: x\noutput: o\nstages:\n  - normalize: {}\n")
    assert any("starts with a `read` stage" in line for line in lines)
    lines = problems(
        "name: x\noutput: o\nstages:\n  - read: {format: pile, paths: [a]}\n  - write: {}\n  - normalize: {}\n"
    )
    assert any("after `write` only dataset stages" in line for line in lines)


def test_cluster_keys_validated():
    lines = problems("name: x\noutput: o\ncluster: {n_workers: 0}\nstages:\n  - read: {format: pile, paths: [a]}\n")
    assert lines == ["cluster.n_workers (line 3): input should be greater than 0 (got 0)"]


def test_yaml_syntax_error_has_line():
    (line,) = problems("name: x\nstages: [\n  - read: {format: pile\n")
    assert line.startswith("line ") and "invalid YAML" in line


def test_only_safe_yaml():
    text = "name: !!python/object/apply:os.system ['echo pwned']\noutput: o\nstages: []\n"
    (line,) = problems(text)
    assert "invalid YAML" in line


def test_custom_stage_bad_import_path():
    (line,) = problems(
        "name: x\noutput: o\nstages:\n  - read: {format: pile, paths: [a]}\n  - custom: {callable: nope.mod:F}\n"
    )
    assert line.startswith("stages[1].custom.callable (line 5): value error, cannot import module 'nope.mod'")


def test_pipeline_in_code():
    pipeline = Pipeline(name="p", output="o", stages=[PileReader(paths="a/*.zst"), Normalize(), Write()])
    assert pipeline.plan.sources[0].paths == ["a/*.zst"]
    assert pipeline.plan.segments[0].stages[0].unicode == "NFC"
    with pytest.raises(ValueError, match="starts with a `read` stage"):
        Pipeline(name="p", output="o", stages=[Normalize()])


def test_missing_file():
    with pytest.raises(SpecError, match="cannot read pipeline file"):
        load_pipeline("does/not/exist.yaml")


def test_cli_validate_prints_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput: o\nstages:\n  - read: {format: pile, paths: [a]}\n  - normalize: {unicode: NFD}\n")
    proc = subprocess.run([sys.executable, "-m", "tokenmill", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "stages[1].normalize.unicode (line 5): must be one of NFC, NFKC (got 'NFD')" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(GOOD))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.jsonl").write_text('{"text": "hi"}\n')  # validate expands the input globs
    proc = subprocess.run(
        [sys.executable, "-m", "tokenmill", "validate", str(good)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stderr
