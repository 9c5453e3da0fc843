"""Any datatrove filter or formatter inside our fused tasks: `datatrove: {step: GopherQualityFilter, args: {...}}`.

Our documents become datatrove `Document`s (text, id, metadata with `url` and `source` added) and back. We call
the step's decision methods (`filter_batch`/`filter`, `format`) directly rather than its `run()`, so datatrove's
exclusion writers and stats files never run: rejected documents go to our `write: {rejected: true}` output and
counts to our stats, like every other stage.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from tokenmill.curate.custom import import_callable, split_import_path
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.spec import imports_user_code
from tokenmill.engine.stage import DocumentStage, Outcomes

STEP_MODULES = ("datatrove.pipeline.filters", "datatrove.pipeline.formatters")


def step_bases() -> tuple[type, type]:
    from datatrove.pipeline.filters.base_filter import BaseFilter
    from datatrove.pipeline.formatters.base import BaseFormatter

    return BaseFilter, BaseFormatter


def available_steps() -> list[str]:
    """Names of the filters and formatters that datatrove exports (usable as a bare `step:` name)."""
    bases = step_bases()
    names = set()
    for module_name in STEP_MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, bases) and value not in bases:
                names.add(name)
    return sorted(names)


def resolve_step(step: str) -> type:
    """The datatrove filter/formatter class for a bare name (`GopherQualityFilter`) or an import path
    (`datatrove.pipeline.filters.GopherQualityFilter`, `mypkg.filters:MyFilter`); ValueError otherwise."""
    bases = step_bases()
    if "." in step or ":" in step:
        target = import_callable(step)
    else:
        modules = [importlib.import_module(name) for name in STEP_MODULES]
        target = next((vars(m)[step] for m in modules if step in vars(m)), None)
        if target is None:
            raise ValueError(f"unknown datatrove step {step!r}; available: {', '.join(available_steps())}")
    if not (inspect.isclass(target) and issubclass(target, bases)):
        raise ValueError(f"{step!r} is not a datatrove filter or formatter; available: {', '.join(available_steps())}")
    return target


def names_user_code(step: str) -> bool:
    """True when `step` is an import path outside datatrove (a user's module, imported only when allowed)."""
    return ("." in step or ":" in step) and not step.startswith("datatrove.")


def missing_dependencies(cls: type) -> str | None:
    """`pip install ...` for the optional packages a datatrove step declares (`_requires_dependencies`) and that
    are not installed, exactly as datatrove checks when the step is built; None when all are there."""
    from datatrove.utils._import_utils import check_required_dependencies

    required = [dep for klass in cls.__mro__ for dep in getattr(klass, "_requires_dependencies", None) or ()]
    if not required:
        return None
    try:
        check_required_dependencies(cls.__name__, required)
    except ImportError as exc:
        command = re.search(r"pip install [^`]+", str(exc))
        return command.group(0) if command else str(exc)
    return None


def reason_name(step_name: str, reason: Any) -> str:
    """`datatrove:<Step>` or, when the filter names a reason, `datatrove:<Step>:<reason as snake_case>`
    (`< 3 paragraphs` becomes `lt_3_paragraphs`), so reasons stay low-cardinality keys."""
    if not reason:
        return f"datatrove:{step_name}"
    text = str(reason).lower().replace("<", " lt ").replace(">", " gt ")
    slug = re.sub(r"[^a-z0-9]+", "_", text).strip("_")[:64]
    return f"datatrove:{step_name}:{slug}" if slug else f"datatrove:{step_name}"


def jsonable(value: Any) -> Any:
    """Metadata a step added, made JSON-serialisable for our `meta` column (NumPy scalars become numbers)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):  # sorted, so output files stay byte-identical across runs
        return sorted((jsonable(v) for v in value), key=repr)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):  # a NumPy array of several values
            pass
    tolist = getattr(value, "tolist", None)
    return jsonable(tolist()) if callable(tolist) else str(value)


@register("datatrove")
class DatatroveStep(DocumentStage):
    """Runs any datatrove filter or formatter, built with `args`, inside our fused task.

    `step` is a name from datatrove.pipeline.filters / .formatters or an import path. A filter's rejection is
    `datatrove:<Step>[:<its reason>]`; a formatter's text change counts as `changed`, and a text it empties is
    rejected as `datatrove:<Step>:empty_after_format`. Metadata the step adds (e.g. a language score) is kept
    in `meta`.
    """

    step: str
    args: dict[str, Any] = Field(default_factory=dict)
    _step: Any = PrivateAttr(default=None)

    @field_validator("step")
    @classmethod
    def _known_step(cls, value: str) -> str:
        if names_user_code(value):
            split_import_path(value)
            if not imports_user_code():
                return value
        step = resolve_step(value)
        missing = missing_dependencies(step)
        if missing:
            raise ValueError(f"{step.__name__} needs optional packages that are not installed: {missing}")
        return value

    @model_validator(mode="after")
    def _valid_args(self) -> DatatroveStep:
        if "exclusion_writer" in self.args:
            raise ValueError("args.exclusion_writer: not supported; use `write: {rejected: true}` to keep rejections")
        if names_user_code(self.step) and not imports_user_code():
            return self
        try:
            inspect.signature(resolve_step(self.step)).bind(**self.args)
        except TypeError as exc:
            raise ValueError(f"args for {self.step}: {exc}") from exc
        return self

    def user_code(self) -> tuple[str, str] | None:
        """The key naming user code and its import path, for `validate` to say it was not imported."""
        return ("step", self.step) if names_user_code(self.step) and not imports_user_code() else None

    @property
    def step_name(self) -> str:
        return re.split(r"[.:]", self.step)[-1]

    @property
    def label(self) -> str:
        return f"datatrove:{self.step_name}"

    def setup(self) -> None:
        try:
            cls = resolve_step(self.step)
        except ValueError as exc:  # a user's module the worker cannot import: this shard's one-line failure
            raise ImportError(f"{self.label}: {exc} (it must be importable on every worker)") from exc
        kwargs = dict(self.args)
        if "exclusion_writer" in inspect.signature(cls).parameters:
            kwargs["exclusion_writer"] = None  # never let a step write files outside our output
        self._step = cls(**kwargs)

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        """Filters decide per chunk of the step's `batch_size` (one failing chunk is retried document by
        document, so an exception costs only its document); formatters rewrite one document at a time."""
        for doc in docs:
            out.seen(doc.nbytes)
        converted = [_to_datatrove(doc) for doc in docs]
        documents = [document for document, _ in converted]
        if isinstance(self._step, step_bases()[0]):
            outcomes = self._filter(documents)
        else:
            outcomes = [self._format(document) for document in documents]
        kept = []
        for doc, (document, injected), outcome in zip(docs, converted, outcomes):
            if isinstance(outcome, Exception):
                out.error(doc, f"exception:{type(outcome).__name__}", f"{self.label}: {doc.id}: {outcome!r}"[:500])
                continue
            if document.text != doc.text:
                doc.text = document.text
                out.stats.changed += 1
            doc.meta = {k: jsonable(v) for k, v in document.metadata.items() if k not in injected}
            if outcome is not None:
                out.reject(doc, outcome)
                continue
            out.keep(doc)
            kept.append(doc)
        return kept

    def _filter(self, documents: list[Any]) -> list[str | Exception | None]:
        size = max(1, int(getattr(self._step, "batch_size", 1) or 1))
        outcomes: list[str | Exception | None] = []
        for start in range(0, len(documents), size):
            chunk = documents[start : start + size]
            try:
                results = list(self._step.filter_batch(chunk))
                if len(results) != len(chunk):
                    raise ValueError(f"filter_batch returned {len(results)} results for {len(chunk)} documents")
            except Exception as exc:
                if len(chunk) == 1:
                    outcomes.append(exc)
                    continue
                results = [self._filter_one(document) for document in chunk]
            outcomes += [r if isinstance(r, Exception) else self._decision(r) for r in results]
        return outcomes

    def _filter_one(self, document: Any) -> Any:
        try:
            return self._step.filter(document)
        except Exception as exc:  # reported as this document's error
            return exc

    def _decision(self, result: Any) -> str | None:
        """datatrove filters return True to keep, False to drop, or (False, reason)."""
        keep, reason = (
            (result[0], result[1] if len(result) > 1 else None) if isinstance(result, tuple) else (result, None)
        )
        return None if keep else reason_name(self.step_name, reason)

    def _format(self, document: Any) -> str | Exception | None:
        try:
            text = self._step.format(document.text)
        except Exception as exc:  # reported as this document's error
            return exc
        if not isinstance(text, str):
            return TypeError(f"format() returned {type(text).__name__}, not str")
        document.text = text
        return None if text.strip() else reason_name(self.step_name, "empty_after_format")


def _to_datatrove(doc: Doc) -> tuple[Any, set[str]]:
    """A datatrove Document for `doc`, and the metadata keys we added (`url`, `source`) to strip on the way back."""
    from datatrove.data import Document

    metadata = dict(doc.meta)
    injected = set()
    for key in ("url", "source"):
        value = getattr(doc, key)
        if value and key not in metadata:
            metadata[key] = value
            injected.add(key)
    return Document(text=doc.text, id=doc.id, metadata=metadata), injected
