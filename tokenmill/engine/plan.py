"""The plan: a validated pipeline ordered into what runs where, built once and never changed.

Sources feed segment 0. Each global stage ends a segment: the segment's output is materialised under
`<output>/_work/NN-before-<stage>/`, the stage analyses it (`_work/NN-<stage>/`), and the next segment starts
by applying its decisions to those shards. The last segment writes with the sink; dataset stages follow.
A `ShardTask` is the payload of one fused task: one shard through a segment's document stages into its sink.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from tokenmill.engine.fsio import join
from tokenmill.engine.identity import file_digest
from tokenmill.engine.manifest import fingerprint
from tokenmill.engine.shard_writer import FileSink
from tokenmill.engine.stage import (
    DatasetStage,
    DocumentStage,
    GlobalStage,
    Shard,
    SinkStage,
    SourceStage,
    Stage,
)

# Intermediate segments keep one file per shard, so the next segment's shards match the previous ones.
_INTERMEDIATE_MB = 1e9


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs for one shard (small: configuration, not data)."""

    shard: Shard
    source: SourceStage
    stages: tuple[DocumentStage, ...]
    sink: SinkStage
    output_dir: str
    rejected_dir: str
    manifest_dir: str
    fingerprint: str
    batch_docs: int
    batch_bytes: int
    columns: tuple[tuple[str, pa.DataType], ...] = ()  # every annotation column of the pipeline, sorted


@dataclass(frozen=True)
class SegmentPlan:
    """One segment: its own document stages, the global stage ending it (None for the last), where it writes."""

    index: int
    stages: tuple[DocumentStage, ...]
    global_stage: GlobalStage | None
    sink: SinkStage
    output_dir: str
    rejected_dir: str
    manifest_dir: str
    work_dir: str | None  # where the global stage's analysis writes its decisions

    @property
    def label(self) -> str:
        return "shards" if self.index == 0 else f"segment {self.index} shards"


@dataclass(frozen=True)
class Plan:
    """A pipeline in execution order; `tasks` lists a segment's shard tasks (on the driver: globs are expanded)."""

    name: str
    output: str
    sources: tuple[SourceStage, ...]
    segments: tuple[SegmentPlan, ...]
    sink: SinkStage
    dataset_stages: tuple[DatasetStage, ...]
    batch_docs: int
    batch_bytes: int
    # Every annotation column any stage declares: every segment's output and every rejected file carries all of
    # them (null until the stage that fills them has run), so no column is lost at a segment boundary and every
    # file of a run has one schema.
    columns: tuple[tuple[str, pa.DataType], ...] = ()
    verify: str = "metadata"  # or "content": input files are also identified by an xxh3 of their bytes

    @property
    def curated_dir(self) -> str:
        return self.segments[-1].output_dir

    def tasks(
        self, segment: SegmentPlan, sources: list[SourceStage], prefix: list[DocumentStage] | None = None
    ) -> list[ShardTask]:
        """One task per shard of `sources` through `prefix` (a previous global stage's applier) and the segment's
        stages; raises InputNotFound for a missing input."""
        stages = (*(prefix or ()), *segment.stages)
        batch = (self.batch_docs, self.batch_bytes)
        tasks = []
        for source in sources:
            by_content = self.verify == "content" and source in self.sources  # the user's inputs, not a segment's
            for shard in source.shards():
                identity = shard.fingerprint
                if by_content:
                    identity = f"{identity} xxh3:{file_digest(shard.path, 'xxh3')}"
                shard = Shard(len(tasks), shard.path, shard.name, shard.size, identity)
                tasks.append(
                    ShardTask(
                        shard=shard,
                        source=source,
                        stages=stages,
                        sink=segment.sink,
                        output_dir=segment.output_dir,
                        rejected_dir=segment.rejected_dir,
                        manifest_dir=segment.manifest_dir,
                        fingerprint=fingerprint(shard, [source, *stages, segment.sink], batch, self.columns),
                        batch_docs=batch[0],
                        batch_bytes=batch[1],
                        columns=self.columns,
                    )
                )
        return tasks

    def first_tasks(self) -> list[ShardTask]:
        """The tasks of the first segment (all of the curation when there is no global stage)."""
        return self.tasks(self.segments[0], list(self.sources))


