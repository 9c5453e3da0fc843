"""Pipeline specification: YAML (safe_load only) validated by pydantic before any work starts.

Every problem becomes one line naming its key path and YAML line, e.g.
`stages[3].normalize.unicode (line 12): must be one of NFC, NFKC (got 'NFD')`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tokenmill.engine.cluster import ClusterSpec
from tokenmill.engine.config_file import (
    SpecError,
    describe_error,
    key_path,
    load_yaml_mapping,
    read_text,
    suggest,
    yaml_line,
)
from tokenmill.engine.plan import Plan, build_plan, structure_problems
from tokenmill.engine.registry import READERS, STAGES, UNAVAILABLE, known_formats, known_stages, load_builtins
from tokenmill.engine.stage import Stage


class ResumeSpec(BaseModel):
    """`resume:` in the pipeline YAML: how a finished shard is recognised on a re-run.

    `verify: metadata` (the default) compares each input file's path, size and modification time: a file rewritten
    in place with the same size and mtime (e.g. by `cp -p` or a tool that restores mtimes) is not noticed.
    `verify: content` also hashes every input file (xxh3-128) on the driver before the run, reading all inputs
    once: exact, at the cost of that read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    verify: Literal["metadata", "content"] = "metadata"


class Pipeline(BaseModel):
    """A validated pipeline: readers first, then document stages, then an optional `write`.

    Build one in code (`Pipeline(name=..., output=..., stages=[PileReader(paths=[...]), Normalize()])`) or
    from YAML with `load_pipeline`.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)
    name: str = Field(min_length=1)
    output: str = Field(min_length=1)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    batch_docs: int = Field(1000, gt=0, description="documents per batch inside a fused task")
    batch_mb: float = Field(64, gt=0, description="text megabytes per batch inside a fused task")
    resume: ResumeSpec = Field(default_factory=ResumeSpec)
    stages: list[Stage] = Field(min_length=1)

    _plan: Plan | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _structure(self) -> Pipeline:
        problems = structure_problems(self.stages)
        if problems:
            raise ValueError("; ".join(problems))
        batch_bytes = int(self.batch_mb * 1024 * 1024)
        self._plan = build_plan(self.name, self.output, self.stages, self.batch_docs, batch_bytes, self.resume.verify)
        return self

    @property
    def plan(self) -> Plan:
        """The pipeline in execution order (sources, segments, sink, dataset stages), built once at validation."""
        assert self._plan is not None
        return self._plan


def load_pipeline(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate a pipeline YAML file; raises SpecError listing every problem."""
    return parse_pipeline(read_text(path), os.fspath(path), overrides)


def parse_pipeline(text: str, source: str = "pipeline", overrides: dict[str, Any] | None = None) -> Pipeline:
    data, root = load_yaml_mapping(text, source, "name, output and stages")
    data.update(overrides or {})
    problems: list[str] = []
    stages = build_stages(data.get("stages"), problems, root)
    if problems:
        raise SpecError(problems, source)
    try:
        return Pipeline(**{**data, "stages": stages})
    except ValidationError as exc:
        raise SpecError([describe_error(err, (), root, Pipeline) for err in exc.errors()], source) from exc


def build_stages(entries: Any, problems: list[str], root: yaml.Node | None = None) -> list[Stage]:
    """Instantiate each `- name: {args}` entry; append one line per problem to `problems`."""
    load_builtins()
    if not isinstance(entries, list) or not entries:
        problems.append(f"stages{yaml_line(root, ('stages',))}: must be a non-empty list of `- name: {{...}}` entries")
        return []
    stages: list[Stage] = []
    for i, entry in enumerate(entries):
        loc: tuple[Any, ...] = ("stages", i)
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(
                f"stages[{i}]{yaml_line(root, loc)}: each stage is a one-key mapping like `- normalize: {{}}`"
            )
            continue
        ((name, args),) = entry.items()
        args = {} if args is None else args
        if name == "read":
            for j, reader_args in enumerate(args if isinstance(args, list) else [args]):
                sub = (*loc, "read", j) if isinstance(args, list) else (*loc, "read")
                stages += instantiate_reader(reader_args, sub, problems, root)
            continue
        if name not in STAGES:
            missing = "".join(f"; not loaded: {m} ({why})" for m, why in sorted(UNAVAILABLE.items()))
            problems.append(
                f"stages[{i}]{yaml_line(root, loc)}: unknown stage {name!r}{suggest(name, known_stages())}{missing}"
            )
            continue
        if not isinstance(args, dict):
            problems.append(f"stages[{i}].{name}{yaml_line(root, (*loc, name))}: arguments must be a mapping")
            continue
        stages += _instantiate(STAGES[name], args, (*loc, name), problems, root)
    return stages


def instantiate_reader(args: Any, loc: tuple, problems: list[str], root) -> list[Stage]:
    if not isinstance(args, dict):
        problems.append(f"{key_path(loc)}{yaml_line(root, loc)}: must be a mapping with `format` and `paths`")
        return []
    fmt = args.get("format")
    if fmt not in READERS:
        formats = ", ".join(known_formats())
        got = "missing" if fmt is None else f"got {fmt!r}"
        problems.append(
            f"{key_path((*loc, 'format'))}{yaml_line(root, (*loc, 'format'))}: must be one of {formats} ({got})"
        )
        return []
    return _instantiate(READERS[fmt], args, loc, problems, root)


def _instantiate(cls: type[Stage], args: dict, loc: tuple, problems: list[str], root) -> list[Stage]:
    try:
        return [cls(**args)]
    except ValidationError as exc:
        problems.extend(describe_error(err, loc, root, cls) for err in exc.errors())
    except (TypeError, ValueError) as exc:
        problems.append(f"{key_path(loc)}{yaml_line(root, loc)}: {exc}")
    return []
