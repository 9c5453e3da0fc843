"""Running the dataset stages (after `write`): each artifact is made once and recorded with what it came from.

Every artifact gets an id: a stable id of the stage's configuration, the ids of its inputs (the curated shards'
fingerprints, or upstream artifact ids) and the tokenmill version. A stage whose `done.json` holds the same id is
skipped on re-run, and `lineage.json` links data → tokenizer → token shards → checkpoint → evaluation.
"""

from __future__ import annotations

from typing import Any

from tokenmill._version import __version__
from tokenmill.engine.fsio import atomic_write_json, exists, join, read_json
from tokenmill.engine.stage import DatasetContext, DatasetStage


def run_dataset_stages(stages: list[DatasetStage], ctx: DatasetContext) -> dict[str, dict[str, Any]]:
    """Run (or skip, when current) each dataset stage in order; returns {stage label: summary}; writes lineage."""
    summaries: dict[str, dict[str, Any]] = {}
    lineage: list[dict[str, Any]] = []
    for stage in stages:
        identity = stage.artifact_id(ctx)
        marker = join(stage.directory(ctx), "done.json")
        done = read_json(marker) if exists(marker) and not ctx.force else None
        if done is None or done.get("id") != identity:
            summary = stage.run(ctx)
            done = {"id": identity, "inputs": stage.input_ids(ctx), "config": stage.model_dump(mode="json")}
            done["summary"] = summary
            done["tokenmill"] = __version__
            atomic_write_json(marker, done)
        if stage.produces:
            ctx.artifacts[stage.produces] = {"id": identity, **done["summary"]}
        summaries[stage.label] = done["summary"]
        lineage.append({"stage": stage.label, "produces": stage.produces, "id": identity, "inputs": done["inputs"]})
    atomic_write_json(join(ctx.output, "lineage.json"), {"data": ctx.curated_id, "stages": lineage})
    return summaries
