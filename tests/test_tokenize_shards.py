"""`tokenize`: the DatasetDict on disk, its deterministic split, manifest, resume and lineage; the zero-copy
reader; and bad input (empty documents, special-token strings in text, odd code points, wrong tokenizers)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

import tokenmill
from tokenmill._version import __version__
from tokenmill.engine.datasets import run_dataset_stages
from tokenmill.engine.stage import DatasetContext, ShardOutput
from tokenmill.tokenize.corpus import is_heldout, stream_texts
from tokenmill.tokenize.token_splits import TokenizerMismatch, check_tokenizer, open_split
from tokenmill.tokenize.tokenize_stage import Tokenize, TokenizeShard, token_dtype, tokenize_shard
from tokenmill.tokenize.tokenizer_train import EOS, PAD
from tokenmill.tokenize.vocab import UNK

from pipelines import write_curated

FRACTION = 0.1
ODD = (
    "lone \ud800 surrogate, \ufffd replacement, nonchar \uffff, max \U0010ffff, e\u0301 combining, "
    "\u202eRTL\u202c, \U0001f469\u200d\U0001f467 zwj, \u4e2d\u6587, \u0627\u0644\u0639\u0631\u0628\u064a\u0629"
)
LITERAL = "The string <|endoftext|> appears inside this text, and <|pad|> too: neither is a control token."


def write_pile_slice(path: Path, source: Path, n: int, max_chars: int = 6000) -> None:
    import zstandard

    with source.open("rb") as handle, path.open("w") as out:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8")
        for line in itertools.islice(lines, n):
            record = json.loads(line)
            record["text"] = record["text"][:max_chars]
            out.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory, client) -> SimpleNamespace:
    """read pile → normalize → write → tokenizer_train → tokenize, on a mini-pile slice plus odd documents."""
    work = tmp_path_factory.mktemp("tokenize")
    inputs = work / "in"
    inputs.mkdir()
    for shard in range(2):
        write_pile_slice(inputs / f"slice-{shard}.jsonl", shared_file(f"pile/mini-pile-000{shard}.jsonl.zst"), 100)
    with (inputs / "odd.jsonl").open("w") as handle:  # json.dumps escapes the lone surrogate as \ud800
        for text in (LITERAL, ODD):
            handle.write(json.dumps({"text": text, "meta": {"pile_set_name": "Odd"}}) + "\n")
    spec = {
        "name": "tokenize-test",
        "output": str(work / "out"),
        "stages": [
            {"read": {"format": "pile", "paths": [str(inputs / "*.jsonl")]}},
            {"normalize": {}},
            {"write": {}},
            {"tokenizer_train": {"vocab_size": 1024, "heldout_fraction": FRACTION}},
            {"tokenize": {"validation_fraction": FRACTION}},
        ],
    }
    (work / "p.yaml").write_text(yaml.safe_dump(spec))
    result = tokenmill.run(work / "p.yaml", client=client)
    out = work / "out"
    curated = [ShardOutput(f"{i:05d}", (f,)) for i, f in enumerate(result.files)]
    table = pa.concat_tables(pq.read_table(f, columns=["id", "text", "source"]) for f in result.files)
    tokenizer_json = result.artifacts["tokenizer_train"]["tokenizer_json"]
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.encode_special_tokens = True
    return SimpleNamespace(
        spec=work / "p.yaml",
        out=out,
        tokens=out / "tokens",
        result=result,
        curated=curated,
        texts=dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist())),
        tokenizer_json=tokenizer_json,
        tokenizer=tokenizer,
        manifest=json.loads((out / "tokens/manifest.json").read_text()),
        client=client,
    )


def context(
    output: Path, curated: list[ShardOutput], client, data_id: str = "test-data", force: bool = False
) -> DatasetContext:
    return DatasetContext(str(output), curated, data_id, lambda: client, force=force)


def test_dataset_dict_loads_with_eos_after_every_document(run):
    import datasets

    dataset = datasets.load_from_disk(str(run.tokens))
    assert set(dataset) == {"train", "validation"}
    assert dataset["train"].features["input_ids"].feature.dtype == "uint16"
    eos = run.tokenizer.token_to_id(EOS)
    assert run.manifest["eos_id"] == eos
    for split in ("train", "validation"):
        assert dataset[split].num_rows == run.manifest["splits"][split]["documents"]
        for row in dataset[split]:
            ids = row["input_ids"]
            assert ids[-1] == eos and ids.count(eos) == 1  # only the appended separator, never text
            assert ids[:-1] == run.tokenizer.encode(run.texts[row["id"]], add_special_tokens=False).ids
            assert run.tokenizer.decode(ids[:-1]) == unicodedata.normalize("NFC", run.texts[row["id"]])
    literal_id, odd_id = "odd.jsonl:1", "odd.jsonl:2"
    assert run.texts[literal_id] == LITERAL
    assert "\ufffd surrogate" in run.texts[odd_id] and "\U0010ffff" in run.texts[odd_id]  # U+D800 became U+FFFD
    rows = {r["id"]: r["input_ids"] for split in dataset.values() for r in split if r["source"] == "pile/Odd"}
    assert set(rows) == {literal_id, odd_id} and rows[literal_id].count(eos) == 1


def test_split_is_by_doc_id_hash_and_matches_the_tokenizers_heldout(run):
    import datasets

    dataset = datasets.load_from_disk(str(run.tokens))
    validation, train = dataset["validation"]["id"], dataset["train"]["id"]
    assert set(validation) == {i for i in run.texts if is_heldout(i, FRACTION)}
    assert set(train) == {i for i in run.texts if not is_heldout(i, FRACTION)}
    # The tokenizer trained on exactly the train split's documents, in the same order.
    streamed = [t for batch in stream_texts(run.curated, heldout_fraction=FRACTION) for t in batch]
    assert streamed == [run.texts[i] for i in train]
    assert run.result.artifacts["tokenizer_train"]["training_documents"] == len(train)
    evaluation = (run.out / "tokenizer/evaluation.md").read_text()
    assert f"| all | {len(validation)} |" in evaluation  # the report measured the validation documents

    again = run.out.parent / "again"  # the same split and the same bytes when run again from scratch
    run_dataset_stages(
        [Tokenize(validation_fraction=FRACTION, tokenizer=run.tokenizer_json)], context(again, run.curated, run.client)
    )
    for split in ("train", "validation"):
        for original in sorted((run.tokens / split).glob("*.arrow")):
            assert (again / "tokens" / split / original.name).read_bytes() == original.read_bytes()


def test_manifest_counts_hash_and_version(run):
    manifest = run.manifest
    assert manifest["tokenizer_sha256"] == hashlib.sha256(Path(run.tokenizer_json).read_bytes()).hexdigest()
    assert manifest["tokenizer_sha256"] == run.result.artifacts["tokenizer_train"]["sha256"]
    assert manifest["tokenmill"] == __version__ and manifest["dtype"] == "uint16" and manifest["vocab_size"] == 1024
    assert manifest["empty_documents_skipped"] == 0
    documents = 0
    for split in ("train", "validation"):
        entry = manifest["splits"][split]
        assert entry["tokens"] == sum(s["tokens"] for s in entry["by_source"].values())
        assert entry["documents"] == sum(s["documents"] for s in entry["by_source"].values())
        documents += entry["documents"]
        opened = open_split(str(run.tokens), split)
        assert opened.total == entry["tokens"] and opened.documents == entry["documents"]
    assert documents == len(run.texts)
    assert "pile/MovieReviews" in manifest["splits"]["train"]["by_source"]
    summary = run.result.artifacts["tokenize"]
    assert summary["train tokens"] == manifest["splits"]["train"]["tokens"]


def test_lineage_links_data_tokenizer_and_tokens(run):
    lineage = json.loads((run.out / "lineage.json").read_text())
    tokenizer, tokens = lineage["stages"]
    assert (tokenizer["produces"], tokens["produces"]) == ("tokenizer", "tokens")
    assert tokenizer["inputs"] == {"data": lineage["data"]}
    assert tokens["inputs"] == {"data": lineage["data"], "tokenizer": tokenizer["id"]}
    assert json.loads((run.tokens / "done.json").read_text())["id"] == tokens["id"]
    assert run.manifest["data"] == lineage["data"]


def test_reader_returns_zero_copy_views_of_the_memory_map(run):
    split = open_split(str(run.tokens), "train")
    ranges = []
    for mapped in split.maps:
        mapped.seek(0)
        ranges.append(mapped.read_buffer(mapped.size()))  # zero-copy: the mapped file's own memory
    eos = run.manifest["eos_id"]
    for array, bounds in zip(split.arrays, split.boundaries):
        assert array.dtype == np.uint16 and array.ndim == 1 and not array.flags.owndata
        owner = [b for b in ranges if b.address <= array.ctypes.data < b.address + b.size]
        assert len(owner) == 1 and array.ctypes.data + array.nbytes <= owner[0].address + owner[0].size
        assert np.shares_memory(array, np.frombuffer(owner[0], dtype=np.uint8))
        assert bounds[0] == 0 and bounds[-1] == len(array)
        assert (array[bounds[1:] - 1] == eos).all() and (array == eos).sum() == len(bounds) - 1
    import datasets

    first = datasets.load_from_disk(str(run.tokens))["train"][0]["input_ids"]
    assert split.arrays[0][: split.boundaries[0][1]].tolist() == first


def test_token_dtype_and_a_vocabulary_over_65536(tmp_path, client):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    vocab = {EOS: 0, PAD: 1, UNK: 2, **{f"w{i}": i + 3 for i in range(70_000)}}
    big = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    big.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big.save(str(tmp_path / "big.json"))
    shard = write_curated(tmp_path / "curated/big.parquet", [(f"d{i}", f"w{i} w69996 nope", "s") for i in range(40)])
    run_dataset_stages(
        [Tokenize(tokenizer=str(tmp_path / "big.json"), validation_fraction=0.3)], context(tmp_path, [shard], client)
    )
    manifest = json.loads((tmp_path / "tokens/manifest.json").read_text())
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] == 70_003
    documents = 0
    for split in ("train", "validation"):
        opened = open_split(str(tmp_path / "tokens"), split)
        for array, bounds in zip(opened.arrays, opened.boundaries):
            assert array.dtype == np.uint32
            docs = np.split(array, bounds[1:-1])
            documents += len(docs)
            assert all(d[1:].tolist() == [69_999, 2, 0] for d in docs)  # ids above 65535 survive intact
    assert documents == 40


def shard_task(shard, tokenizer_json, directory, fraction, batch_docs, identity) -> TokenizeShard:
    return TokenizeShard(
        shard=shard,
        tokenizer_json=tokenizer_json,
        directory=str(directory),
        dtype_name="uint16",
        validation_fraction=fraction,
        batch_docs=batch_docs,
        identity=identity,
    )


def test_empty_documents_special_strings_and_odd_code_points(run, tmp_path):
    rows = [("e1", "", "s"), ("a", LITERAL, "s"), ("e2", "", "t"), ("b", ODD.replace("\ud800", "\ufffd"), "t")]
    rows += [("c", " \n\t ", "s"), ("d", "\u0000\u0001\u007f", "s"), ("e3", "", "s")]
    shard = write_curated(tmp_path / "curated/bad.parquet", rows)
    result = tokenize_shard(shard_task(shard, run.tokenizer_json, tmp_path / "tokens", 0.0, 2, "x"))
    assert result["empty_documents"] == 3
    assert {source: docs for source, (docs, _) in result["counts"]["train"].items()} == {"s": 3, "t": 1}
    table = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "tokens" / result["files"]["train"]))).read_all()
    eos = run.manifest["eos_id"]
    decoded = {}
    for doc_id, ids in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist()):
        assert ids[-1] == eos and ids.count(eos) == 1
        decoded[doc_id] = run.tokenizer.decode(ids[:-1])
    assert list(decoded) == ["a", "b", "c", "d"]
    assert decoded["a"] == LITERAL
    assert decoded["b"] == unicodedata.normalize("NFC", ODD.replace("\ud800", "\ufffd"))
    assert decoded["c"] == " \n\t " and decoded["d"] == "\u0000\u0001\u007f"
    run_dataset_stages([Tokenize(tokenizer=run.tokenizer_json)], context(tmp_path / "stage", [shard], run.client))
    manifest = json.loads((tmp_path / "stage/tokens/manifest.json").read_text())
    assert manifest["empty_documents_skipped"] == 3
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["validation"]["documents"] == 4


def test_a_rewritten_curated_shard_or_force_encodes_again(run, tmp_path):
    """`write` reuses file names: a shard rewritten with other text must not pass for the one already encoded."""
    path = tmp_path / "curated/part-00000-0000.parquet"
    shard = write_curated(path, [("a", "the first version", "s")])
    stage = Tokenize(tokenizer=run.tokenizer_json, validation_fraction=0)
    run_dataset_stages([stage], context(tmp_path, [shard], run.client, "data-v1"))
    write_curated(path, [("a", "the second version, which is longer", "s")])
    run_dataset_stages([stage], context(tmp_path, [shard], run.client, "data-v2"))
    tokens = open_split(str(tmp_path / "tokens"), "train").arrays[0]
    assert run.tokenizer.decode(tokens[:-1].tolist()) == "the second version, which is longer"
    written = (tmp_path / "tokens/train/data-part-00000-0000.arrow").stat().st_mtime_ns
    run_dataset_stages([stage], context(tmp_path, [shard], run.client, "data-v2", force=True))  # `--force`
    assert (tmp_path / "tokens/train/data-part-00000-0000.arrow").stat().st_mtime_ns != written


@pytest.fixture(scope="module")
def example_dirs(tmp_path_factory):
    """A fresh directory per hypothesis example (function-scoped tmp_path would be shared by all of them)."""
    root = tmp_path_factory.mktemp("property")
    return (root / str(i) for i in itertools.count())


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=5))
def test_any_unicode_text_tokenizes_and_round_trips(run, example_dirs, texts):
    """Any valid Unicode (Arrow strings cannot hold lone surrogates: `write` turns them into U+FFFD)."""
    directory = next(example_dirs)
    shard = write_curated(directory / "c.parquet", [(f"x{i}", t, "s") for i, t in enumerate(texts)])
    result = tokenize_shard(shard_task(shard, run.tokenizer_json, directory / "tokens", 0.5, 3, "p"))
    assert result["empty_documents"] == texts.count("")
    eos = run.manifest["eos_id"]
    seen = {}
    for split in ("train", "validation"):
        table = pa.ipc.open_stream(pa.memory_map(str(directory / "tokens" / result["files"][split]))).read_all()
        for doc_id, ids in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist()):
            assert ids[-1] == eos and ids.count(eos) == 1
            assert (split == "validation") == is_heldout(doc_id, 0.5)
            seen[doc_id] = run.tokenizer.decode(ids[:-1])
    assert seen == {f"x{i}": unicodedata.normalize("NFC", t) for i, t in enumerate(texts) if t}


def test_a_different_tokenizer_is_a_mismatch(run, tmp_path):
    assert check_tokenizer(str(run.tokens), run.tokenizer_json)["vocab_size"] == 1024
    other = tmp_path / "other.json"
    other.write_text(Path(run.tokenizer_json).read_text().replace('"<|pad|>"', '"<|padding|>"'))
    with pytest.raises(TokenizerMismatch, match="is not the tokenizer these shards were made with"):
        check_tokenizer(str(run.tokens), str(other))
    no_eos = Tokenizer(models.WordLevel({"a": 0, UNK: 1}, unk_token=UNK))
    no_eos.save(str(tmp_path / "no_eos.json"))
    shard = write_curated(tmp_path / "curated/x.parquet", [("a", "a", "s")])
    with pytest.raises(ValueError, match="has no '<\\|endoftext\\|>' token"):
        run_dataset_stages([Tokenize(tokenizer=str(tmp_path / "no_eos.json"))], context(tmp_path, [shard], run.client))


def test_resume_skips_finished_shards(run):
    """Re-running `tokenize` reuses every shard's marker and leaves its files untouched; a lost file is redone."""

    def mtimes() -> dict[str, int]:
        return {str(p.relative_to(run.tokens)): p.stat().st_mtime_ns for p in run.tokens.rglob("*") if p.is_file()}

    before = mtimes()
    os.remove(run.tokens / "done.json")  # the stage itself runs again ...
    again = tokenmill.run(run.spec, client=run.client)
    after = mtimes()
    shard_files = [k for k in before if k.endswith(".arrow") or k.startswith("_manifest")]
    assert len(shard_files) == 3 * len(run.curated)
    assert all(after[k] == before[k] for k in shard_files)  # ... but every shard was skipped
    assert again.artifacts["tokenize"] == run.result.artifacts["tokenize"]

    lost = sorted((run.tokens / "validation").glob("*.arrow"))[0]
    os.remove(lost)
    os.remove(run.tokens / "done.json")
    tokenmill.run(run.spec, client=run.client)
    redone = mtimes()
    key = lost.name.removeprefix("data-").removesuffix(".arrow")
    changed = {k for k in shard_files if redone[k] != before[k]}
    assert changed == {f"train/data-{key}.arrow", f"validation/data-{key}.arrow", f"_manifest/{key}.json"}
    assert json.loads((run.tokens / "manifest.json").read_text()) == run.manifest
