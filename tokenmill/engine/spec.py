"""Pipeline specification: YAML (safe_load only) validated by pydantic before any work starts.

Every problem becomes one line naming its key path and YAML line, e.g.
`stages[3].normalize.unicode (line 12): must be one of NFC, NFKC (got 'NFD')`.

A pipeline that names `custom:` callables or `datatrove:` steps by import path names code. Building a pipeline
imports that code (`run` needs it) unless it is built inside `user_code(False)`, as `tokenmill validate` does
without `--import`: then import paths are only checked for their form (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
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
    short_repr,
    suggest,
    yaml_line,
)
from tokenmill.engine.plan import Plan, build_plan, structure_problems
from tokenmill.engine.registry import READERS, STAGES, UNAVAILABLE, known_formats, known_stages, load_builtins
from tokenmill.engine.stage import DatasetStage, Stage

# Filesystem drivers tokenmill declares as extras: the install line names the extra.
_EXTRAS = {"s3fs": '"tokenmill[s3]"', "gcsfs": '"tokenmill[gcs]"'}
MAX_BATCH_MB = 65536  # a batch is held in one worker's memory: 64 GiB is far above any sane setting

_IMPORT_USER_CODE: ContextVar[bool] = ContextVar("tokenmill_import_user_code", default=True)


@contextlib.contextmanager
def user_code(imports: bool) -> Iterator[None]:
    """Within this block, stages built from YAML import the user modules they name (`imports=True`, the
    default everywhere) or only check the import paths' form (`imports=False`: `tokenmill validate`)."""
    token = _IMPORT_USER_CODE.set(imports)
    try:
        yield
    finally:
        _IMPORT_USER_CODE.reset(token)


def imports_user_code() -> bool:
    """Whether stages being built may import user modules now (see `user_code`)."""
    return _IMPORT_USER_CODE.get()


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
    batch_mb: float = Field(64, gt=0, le=MAX_BATCH_MB, description="text megabytes per batch inside a fused task")
    resume: ResumeSpec = Field(default_factory=ResumeSpec)
    stages: list[Stage] = Field(min_length=1)

    _plan: Plan | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _structure(self) -> Pipeline:
        problems = order_problems(self.stages)
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


@dataclass
class Checked:
    """What `check_pipeline` found: the pipeline, and notes on what it did not check (user code not imported)."""

    pipeline: Pipeline
    notes: list[str] = field(default_factory=list)


