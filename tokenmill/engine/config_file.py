"""Configuration files: YAML (safe_load only, bounded) validated by pydantic, one line per problem.

Pipelines, training configs and quality-classifier configs are all read here, so every problem reads the same:
`stages[3].normalize.unicode (line 12): must be one of NFC, NFKC (got 'NFD')`.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
MAX_BYTES = 10 * 1024 * 1024  # a configuration file, not data
MAX_NODES = 100_000  # expanded YAML nodes: far above any real pipeline, far below a memory problem
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 6
_SHORT.maxlevel = 2


def short_repr(value: Any) -> str:
    """A bounded repr for error messages: never the whole of an arbitrarily large input."""
    return _SHORT.repr(value)


class SpecError(ValueError):
    """The pipeline spec is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "pipeline") -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def read_text(path: str | os.PathLike[str], what: str = "pipeline file") -> str:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise SpecError([f"cannot read {what}: {exc.strerror}"], path) from exc


def load_yaml_mapping(text: str, source: str, expected: str) -> tuple[dict[str, Any], yaml.Node]:
    """`yaml.safe_load` plus the composed node tree (for line numbers); SpecError unless it is a mapping.

    Aliases make a small file expand into a huge document (a "billion laughs" bomb): the expanded size is counted
    on the composed node tree (shared nodes counted once per use, in time linear in the file) and a document over
    MAX_NODES nodes, or a recursive alias, is refused before anything walks the constructed data.
    """
    if len(text) > MAX_BYTES:
        raise SpecError([f"the file has {len(text):,} characters; a configuration is at most {MAX_BYTES:,}"], source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        expanded = _expanded_size(root)
        if expanded > MAX_NODES:
            raise SpecError([f"the document expands to over {MAX_NODES:,} YAML nodes (aliases of aliases?)"], source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"{where}invalid YAML: {getattr(exc, 'problem', None) or exc}"], source) from exc
    if not isinstance(data, dict):
        raise SpecError([f"the file must be a mapping with {expected}"], source)
    return data, root


def describe_error(err: dict[str, Any], prefix: tuple, root, model: type[BaseModel] | None = None) -> str:
    loc = (*prefix, *err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"must be one of {', '.join(choices)} (got {short_repr(err['input'])})"
    elif kind == "extra_forbidden":
        owner = _owner(model, err["loc"][:-1]) if model else None
        message = "unknown key" + (suggest(str(err["loc"][-1]), sorted(owner.model_fields)) if owner else "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
        if kind.endswith(("_type", "_parsing")) or kind in ("greater_than", "greater_than_equal", "less_than_equal"):
            message += f" (got {short_repr(err['input'])})"
    return f"{key_path(loc)}{yaml_line(root, loc)}: {message}"


def _owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc` (to list its valid keys), if it is a plain sub-model."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; known: {', '.join(choices)}"


def key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def yaml_line(root: yaml.Node | None, loc: tuple) -> str:
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


def load_config(
    path: str | os.PathLike[str],
    model: type[M],
    what: str,
    expected: str,
    drop: tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> tuple[M, dict[str, Any]]:
    """Read and validate a YAML file as `model`; keys in `drop` are returned apart (paths a command takes),
    `overrides` replace keys of the file (command-line options).

    Raises SpecError with one line per problem (key path and YAML line).
    """
    path = os.fspath(path)
    data, root = load_yaml_mapping(read_text(path, what), path, expected)
    extra = {key: data.pop(key) for key in drop if key in data}
    data.update(overrides or {})
    try:
        return model(**data), extra
    except ValidationError as exc:
        raise SpecError([describe_error(err, (), root, model) for err in exc.errors()], path) from exc


def _expanded_size(root: yaml.Node | None) -> int:
    """Nodes of the document once every alias is expanded; MAX_NODES + 1 as soon as that is exceeded or for a
    recursive alias. Memoised by node identity, so a bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:  # an alias of an enclosing node: infinite
            return MAX_NODES + 1
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                break
        active.discard(key)
        sizes[key] = min(total, MAX_NODES + 1)
        return sizes[key]

    return size(root) if root is not None else 0
