"""Stage base classes. A stage's pydantic fields are its YAML keys; the instance is its configuration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from tokenmill.engine.documents import Doc
from tokenmill.engine.stats import StageStats


@dataclass
class Outcomes:
    """Where a stage reports what happened to each document of a batch.

    `rejected` collects (document, reason) pairs for the opt-in rejected-documents output; it is None when that
    output is off, so rejected text is not held in memory for nothing.
    """

    stats: StageStats
    rejected: list[tuple[Doc, str]] | None = None

    def seen(self, nbytes: int) -> None:
        self.stats.docs_in += 1
        self.stats.bytes_in += nbytes

    def keep(self, doc: Doc) -> None:
        self.stats.kept += 1
        self.stats.bytes_kept += doc.nbytes

    def reject(self, doc: Doc, reason: str, message: str | None = None) -> None:
        self.stats.reject(reason)
        if message is not None:
            self.stats.note(message)
        if self.rejected is not None:
            self.rejected.append((doc, reason))

    def error(self, doc: Doc | None, reason: str, message: str) -> None:
        self.stats.error(reason, message)
        if self.rejected is not None and doc is not None:
            self.rejected.append((doc, f"error:{reason}"))


class Stage(BaseModel):
    """Base of every stage: strict pydantic config (unknown keys are errors), picklable to Dask workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage_name: ClassVar[str] = ""
    kind: ClassVar[str] = "document"

    @property
    def label(self) -> str:
        return self.stage_name


class DocumentStage(Stage):
    """Transforms documents one at a time; fused with its neighbours into one task per shard.

    Subclasses implement `process`, which may modify the document in place and returns None to keep it or a
    rejection reason. Heavy resources (models) are loaded in `setup`, once per task.
    """

    kind: ClassVar[str] = "document"

    def columns(self) -> dict[str, pa.DataType]:
        """Annotation columns this stage adds to the output, with their Arrow types."""
        return {}

    def setup(self) -> None:
        """Load resources once per task, on the worker."""

    def start_shard(self, shard: Shard) -> None:
        """Called on the worker before a shard's first batch (stages that apply per-shard decisions use it)."""

    def process(self, doc: Doc) -> str | None:
        raise NotImplementedError

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        """Run `process` on each document; an exception costs that one document, never the task."""
        kept = []
        for doc in docs:
            out.seen(doc.nbytes)
            before = doc.text
            try:
                reason = self.process(doc)
            except Exception as exc:  # one bad document must not kill the shard
                out.error(doc, f"exception:{type(exc).__name__}", f"{self.label}: {doc.id}: {exc!r}"[:500])
                continue
            if reason is not None:
                out.reject(doc, reason)
                continue
            if doc.text is not before and doc.text != before:
                out.stats.changed += 1
            out.keep(doc)
            kept.append(doc)
        return kept


class DocumentFilter(DocumentStage):
    """A stage that only decides: `reject_reason` returns None to keep the document or a named reason."""

    def reject_reason(self, doc: Doc) -> str | None:
        raise NotImplementedError

    def process(self, doc: Doc) -> str | None:
        return self.reject_reason(doc)


@dataclass(frozen=True)
class Shard:
    """One unit of input: a file (or a dataset's Arrow file) processed by one task."""

    index: int
    path: str
    name: str
    size: int
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.index:05d}"


@dataclass(frozen=True)
class ShardOutput:
    """A finished shard of a segment: its key and the Parquet files holding its documents, in order."""

    key: str
    files: tuple[str, ...]


class GlobalStage(Stage):
    """A stage that must see the whole dataset (deduplication): it splits the pipeline into segments.

    The segment before it is materialised as Parquet shards; `analyze` runs Dask tasks over those shards and
    writes its decisions under `work_dir` (never gathering documents on the driver); `applier` returns the
    document stage that applies those decisions, fused at the head of the next segment. `analyze` returns a
    small summary (counts) for the report.
    """

    kind: ClassVar[str] = "global"

    def analyze(self, client: Any, shards: list[ShardOutput], work_dir: str) -> dict[str, Any]:
        raise NotImplementedError

    def applier(self, work_dir: str, analysis_id: str) -> DocumentStage:
        raise NotImplementedError


class SourceStage(Stage):
    """The `read` stage: lists input shards on the driver and streams each shard's documents on a worker."""

    kind: ClassVar[str] = "source"

    def shards(self) -> list[Shard]:
        raise NotImplementedError

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        """Yield kept documents; report every record (`out.seen`) and every rejection or error on `out`."""
        raise NotImplementedError