def structure_problems(stages: list[Stage]) -> list[str]:
    """Order rules: sources first, then document and global stages, at most one sink, dataset stages last."""
    problems = []
    if not stages or not isinstance(stages[0], SourceStage):
        problems.append("stages[0]: a pipeline starts with a `read` stage")
    misplaced = next(
        (
            i
            for i, s in enumerate(stages)
            if i and isinstance(s, SourceStage) and not isinstance(stages[i - 1], SourceStage)
        ),
        None,
    )
    if misplaced is not None:  # the first `read` that comes after another kind of stage
        problems.append(f"stages[{misplaced}]: `read` stages must come first")
    tail = False
    for i, stage in enumerate(stages):
        if isinstance(stage, SinkStage) and any(not isinstance(s, DatasetStage) for s in stages[i + 1 :]):
            problems.append(
                f"stages[{i}]: after `write` only dataset stages (tokenizer, tokenize, train, ...) may follow"
            )
        if isinstance(stage, DatasetStage):
            tail = True
        elif tail:
            problems.append(f"stages[{i}]: document and dedup stages must come before `write` and dataset stages")
    return problems


def build_plan(
    name: str, output: str, stages: list[Stage], batch_docs: int, batch_bytes: int, verify: str = "metadata"
) -> Plan:
    """Order validated stages (see `structure_problems`) into a plan."""
    sinks = [s for s in stages if isinstance(s, SinkStage)]
    final_sink = sinks[0] if sinks else FileSink()
    groups: list[tuple[list[DocumentStage], GlobalStage | None]] = []
    current: list[DocumentStage] = []
    for stage in stages:
        if isinstance(stage, DocumentStage):
            current.append(stage)
        elif isinstance(stage, GlobalStage):
            groups.append((current, stage))
            current = []
    groups.append((current, None))
    segments = []
    for index, (own, global_stage) in enumerate(groups):
        suffix = "" if index == 0 else f"/segment-{index:02d}"
        if global_stage is None:
            sink, output_dir, work_dir = final_sink, final_sink.path or join(output, "curated"), None
        else:
            sink = FileSink(shard_size_mb=_INTERMEDIATE_MB, rejected=final_sink.rejected)
            output_dir = join(output, "_work", f"{index:02d}-before-{global_stage.stage_name}")
            work_dir = join(output, "_work", f"{index:02d}-{global_stage.stage_name}")
        segments.append(
            SegmentPlan(
                index=index,
                stages=tuple(own),
                global_stage=global_stage,
                sink=sink,
                output_dir=output_dir,
                rejected_dir=join(output, "rejected") + suffix,
                manifest_dir=join(output, "_manifest", "curate") + suffix,
                work_dir=work_dir,
            )
        )
    return Plan(
        name=name,
        output=output,
        sources=tuple(s for s in stages if isinstance(s, SourceStage)),
        segments=tuple(segments),
        sink=final_sink,
        dataset_stages=tuple(s for s in stages if isinstance(s, DatasetStage)),
        batch_docs=batch_docs,
        batch_bytes=batch_bytes,
        columns=tuple(sorted(declared_columns(stages).items())),
        verify=verify,
    )


def declared_columns(stages: list[Stage]) -> dict[str, pa.DataType]:
    """The annotation columns of every document and global stage; a name declared with two types is an error."""
    columns: dict[str, pa.DataType] = {}
    for stage in stages:
        if isinstance(stage, (DocumentStage, GlobalStage)):
            for name, dtype in stage.columns().items():
                if columns.setdefault(name, dtype) != dtype:
                    raise ValueError(f"column {name!r} is declared as {columns[name]} and as {dtype} ({stage.label})")
    return columns
