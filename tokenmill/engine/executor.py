"""The Dask executor: readers and consecutive document stages fused into one task per input shard.

Each task streams its shard through the stages in bounded batches, writes its output files under temporary
names, renames them into place, and records a manifest with per-stage stats. The driver only submits tasks and
receives those small stats dictionaries; no document ever passes through it.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, as_completed
from fsspec.core import url_to_fs

from tokenmill.curate.writers import ShardWriter, Write, remove_temporaries
from tokenmill.engine.cluster import connect
from tokenmill.engine.documents import Doc, output_schema
from tokenmill.engine.fsio import InputNotFound, join
from tokenmill.engine.manifest import fingerprint, finished, write_manifest
from tokenmill.engine.progress import ShardProgress
from tokenmill.engine.spec import Pipeline
from tokenmill.engine.stage import DocumentStage, Outcomes, Shard, SourceStage
from tokenmill.engine.stats import ConservationError, StageStats


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs for one shard (small: configuration, not data)."""

    shard: Shard
    source: SourceStage
    stages: tuple[DocumentStage, ...]
    sink: Write
    output_dir: str
    rejected_dir: str
    manifest_dir: str
    fingerprint: str
    batch_docs: int
    batch_bytes: int


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Run one shard end to end on a worker; returns its manifest (files and per-stage stats)."""
    started = time.perf_counter()
    columns: dict = {}
    for stage in task.stages:
        columns.update(stage.columns())
    writer = ShardWriter(task.output_dir, task.shard.key, output_schema(columns), task.sink)
    rejects = ShardWriter(task.rejected_dir, task.shard.key, output_schema(columns, True), task.sink)
    keep_rejected = task.sink.rejected
    read_out = Outcomes(StageStats("read"), [] if keep_rejected else None)
    stage_outs = [Outcomes(StageStats(s.label), [] if keep_rejected else None) for s in task.stages]

    def flush(batch: list[Doc]) -> None:
        for stage, out in zip(task.stages, stage_outs):
            tick = time.perf_counter()
            batch = stage.process_batch(batch, out)
            out.stats.seconds += time.perf_counter() - tick
        if batch:
            writer.write(batch)
        if keep_rejected:
            docs, reasons = [], []
            for label, out in [("read", read_out)] + [(s.label, o) for s, o in zip(task.stages, stage_outs)]:
                docs += [doc for doc, _ in out.rejected]
                reasons += [(label, reason) for _, reason in out.rejected]
                out.rejected.clear()
            if docs:
                rejects.write(docs, reasons)

    try:
        for stage in task.stages:
            stage.setup()
        batch: list[Doc] = []
        nbytes = 0
        for doc in _guarded(task.source.read(task.shard, read_out), task.shard, read_out):
            batch.append(doc)
            nbytes += doc.nbytes
            if len(batch) >= task.batch_docs or nbytes >= task.batch_bytes:
                flush(batch)
                batch, nbytes = [], 0
            elif keep_rejected and len(read_out.rejected) >= task.batch_docs:
                flush([])
        flush(batch)
        files = writer.commit()
        rejected_files = rejects.commit() if keep_rejected else []
    except BaseException:
        writer.abort()
        rejects.abort()
        raise
    stats = [read_out.stats] + [out.stats for out in stage_outs]
    check_conservation(stats)
    elapsed = time.perf_counter() - started
    stats[0].seconds = max(0.0, elapsed - sum(s.seconds for s in stats[1:]))
    result = {
        "shard": task.shard.key,
        "name": task.shard.name,
        "fingerprint": task.fingerprint,
        "files": files,
        "rejected_files": rejected_files,
        "stats": [s.to_dict() for s in stats],
        "seconds": elapsed,
    }
    write_manifest(task.manifest_dir, task.shard, result)
    return result


def _guarded(docs: Iterator[Doc], shard: Shard, out: Outcomes) -> Iterator[Doc]:
    """A reader that fails mid-file (corrupt compression, I/O error) costs the rest of that file, counted as one
    error naming the file; documents already read are kept."""
    try:
        yield from docs
    except Exception as exc:
        out.seen(0)
        out.error(None, "read_failed", f"read: {shard.path}: {type(exc).__name__}: {exc}"[:500])


def check_conservation(stats: list[StageStats]) -> None:
    """Each stage accounts for all its input, and each stage's input is the previous stage's output."""
    for stage in stats:
        stage.check()
    for before, after in itertools.pairwise(stats):
        if after.docs_in != before.kept:
            raise ConservationError(
                f"{after.stage} received {after.docs_in} documents, {before.stage} kept {before.kept}"
            )


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
    report: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def plan(pipeline: Pipeline) -> list[ShardTask]:
    """List every input shard (on the driver) and build its task; raises InputNotFound for a missing input."""
    sink = pipeline.sink
    output_dir = sink.path or join(pipeline.output, "curated")
    stages = tuple(pipeline.document_stages)
    tasks = []
    index = 0
    for source in pipeline.sources:
        for shard in source.shards():
            shard = Shard(index, shard.path, shard.name, shard.size, shard.fingerprint)
            index += 1
            batch = (pipeline.batch_docs, int(pipeline.batch_mb * 1024 * 1024))
            tasks.append(
                ShardTask(
                    shard=shard,
                    source=source,
                    stages=stages,
                    sink=sink,
                    output_dir=output_dir,
                    rejected_dir=join(pipeline.output, "rejected"),
                    manifest_dir=join(pipeline.output, "_manifest", "curate"),
                    fingerprint=fingerprint(shard, [source, *stages, sink], batch),
                    batch_docs=batch[0],
                    batch_bytes=batch[1],
                )
            )
    return tasks


def execute(
    pipeline: Pipeline,
    *,
    client: Client | None = None,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run the pipeline's fused stages over every shard, skipping shards whose manifest is current."""
    started = time.perf_counter()
    tasks = plan(pipeline)
    if not tasks:
        raise InputNotFound(f"pipeline {pipeline.name!r}: the inputs hold no shards")
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for task in tasks:
        done = None if force else finished(task.manifest_dir, task.shard, task.fingerprint)
        if done is None:
            todo.append(task)
        else:
            results[task.shard.key] = done
    for directory in {tasks[0].output_dir, tasks[0].rejected_dir, tasks[0].manifest_dir}:
        remove_temporaries(directory)
    skipped = len(results)
    failed: dict[str, str] = {}
    if todo:
        with contextlib.nullcontext(client) if client else connect(pipeline.cluster, address) as active:
            failed = _submit(active, todo, results, skipped, len(tasks), progress)
    _prune(tasks)
    ordered = [results[t.shard.key] for t in tasks if t.shard.key in results]
    stats = merge_stats(ordered, [s.label for s in pipeline.document_stages])
    return RunResult(
        name=pipeline.name,
        output=pipeline.output,
        curated=tasks[0].output_dir,
        files=[f for r in ordered for f in r["files"]],
        stats=stats,
        shards_total=len(tasks),
        shards_skipped=skipped,
        failed=failed,
        seconds=time.perf_counter() - started,
    )


def _submit(
    client: Client, todo: list[ShardTask], results: dict, skipped: int, total: int, progress: bool
) -> dict[str, str]:
    failed: dict[str, str] = {}
    run_id = uuid.uuid4().hex[:8]  # fresh keys: a forced re-run must never be served a result Dask still holds
    futures = {client.submit(process_shard, task, key=f"shard-{task.shard.key}-{run_id}"): task for task in todo}
    with ShardProgress(total, skipped, client.dashboard_link, enabled=progress) as bar:
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
    for directory in {tasks[0].output_dir, tasks[0].rejected_dir, tasks[0].manifest_dir}:
        fs, path = url_to_fs(directory)
        if not fs.exists(path):
            continue
        for name in fs.ls(path, detail=False):
            base = name.rsplit("/", 1)[-1]
            key = base[5:10] if base.startswith("part-") else base.split(".")[0]
            if key.isdigit() and len(key) == 5 and key not in keys:
                fs.rm(name)
