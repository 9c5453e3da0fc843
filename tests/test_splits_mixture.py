"""Validation sets a user chooses (the positional tail split, an explicit validation source, the id-hash default,
exactly one of them), evaluation windows that never repeat, and training mixtures by source (proportions,
resume, DDP slices). Tiny hand-made data and a character tokenizer: no shared data needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from tokenmill.engine.datasets import run_dataset_stages
from tokenmill.engine.spec import parse_pipeline
from tokenmill.engine.stage import DatasetContext, ShardOutput
from tokenmill.tokenize.token_splits import TokenSplit, open_split
from tokenmill.tokenize.tokenize_stage import Tokenize
from tokenmill.tokenize.tokenizer_train import EOS
from tokenmill.tokenize.validation_split import tail_cut
from tokenmill.train.config import TrainConfig
from tokenmill.train.data import MixtureSampler, UnknownSource, WindowSampler, consecutive_windows

from pipelines import write_curated

TINY = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "block_size": 16,
    "batch_size": 4,
    "max_steps": 6,
    "warmup_steps": 2,
    "eval_interval": 3,
    "eval_batches": 2,
    "log_interval": 3,
}


def char_tokenizer(path: Path) -> str:
    """One token per printable ASCII character or newline, plus EOS: a document of n characters is n + 1 tokens."""
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab[EOS] = len(vocab)
    vocab["[UNK]"] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tokenizer.add_special_tokens([EOS])
    tokenizer.save(str(path))
    return str(path)


def tokenize(tmp_path: Path, client, shards: list[ShardOutput], **options) -> dict:
    tokenizer_json = char_tokenizer(tmp_path / "tokenizer.json")
    stage = Tokenize(tokenizer=tokenizer_json, **options)
    run_dataset_stages([stage], DatasetContext(str(tmp_path), shards, "test-data", lambda: client))
    return json.loads((tmp_path / "tokens/manifest.json").read_text())


def stream(directory: Path, split: str) -> np.ndarray:
    arrays = open_split(str(directory), split).arrays
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


def rows(directory: Path, split: str) -> list[tuple[str, int]]:
    """(id, length) of every row of a split, in order."""
    out = []
    for arrow in sorted((directory / split).glob("data-*.arrow")):
        table = pa.ipc.open_stream(pa.memory_map(str(arrow))).read_all()
        out += [(i, len(t)) for i, t in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist())]
    return out


# --- the tail split ----------------------------------------------------------------------------------------------


def test_tail_split_cuts_at_the_exact_token_boundary(tmp_path, client):
    texts = [(f"d{i}", chr(97 + i % 26) * (37 + 11 * i), "s") for i in range(12)]
    shards = [
        write_curated(tmp_path / f"curated/part-{k:05d}-0000.parquet", texts[4 * k : 4 * k + 4]) for k in range(3)
    ]
    manifest = tokenize(tmp_path, client, shards, validation={"tail_fraction": 0.25})
    tokens = tmp_path / "tokens"
    total = sum(len(t) + 1 for _, t, _ in texts)
    cut = tail_cut(total, 0.25)
    assert cut == int(total * 0.75)
    train, validation = stream(tokens, "train"), stream(tokens, "validation")
    assert (len(train), len(validation)) == (cut, total - cut)
    assert manifest["splits"]["train"]["tokens"] == cut and manifest["splits"]["validation"]["tokens"] == total - cut
    assert manifest["validation_split"] == {"tail_fraction": 0.25}
    # Train then validation is the whole stream in document order (one EOS after every document).
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    eos = tokenizer.token_to_id(EOS)
    expected = np.concatenate([[*tokenizer.encode(t, add_special_tokens=False).ids, eos] for _, t, _ in texts])
    assert np.array_equal(np.concatenate([train, validation]), expected)
    # The document across the boundary is cut in two: its head ends train, its tail starts validation.
    ends = np.cumsum([len(t) + 1 for _, t, _ in texts])
    straddling = int(np.searchsorted(ends, cut, side="right"))
    assert rows(tokens, "train")[-1][0] == rows(tokens, "validation")[0][0] == f"d{straddling}"
    # A rerun moves nothing again (every shard recorded its placement).
    before = {p: p.stat().st_mtime_ns for p in tokens.glob("*/data-*.arrow")}
    tokenize(tmp_path, client, shards, validation={"tail_fraction": 0.25})
    assert {p: p.stat().st_mtime_ns for p in tokens.glob("*/data-*.arrow")} == before
    assert np.array_equal(stream(tokens, "validation"), validation)


def test_tail_split_on_a_document_boundary_cuts_no_document(tmp_path, client):
    texts = [(f"d{i}", "x" * 9, "s") for i in range(10)]  # 10 documents of 10 tokens: 90 | 10
    manifest = tokenize(
        tmp_path, client, [write_curated(tmp_path / "c/part-0.parquet", texts)], validation={"tail_fraction": 0.1}
    )
    assert manifest["splits"]["validation"] == {
        "documents": 1,
        "tokens": 10,
        "by_source": {"s": {"documents": 1, "tokens": 10}},
    }
    assert [i for i, _ in rows(tmp_path / "tokens", "validation")] == ["d9"]


# --- an explicit validation source -------------------------------------------------------------------------------


def test_explicit_validation_source_goes_to_validation_only(tmp_path, client):
    curated = [(f"c{i}", f"curated document {i}", "web") for i in range(20)]
    shard = write_curated(tmp_path / "curated/part-00000-0000.parquet", curated)
    held = tmp_path / "held"
    held.mkdir()
    with (held / "val.jsonl").open("w") as handle:
        for i in range(3):
            handle.write(json.dumps({"text": f"held out text {i}"}) + "\n")
    source = {"format": "jsonl", "paths": [str(held / "*.jsonl")], "source": "heldout"}
    manifest = tokenize(tmp_path, client, [shard], validation=source)
    splits = manifest["splits"]
    assert splits["train"]["documents"] == 20 and set(splits["train"]["by_source"]) == {"web"}
    assert splits["validation"]["documents"] == 3 and set(splits["validation"]["by_source"]) == {"heldout"}
    assert splits["validation"]["tokens"] == sum(len(f"held out text {i}") + 1 for i in range(3))
    assert manifest["validation_split"]["source"]["format"] == "jsonl"
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    first = [*tokenizer.encode("held out text 0", add_special_tokens=False).ids, tokenizer.token_to_id(EOS)]
    assert stream(tmp_path / "tokens", "validation")[: len(first)].tolist() == first


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"validation_fraction": 0.1, "validation": {"tail_fraction": 0.1}}, "set one of validation_fraction"),
        ({"validation": {"tail_fraction": 0.1, "format": "text", "paths": ["x"]}}, "exclude each other"),
        ({"validation": {"tail_fraction": 1.5}}, "tail_fraction must be a number in (0, 1)"),
        ({"validation": {"format": "nope", "paths": ["x"]}}, "validation.format must be one of"),
        ({"validation": {"format": "jsonl"}}, "expected {tail_fraction: f} or a source"),
        ({"validation": {"format": "jsonl", "paths": ["x"], "bogus": 1}}, "validation.bogus"),
    ],
    ids=["fraction-and-tail", "tail-and-source", "tail-out-of-range", "unknown-format", "no-paths", "bad-reader-key"],
)
def test_validation_options_are_mutually_exclusive_one_line_errors(options, expected):
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Tokenize(**options)
    stage = json.dumps({"tokenize": options})
    text = f"name: t\noutput: out\nstages:\n  - read: {{format: text, paths: [x.txt]}}\n  - write: {{}}\n  - {stage}\n"
    with pytest.raises(ValueError) as caught:
        parse_pipeline(text)
    problems = [line for line in str(caught.value).splitlines() if "tokenize" in line]
    assert len(problems) == 1 and expected in problems[0]


def test_validation_fraction_alone_is_still_the_default():
    assert Tokenize().validation_fraction == 0.01 and Tokenize().validation is None
    assert Tokenize(validation={"tail_fraction": 0.1}).tail_fraction == 0.1


# --- evaluation windows ------------------------------------------------------------------------------------------


def test_eval_windows_are_consecutive_and_never_repeat():
    split = TokenSplit([np.arange(0, 100), np.arange(100, 130), np.arange(130, 300)], [np.array([0, 100])] * 3)
    batches = WindowSampler(split, 16, seed=0).consecutive(batches=3, batch_size=4)  # asks for 12 windows of 17
    windows = torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in batches])
    assert windows.shape == (12, 17)
    assert torch.equal(windows.flatten(), torch.arange(12 * 17))  # consecutive across streams, no overlap
    few = consecutive_windows(split.arrays, 16, count=100, batch_size=4)  # 300 tokens hold only 17 windows
    seen = torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in few])
    assert seen.shape == (17, 17) and len(set(seen.flatten().tolist())) == 17 * 17
    assert [len(x) for x, _ in few] == [4, 4, 4, 4, 1]


def test_training_reports_val_tokens(tmp_path, client):
    from tokenmill.train.trainer import read_metrics, train

    texts = [(f"d{i}", chr(97 + i % 26) * 60, "s") for i in range(30)]
    tokenize(tmp_path, client, [write_curated(tmp_path / "c/part-0.parquet", texts)], validation={"tail_fraction": 0.1})
    tokens = str(tmp_path / "tokens")
    validation = open_split(tokens, "validation").total  # 183 tokens: 10 windows of 17 (eval asks for 8)
    summary = train(TrainConfig(**TINY), tokens, str(tmp_path / "tokenizer.json"), str(tmp_path / "run"))
    assert summary["val_tokens"] == min(2 * 4, validation // 17) * 16
    evaluated = [r for r in read_metrics(str(tmp_path / "run/metrics.jsonl")) if "val_loss" in r]
    assert [r["val_tokens"] for r in evaluated] == [summary["val_tokens"]] * 2


# --- mixtures ----------------------------------------------------------------------------------------------------

WEIGHTS = {"pile/A": 3.0, "pile/B": 1.5, "pile/C": 0.5}  # normalised: 0.6, 0.3, 0.1
LETTER = {"pile/A": "a", "pile/B": "b", "pile/C": "c"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, client) -> SimpleNamespace:
    """Token shards of three sources (interleaved documents of letters a, b, c; A has most tokens)."""
    root = tmp_path_factory.mktemp("mixture")
    rows_ = []
    for i in range(60):
        source = ("pile/A", "pile/A", "pile/B", "pile/C")[i % 4]
        rows_.append((f"d{i}", LETTER[source] * (30 + i), source))
    shards = [write_curated(root / f"curated/part-{k:05d}-0000.parquet", rows_[30 * k : 30 * k + 30]) for k in range(2)]
    manifest = tokenize(root, client, shards, validation_fraction=0.2)
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    return SimpleNamespace(
        root=root,
        tokens=str(root / "tokens"),
        tokenizer_json=str(root / "tokenizer.json"),
        manifest=manifest,
        ids={s: tokenizer.token_to_id(c) for s, c in LETTER.items()},
        eos=tokenizer.token_to_id(EOS),
    )


def source_of(window: np.ndarray, ids: dict[str, int], eos: int) -> str:
    letters = set(window.tolist()) - {eos}
    assert len(letters) == 1, "a window mixes sources"
    return next(s for s, i in ids.items() if i in letters)


def test_mixture_proportions_follow_the_weights(mixed):
    sampler = MixtureSampler(mixed.tokens, 16, seed=5, mixture=WEIGHTS)
    drawn = np.concatenate([sampler.windows((step,), 20) for step in range(100)])  # 2000 windows
    counts = {s: 0 for s in WEIGHTS}
    for window in drawn:
        counts[source_of(window, mixed.ids, mixed.eos)] += 1
    for source, weight in WEIGHTS.items():
        assert abs(counts[source] / 2000 - weight / 5.0) <= 0.03, counts
    assert sampler.drawn(100, 20) == counts  # the replay the summary's epochs come from
    # Uniform sampling would follow the tokens instead (A holds about half of them, C a quarter).
    by_source = mixed.manifest["splits"]["train"]["by_source"]
    assert by_source["pile/C"]["tokens"] / mixed.manifest["splits"]["train"]["tokens"] > 0.2


def test_mixture_batches_are_deterministic_and_ddp_slices_make_the_global_batch(mixed):
    sampler = MixtureSampler(mixed.tokens, 16, seed=1, mixture=WEIGHTS)
    whole_x, whole_y = sampler.batch(step=7, micro=0, batch_size=8)
    again = MixtureSampler(mixed.tokens, 16, seed=1, mixture=WEIGHTS).batch(7, 0, 8)
    assert torch.equal(whole_x, again[0]) and torch.equal(whole_y, again[1])
    assert not torch.equal(whole_x, sampler.batch(8, 0, 8)[0])
    ddp = [sampler.batch(7, 0, 4, rank=r, world=2) for r in range(2)]
    accum = [sampler.batch(7, m, 4, accum=2) for m in range(2)]
    both = [sampler.batch(7, m, 2, rank=r, world=2, accum=2) for m in range(2) for r in range(2)]
    for parts in (ddp, accum, both):
        assert torch.equal(torch.cat([p[0] for p in parts]), whole_x)
        assert torch.equal(torch.cat([p[1] for p in parts]), whole_y)


def test_mixture_resume_is_exact_and_reports_epochs(mixed, tmp_path):
    from tokenmill.train.trainer import read_metrics, train

    config = TrainConfig(**TINY, mixture=WEIGHTS)
    whole = train(config, mixed.tokens, mixed.tokenizer_json, str(tmp_path / "whole"))
    train(config, mixed.tokens, mixed.tokenizer_json, str(tmp_path / "split"), stop_at=3)
    resumed = train(config, mixed.tokens, mixed.tokenizer_json, str(tmp_path / "split"))

    def plain(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(str(path / "metrics.jsonl"))]

    assert plain(tmp_path / "whole") == plain(tmp_path / "split")
    assert resumed["final_val_loss"] == whole["final_val_loss"]
    mixture = whole["mixture"]
    assert list(mixture) == list(WEIGHTS)
    assert sum(m["tokens_drawn"] for m in mixture.values()) == 6 * 4 * 16  # max_steps x batch x block
    by_source = mixed.manifest["splits"]["train"]["by_source"]
    for source, entry in mixture.items():
        assert entry["weight"] == pytest.approx(WEIGHTS[source] / 5.0)
        assert entry["tokens"] == by_source[source]["tokens"]
        assert entry["epochs"] == pytest.approx(entry["tokens_drawn"] / entry["tokens"], abs=1e-4)


@pytest.mark.parametrize(
    ("mixture", "expected"),
    [
        ({"pile/A": 1.0, "pile/B": 0}, "weight of source 'pile/B' must be a number above 0"),
        ({"pile/A": -1.0}, "weight of source 'pile/A' must be a number above 0"),
        ({"pile/A": True}, "weight of source 'pile/A' must be a number"),
        ({}, "mixture names no source"),
    ],
    ids=["zero", "negative", "boolean", "empty"],
)
def test_bad_mixture_weights_are_validation_errors(mixture, expected):
    with pytest.raises(ValidationError, match=expected) as caught:
        TrainConfig(mixture=mixture)
    assert len(caught.value.errors()) == 1


def test_unknown_mixture_source_is_one_line_naming_it(mixed, tmp_path):
    from tokenmill.train.trainer import train

    config = TrainConfig(**TINY, mixture={"pile/A": 1.0, "pile/Nope": 1.0})
    with pytest.raises(UnknownSource) as caught:
        train(config, mixed.tokens, mixed.tokenizer_json, str(tmp_path / "run"))
    message = str(caught.value)
    assert "'pile/Nope'" in message and "pile/A, pile/B, pile/C" in message and "\n" not in message
