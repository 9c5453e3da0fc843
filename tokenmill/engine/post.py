"""Stages after `write`: they consume the curated dataset and produce artifacts (a tokenizer, token shards, a
checkpoint, an evaluation), each recorded with the identity of what it was made from.

Every artifact gets an id: a hash of the stage's configuration and the ids of its inputs (the curated shards'
fingerprints, or upstream artifact ids). A stage whose `done.json` holds the same id is skipped on re-run, and
`lineage.json` links data → tokenizer → token shards → checkpoint → evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tokenmill._version import __version__
from tokenmill.engine.fsio import atomic_write_json, exists, join, read_json
from tokenmill.engine.identity import stable_id
from tokenmill.engine.stage import ShardOutput, Stage


@dataclass
class PostContext:
    """What a post stage can use: the curated shards, earlier artifacts, the run's output and a Dask client."""

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


class PostStage(Stage):
    """Base of stages after `write`. `produces` names the artifact; `inputs` lists the artifacts it consumes."""

    kind: ClassVar[str] = "post"
    produces: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()

    def directory(self, ctx: PostContext) -> str:
        return join(ctx.output, self.produces or self.stage_name)

    def input_ids(self, ctx: PostContext) -> dict[str, str]:
        ids = {"data": ctx.curated_id}
        ids.update({name: ctx.artifact(name, self.stage_name)["id"] for name in self.inputs})
        return ids

    def artifact_id(self, ctx: PostContext) -> str:
        payload = [type(self).__qualname__, self.model_dump(mode="json"), self.input_ids(ctx), __version__]
        return stable_id(payload)

    def run(self, ctx: PostContext) -> dict[str, Any]:
        """Make the artifact under `self.directory(ctx)`; return {"path": ..., **summary for the report}."""
        raise NotImplementedError


def run_post_stages(stages: list[PostStage], ctx: PostContext) -> dict[str, dict[str, Any]]:
    """Run (or skip, when current) each post stage in order; returns {stage label: summary}; writes lineage."""
    summaries: dict[str, dict[str, Any]] = {}
    lineage: list[dict[str, Any]] = []
    for stage in stages:
        artifact_id = stage.artifact_id(ctx)
        marker = join(stage.directory(ctx), "done.json")
        done = read_json(marker) if exists(marker) and not ctx.force else None
        if done is None or done.get("id") != artifact_id:
            summary = stage.run(ctx)
            done = {"id": artifact_id, "inputs": stage.input_ids(ctx), "config": stage.model_dump(mode="json")}
            done["summary"] = summary
            done["tokenmill"] = __version__
            atomic_write_json(marker, done)
        if stage.produces:
            ctx.artifacts[stage.produces] = {"id": artifact_id, **done["summary"]}
        summaries[stage.label] = done["summary"]
        lineage.append({"stage": stage.label, "produces": stage.produces, "id": artifact_id, "inputs": done["inputs"]})
    atomic_write_json(join(ctx.output, "lineage.json"), {"data": ctx.curated_id, "stages": lineage})
    return summaries
