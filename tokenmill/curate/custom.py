"""User stages plugged in from YAML by import path: `custom: {callable: "pkg.mod:Name", args: {...}}`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pydantic import Field, PrivateAttr, field_validator

from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage, Outcomes


def import_callable(spec: str) -> Any:
    """Resolve `package.module:attribute` (or `package.module.attribute`)."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not an import path like 'mypkg.filters:MyFilter'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


@register("custom")
class CustomStage(DocumentStage):
    """Runs a user's stage with the same stats, rejection output and resume as built-in stages.

    `callable` names either a `DocumentStage` subclass (built with `args`, so its own fields are validated) or
    a function `fn(doc, **args)` returning None to keep the document or a rejection reason string; a function
    may also modify `doc.text` in place.
    """

    callable: str
    args: dict[str, Any] = Field(default_factory=dict)
    _target: Any = PrivateAttr(default=None)

    @field_validator("callable")
    @classmethod
    def _importable(cls, value: str) -> str:
        target = import_callable(value)
        if not (inspect.isclass(target) and issubclass(target, DocumentStage)) and not callable(target):
            raise ValueError(f"{value!r} is neither a DocumentStage subclass nor a function")
        return value

    def model_post_init(self, context: Any) -> None:
        target = import_callable(self.callable)
        if inspect.isclass(target) and issubclass(target, DocumentStage):
            target = target(**self.args)
        self._target = target

    @property
    def label(self) -> str:
        return f"custom:{self.callable.rpartition(':')[2] or self.callable}"

    def columns(self) -> dict:
        return self._target.columns() if isinstance(self._target, DocumentStage) else {}

    def setup(self) -> None:
        if isinstance(self._target, DocumentStage):
            self._target.setup()

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        if isinstance(self._target, DocumentStage):
            return self._target.process_batch(docs, out)
        return super().process_batch(docs, out)

    def process(self, doc: Doc) -> str | None:
        return self._target(doc, **self.args)
