"""User stages plugged in from YAML by import path: `custom: {callable: "pkg.mod:Name", args: {...}}`.

The callable is imported when the pipeline is built (`run`, `validate --import`), never by a plain `validate`
(see `tokenmill.engine.spec.user_code` and docs/security.md), and again on each worker, in `setup`: a module the
workers cannot import fails each shard with one line naming the stage, rather than failing to unpickle the task.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.spec import imports_user_code
from tokenmill.engine.stage import DocumentStage, Outcomes


def split_import_path(spec: str) -> tuple[str, str]:
    """`package.module:attribute` (or `package.module.attribute`) as (module, attribute); ValueError when `spec`
    is not of that form. Imports nothing."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    parts = [*module_name.split("."), *attr.split(".")]
    if not module_name or not attr or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{spec!r} is not an import path like 'mypkg.filters:MyFilter'")
    return module_name, attr


def import_callable(spec: str) -> Any:
    """Resolve `package.module:attribute` (or `package.module.attribute`)."""
    module_name, attr = split_import_path(spec)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def invalid_output(doc: Doc) -> tuple[str, str] | None:
    """(field, what is wrong) when a stage left `doc` unwritable (a non-string text or id, ...), else None."""
    if type(doc.text) is not str:
        return "text", f"text is {type(doc.text).__name__}, not str"
    if type(doc.id) is not str:
        return "id", f"id is {type(doc.id).__name__}, not str"
    if not isinstance(doc.source, str):
        return "source", f"source is {type(doc.source).__name__}, not str"
    if doc.url is not None and not isinstance(doc.url, str):
        return "url", f"url is {type(doc.url).__name__}, not str or None"
    if not isinstance(doc.meta, dict):
        return "meta", f"meta is {type(doc.meta).__name__}, not dict"
    return None


@register("custom")
class CustomStage(DocumentStage):
    """Runs a user's stage with the same stats, rejection output and resume as built-in stages.

    `callable` names either a `DocumentStage` subclass (built with `args`, so its own fields are validated) or
    a function `fn(doc, **args)` returning None to keep the document or a rejection reason string; a function
    may also modify `doc.text` in place. Any other return value, or a document left with a non-string text or id,
    is that document's error (`invalid_output:<what>`), never the shard's.
    """

    callable: str
    args: dict[str, Any] = Field(default_factory=dict)
    _target: Any = PrivateAttr(default=None)

    @field_validator("callable")
    @classmethod
    def _import_path(cls, value: str) -> str:
        split_import_path(value)
        if imports_user_code():
            _check_target(value, import_callable(value))
        return value

    @model_validator(mode="after")
    def _build_target(self) -> CustomStage:
        if imports_user_code():
            self._target = self._make_target()
        return self

    def _make_target(self) -> Any:
        target = _check_target(self.callable, import_callable(self.callable))
        if inspect.isclass(target):
            try:
                return target(**self.args)
            except ValidationError as exc:
                problems = "; ".join(
                    f"args.{'.'.join(map(str, e['loc']))}: {e['msg'][0].lower()}{e['msg'][1:]}" for e in exc.errors()
                )
                raise ValueError(f"{self.callable}: {problems}") from None
        return target

    def user_code(self) -> tuple[str, str] | None:
        """The key naming user code and its import path, for `validate` to say it was not imported."""
        return None if self._target is not None else ("callable", self.callable)

    def __getstate__(self) -> dict[Any, Any]:
        # Workers import the callable themselves (in `setup`): a module they lack then fails the shard with a
        # message naming the stage, instead of failing to unpickle the task.
        state = super().__getstate__()
        state["__pydantic_private__"] = {**state["__pydantic_private__"], "_target": None}
        return state

    @property
    def label(self) -> str:
        return f"custom:{self.callable.rpartition(':')[2] or self.callable}"

    @property
    def target(self) -> Any:
        """The user's function or stage instance, imported on first use (on a worker: at the shard's start)."""
        if self._target is None:
            try:
                self._target = self._make_target()
            except ValueError as exc:
                raise ImportError(f"{self.label}: {exc} (it must be importable on every worker)") from exc
        return self._target

    def columns(self) -> dict:
        if not imports_user_code() and self._target is None:
            return {}  # `tokenmill validate` without --import: the user's columns are not known, nor needed
        target = self.target
        return target.columns() if isinstance(target, DocumentStage) else {}

    def setup(self) -> None:
        target = self.target
        if isinstance(target, DocumentStage):
            target.setup()

    def start_shard(self, shard: Any) -> None:
        target = self.target
        if isinstance(target, DocumentStage):
            target.start_shard(shard)

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        target = self.target
        if not isinstance(target, DocumentStage):
            return super().process_batch(docs, out)
        if type(target).process_batch is DocumentStage.process_batch:
            return target.process_batch(docs, out)
        # The user's own loop: what it kept must still be writable.
        kept = []
        for doc in target.process_batch(docs, out):
            problem = invalid_output(doc)
            if problem is None:
                kept.append(doc)
                continue
            what, why = problem
            out.stats.kept -= 1  # counted kept by the user's loop: now this document's error
            if isinstance(doc.text, str):
                out.stats.bytes_kept -= doc.nbytes
            out.error(None, f"invalid_output:{what}", f"{self.label}: {_doc_id(doc)}: {why}"[:500])
        return kept

    def process(self, doc: Doc) -> str | None:
        return self.target(doc, **self.args)


def _check_target(spec: str, target: Any) -> Any:
    if not (inspect.isclass(target) and issubclass(target, DocumentStage)) and not callable(target):
        raise ValueError(f"{spec!r} is neither a DocumentStage subclass nor a function")
    return target


def _doc_id(doc: Doc) -> str:
    return doc.id if isinstance(doc.id, str) else repr(doc.id)
