"""The stage family. A stage's pydantic fields are its YAML keys; the instance is its configuration.

A pipeline is, in order: source stages (`read`), document stages fused into one task per shard, global stages
that split the pipeline into segments (deduplication), one sink (`write`), and dataset stages that consume the
curated dataset and produce artifacts (tokenizer, token shards, checkpoint, evaluation). Which family a stage
belongs to is its base class here, nothing else; `engine/plan.py` orders them into a plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from tokenmill._version import __version__
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import join
from tokenmill.engine.identity import stable_id
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

    @property
    def label(self) -> str:
        return self.stage_name


class DocumentStage(Stage):
    """Transforms documents one at a time; fused with its neighbours into one task per shard.

    Subclasses implement `process`, which may modify the document in place and returns None to keep it or a
    rejection reason. Heavy resources (models) are loaded in `setup`, once per task.
    """

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
        """Run `process` on each document; an exception costs that one document, never the task, and so does an
        unusable result: a return value that is neither None nor a reason string, or a document left with a text,
        id, source, url or meta of the wrong type (error `invalid_output:<what>`; the rejected output keeps the
        document with its original text and id)."""
        kept = []
        for doc in docs:
            out.seen(doc.nbytes)
            before, doc_id = doc.text, doc.id
            try:
                reason = self.process(doc)
            except Exception as exc:  # one bad document must not kill the shard
                out.error(doc, f"exception:{type(exc).__name__}", f"{self.label}: {doc.id}: {exc!r}"[:500])
                continue
            if not (
                isinstance(doc.text, str)
                and isinstance(doc.id, str)
                and (reason is None or (isinstance(reason, str) and reason))
                and isinstance(doc.source, str)
                and (doc.url is None or isinstance(doc.url, str))
                and isinstance(doc.meta, dict)
            ):  # the writer could not store it: this document's error, not the shard's
                if reason is not None and not (isinstance(reason, str) and reason):
                    what, why = "return", f"returned {reason!r:.80} ({type(reason).__name__}); return None to keep "
                    why += "the document or a non-empty reason string to reject it"
                else:
                    what = next(
                        name
                        for name, ok in (
                            ("text", isinstance(doc.text, str)),
                            ("id", isinstance(doc.id, str)),
                            ("source", isinstance(doc.source, str)),
                            ("url", doc.url is None or isinstance(doc.url, str)),
                            ("meta", isinstance(doc.meta, dict)),
                        )
                        if not ok
                    )
                    why = f"set {what} to {type(getattr(doc, what)).__name__}, not " + (
                        "dict" if what == "meta" else "str or None" if what == "url" else "str"
                    )
                if not isinstance(doc.text, str):
                    doc.text = before
                if not isinstance(doc.id, str):
                    doc.id = doc_id
                if not isinstance(doc.source, str):
                    doc.source = ""
                if doc.url is not None and not isinstance(doc.url, str):
                    doc.url = None
                if not isinstance(doc.meta, dict):
                    doc.meta = {}
                out.error(doc, f"invalid_output:{what}", f"{self.label}: {doc.id}: {why}"[:500])
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

    def analyze(self, client: Any, shards: list[ShardOutput], work_dir: str) -> dict[str, Any]:
        raise NotImplementedError

    def applier(self, work_dir: str, analysis_id: str) -> DocumentStage:
        raise NotImplementedError

    def columns(self) -> dict[str, pa.DataType]:
        """Annotation columns that applying this stage's decisions adds (its applier's, which holds no state)."""
        return self.applier("", "").columns()


class SourceStage(Stage):
    """The `read` stage: lists input shards on the driver and streams each shard's documents on a worker."""

    def shards(self) -> list[Shard]:
        raise NotImplementedError

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        """Yield kept documents; report every record (`out.seen`) and every rejection or error on `out`."""
        raise NotImplementedError


class SinkStage(Stage):
    """Where a segment's surviving documents go (`write`): one writer per shard, committed atomically.

    `path` overrides the default output directory (`<output>/curated`); `rejected` asks for the rejected
    documents too, with their stage and reason.
    """

    path: str | None = None
    rejected: bool = False

    def open_writer(self, directory: str, shard_key: str, schema: pa.Schema) -> ShardSink:
        raise NotImplementedError


class ShardSink:
    """What a sink returns per shard: `write` batches, then `commit` (returns the final files) or `abort`."""

    def write(self, docs: list[Doc], reasons: list[tuple[str, str]] | None = None) -> None:
        raise NotImplementedError

    def commit(self) -> list[str]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


@dataclass
class DatasetContext:
    """What a dataset stage can use: the curated shards, earlier artifacts, the run's output and a Dask client."""

    output: str
    curated: list[ShardOutput]
    curated_id: str
    get_client: Callable[[], Any]
    force: bool = False
    progress: bool = False
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"path", "id", ...}

    def artifact(self, name: str, needed_by: str) -> dict[str, Any]:
        if name not in self.artifacts:
            raise ValueError(f"{needed_by} needs a {name}: put the stage that makes it earlier in the pipeline")
        return self.artifacts[name]


class DatasetStage(Stage):
    """A stage after `write` that turns the curated dataset (or earlier artifacts) into an artifact.

    `produces` names the artifact; `inputs` lists the artifacts it consumes. `run` makes the artifact under
    `directory(ctx)` and returns {"path": ..., **summary for the report}; `engine/datasets.py` skips it when
    its `done.json` holds the same artifact id.
    """

    produces: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()

    def directory(self, ctx: DatasetContext) -> str:
        return join(ctx.output, self.produces or self.stage_name)

    def input_ids(self, ctx: DatasetContext) -> dict[str, str]:
        ids = {"data": ctx.curated_id}
        ids.update({name: ctx.artifact(name, self.stage_name)["id"] for name in self.inputs})
        return ids

    def artifact_id(self, ctx: DatasetContext) -> str:
        """Changes with the stage's configuration, its inputs' ids and the tokenmill version."""
        return stable_id([type(self).__qualname__, self.model_dump(mode="json"), self.input_ids(ctx), __version__])

    def run(self, ctx: DatasetContext) -> dict[str, Any]:
        raise NotImplementedError
