"""The `quality` stage: scores documents with a fastText quality classifier and rejects those below a threshold.

The classifier comes from `tokenmill quality train` (see `tokenmill.curate.quality_training`); text is prepared
for prediction exactly as it was for training (`prepare_text`).

fastText 0.9.3's `FastText.predict(str)` calls `np.array(..., copy=False)`, which NumPy 2 rejects; the list form
of `predict` returns arrays built in C++ and never reaches that line, so we always predict on lists of lines.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Any, Literal

import fsspec
import pyarrow as pa
from fsspec.core import url_to_fs
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field, field_validator

from tokenmill.curate.filters.language import check_fasttext_model
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import is_local_fs
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage, Outcomes

LABEL_PREFIX = "__label__"
_SURROGATES = re.compile("[\ud800-\udfff]")


class TextPreprocess(BaseModel):
    """How text is prepared for fastText, identically at training and at prediction.

    Newlines and all other whitespace always become single spaces (fastText reads one example per line).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    lowercase: bool = True
    unicode: Literal["NFC", "NFKC"] | None = None


def prepare_text(text: str, preprocess: TextPreprocess) -> str:
    """One line for fastText: optional Unicode normalization and lowercasing, whitespace runs to single spaces.

    Never raises: lone surrogates (which cannot cross into C++ as UTF-8) become U+FFFD, and `__label__` inside
    the text is defused, since fastText would read such a token as a class label.
    """
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
        if preprocess.unicode:
            text = unicodedata.normalize(preprocess.unicode, text)
    if preprocess.lowercase:
        text = text.lower()
    if LABEL_PREFIX in text:
        text = text.replace(LABEL_PREFIX, "_label_")
    return " ".join(text.split())


def positive_scores(model: Any, lines: list[str], label: str) -> list[float]:
    """Probability of `label` for each line (0.0 when fastText does not return it, e.g. for an empty line)."""
    labels, probs = model.predict(lines, k=-1)  # list form: the NumPy-2-safe path of fastText's predict
    scores = []
    for names, values in zip(labels, probs):
        names = list(names)
        scores.append(float(values[names.index(label)]) if label in names else 0.0)
    return scores


@register("quality")
class QualityClassifier(DocumentStage):
    """Scores documents with a fastText quality classifier and rejects those below `threshold`.

    The score is the probability of the positive `label` under a model from `tokenmill quality train`; below
    `threshold` a document is rejected as `quality_below_threshold`. The score is kept in the `quality_score`
    column, on kept and rejected documents alike.

    Text is prepared as at training: `preprocess` defaults to the settings in `report.json` beside the model
    (lowercasing only, for a model trained elsewhere).
    """

    model: str
    threshold: float = Field(0.5, ge=0, le=1)
    positive_label: str = Field(f"{LABEL_PREFIX}hq", alias="label", pattern=rf"^{LABEL_PREFIX}\S+$")
    preprocess: TextPreprocess | None = None
    _model: Any = PrivateAttr(default=None)
    _preprocess: TextPreprocess = PrivateAttr(default_factory=TextPreprocess)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        try:
            fs, path = url_to_fs(value)
        except ImportError as exc:  # s3:// without s3fs, ...
            raise ValueError(f"cannot open {value}: {exc}") from None
        if is_local_fs(fs):  # absolute, so workers started elsewhere find it
            value = path = os.path.abspath(os.path.expanduser(path))
        if not fs.isfile(path):
            raise ValueError(f"model file not found: {value}")
        if is_local_fs(fs):  # a remote model is checked on the worker, once fetched
            check_fasttext_model(path, "quality")
        return value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def model_version(self) -> str:
        """Size and modification time of the model file: part of the resume fingerprint, so a retrained model
        recomputes finished shards."""
        fs, path = url_to_fs(self.model)
        info = fs.info(path)
        return json.dumps([info.get("size"), info.get("mtime") or info.get("LastModified")], default=str)

    def columns(self) -> dict[str, pa.DataType]:
        return {"quality_score": pa.float32()}

    def setup(self) -> None:
        import fasttext

        fs, path = url_to_fs(self.model)
        if not is_local_fs(fs):  # fastText reads only local files: fetch a remote model into a local cache
            path = fsspec.open_local(f"simplecache::{self.model}")
        check_fasttext_model(path, "quality")  # fastText's loader may crash the worker on a truncated file
        self._model = fasttext.load_model(path)
        known = self._model.get_labels()
        if self.positive_label not in known:
            raise ValueError(f"quality: model {self.model} has labels {', '.join(known)}, not {self.positive_label!r}")
        self._preprocess = self.preprocess or _training_preprocess(fs, self.model)

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        """One fastText call per batch; if it fails, documents are scored one by one so only the culprit errs."""
        if not docs:
            return []
        label = self.positive_label
        lines = [prepare_text(doc.text, self._preprocess) for doc in docs]
        try:
            scores: list[float] | None = positive_scores(self._model, lines, label)
        except Exception:
            scores = None
        kept = []
        for i, doc in enumerate(docs):
            out.seen(doc.nbytes)
            try:
                score = scores[i] if scores is not None else positive_scores(self._model, [lines[i]], label)[0]
            except Exception as exc:  # one bad document must not kill the shard
                out.error(doc, f"exception:{type(exc).__name__}", f"quality: {doc.id}: {exc!r}"[:500])
                continue
            doc.annotations["quality_score"] = score
            if score < self.threshold:
                out.reject(doc, "quality_below_threshold")
                continue
            out.keep(doc)
            kept.append(doc)
        return kept


def _training_preprocess(fs: Any, model: str) -> TextPreprocess:
    """The preprocessing recorded in `report.json` beside the model, or the defaults when there is none."""
    report = model.rsplit("/", 1)[0] + "/report.json"
    if not fs.exists(report):
        return TextPreprocess()
    with fs.open(report, "r", encoding="utf-8") as handle:
        return TextPreprocess(**json.load(handle).get("preprocess", {}))
