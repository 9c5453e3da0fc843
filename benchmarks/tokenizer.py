"""Tokenizer training and token-shard writing: tokenmill against raw HF `tokenizers` and datatrove, in one run.

On the mini-pile (../shared/data/pile, ~27 MB of text in 4 shards, first written as curated Parquet shards):

- encoding the whole corpus on one core:
    raw       `Tokenizer.encode_batch` over the documents already in memory, 512 at a time (the target's
              reference), and `encode_batch_fast` (the same ids without character offsets, what tokenmill uses);
    tokenmill `tokenize_shard` on each curated shard, one after another: Parquet in, split by id hash, EOS
              appended, uint16 Arrow out (the `tokenize` stage's task, without Dask);
    datatrove `ParquetReader` → `DocumentTokenizer` over the same shards with the same tokenizer.json, EOS
              appended, no shuffling (its `.ds` token files), as one datatrove task.
- training a byte-level BPE of --vocab-size:
    direct    the same tokenizer built and trained with `tokenizers` from texts held in memory;
    tokenmill `train_tokenizer` (the `tokenizer_train` stage's function) streaming from the Parquet shards.
  Both must produce the same vocabulary; the script checks it.

Every measurement runs in a fresh process (`spawn`), the sides alternating, --repeat rounds; the fastest round
counts. A fresh process each time matters: in one process, every tokenizer loaded and dropped (or trained) left
later encoding a few percent slower, whichever side came next.

RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false and one Arrow thread pin each side to one core, so the figures
are per core. Rates are per CPU-second (robust to other work sharing the machine); wall times are printed
beside them, with the load average.

    .venv/bin/python benchmarks/tokenizer.py [--repeat N] [--vocab-size V] [--max-mb MB] [--data DIR]

Targets (issue 5): tokenmill ≥ 85% of raw encode_batch, ≥ 1x datatrove; training overhead ≤ 15%.
"""

from __future__ import annotations

import os
import sys

# Before `tokenizers` (Rust/Rayon) starts its thread pool; spawned processes inherit the environment.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import io
import json
import logging
import multiprocessing
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
MB = 1_000_000
BATCH = 512  # documents per encode_batch call, as the `tokenize` stage's default batch_docs
EOS = "<|endoftext|>"
ENCODERS = ("raw encode_batch", "raw encode_batch_fast", "tokenmill tokenize_shard", "datatrove DocumentTokenizer")


