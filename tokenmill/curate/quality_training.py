"""Training a fastText quality classifier (DCLM / FineWeb-Edu style); the `quality` stage applies it.

`tokenmill quality train CONFIG` reads positive (reference prose) and negative (random crawl) documents with our
readers, splits them deterministically by a hash of the document id, trains a supervised fastText model in
process, and writes `model.bin` plus `report.json` (held-out precision, recall, F1).

fastText 0.9.3 training initialises only the first tenth of the input matrix when `thread < 10` and allocates
that matrix uninitialised, so the other rows start as whatever the heap held (NaN crashes, run-to-run
differences); `_zeroed_allocations` makes glibc hand out zeroed memory while training, so those rows start at
zero (see docs/filters.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import heapq
import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from tokenmill.curate.filters.quality import LABEL_PREFIX, TextPreprocess, positive_scores, prepare_text
from tokenmill.engine.config_file import SpecError, describe_error, load_yaml_mapping, read_text
from tokenmill.engine.documents import Doc
from tokenmill.engine.identity import unit_hash
from tokenmill.engine.registry import load_builtins
from tokenmill.engine.spec import instantiate_reader
from tokenmill.engine.stage import Outcomes, SourceStage
from tokenmill.engine.stats import StageStats

_M_PERTURB = -6  # glibc mallopt parameter: fill allocated memory with the complement of this byte


def binary_metrics(truth: list[bool], predicted: list[bool]) -> dict[str, float | int]:
    """Precision, recall, F1 (of the positive class) and accuracy; a ratio with a zero denominator is 0."""
    tp = sum(1 for t, p in zip(truth, predicted) if t and p)
    fp = sum(1 for t, p in zip(truth, predicted) if p and not t)
    fn = sum(1 for t, p in zip(truth, predicted) if t and not p)
    tn = len(truth) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0  # the harmonic mean of precision and recall, exactly
    accuracy = (tp + tn) / len(truth) if truth else 0.0
    return dict(precision=precision, recall=recall, f1=f1, accuracy=accuracy, tp=tp, fp=fp, tn=tn, fn=fn)


class FastTextParams(BaseModel):
    """fastText supervised hyperparameters. Defaults suit thousands to millions of documents; `lr` is higher than
    fastText's 0.1 because small training sets see few updates. Training is deterministic only with `threads: 1`
    (more threads update the shared matrices without locks, in whatever order the scheduler picks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epoch: int = Field(5, gt=0)
    lr: float = Field(0.5, gt=0)
    word_ngrams: int = Field(2, ge=1)
    dim: int = Field(64, gt=0)
    min_count: int = Field(1, ge=1)
    bucket: int = Field(200_000, gt=0, description="hash buckets for word n-grams; model size ~ bucket * dim * 4 B")
    threads: int = Field(1, ge=1)


class TrainingInput(BaseModel):
    """One reader (`read: {format: pile, paths: [...]}`) and, optionally, the `source` labels to keep from it
    (exact names or globs such as `pile/*`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    read: SourceStage
    sources: list[str] | None = Field(None, min_length=1)

    def matches(self, doc: Doc) -> bool:
        return self.sources is None or any(fnmatch.fnmatchcase(doc.source, pattern) for pattern in self.sources)


class QualityTrainConfig(BaseModel):
    """`tokenmill quality train CONFIG`: what to read for each class, how to sample and split, and fastText's
    hyperparameters. `output` (a local directory) receives `model.bin` and `report.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    output: str = Field(min_length=1)
    positive: list[TrainingInput] = Field(min_length=1)
    negative: list[TrainingInput] = Field(min_length=1)
    positive_label: str = Field(f"{LABEL_PREFIX}hq", pattern=rf"^{LABEL_PREFIX}\S+$")
    negative_label: str = Field(f"{LABEL_PREFIX}lq", pattern=rf"^{LABEL_PREFIX}\S+$")
    max_docs_per_class: int | None = Field(None, gt=0)
    seed: int = 0
    heldout_fraction: float = Field(0.1, ge=0, lt=1)
    preprocess: TextPreprocess = Field(default_factory=TextPreprocess)
    fasttext: FastTextParams = Field(default_factory=FastTextParams)

    @model_validator(mode="after")
    def _distinct_labels(self) -> QualityTrainConfig:
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")
        return self


def load_training_config(path: str | os.PathLike[str]) -> QualityTrainConfig:
    """Read and validate a training YAML; raises SpecError with one line per problem (key path and YAML line)."""
    path = os.fspath(path)
    data, root = load_yaml_mapping(read_text(path, "training config"), path, "output, positive and negative")
    load_builtins()
    problems: list[str] = []
    failed = set()  # readers already reported: pydantic's complaint about their placeholder would repeat them
    for side in ("positive", "negative"):
        entries = data.get(side)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and "read" in entry:
                readers = instantiate_reader(entry["read"], (side, i, "read"), problems, root)
                entry["read"] = readers[0] if readers else None
                if not readers:
                    failed.add((side, i, "read"))
    try:
        config = QualityTrainConfig(**data)
    except ValidationError as exc:
        errors = [err for err in exc.errors() if tuple(err["loc"][:3]) not in failed]
        problems += [describe_error(err, (), root, QualityTrainConfig) for err in errors]
    if problems:
        raise SpecError(problems, path)
    return config


class ClassSample:
    """The documents of one class: read, filtered by source, prepared, and (with `max_docs`) the `max_docs` with
    the smallest id hashes, a uniform sample that does not depend on the order of the inputs."""

    def __init__(self, config: QualityTrainConfig) -> None:
        self.counts = {"read": 0, "matched": 0, "empty": 0, "selected": 0, "train": 0, "heldout": 0}
        self.read_errors = 0
        self.messages: list[str] = []
        self._heap: list[tuple[float, str, str]] = []  # (-hash, id, text): a max-heap keeps the smallest hashes
        self._config = config

    def add(self, doc: Doc) -> None:
        self.counts["matched"] += 1
        text = prepare_text(doc.text, self._config.preprocess)
        if not text:
            self.counts["empty"] += 1
            return
        item = (-unit_hash(self._config.seed, "sample", doc.id), doc.id, text)
        if self._config.max_docs_per_class is None or len(self._heap) < self._config.max_docs_per_class:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def __len__(self) -> int:
        return len(self._heap)

    def documents(self) -> list[tuple[str, str]]:
        """(id, prepared text) pairs, sorted by id hash."""
        return [(doc_id, text) for _, doc_id, text in sorted(self._heap, reverse=True)]


def read_class(inputs: list[TrainingInput], config: QualityTrainConfig) -> ClassSample:
    sample = ClassSample(config)
    for entry in inputs:
        for shard in entry.read.shards():
            out = Outcomes(StageStats("read"))
            try:
                for doc in entry.read.read(shard, out):
                    sample.counts["read"] += 1
                    if entry.matches(doc):
                        sample.add(doc)
            except Exception as exc:  # a corrupt input file costs its remaining documents, not the training
                out.error(None, "read_failed", f"read: {shard.path}: {type(exc).__name__}: {exc}"[:500])
            sample.read_errors += out.stats.n_errors
            sample.messages += out.stats.messages[: max(0, 20 - len(sample.messages))]
    sample.counts["selected"] = len(sample)
    return sample


@contextlib.contextmanager
def _zeroed_allocations() -> Iterator[None]:
    """While training, glibc returns zero-filled memory from malloc (M_PERTURB 0xFF fills allocations with ~0xFF).

    fastText 0.9.3 allocates its input matrix with posix_memalign (uninitialised) and `uniform()` fills only
    `thread` of its ten blocks, so with `thread: 1` nine tenths of the word vectors start as heap garbage. Zeroed
    memory makes those rows start at 0 (as fastText 0.9.2's std::vector did): no NaN, identical runs. Elsewhere
    than glibc this is a no-op.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: musl and macOS have no usable mallopt
        mallopt = None
    if mallopt is None or not mallopt(_M_PERTURB, 0xFF):
        yield
        return
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)


def _fasttext_trainer() -> Any:
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise RuntimeError(
            "training needs the official `fasttext` package; the importable `fasttext` module is "
            "`fasttext-predict`, which can only predict (pip install --force-reinstall fasttext)"
        )
    return fasttext


def train_classifier(config: QualityTrainConfig) -> dict[str, Any]:
    """Read, split, train, evaluate on the held-out split, and write `model.bin` and `report.json` into
    `config.output`. Returns the report."""
    fasttext = _fasttext_trainer()
    started = time.perf_counter()
    labels = {"positive": config.positive_label, "negative": config.negative_label}
    samples = {"positive": read_class(config.positive, config), "negative": read_class(config.negative, config)}
    for name, sample in samples.items():
        if not sample.counts["selected"]:
            raise ValueError(
                f"{name}: no documents to train on (read {sample.counts['read']}, matched "
                f"{sample.counts['matched']}); check paths and sources"
            )
    train, heldout = [], []
    for name, sample in samples.items():
        for doc_id, text in sample.documents():
            held = unit_hash(config.seed, "split", doc_id) < config.heldout_fraction
            (heldout if held else train).append((unit_hash(config.seed, "order", doc_id), doc_id, name, text))
            sample.counts["heldout" if held else "train"] += 1
    train.sort()  # a deterministic shuffle: fastText's SGD would otherwise see one class, then the other
    read_seconds = time.perf_counter() - started

    os.makedirs(config.output, exist_ok=True)
    params = config.fasttext
    with tempfile.TemporaryDirectory(dir=config.output, prefix=".tmp-") as scratch:
        train_file = os.path.join(scratch, "train.txt")
        with open(train_file, "w", encoding="utf-8") as handle:
            handle.writelines(f"{labels[name]} {text}\n" for _, _, name, text in train)
        tick = time.perf_counter()
        with _zeroed_allocations():
            model = fasttext.train_supervised(
                input=train_file, epoch=params.epoch, lr=params.lr, wordNgrams=params.word_ngrams, dim=params.dim,
                minCount=params.min_count, bucket=params.bucket, thread=params.threads, seed=config.seed, verbose=0,
            )  # fmt: skip
        train_seconds = time.perf_counter() - tick
        model_tmp = os.path.join(scratch, "model.bin")
        model.save_model(model_tmp)
        model_path = os.path.join(config.output, "model.bin")
        os.replace(model_tmp, model_path)

    metrics = None
    if heldout:
        scores = positive_scores(model, [text for *_, text in heldout], config.positive_label)
        truth = [name == "positive" for _, _, name, _ in heldout]
        metrics = {"threshold": 0.5, **binary_metrics(truth, [s >= 0.5 for s in scores])}
    report = {
        "model": os.path.abspath(model_path),
        "labels": labels,
        "preprocess": config.preprocess.model_dump(),
        "fasttext": params.model_dump(),
        "seed": config.seed,
        "heldout_fraction": config.heldout_fraction,
        "max_docs_per_class": config.max_docs_per_class,
        "counts": {name: sample.counts for name, sample in samples.items()},
        "read_errors": {name: sample.read_errors for name, sample in samples.items()},
        "messages": [m for sample in samples.values() for m in sample.messages],
        "heldout": metrics,
        "vocabulary": len(model.words),
        "seconds": {"read": round(read_seconds, 3), "train": round(train_seconds, 3)},
    }
    report_tmp = os.path.join(config.output, ".tmp-report.json")
    with open(report_tmp, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    os.replace(report_tmp, os.path.join(config.output, "report.json"))
    return report
