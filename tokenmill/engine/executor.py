"""One fused task: a shard streamed through a reader and consecutive document stages into output files.

Each task processes its shard in bounded batches, writes its output files under temporary names, renames them
into place, and records a manifest with per-stage stats. The driver (see runner.py) only submits tasks and
receives those small stats dictionaries; no document ever passes through it. The task's payload, `ShardTask`,
is built by the plan (plan.py).
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Iterator
from typing import Any

from tokenmill.engine.documents import Doc, output_schema
from tokenmill.engine.manifest import write_manifest
from tokenmill.engine.output_dir import disk_full_message
from tokenmill.engine.plan import ShardTask
from tokenmill.engine.stage import Outcomes, Shard
from tokenmill.engine.stats import ConservationError, StageStats


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Run one shard end to end on a worker; returns its manifest (files and per-stage stats)."""
    started = time.perf_counter()
    columns = dict(task.columns)
    writer = task.sink.open_writer(task.output_dir, task.shard.key, output_schema(columns))
    rejects = task.sink.open_writer(task.rejected_dir, task.shard.key, output_schema(columns, True))
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
            stage.start_shard(task.shard)
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
    except BaseException as exc:
        writer.abort()
        rejects.abort()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            message = disk_full_message(task.output_dir, task.shard.size)
            raise OSError(errno.ENOSPC, f"shard {task.shard.name}: {message}") from None
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