def timed(function: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, the function's value)."""
    logging.disable(logging.WARNING)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def in_fresh_process(function: Callable, *args) -> tuple[float, float, object]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def fastest(runs: dict[str, list[tuple[float, float, object]]]) -> dict[str, tuple[float, float, object]]:
    return {side: min(results, key=lambda run: run[1]) for side, results in runs.items()}


def load_curated(data: Path, workdir: Path, max_mb: float | None) -> tuple[list, int, int]:
    """The mini-pile as curated Parquet shards (BASE_SCHEMA, zstd, one per input file); documents and bytes."""
    import zstandard

    from tokenmill.engine.documents import BASE_SCHEMA
    from tokenmill.engine.stage import ShardOutput

    files = sorted((data / "pile").glob("*.jsonl.zst"))
    if not files:
        sys.exit(f"tokenize benchmark: no mini-pile shards under {data / 'pile'} (pass --data DIR)")
    shards, documents, n_bytes = [], 0, 0
    budget = (max_mb or float("inf")) * MB
    (workdir / "curated").mkdir(parents=True)
    for index, path in enumerate(files):
        rows: dict[str, list] = {"id": [], "text": [], "source": []}
        with path.open("rb") as handle:
            lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8")
            for number, line in enumerate(lines):
                if n_bytes >= budget:
                    break
                record = json.loads(line)
                rows["id"].append(f"{path.name}:{number}")
                rows["text"].append(record["text"])
                rows["source"].append(f"pile/{record['meta']['pile_set_name']}")
                n_bytes += len(record["text"].encode())
        if not rows["id"]:
            break
        table = pa.table({**rows, "url": [None] * len(rows["id"]), "meta": [None] * len(rows["id"])}, BASE_SCHEMA)
        out = workdir / "curated" / f"part-{index:05d}-0000.parquet"
        pq.write_table(table, out, compression="zstd")
        shards.append(ShardOutput(f"{index:05d}", (str(out),)))
        documents += len(rows["id"])
    return shards, documents, n_bytes


def read_texts(shards: list) -> list[str]:
    return [t for shard in shards for t in pq.read_table(shard.files[0], columns=["text"])["text"].to_pylist()]


# --------------------------------------------------------------------------------------------------------------
# Training


def train_direct(texts: list[str], vocab_size: int, directory: Path) -> str:
    """The same byte-level BPE as `tokenizer_train`'s defaults, written against `tokenizers` directly."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((texts[i : i + 1000] for i in range(0, len(texts), 1000)), trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return str(directory / "tokenizer.json")


def train_tokenmill(shards: list, vocab_size: int, directory: Path) -> str:
    from tokenmill.tokenize.tokenizer_train import TokenizerTrain, train_tokenizer

    stage = TokenizerTrain(vocab_size=vocab_size, heldout_fraction=0.0)  # train on everything, as direct does
    return train_tokenizer(stage, shards, str(directory))["tokenizer_json"]


def training_run(side: str, shards: list, vocab_size: int, directory: Path) -> tuple[float, float, str]:
    """One timed training; `direct` gets its texts in memory before the clock starts, and imports are done."""
    import pandas  # noqa: F401

    import tokenmill.tokenize.tokenizer_train  # noqa: F401

    if side == "direct":
        texts = read_texts(shards)
        return timed(lambda: train_direct(texts, vocab_size, directory))
    return timed(lambda: train_tokenmill(shards, vocab_size, directory))


# --------------------------------------------------------------------------------------------------------------
# Encoding


def encode_raw(tokenizer_json: str, texts: list[str], method: str) -> int:
    from tokenizers import Tokenizer

    encode = getattr(Tokenizer.from_file(tokenizer_json), method)
    tokens = 0
    for i in range(0, len(texts), BATCH):
        tokens += sum(len(e) for e in encode(texts[i : i + BATCH], add_special_tokens=False))
    return tokens + len(texts)  # + the EOS each document gets on the other sides


def encode_tokenmill(tokenizer_json: str, shards: list, directory: Path) -> int:
    from tokenmill.tokenize.tokenize_stage import TokenizeShard, tokenize_shard

    tokens = 0
    for shard in shards:
        task = TokenizeShard(
            shard=shard,
            tokenizer_json=tokenizer_json,
            directory=str(directory),
            dtype_name="uint16",
            validation_fraction=0.01,
            batch_docs=BATCH,
            identity="bench",
        )
        result = tokenize_shard(task)
        tokens += sum(n for split in result["counts"].values() for _, n in split.values())
    return tokens


def encode_datatrove(tokenizer_json: str, curated: Path, directory: Path) -> int:
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer
    from loguru import logger

    logger.remove()  # datatrove reports every step through loguru
    reader = ParquetReader(str(curated), glob_pattern="*.parquet", text_key="text", id_key="id")
    writer = DocumentTokenizer(
        output_folder=str(directory), tokenizer_name_or_path=tokenizer_json, eos_token=EOS, shuffle_documents=False
    )
    writer.run(reader.run(), rank=0, world_size=1)
    return sum(f.stat().st_size for f in directory.glob("*.ds")) // 2  # uint16 tokens


def encoding_run(side: str, tokenizer_json: str, shards: list, directory: Path) -> tuple[float, float, int]:
    """One side over the whole corpus; the raw sides get their texts in memory before the clock starts, and
    every side's modules are imported before it. That includes pandas, which pyarrow imports on a process's
    first `pa.array` call (~0.25 s here): a once-per-worker cost, not per-shard throughput."""
    import datatrove.pipeline.readers
    import datatrove.pipeline.tokens.tokenizer  # noqa: F401
    import pandas  # noqa: F401

    import tokenmill.tokenize.tokenize_stage  # noqa: F401

    if side.startswith("raw"):
        texts = read_texts(shards)
        return timed(lambda: encode_raw(tokenizer_json, texts, side.split()[-1]))
    if side.startswith("tokenmill"):
        return timed(lambda: encode_tokenmill(tokenizer_json, shards, directory))
    return timed(lambda: encode_datatrove(tokenizer_json, Path(shards[0].files[0]).parent, directory))


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement; the fastest counts")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-mb", type=float, help="use only this much of the mini-pile")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tokenize-bench-"))
    try:
        shards, documents, n_bytes = load_curated(args.data, workdir, args.max_mb)
        print(f"mini-pile: {documents:,} documents, {n_bytes / MB:.1f} MB of text, {len(shards)} shards")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one core per side")
        print(f"load average before: {os.getloadavg()[0]:.1f}")

        training: dict[str, list] = {"direct": [], "tokenmill": []}
        encoding: dict[str, list] = {side: [] for side in ENCODERS}
        for _ in range(args.repeat):
            for side in training:
                training[side].append(in_fresh_process(training_run, side, shards, args.vocab_size, workdir / side))
        training = fastest(training)
        tokenizer_json = training["tokenmill"][2]
        for r in range(args.repeat):
            for i, side in enumerate(ENCODERS):
                output = workdir / f"tokens-{i}-{r}"
                encoding[side].append(in_fresh_process(encoding_run, side, tokenizer_json, shards, output))
        encoding = fastest(encoding)
        print(f"load average after: {os.getloadavg()[0]:.1f}\n")

        reference = encoding["raw encode_batch"]
        print(f"| encode ({args.vocab_size:,} BPE, one core) | tokens | MB/s | tokens/s | CPU s | wall s | vs raw |")
        print("|---|---|---|---|---|---|---|")
        for side, (wall, cpu, tokens) in encoding.items():
            print(
                f"| {side} | {tokens:,} | {n_bytes / MB / cpu:.2f} | {tokens / cpu:,.0f} | {cpu:.2f} | {wall:.2f} | "
                f"{reference[1] / cpu:.2f} |"
            )
        ours = encoding["tokenmill tokenize_shard"][1]
        print(f"\ntokenmill / raw encode_batch: {reference[1] / ours:.2f} (target ≥ 0.85)")
        print(f"tokenmill / datatrove: {encoding['datatrove DocumentTokenizer'][1] / ours:.2f} (target ≥ 1.0)\n")

        (direct_wall, direct_cpu, direct_json), (ours_wall, ours_cpu, _) = training["direct"], training["tokenmill"]
        print(f"| train BPE {args.vocab_size:,} on {n_bytes / MB:.1f} MB | CPU s | wall s |")
        print("|---|---|---|")
        print(f"| tokenizers directly (texts in memory) | {direct_cpu:.2f} | {direct_wall:.2f} |")
        print(f"| tokenmill train_tokenizer (streamed from Parquet) | {ours_cpu:.2f} | {ours_wall:.2f} |")
        same = _model(direct_json) == _model(tokenizer_json)
        print(f"\ntraining overhead: {ours_cpu / direct_cpu - 1:+.1%} (target ≤ +15%); identical vocabulary: {same}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _model(tokenizer_json: str) -> dict:
    return json.loads(Path(tokenizer_json).read_text())["model"]


if __name__ == "__main__":
    main()
