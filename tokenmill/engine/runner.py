"""The driver: runs a pipeline segment by segment on a Dask client, resuming whatever is already finished.

A pipeline without global stages is one segment: readers and document stages fused into one task per input
file. Each global stage (deduplication) ends a segment: the segment's output is materialised as Parquet, the
global stage analyses it with Dask tasks, and the next segment starts by applying its decisions.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import warnings
from typing import Any

from distributed import Client, as_completed

from tokenmill.engine.cluster import connect
from tokenmill.engine.datasets import run_dataset_stages
from tokenmill.engine.executor import check_conservation, process_shard
from tokenmill.engine.fsio import InputNotFound, atomic_write_json, exists, join, read_json
from tokenmill.engine.identity import stable_id
from tokenmill.engine.manifest import finished, manifest_path
from tokenmill.engine.output_dir import (
    OutputLock,
    check_inputs_outside_output,
    owns,
    prepare_output,
    sweep,
    sweep_stale_segments,
    write_marker,
)
from tokenmill.engine.plan import ShardTask
from tokenmill.engine.progress import ShardProgress
from tokenmill.engine.result import RunResult
from tokenmill.engine.segment_source import ShardSetReader
from tokenmill.engine.spec import Pipeline
from tokenmill.engine.stage import DatasetContext, DocumentStage, GlobalStage, ShardOutput, SourceStage
from tokenmill.engine.stats import ConservationError, StageStats


def execute(
    pipeline: Pipeline,
    *,
    client: Client | None = None,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run every segment and global analysis, skipping shards and analyses whose manifests are current.

    Before any work the output is checked (a writable directory holding only tokenmill's files, outside the
    inputs) and locked against a second run; raises OutputError (one line) otherwise.
    """
    plan = pipeline.plan
    prepare_output(plan, force)
    with contextlib.ExitStack() as stack:
        stack.enter_context(OutputLock(plan.output))
        driver = _Driver(pipeline, stack, client, address, force, progress)
        result = driver.run()
        if result.ok:
            sweep_stale_segments(plan)
        return result


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
        self.warnings: list[str] = []

    def get_client(self) -> Client:
        if self.client is None:
            self.client = self.stack.enter_context(connect(self.pipeline.cluster, self.address))
        return self.client

    def run(self) -> RunResult:
        plan = self.pipeline.plan
        sources: list[SourceStage] = list(plan.sources)
        prefix: list[DocumentStage] = []
        stats: list[StageStats] = []
        analyses: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        total = skipped = 0
        for segment in plan.segments:
            with warnings.catch_warnings(record=True) as caught:  # input listing problems (symlink loops, ...)
                warnings.simplefilter("always")
                tasks = plan.tasks(segment, sources, prefix)
            self.warnings += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
            if not tasks:
                raise InputNotFound(f"pipeline {plan.name!r}: the inputs hold no shards")
            if segment.index == 0:
                check_inputs_outside_output(plan, tasks)
                write_marker(plan.output, plan.name)
                if not owns(plan.curated_dir, plan.output):  # `write.path` outside the output: mark it too
                    write_marker(plan.curated_dir, plan.name)
            results, seg_failed, seg_skipped = self.run_segment(tasks, segment.label)
            failed.update(seg_failed)
            total += len(tasks)
            skipped += seg_skipped
            ordered = [results[t.shard.key] for t in tasks if t.shard.key in results]
            seg_stats = merge_stats(ordered, [s.label for s in tasks[0].stages])
            if stats:  # the segment re-reads what the previous one kept: nothing may appear or vanish in between
                if not failed and seg_stats[0].docs_in != stats[-1].kept:
                    raise ConservationError(
                        f"segment {segment.index} read {seg_stats[0].docs_in}, before {stats[-1].kept}"
                    )
                seg_stats = seg_stats[1:]
            stats += seg_stats
            if segment.global_stage is None or failed:  # never analyse an incomplete dataset: stop and report
                break
            outputs = [ShardOutput(r["shard"], tuple(r["files"])) for r in ordered]
            analysis_id = _analysis_id(segment.global_stage, ordered)
            analyses[segment.global_stage.label] = self.analyze(
                segment.global_stage, outputs, segment.work_dir, analysis_id
            )
            sources = [ShardSetReader.of(outputs)]
            prefix = [segment.global_stage.applier(segment.work_dir, analysis_id)]
        artifacts = {}
        if plan.dataset_stages and not failed:
            curated = [ShardOutput(r["shard"], tuple(r["files"])) for r in ordered]
            curated_id = stable_id([r["fingerprint"] for r in ordered])
            ctx = DatasetContext(plan.output, curated, curated_id, self.get_client, self.force, self.progress)
            artifacts = run_dataset_stages(list(plan.dataset_stages), ctx)
        return RunResult(
            name=plan.name,
            output=plan.output,
            curated=plan.curated_dir,
            files=[f for r in ordered for f in r["files"]],
            stats=stats,
            shards_total=total,
            shards_skipped=skipped,
            failed=failed,
            analyses=analyses,
            artifacts=artifacts,
            warnings=list(self.warnings),
            seconds=time.perf_counter() - self.started,
        )

    def run_segment(self, tasks: list[ShardTask], label: str) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for task in tasks:
            done = None if self.force else finished(task.manifest_dir, task.shard, task.fingerprint)
            if done is None:
                todo.append(task)
            else:
                results[task.shard.key] = done
        skipped = len(results)
        failed: dict[str, str] = {}
        if todo:
            failed = self.submit(todo, results, skipped, len(tasks), label)
        if not failed:  # an incomplete segment keeps every earlier file: nothing is removed on a failed run
            first = tasks[0]
            sweep(first.manifest_dir, {manifest_path(t.manifest_dir, t.shard) for t in tasks})
            files = {f for r in results.values() for f in r["files"] + r["rejected_files"]}
            for directory in {first.output_dir, first.rejected_dir}:
                sweep(directory, files)
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