def load_pipeline(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate a pipeline YAML file; raises SpecError listing every problem."""
    return parse_pipeline(read_text(path), os.fspath(path), overrides)


def parse_pipeline(text: str, source: str = "pipeline", overrides: dict[str, Any] | None = None) -> Pipeline:
    return _parse(text, source, overrides)[0]


def check_pipeline(
    path: str | os.PathLike[str], overrides: dict[str, Any] | None = None, import_code: bool = False
) -> Checked:
    """What `tokenmill validate` does: everything `load_pipeline` checks, plus that every input glob matches
    files; user modules named by import path are imported only with `import_code` (otherwise a note says so).
    Raises SpecError listing every problem."""
    source = os.fspath(path)
    notes = []
    with user_code(import_code):
        pipeline, root, locs = _parse(read_text(path), source, overrides)
        for stage, loc in zip(pipeline.stages, locs):
            hook = getattr(stage, "user_code", None)
            ref = hook() if callable(hook) else None
            if ref:
                key, target = ref
                where = (*loc, stage.stage_name, key)
                notes.append(
                    f"{key_path(where)}{yaml_line(root, where)}: {target!r} is user code and was not imported; "
                    "`tokenmill validate --import` imports and checks it"
                )
    problems = input_problems(pipeline.stages, locs, root)
    if problems:
        raise SpecError(problems, source)
    return Checked(pipeline, notes)


def _parse(text: str, source: str, overrides: dict[str, Any] | None) -> tuple[Pipeline, yaml.Node, list[tuple]]:
    data, root = load_yaml_mapping(text, source, "name, output and stages")
    data.update(overrides or {})
    problems = filesystem_problems(data, root)
    if problems:  # building stages would try (and fail) to open these paths
        raise SpecError(problems, source)
    locs: list[tuple] = []
    stages = build_stages(data.get("stages"), problems, root, locs)
    if problems:
        raise SpecError(problems, source)
    order = [_locate(line, locs, root) for line in order_problems(stages)]
    try:
        pipeline = Pipeline(**{**data, "stages": stages})
    except ValidationError as exc:
        # The model-level error repeats the order problems, listed below with their lines.
        problems = [describe_error(err, (), root, Pipeline) for err in exc.errors() if err["loc"] or not order]
    if problems or order:
        raise SpecError(problems + order, source)
    return pipeline, root, locs


def order_problems(stages: list[Stage]) -> list[str]:
    """The plan's order rules, and that every dataset stage's inputs are made by an earlier stage (or given as
    the stage's own key of that name, like `tokenize: {tokenizer: PATH}`). Lines start with `stages[i]`."""
    problems = structure_problems(stages)
    made: set[str] = set()
    for i, stage in enumerate(stages):
        if not isinstance(stage, DatasetStage):
            continue
        for name in stage.inputs:
            if name in made or getattr(stage, name, None):
                continue
            makers = " or ".join(_makers(name)) or "the stage that makes it"
            own = f" or set `{stage.stage_name}.{name}`" if name in type(stage).model_fields else ""
            problems.append(
                f"stages[{i}]: {stage.stage_name} needs the {name}, which no earlier stage makes: "
                f"put {makers} before it{own}"
            )
        if stage.produces:
            made.add(stage.produces)
    return problems


def _makers(artifact: str) -> list[str]:
    load_builtins()
    return sorted(
        name
        for name, cls in STAGES.items()
        if isinstance(cls, type) and issubclass(cls, DatasetStage) and cls.produces == artifact
    )


_STAGE_PREFIX = re.compile(r"^stages(?:\[(\d+)\])?: ")


def _locate(line: str, locs: list[tuple], root: yaml.Node | None) -> str:
    """`stages[i]: ...` (i counts built stages; one `read:` list builds several) as the YAML entry's key path and
    line: `stages[2].read[1] (line 7): ...`."""
    match = _STAGE_PREFIX.match(line)
    if not match:
        return line
    index = match.group(1)
    loc: tuple = ("stages",)
    if index is not None and int(index) < len(locs):
        loc = locs[int(index)]
    return f"{key_path(loc)}{yaml_line(root, loc)}: {line[match.end() :]}"


def build_stages(
    entries: Any, problems: list[str], root: yaml.Node | None = None, locs: list[tuple] | None = None
) -> list[Stage]:
    """Instantiate each `- name: {args}` entry; append one line per problem to `problems` and, to `locs`, the
    YAML location of each stage built (`("stages", i)`, or `("stages", i, "read", j)` in a list of readers)."""
    load_builtins()
    locs = [] if locs is None else locs
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
                built = instantiate_reader(reader_args, sub, problems, root)
                stages += built
                locs += [(*loc, "read", j) if isinstance(args, list) else loc] * len(built)
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
        built = _instantiate(STAGES[name], args, (*loc, name), problems, root)
        stages += built
        locs += [loc] * len(built)
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
    except (TypeError, ValueError, ImportError, OSError) as exc:
        problems.append(f"{key_path(loc)}{yaml_line(root, loc)}: {exc}")
    return []


def input_problems(stages: list[Stage], locs: list[tuple], root: yaml.Node | None) -> list[str]:
    """One line per input path or glob of a reader that matches nothing (or cannot be listed), with its key
    path and YAML line: what `run` would stop at, found without starting a cluster."""
    problems = []
    for stage, loc in zip(stages, locs):
        paths = getattr(stage, "paths", None)
        input_files = getattr(stage, "input_files", None)
        if not isinstance(paths, list) or not callable(input_files):
            continue
        where = (*loc, "read") if len(loc) == 2 else loc
        single = _yaml_scalar(root, (*where, "paths"))
        for k, pattern in enumerate(paths):
            sub = (*where, "paths") if single else (*where, "paths", k)
            try:
                stage.model_copy(update={"paths": [pattern]}).input_files()
            except (FileNotFoundError, ValueError) as exc:
                problems.append(f"{key_path(sub)}{yaml_line(root, sub)}: {exc}")
            except (OSError, ImportError) as exc:
                problems.append(f"{key_path(sub)}{yaml_line(root, sub)}: cannot list {pattern!r}: {exc}")
    return problems


def _yaml_scalar(root: yaml.Node | None, loc: tuple) -> bool:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return False
    return isinstance(node, yaml.ScalarNode)


_URL = re.compile(r"(?:^|::)([A-Za-z][A-Za-z0-9+.-]*)(?:://|::)")


def filesystem_problems(data: Any, root: yaml.Node | None, loc: tuple = ()) -> list[str]:
    """One line per path whose fsspec filesystem is not installed (`s3://...` without s3fs), naming the package
    to install. Strings that are not fsspec URLs (a `tcp://` scheduler address, plain text) are left alone."""
    from fsspec.registry import get_filesystem_class, known_implementations

    problems: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            problems += filesystem_problems(value, root, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            problems += filesystem_problems(value, root, (*loc, i))
    elif isinstance(data, str) and ("://" in data or "::" in data):
        for protocol in dict.fromkeys(_URL.findall(data)):
            implementation = known_implementations.get(protocol)
            if implementation is None:
                continue
            try:
                get_filesystem_class(protocol)
            except ImportError:
                package = implementation["class"].split(".")[0]
                install = _EXTRAS.get(package, package)
                problems.append(
                    f"{key_path(loc)}{yaml_line(root, loc)}: {protocol}:// paths need the {package} package, which "
                    f"is not installed: pip install {install} (got {short_repr(data)})"
                )
    return problems
