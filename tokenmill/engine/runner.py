"""The driver: runs a pipeline segment by segment on a Dask client, resuming whatever is already finished.

A pipeline without global stages is one segment: readers and document stages fused into one task per input
file. Each global stage (deduplication) ends a segment: the segment's output is materialised as Parquet, the
global stage analyses it with Dask tasks, and the next segment starts by applying its decisions.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, as_completed
from fsspec.core import url_to_fs

from tokenmill.curate.writers import Write, remove_temporaries
from tokenmill.engine.cluster import connect
from tokenmill.engine.executor import ShardTask, check_conservation, plan_segment, process_shard
from tokenmill.engine.fsio import InputNotFound, atomic_write_json, exists, join, read_json
from tokenmill.engine.identity import stable_id
from tokenmill.engine.manifest import finished
from tokenmill.engine.post import PostContext, run_post_stages
from tokenmill.engine.progress import ShardProgress
from tokenmill.engine.segment_source import ShardSetReader
from tokenmill.engine.spec import Pipeline
from tokenmill.engine.stage import DocumentStage, GlobalStage, ShardOutput, SourceStage
from tokenmill.engine.stats import ConservationError, StageStats

# Intermediate segments keep one file per shard, so the next segment's shards match the previous ones.
_INTERMEDIATE_MB = 1e9


@dataclass
class RunResult:
    """What a run produced: output files, merged per-stage stats, and what was skipped, failed or flagged."""

    name: str
    output: str
    curated: str
    files: list[str]
    stats: list[StageStats]
    shards_total: int
    shards_skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Segment:
    index: int
    sources: list[SourceStage]
    stages: tuple[DocumentStage, ...]
    sink: Write
    output_dir: str
    rejected_dir: str
    manifest_dir: str


def _segment(pipeline: Pipeline, index: int, sources: list[SourceStage], stages: list[DocumentStage]) -> _Segment:
    last = index == len(pipeline.segments) - 1
    final_sink = pipeline.sink
    if last:
        sink, output_dir = final_sink, final_sink.path or join(pipeline.output, "curated")
    else:
        sink = Write(shard_size_mb=_INTERMEDIATE_MB, rejected=final_sink.rejected)
        global_stage = pipeline.segments[index][1]
        output_dir = join(pipeline.output, "_work", f"{index:02d}-before-{global_stage.stage_name}")
    suffix = "" if index == 0 else f"/segment-{index:02d}"
    return _Segment(
        index=index,
        sources=sources,
        stages=tuple(stages),
        sink=sink,
        output_dir=output_dir,
        rejected_dir=join(pipeline.output, "rejected") + suffix,
        manifest_dir=join(pipeline.output, "_manifest", "curate") + suffix,
    )


def _tasks(pipeline: Pipeline, segment: _Segment) -> list[ShardTask]:
    batch = (pipeline.batch_docs, int(pipeline.batch_mb * 1024 * 1024))
    return plan_segment(
        segment.sources,
        segment.stages,
        segment.sink,
        segment.output_dir,
        segment.rejected_dir,
        segment.manifest_dir,
        batch,
    )


def first_segment_tasks(pipeline: Pipeline) -> list[ShardTask]:
    return _tasks(pipeline, _segment(pipeline, 0, pipeline.sources, pipeline.segments[0][0]))


def execute(
    pipeline: Pipeline,
    *,
    client: Client | None = None,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run every segment and global analysis, skipping shards and analyses whose manifests are current."""
    with contextlib.ExitStack() as stack:
        driver = _Driver(pipeline, stack, client, address, force, progress)
        return driver.run()


