"""`tokenizer_train` and `tokenmill tokenizer train`: byte-level BPE and its options, char / word-level / Unigram,
streaming with a byte budget and per-source weights, the saved files, and the evaluation report."""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
import weakref
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from conftest import shared_file
from pydantic import ValidationError
from tokenizers import Tokenizer, pre_tokenizers

import tokenmill
import tokenmill.tokenize.tokenizer_train as trainer_module
from tokenmill.engine.documents import BASE_SCHEMA
from tokenmill.engine.spec import SpecError, load_pipeline
from tokenmill.engine.stage import ShardOutput
from tokenmill.tokenize.corpus import is_heldout, stream_texts
from tokenmill.tokenize.tokenizer_train import EOS, PAD, TokenizerTrain, train_tokenizer
from tokenmill.tokenize.vocab import UNK, build


def write_curated(directory: Path, docs: list[tuple[str, str, str]], n_shards: int) -> list[ShardOutput]:
    """(id, text, source) rows as curated Parquet shards, the way `write` lays them out."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(n_shards):
        rows = docs[s::n_shards]
        table = pa.table(
            {
                "id": [r[0] for r in rows],
                "text": [r[1] for r in rows],
                "source": [r[2] for r in rows],
                "url": [None] * len(rows),
                "meta": [None] * len(rows),
            },
            schema=BASE_SCHEMA,
        )
        path = directory / f"part-{s:05d}-0000.parquet"
        pq.write_table(table, path)
        shards.append(ShardOutput(f"{s:05d}", (str(path),)))
    return shards


def pile_docs(n: int, max_chars: int = 6000, shard: int = 0) -> list[tuple[str, str, str]]:
    """The first `n` documents of a mini-pile shard, each cut to `max_chars` to keep the tests quick."""
    import zstandard

    path = shared_file(f"pile/mini-pile-000{shard}.jsonl.zst")
    docs = []
    with path.open("rb") as handle:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8")
        for index, line in zip(range(n), lines):
            record = json.loads(line)
            docs.append((f"{path.name}:{index}", record["text"][:max_chars], f"pile/{record['meta']['pile_set_name']}"))
    return docs


@pytest.fixture(scope="module")
def pile_shards(tmp_path_factory) -> list[ShardOutput]:
    """About 1 MB of real mini-pile text in 3 curated shards."""
    return write_curated(tmp_path_factory.mktemp("curated"), pile_docs(240), 3)


@pytest.fixture(scope="module")
def bpe(pile_shards, tmp_path_factory) -> tuple[dict, Path]:
    """A 1,024-token byte-level BPE with a user-defined special token, 10% of documents held out."""
    stage = TokenizerTrain(vocab_size=1024, special_tokens=[EOS, PAD, "<|user|>"], heldout_fraction=0.1)
    directory = tmp_path_factory.mktemp("bpe")
    return train_tokenizer(stage, pile_shards, str(directory)), directory


def texts_of(shards: list[ShardOutput], heldout: bool, fraction: float) -> list[tuple[str, str, str]]:
    rows = []
    for shard in shards:
        table = pq.read_table(shard.files[0])
        for doc_id, text, source in zip(*(table.column(c).to_pylist() for c in ("id", "text", "source"))):
            if is_heldout(doc_id, fraction) == heldout:
                rows.append((doc_id, text, source))
    return rows


def test_bpe_trains_saves_and_round_trips_real_text(bpe, pile_shards):
    summary, directory = bpe
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    spec = json.loads((directory / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and spec["normalizer"]["type"] == "NFC"
    assert tokenizer.get_vocab_size() == summary["vocab_size"] == 1024
    assert [tokenizer.token_to_id(t) for t in (EOS, PAD, "<|user|>")] == [0, 1, 2]
    assert summary["sha256"] == hashlib.sha256((directory / "tokenizer.json").read_bytes()).hexdigest()
    # Byte-level: all 256 bytes are in the vocabulary, so nothing is ever unknown.
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(tokenizer.get_vocab())

    trained_on = texts_of(pile_shards, heldout=False, fraction=0.1)
    assert summary["training_documents"] == len(trained_on)
    assert summary["training_bytes"] == sum(len(t.encode()) for _, t, _ in trained_on)

    heldout = texts_of(pile_shards, heldout=True, fraction=0.1)
    assert heldout, "the slice should hold some held-out documents"
    for _, text, _ in [*heldout, ("odd", "naïve café — 日本語 😀 \x00\t\r\n  x", "")]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_transformers_loads_the_directory_with_eos_and_pad(bpe, pile_shards):
    from transformers import PreTrainedTokenizerFast

    _, directory = bpe
    hf = PreTrainedTokenizerFast.from_pretrained(str(directory))
    assert (hf.eos_token, hf.eos_token_id) == (EOS, 0)
    assert (hf.pad_token, hf.pad_token_id) == (PAD, 1)
    assert hf.model_max_length == 2048
    text = unicodedata.normalize("NFC", texts_of(pile_shards, heldout=True, fraction=0.1)[0][1])
    assert hf.decode(hf.encode(text)) == text
    padded = hf(["a b", "a b c d e f"], padding=True)["input_ids"]
    assert padded[0][-1] == 1 and len(padded[0]) == len(padded[1])


def test_pre_tokenizer_gpt2_gpt4_digits_and_nfc():
    def pieces(pre_tokenizer: str, split_digits: bool) -> list[str]:
        tokenizer, _ = build("bpe", pre_tokenizer, split_digits, "NFC", [EOS])
        return [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str("In 20245 we'LL go")]

    assert pieces("gpt2", False) == ["In", "Ġ20245", "Ġwe", "'", "LL", "Ġgo"]  # GPT-2: case-sensitive 'll
    assert pieces("gpt4", False) == ["In", "Ġ", "202", "45", "Ġwe", "'LL", "Ġgo"]  # 1-3 digits, any case
    assert pieces("gpt2", True) == ["In", "Ġ", "2", "0", "2", "4", "5", "Ġwe", "'", "LL", "Ġgo"]
    tokenizer, _ = build("bpe", "gpt2", False, "NFC", [EOS])
    assert tokenizer.normalizer.normalize_str("cafe\u0301") == "caf\u00e9"
    tokenizer, _ = build("bpe", "gpt2", False, None, [EOS])
    assert tokenizer.normalizer is None


def test_split_digits_and_gpt4_persist_in_the_trained_tokenizer(pile_shards, tmp_path):
    stage = TokenizerTrain(vocab_size=600, pre_tokenizer="gpt4", split_digits=True, max_bytes=400_000)
    train_tokenizer(stage, pile_shards, str(tmp_path))
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    # No token ever holds two digits when digits are split before merging.
    assert not [t for t in tokenizer.get_vocab() if sum(c.isdigit() for c in t) > 1]
    assert tokenizer.encode("1945 and 2006").tokens[:4] == ["1", "9", "4", "5"]


def test_training_streams_bounded_batches(pile_shards, tmp_path, monkeypatch):
    """The trainer pulls texts from an iterator: only a couple of batches are alive at any time."""
    batches = list(stream_texts(pile_shards, batch=16))
    assert all(len(b) <= 16 for b in batches) and sum(map(len, batches)) == 240

    class Batch(list):  # a list that can be weakly referenced
        pass

    real, alive, peak = trainer_module.stream_texts, [], [0]

    def spy(*args, **kwargs):
        for batch in real(*args, **{**kwargs, "batch": 8}):
            batch = Batch(batch)
            alive.append(weakref.ref(batch))
            peak[0] = max(peak[0], sum(r() is not None for r in alive))
            yield batch
            del batch

    monkeypatch.setattr(trainer_module, "stream_texts", spy)
    train_tokenizer(TokenizerTrain(vocab_size=300, heldout_fraction=0), pile_shards, str(tmp_path))
    assert len(alive) == 30 and peak[0] <= 3


def test_max_bytes_stops_training_early(pile_shards, tmp_path):
    summary = train_tokenizer(TokenizerTrain(vocab_size=300, max_bytes=100_000), pile_shards, str(tmp_path))
    assert 0 < summary["training_bytes"] <= 100_000
    assert summary["training_documents"] < len(texts_of(pile_shards, heldout=False, fraction=0.01))


def test_source_weight_zero_keeps_a_source_out_of_the_vocabulary(tmp_path):
    prose = [(f"p{i}", f"the cat sat on the mat number {i} and the dog ran far away", "prose") for i in range(200)]
    spam = [(f"s{i}", "qqxqqx qqxqqx qqxqqx buy qqxqqx now", "spam") for i in range(200)]
    shards = write_curated(tmp_path / "curated", prose + spam, 2)

    def vocab(weights: dict[str, float]) -> tuple[dict, set[str]]:
        summary = train_tokenizer(TokenizerTrain(vocab_size=320, source_weights=weights), shards, str(tmp_path / "t"))
        return summary, set(Tokenizer.from_file(summary["tokenizer_json"]).get_vocab())

    both, with_spam = vocab({})
    assert "Ġqqxqqx" in with_spam
    none, without_spam = vocab({"spam": 0.0})
    assert not [t for t in without_spam if "qx" in t or "qq" in t]
    half, _ = vocab({"spam": 0.5})
    kept_prose = none["training_documents"]
    assert 0.35 * (both["training_documents"] - kept_prose) < half["training_documents"] - kept_prose
    assert half["training_documents"] - kept_prose < 0.65 * (both["training_documents"] - kept_prose)
    with pytest.raises(ValidationError, match="between 0 and 1"):
        TokenizerTrain(source_weights={"spam": 1.5})


def test_wordlevel_has_unk_pad_and_a_frequency_cutoff(pile_shards, tmp_path):
    stage = TokenizerTrain(model="wordlevel", vocab_size=100_000, min_frequency=3, heldout_fraction=0)
    summary = train_tokenizer(stage, pile_shards, str(tmp_path))
    tokenizer = Tokenizer.from_file(summary["tokenizer_json"])
    assert [tokenizer.token_to_id(t) for t in (EOS, PAD, UNK)] == [0, 1, 2]
    counts: Counter[str] = Counter()
    for batch in stream_texts(pile_shards, heldout_fraction=0):
        for text in batch:
            counts.update(w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(unicodedata.normalize("NFC", text)))
    words = set(tokenizer.get_vocab()) - {EOS, PAD, UNK}
    assert words == {w for w, n in counts.items() if n >= 3}  # exactly the words seen at least 3 times
    assert tokenizer.encode("the qqxqqzz").tokens == ["the", UNK]


def test_char_level_on_tinyshakespeare_through_the_pipeline(tmp_path, client):
    """nanoGPT's character-level setup: read the text in chunks, one token per character, lossless."""
    path = shared_file("text/tinyshakespeare.txt")
    spec = {
        "name": "chars",
        "output": str(tmp_path / "run"),
        "stages": [
            {"read": {"format": "text", "paths": [str(path)], "split": "chunks", "chunk_bytes": 16384}},
            {"write": {}},
            {"tokenizer_train": {"model": "char", "vocab_size": 200, "min_frequency": 0, "heldout_fraction": 0.1}},
        ],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    result = tokenmill.run(tmp_path / "p.yaml", client=client)
    summary = result.artifacts["tokenizer_train"]
    shards = [ShardOutput(f"{i:05d}", (f,)) for i, f in enumerate(result.files)]
    trained = [t for batch in stream_texts(shards, heldout_fraction=0.1) for t in batch]
    heldout = [t for batch in stream_texts(shards, heldout_fraction=0.1, heldout=True) for t in batch]
    assert sum(map(len, trained + heldout)) == len(path.read_text())  # the chunks cover the whole text
    alphabet = set("".join(trained))
    assert summary["vocab_size"] == len(alphabet) + 3  # every character trained on + EOS, PAD, UNK
    tokenizer = Tokenizer.from_file(summary["tokenizer_json"])
    encoding = tokenizer.encode(trained[0])
    assert len(encoding.ids) == len(trained[0]) and UNK not in encoding.tokens
    assert tokenizer.decode(encoding.ids) == trained[0]
    assert tokenizer.encode("Zebra ☃").tokens[-1] == UNK
    unseen = sum(c not in alphabet for t in heldout for c in t) / sum(map(len, heldout))
    assert summary["evaluation"]["bytes/token"] == 1.0
    assert summary["evaluation"]["unknown rate"] == round(unseen, 5)
    lineage = json.loads((tmp_path / "run/lineage.json").read_text())
    assert [s["produces"] for s in lineage["stages"]] == ["tokenizer"]
    done = json.loads((tmp_path / "run/tokenizer/done.json").read_text())
    assert done["id"] == lineage["stages"][0]["id"] and done["inputs"] == {"data": lineage["data"]}


def test_unigram_trains_and_explains_a_too_small_vocabulary(tmp_path):
    english = [
        (f"d{i}", f"the quick brown fox {i} jumps over the lazy dog, again and again.", "en") for i in range(300)
    ]
    shards = write_curated(tmp_path / "curated", english, 1)
    summary = train_tokenizer(TokenizerTrain(model="unigram", vocab_size=120), shards, str(tmp_path / "uni"))
    tokenizer = Tokenizer.from_file(summary["tokenizer_json"])
    assert json.loads(Path(summary["tokenizer_json"]).read_text())["model"]["type"] == "Unigram"
    assert [tokenizer.token_to_id(t) for t in (EOS, PAD, UNK)] == [0, 1, 2]
    sentence = "the lazy fox jumps over the quick dog"
    assert tokenizer.decode(tokenizer.encode(sentence).ids) == sentence
    with pytest.raises(ValueError, match="distinct characters"):
        train_tokenizer(TokenizerTrain(model="unigram", vocab_size=10), shards, str(tmp_path / "small"))


def test_vocab_below_the_alphabet_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match=r"at least 258 \(256 bytes \+ 2 special tokens\)"):
        TokenizerTrain(vocab_size=200)
    with pytest.raises(ValidationError, match=r"at least 3 \(2 special tokens \+ <unk>\)"):
        TokenizerTrain(model="wordlevel", vocab_size=2)
    with pytest.raises(ValidationError, match="must include the document separator"):
        TokenizerTrain(special_tokens=[PAD])
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "x"}\n')
    spec = {
        "name": "v",
        "output": str(tmp_path / "o"),
        "stages": [{"read": {"format": "jsonl", "paths": [str(data)]}}, {"write": {}}, {"tokenizer_train": {}}],
    }
    spec["stages"][2]["tokenizer_train"]["vocab_size"] = 100
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as info:
        load_pipeline(tmp_path / "p.yaml")
    assert "tokenizer_train" in str(info.value) and "at least 258" in str(info.value)


