"""Pipeline specification: YAML (safe_load only) validated by pydantic before any work starts.

Every problem becomes one line naming its key path and YAML line, e.g.
`stages[3].normalize.unicode (line 12): must be one of NFC, NFKC (got 'NFD')`.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenmill.engine.cluster import ClusterSpec
from tokenmill.engine.registry import READERS, STAGES, UNAVAILABLE, known_formats, known_stages, load_builtins
from tokenmill.engine.stage import DocumentStage, GlobalStage, SourceStage, Stage


class SpecError(ValueError):
    """The pipeline spec is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "pipeline") -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


class Pipeline(BaseModel):
    """A validated pipeline: readers first, then document stages, then an optional `write`.

    Build one in code (`Pipeline(name=..., output=..., stages=[PileReader(paths=[...]), Normalize()])`) or
    from YAML with `load_pipeline`.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    name: str = Field(min_length=1)
    output: str = Field(min_length=1)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    batch_docs: int = Field(1000, gt=0, description="documents per batch inside a fused task")
    batch_mb: float = Field(64, gt=0, description="text megabytes per batch inside a fused task")
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _structure(self) -> Pipeline:
        problems = structure_problems(self.stages)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def sources(self) -> list[SourceStage]:
        return [s for s in self.stages if isinstance(s, SourceStage)]

    @property
    def document_stages(self) -> list[DocumentStage]:
        return [s for s in self.stages if isinstance(s, DocumentStage)]

    @property
    def segments(self) -> list[tuple[list[DocumentStage], GlobalStage | None]]:
        """Document stages grouped into fused segments, each ended by the global stage that follows it."""
        segments: list[tuple[list[DocumentStage], GlobalStage | None]] = []
        current: list[DocumentStage] = []
        for stage in self.stages:
            if isinstance(stage, DocumentStage):
                current.append(stage)
            elif isinstance(stage, GlobalStage):
                segments.append((current, stage))
                current = []
        segments.append((current, None))
        return segments

    @property
    def post_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.kind == "post"]

    @property
    def sink(self) -> Stage:
        from tokenmill.curate.writers import Write

        sinks = [s for s in self.stages if s.kind == "sink"]
        return sinks[0] if sinks else Write()


def structure_problems(stages: list[Stage]) -> list[str]:
    problems = []
    kinds = [s.kind for s in stages]
    if not kinds or kinds[0] != "source":
        problems.append("stages[0]: a pipeline starts with a `read` stage")
    n_sources = sum(1 for k in kinds if k == "source")
    if kinds[:n_sources] != ["source"] * n_sources:
        problems.append("stages: `read` stages must come first")
    tail = False
    for i, kind in enumerate(kinds):
        if kind == "sink" and any(k != "post" for k in kinds[i + 1 :]):
            problems.append(
                f"stages[{i}]: after `write` only dataset stages (tokenizer, tokenize, train, ...) may follow"
            )
        if kind == "post":
            tail = True
        elif tail:
            problems.append(f"stages[{i}]: document and dedup stages must come before `write` and dataset stages")
    return problems


def read_text(path: str | os.PathLike[str], what: str = "pipeline file") -> str:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise SpecError([f"cannot read {what}: {exc.strerror}"], path) from exc


def load_yaml_mapping(text: str, source: str, expected: str) -> tuple[dict[str, Any], yaml.Node]:
    """`yaml.safe_load` plus the composed node tree (for line numbers); SpecError unless it is a mapping."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"{where}invalid YAML: {getattr(exc, 'problem', None) or exc}"], source) from exc
    if not isinstance(data, dict):
        raise SpecError([f"the file must be a mapping with {expected}"], source)
    return data, root


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
        raise SpecError([describe_error(err, (), root) for err in exc.errors()], source) from exc


def build_stages(entries: Any, problems: list[str], root: yaml.Node | None = None) -> list[Stage]:
    """Instantiate each `- name: {args}` entry; append one line per problem to `problems`."""
    load_builtins()
    if not isinstance(entries, list) or not entries:
        problems.append(f"stages{_line(root, ('stages',))}: must be a non-empty list of `- name: {{...}}` entries")
        return []
    stages: list[Stage] = []
    for i, entry in enumerate(entries):
        loc: tuple[Any, ...] = ("stages", i)
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(f"stages[{i}]{_line(root, loc)}: each stage is a one-key mapping like `- normalize: {{}}`")
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
                f"stages[{i}]{_line(root, loc)}: unknown stage {name!r}{_suggest(name, known_stages())}{missing}"
            )
            continue
        if not isinstance(args, dict):
            problems.append(f"stages[{i}].{name}{_line(root, (*loc, name))}: arguments must be a mapping")
            continue
        stages += _instantiate(STAGES[name], args, (*loc, name), problems, root)
    return stages


def instantiate_reader(args: Any, loc: tuple, problems: list[str], root) -> list[Stage]:
    if not isinstance(args, dict):
        problems.append(f"{_path(loc)}{_line(root, loc)}: must be a mapping with `format` and `paths`")
        return []
    fmt = args.get("format")
    if fmt not in READERS:
        formats = ", ".join(known_formats())
        got = "missing" if fmt is None else f"got {fmt!r}"
        problems.append(f"{_path((*loc, 'format'))}{_line(root, (*loc, 'format'))}: must be one of {formats} ({got})")
        return []
    return _instantiate(READERS[fmt], args, loc, problems, root)


def _instantiate(cls: type[Stage], args: dict, loc: tuple, problems: list[str], root) -> list[Stage]:
    try:
        return [cls(**args)]
    except ValidationError as exc:
        problems.extend(describe_error(err, loc, root, cls) for err in exc.errors())
    except (TypeError, ValueError) as exc:
        problems.append(f"{_path(loc)}{_line(root, loc)}: {exc}")
    return []


def describe_error(err: dict[str, Any], prefix: tuple, root, model: type[BaseModel] | None = None) -> str:
    loc = (*prefix, *err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"must be one of {', '.join(choices)} (got {err['input']!r})"
    elif kind == "extra_forbidden":
        owner = _owner(model or Pipeline, err["loc"][:-1])
        message = "unknown key" + (_suggest(str(err["loc"][-1]), sorted(owner.model_fields)) if owner else "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
        if kind.endswith(("_type", "_parsing")) or kind in ("greater_than", "greater_than_equal", "less_than_equal"):
            message += f" (got {err['input']!r})"
    return f"{_path(loc)}{_line(root, loc)}: {message}"


def _owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc` (to list its valid keys), if it is a plain sub-model."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; known: {', '.join(choices)}"


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(root: yaml.Node | None, loc: tuple) -> str:
    """' (line N)' for the YAML node at `loc`, or '' when it cannot be found (e.g. a missing key)."""
    node, found = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        found = node
    return f" (line {found.start_mark.line + 1})" if found is not None else ""