class _Driver:
    """Holds one run's settings and its client, started lazily: a fully resumed run starts no cluster."""

    def __init__(
        self,
        pipeline: Pipeline,
        stack: contextlib.ExitStack,
        client: Client | None,
        address: str | None,
        force: bool,
        progress: bool,
    ) -> None:
        self.pipeline, self.stack, self.client, self.address = pipeline, stack, client, address
        self.force, self.progress = force, progress
        # A LocalCluster started with `dashboard_address: null` serves no dashboard: print no link then.
        self.dashboard = bool(client or address or pipeline.cluster.address or pipeline.cluster.dashboard_address)
        self.started = time.perf_counter()

    def get_client(self) -> Client:
        if self.client is None:
            self.client = self.stack.enter_context(connect(self.pipeline.cluster, self.address))
        return self.client

    def run(self) -> RunResult:
        pipeline = self.pipeline
        sources: list[SourceStage] = pipeline.sources
        prefix: list[DocumentStage] = []
        stats: list[StageStats] = []
        analyses: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        total = skipped = 0
        for index, (stages, global_stage) in enumerate(pipeline.segments):
            segment = _segment(pipeline, index, sources, prefix + stages)
            tasks = _tasks(pipeline, segment)
            if not tasks:
                raise InputNotFound(f"pipeline {pipeline.name!r}: the inputs hold no shards")
            results, seg_failed, seg_skipped = self.run_segment(tasks, index)
            failed.update(seg_failed)
            total += len(tasks)
            skipped += seg_skipped
            ordered = [results[t.shard.key] for t in tasks if t.shard.key in results]
            seg_stats = merge_stats(ordered, [s.label for s in segment.stages])
            if stats:  # the segment re-reads what the previous one kept: nothing may appear or vanish in between
                if not failed and seg_stats[0].docs_in != stats[-1].kept:
                    raise ConservationError(f"segment {index} read {seg_stats[0].docs_in}, before {stats[-1].kept}")
                seg_stats = seg_stats[1:]
            stats += seg_stats
            if global_stage is None or failed:  # never analyse an incomplete dataset: stop here and report
                break
            outputs = [ShardOutput(r["shard"], tuple(r["files"])) for r in ordered]
            analysis_id = _analysis_id(global_stage, ordered)
            work_dir = join(pipeline.output, "_work", f"{index:02d}-{global_stage.stage_name}")
            analyses[global_stage.label] = self.analyze(global_stage, outputs, work_dir, analysis_id)
            sources = [ShardSetReader.of(outputs)]
            prefix = [global_stage.applier(work_dir, analysis_id)]
        artifacts = {}
        if pipeline.post_stages and not failed:
            curated = [ShardOutput(r["shard"], tuple(r["files"])) for r in ordered]
            curated_id = stable_id([r["fingerprint"] for r in ordered])
            ctx = PostContext(pipeline.output, curated, curated_id, self.get_client, self.force, self.progress)
            artifacts = run_post_stages(pipeline.post_stages, ctx)
        return RunResult(
            name=pipeline.name,
            output=pipeline.output,
            curated=segment.output_dir,
            files=[f for r in ordered for f in r["files"]],
            stats=stats,
            shards_total=total,
            shards_skipped=skipped,
            failed=failed,
            analyses=analyses,
            artifacts=artifacts,
            seconds=time.perf_counter() - self.started,
        )

    def run_segment(self, tasks: list[ShardTask], index: int) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for task in tasks:
            done = None if self.force else finished(task.manifest_dir, task.shard, task.fingerprint)
            if done is None:
                todo.append(task)
            else:
                results[task.shard.key] = done
        first = tasks[0]
        for directory in {first.output_dir, first.rejected_dir, first.manifest_dir}:
            remove_temporaries(directory)
        skipped = len(results)
        failed: dict[str, str] = {}
        if todo:
            label = "shards" if index == 0 else f"segment {index} shards"
            failed = self.submit(todo, results, skipped, len(tasks), label)
        _prune(tasks)
        return results, failed, skipped

    def submit(self, todo: list[ShardTask], results: dict, skipped: int, total: int, label: str) -> dict[str, str]:
        client = self.get_client()
        failed: dict[str, str] = {}
        run_id = uuid.uuid4().hex[:8]  # fresh keys: a forced re-run must never be served a result Dask still holds
        futures = {client.submit(process_shard, task, key=f"shard-{task.shard.key}-{run_id}"): task for task in todo}
        dashboard = client.dashboard_link if self.dashboard else None
        with ShardProgress(total, skipped, dashboard, enabled=self.progress, label=label) as bar:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # a task that died after its retries: report it, finish the others
                    failed[task.shard.name] = f"{type(exc).__name__}: {exc}"[:500]
                    bar.advance(None)
                    continue
                results[task.shard.key] = result
                bar.advance(result["stats"][0])
        return failed

    def analyze(
        self, stage: GlobalStage, outputs: list[ShardOutput], work_dir: str, analysis_id: str
    ) -> dict[str, Any]:
        marker = join(work_dir, "analysis.json")
        if not self.force and exists(marker):
            done = read_json(marker)
            if done.get("analysis_id") == analysis_id:
                return done["summary"]
        summary = stage.analyze(self.get_client(), outputs, work_dir)
        atomic_write_json(marker, {"analysis_id": analysis_id, "summary": summary})
        return summary


def _analysis_id(stage: GlobalStage, results: list[dict[str, Any]]) -> str:
    """Changes whenever the analysed shards or the stage's configuration change (then it is redone)."""
    payload = [stage.model_dump(mode="json"), type(stage).__qualname__, [r["fingerprint"] for r in results]]
    return stable_id(payload)


def merge_stats(results: list[dict[str, Any]], labels: list[str]) -> list[StageStats]:
    merged = [StageStats("read")] + [StageStats(label) for label in labels]
    for result in results:
        for total, part in zip(merged, result["stats"]):
            total.merge(StageStats.from_dict(part))
    check_conservation(merged)
    return merged


def _prune(tasks: list[ShardTask]) -> None:
    """Remove outputs and manifests of shards that no longer exist (the input set shrank since the last run)."""
    keys = {t.shard.key for t in tasks}
    first = tasks[0]
    for directory in {first.output_dir, first.rejected_dir, first.manifest_dir}:
        fs, path = url_to_fs(directory)
        if not fs.exists(path):
            continue
        for name in fs.ls(path, detail=False):
            base = name.rsplit("/", 1)[-1]
            key = base[5:10] if base.startswith("part-") else base.split(".")[0]
            if key.isdigit() and len(key) == 5 and key not in keys:
                fs.rm(name)