def test_evaluation_report_on_heldout_text(bpe, pile_shards, tmp_path):
    from tokenmill.tokenize.evaluate import evaluate_tokenizer, gpt2_reference

    summary, directory = bpe
    report = evaluate_tokenizer(summary["tokenizer_json"], pile_shards, str(directory), 0.1)
    assert 2.0 < report["bytes/token"] < 6.0 and 1.0 < report["tokens/word"] < 4.0
    assert report["unknown rate"] == 0.0 and 0.3 < report["vocabulary utilisation"] <= 1.0
    markdown = (directory / "evaluation.md").read_text()
    heldout_sources = {source for _, _, source in texts_of(pile_shards, heldout=True, fraction=0.1)}
    rows = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert [r[0][2:] for r in rows] == [*sorted(heldout_sources), "all"]
    assert int(rows[-1][1]) == len(texts_of(pile_shards, heldout=True, fraction=0.1))
    assert "Vocabulary utilisation on held-out text" in markdown
    assert (directory / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    reference, reason = gpt2_reference()
    if reference is None:
        assert report["gpt2 bytes/token"] == f"skipped: {reason}"
        assert f"GPT-2 comparison skipped: {reason}" in markdown
    else:
        assert isinstance(report["gpt2 bytes/token"], float)

    words = train_tokenizer(TokenizerTrain(model="wordlevel", vocab_size=500), pile_shards, str(tmp_path))
    unknown = evaluate_tokenizer(words["tokenizer_json"], pile_shards, str(tmp_path), 0.01)["unknown rate"]
    assert 0.01 < unknown < 0.5  # a 500-word vocabulary misses part of held-out text, and says how much


def test_cli_trains_and_reports(pile_shards, tmp_path):
    from tokenmill.cli import main

    data = Path(pile_shards[0].files[0]).parent
    config = tmp_path / "tok.yaml"
    config.write_text(yaml.safe_dump({"vocab_size": 8192, "heldout_fraction": 0.1, "special_tokens": [EOS, "<|x|>"]}))
    output = tmp_path / "tok"
    args = ["tokenizer", "train", str(data), "--output", str(output), "--config", str(config), "--vocab-size", "400"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["vocab_size"] == 400 and summary["evaluation"]["unknown rate"] == 0.0
    assert summary["training_documents"] == len(texts_of(pile_shards, heldout=False, fraction=0.1))
    assert Tokenizer.from_file(str(output / "tokenizer.json")).token_to_id("<|x|>") == 1
    assert (output / "evaluation.md").exists() and (output / "tokenizer_config.json").exists()

    bad = CliRunner().invoke(main, ["tokenizer", "train", str(data), "--output", str(output), "--vocab-size", "99"])
    assert bad.exit_code == 1 and "at least 258" in bad.output
