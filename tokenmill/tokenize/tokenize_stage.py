"""`tokenize`: curated shards → a `datasets.load_from_disk`-loadable DatasetDict of token ids, one Dask task
per shard, one Arrow file per shard and split. The validation split's rules are in validation_split.py."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs
from pydantic import Field, model_validator
from tokenizers import Tokenizer

from tokenmill._version import __version__
from tokenmill.engine.fsio import atomic_write_json, exists, join, read_json, tmp_name
from tokenmill.engine.identity import file_digest, stable_id
from tokenmill.engine.registry import register
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import DatasetContext, DatasetStage, Outcomes, Shard, ShardOutput
from tokenmill.engine.stats import StageStats
from tokenmill.engine.tasks import run_tasks
from tokenmill.tokenize.corpus import is_heldout
from tokenmill.tokenize.tokenizer_train import EOS
from tokenmill.tokenize.validation_split import (
    SPLITS,
    check_options,
    source_reader,
    split_rule,
    split_tail,
    tail_fraction_of,
)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def file_versions(shard: ShardOutput) -> list[list]:
    """Each curated file's path, size and modification time: `write` reuses file names, so a shard rewritten
    with other documents must not be mistaken for the one already encoded."""
    versions = []
    for path in shard.files:
        fs, local = url_to_fs(path)
        info = fs.info(local)
        versions.append([path, info.get("size"), info.get("mtime")])
    return versions


@register("tokenize")
class Tokenize(DatasetStage):
    """Encodes every curated document (EOS appended) with the pipeline's tokenizer (or `tokenizer:` path).

    The validation split is one of three (exactly one may be set; `validation_fraction` is the default):

    - `validation_fraction`: documents go to `validation` when a hash of their id falls below it (the same
      documents `tokenizer_train` held out when the fractions match), else to `train`;
    - `validation: {tail_fraction: f}`: the last `f` of the curated stream's tokens, in document order, go to
      `validation` (nanoGPT's positional split of one text: the document across the boundary is cut in two);
    - `validation: {format: ..., paths: [...], ...}`: every curated document goes to `train` and the documents of
      this source (read with tokenmill's readers, the keys of `read:`) go to `validation`.

    Empty documents are counted and skipped. Special-token strings inside text stay text. Resumable per shard.
    """

    produces: ClassVar[str] = "tokens"
    inputs: ClassVar[tuple[str, ...]] = ("tokenizer",)
    validation_fraction: float = Field(0.01, ge=0, lt=1)
    validation: dict[str, Any] | None = Field(
        None, description="{tail_fraction: f} or a reader's keys ({format, paths, ...}) for the validation split"
    )
    tokenizer: str | None = Field(None, description="a tokenizer.json to use instead of tokenizer_train's")
    batch_docs: int = Field(512, gt=0)

    @model_validator(mode="after")
    def _one_validation(self) -> Tokenize:
        check_options(self.validation, "validation_fraction" in self.model_fields_set)
        return self

    @property
    def tail_fraction(self) -> float | None:
        return tail_fraction_of(self.validation)

    def validation_reader(self) -> Any:
        """The explicit validation source as a tokenmill reader (None without one)."""
        return source_reader(self.validation)

    def input_ids(self, ctx: DatasetContext) -> dict[str, str]:
        if self.tokenizer:
            ids = {"data": ctx.curated_id, "tokenizer": file_digest(self.tokenizer)}
        else:
            ids = super().input_ids(ctx)
        reader = self.validation_reader()
        if reader is not None:  # the validation files' paths, sizes and modification times
            ids["validation"] = stable_id([s.fingerprint for s in reader.shards()])
        return ids

    def run(self, ctx: DatasetContext) -> dict[str, Any]:
        tokenizer_json = self.tokenizer or ctx.artifact("tokenizer", "tokenize")["tokenizer_json"]
        tokenizer = Tokenizer.from_file(tokenizer_json)
        if tokenizer.token_to_id(EOS) is None:
            raise ValueError(f"tokenize: {tokenizer_json} has no {EOS!r} token to separate documents")
        directory = self.directory(ctx)
        sha = file_digest(tokenizer_json)
        dtype = token_dtype(tokenizer.get_vocab_size())
        markers = join(directory, "_manifest")
        if ctx.force and exists(markers):  # `--force` re-encodes every shard, not only the dataset's metadata
            fs, local = url_to_fs(markers)
            fs.rm(local, recursive=True)
        config = self.model_dump(mode="json")
        reader = self.validation_reader()
        tail = self.tail_fraction
        # Where the split is by id hash, documents go by id; otherwise the curated documents all go to train first.
        fraction = self.validation_fraction if self.validation is None else 0.0
        common = {"tokenizer_json": tokenizer_json, "directory": directory, "dtype_name": dtype.name}
        jobs = []
        for shard in ctx.curated:
            parts = [shard.key, file_versions(shard), sha, config, __version__]
            if tail is not None:  # a positional split depends on the whole stream: any change re-encodes all
                parts.append(ctx.curated_id)
            jobs.append(
                TokenizeShard(
                    shard=shard,
                    validation_fraction=fraction,
                    batch_docs=self.batch_docs,
                    identity=json.dumps(parts, default=str),
                    **common,
                )
            )
        if reader is not None:
            for source_shard in reader.shards():
                key = f"validation-{source_shard.key}"
                identity = json.dumps([key, source_shard.fingerprint, sha, config, __version__], default=str)
                jobs.append(
                    TokenizeShard(
                        shard=ShardOutput(key, (source_shard.path,)),
                        validation_fraction=0.0,
                        batch_docs=self.batch_docs,
                        identity=identity,
                        split="validation",
                        reader=reader,
                        reader_shard=source_shard,
                        **common,
                    )
                )
        results = run_tasks(ctx.get_client(), tokenize_shard, jobs)
        if tail is not None:
            results = split_tail(directory, results, tail)
        rule = split_rule(self.validation, self.validation_fraction)
        return write_dataset_metadata(directory, results, tokenizer, sha, dtype, ctx.curated_id, rule)


@functools.lru_cache(maxsize=1)
def worker_tokenizer(tokenizer_json: str, mtime_ns: int, size: int) -> Tokenizer:
    """One tokenizer per worker process (and version of the file), kept across shards.

    Loading a fresh one for every shard and dropping the last made encoding about 3% slower with each further
    shard a process had tokenized (measured on the mini-pile; the allocator's heap, by all signs), while one
    long-lived tokenizer keeps its first-shard speed. `tokenizers` encodes from several threads safely.
    """
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.encode_special_tokens = True  # text that spells a special token stays text
    return tokenizer


@dataclass(frozen=True, kw_only=True)
class TokenizeShard:
    """The task of one curated shard."""

    shard: ShardOutput  # a curated shard, or (with `reader`) the key and file of a validation source's shard
    tokenizer_json: str
    directory: str  # the dataset's directory
    dtype_name: str  # of the token ids
    validation_fraction: float
    batch_docs: int
    identity: str  # what the shard's manifest must record for an earlier result to be reused
    split: str | None = None  # every document to this split (else by id hash)
    reader: Any = None  # the explicit validation source's reader, reading `reader_shard`
    reader_shard: Shard | None = None


def _documents(task: TokenizeShard) -> Any:
    """(id, text, source) of each document of the task's shard."""
    if task.reader is None:
        for _, doc_id, text, source in iter_shard_columns(task.shard, ["id", "text", "source"]):
            yield doc_id, text, source
        return
    out = Outcomes(StageStats("read"))
    for doc in task.reader.read(task.reader_shard, out):
        yield doc.id, doc.text, doc.source


def tokenize_shard(task: TokenizeShard) -> dict[str, Any]:
    """One shard → `train/data-<shard>.arrow` and `validation/data-<shard>.arrow` (skipped when already done)."""
    shard, tokenizer_json, directory, identity = task.shard, task.tokenizer_json, task.directory, task.identity
    fraction, batch_docs = task.validation_fraction, task.batch_docs
    marker = join(directory, "_manifest", f"{shard.key}.json")
    if exists(marker):
        done = read_json(marker)
        if done.get("identity") == identity and all(os.path.exists(join(directory, f)) for f in done["files"].values()):
            return done
    stat = os.stat(tokenizer_json)
    tokenizer = worker_tokenizer(tokenizer_json, stat.st_mtime_ns, stat.st_size)
    # The same ids as encode_batch without computing character offsets, which token shards never use: about 20%
    # faster (tokenizers >= 0.20; older versions fall back).
    encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    eos = tokenizer.token_to_id(EOS)
    dtype = np.dtype(task.dtype_name)
    token_type = pa.from_numpy_dtype(dtype)
    schema = pa.schema([("input_ids", pa.list_(token_type)), ("id", pa.string()), ("source", pa.string())])
    files = {split: f"{split}/data-{shard.key}.arrow" for split in SPLITS}
    counts: dict[str, dict[str, list[int]]] = {split: {} for split in SPLITS}
    empty = 0
    sinks, writers, tmps = {}, {}, {}
    for split in SPLITS:
        final = join(directory, files[split])
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmps[split] = tmp_name(final)
        sinks[split] = pa.OSFile(tmps[split], "wb")
        writers[split] = pa.ipc.new_stream(sinks[split], schema)
    pending: dict[str, list[tuple[str, str, str]]] = {split: [] for split in SPLITS}

    def flush(split: str) -> None:
        rows = pending[split]
        if not rows:
            return
        encodings = encode_batch([text for _, text, _ in rows], add_special_tokens=False)
        # len(encoding), not len(encoding.ids): each `.ids` access builds a new Python list of the ids.
        lengths = np.fromiter((len(e) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.empty(int(offsets[-1]), dtype=dtype)
        for i, encoding in enumerate(encodings):
            values[offsets[i] : offsets[i + 1] - 1] = encoding.ids
        values[offsets[1:] - 1] = eos
        # With the type given, pa.array wraps the numpy buffer; without it, it scans every value (~15 ns each).
        ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=token_type))
        batch = pa.record_batch([ids, pa.array([r[0] for r in rows]), pa.array([r[2] for r in rows])], schema=schema)
        writers[split].write_batch(batch)
        for (_, _, source), n in zip(rows, lengths.tolist()):
            entry = counts[split].setdefault(source, [0, 0])
            entry[0] += 1
            entry[1] += n
        pending[split] = []

    for doc_id, text, source in _documents(task):
        if not text:
            empty += 1
            continue
        split = task.split or ("validation" if is_heldout(doc_id, fraction) else "train")
        pending[split].append((doc_id, text, source or "unknown"))
        if len(pending[split]) >= batch_docs:
            flush(split)
    for split in SPLITS:
        flush(split)
        writers[split].close()
        sinks[split].close()
        os.replace(tmps[split], join(directory, files[split]))
    result = {"shard": shard.key, "identity": identity, "files": files, "counts": counts, "empty_documents": empty}
    atomic_write_json(marker, result)
    return result


def write_dataset_metadata(
    directory: str,
    results: list[dict],
    tokenizer: Tokenizer,
    sha: str,
    dtype: np.dtype,
    data_id: str,
    rule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The files `datasets.load_from_disk` reads, plus our manifest (counts per split and source, lineage)."""
    from datasets import Features, Sequence, Value

    features = Features({"input_ids": Sequence(Value(dtype.name)), "id": Value("string"), "source": Value("string")})
    splits: dict[str, Any] = {}
    for split in SPLITS:
        data_files = [{"filename": os.path.basename(r["files"][split])} for r in results]
        state = {
            "_data_files": data_files,
            "_fingerprint": stable_id([sha, data_id, split])[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": split,
        }
        atomic_write_json(join(directory, split, "state.json"), state)
        atomic_write_json(join(directory, split, "dataset_info.json"), {"features": features.to_dict()})
        by_source: dict[str, dict[str, int]] = {}
        for r in results:
            for source, (docs, tokens) in r["counts"][split].items():
                entry = by_source.setdefault(source, {"documents": 0, "tokens": 0})
                entry["documents"] += docs
                entry["tokens"] += tokens
        splits[split] = {
            "documents": sum(e["documents"] for e in by_source.values()),
            "tokens": sum(e["tokens"] for e in by_source.values()),
            "by_source": dict(sorted(by_source.items())),
        }
    atomic_write_json(join(directory, "dataset_dict.json"), {"splits": list(SPLITS)})
    manifest = {
        "path": os.path.abspath(directory),
        "tokenizer_sha256": sha,
        "vocab_size": tokenizer.get_vocab_size(),
        "eos_id": tokenizer.token_to_id(EOS),
        "dtype": dtype.name,
        "splits": splits,
        "validation_split": rule,
        "empty_documents_skipped": sum(r["empty_documents"] for r in results),
        "data": data_id,
        "tokenmill": __version__,
    }
    atomic_write_json(join(directory, "manifest.json"), manifest)
    return {
        "path": manifest["path"],
        "dtype": dtype.name,
        "train tokens": splits["train"]["tokens"],
        "validation tokens": splits["validation"]["tokens"],
        "validation split": rule,
        "tokenizer_sha256": sha,
    }
