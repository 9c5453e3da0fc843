"""Evaluation-set decontamination (GPT-3 style): documents sharing a word n-gram with an evaluation set go.

Words are runs of Unicode word characters (`\\w+`) of the NFKC-normalized, optionally lowercased text, so case
and punctuation do not hide a match. Each word gets a 64-bit hash from the evaluation set's vocabulary; an n-gram's
hash is a polynomial over its words' hashes, computed for all positions at once with numpy. A word the
evaluation set never uses cannot be part of a matching n-gram, so windows containing one are dropped before the
lookup.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any

import numpy as np
import xxhash
from pydantic import Field, PrivateAttr, computed_field, model_validator

from tokenmill.engine.compressed import open_decompressed
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import InputNotFound, common_root, expand_paths, relative_name
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentFilter

_WORD = re.compile(r"\w+")
_ASCII_SEPARATORS = bytes(b if chr(b).isalnum() or chr(b) == "_" else ord(" ") for b in range(256))  # not \w: space
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so every word position changes the n-gram hash
_JSON = (".jsonl", ".json", ".ndjson")
_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
OOV = 0  # the hash of a document word absent from the evaluation vocabulary


def words(text: str, lowercase: bool = True) -> list[str]:
    """The comparison words of `text`: NFKC (for non-ASCII text), optionally lowercased, split into `\\w+` runs."""
    if text.isascii():  # the common case, 3x faster on bytes: every non-word byte becomes a space, then split
        return (text.lower() if lowercase else text).encode("ascii").translate(_ASCII_SEPARATORS).decode().split()
    text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.lower() if lowercase else text)


def word_hash(word: str) -> int:
    return xxhash.xxh3_64_intdigest(word.encode("utf-8", "surrogatepass")) or 1


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-word window of `word_hashes` (uint64; empty when there are fewer than n words).

    A window containing an OOV word gets no hash: it is dropped, so the result lists only windows whose words
    are all known, in order of position.
    """
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    out = np.zeros(count, np.uint64)
    for k in range(n):  # uint64 arithmetic wraps modulo 2**64, which is what a polynomial hash wants
        out = out * _MULTIPLIER + word_hashes[k : k + count]
    unknown = np.concatenate(([0], np.cumsum(word_hashes == OOV)))
    return out[unknown[n:] == unknown[:count]]


def sample_texts(path: str, text_fields: list[str]) -> list[str]:
    """The samples of one evaluation file: every non-blank line of a .txt file; for JSON files, the
    `text_fields` (dotted paths; a string, or a list of strings) of each record, one record per line (JSONL) or
    a JSON array of records. Malformed JSON raises ValueError naming the file (and line)."""
    with open_decompressed(path) as stream:
        raw = stream.read().decode("utf-8", "replace")
    if not _strip_compression(path.lower()).endswith(_JSON):
        return [line for line in raw.split("\n") if line.strip()]
    if raw.lstrip().startswith("["):
        try:
            records = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"evaluation file {path}: malformed JSON ({exc})") from exc
    else:
        records = []
        for lineno, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"evaluation file {path}:{lineno}: malformed JSON ({exc})") from exc
    samples = []
    for record in records:
        for field in text_fields:
            value = _lookup(record, field)
            if isinstance(value, str):
                samples.append(value)
            elif isinstance(value, list):
                samples += [v for v in value if isinstance(v, str)]
    return samples


class _EvalIndex:
    """Evaluation n-gram hashes by length (sorted), the file each came from, and the evaluation vocabulary."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.vocabulary: dict[str, int] = {}
        self.by_length: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def match(self, doc_words: list[str]) -> int | None:
        """The lowest index of a file sharing an n-gram with these words, or None."""
        if not self.by_length or len(doc_words) < min(self.by_length):
            return None
        get = self.vocabulary.get
        hashes = np.fromiter((get(w, OOV) for w in doc_words), np.uint64, len(doc_words))
        best = None
        for length, (keys, files) in self.by_length.items():
            grams = ngram_hashes(hashes, length)
            if len(grams) == 0:
                continue
            at = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            hit = keys[at] == grams
            if hit.any():
                found = int(files[at[hit]].min())
                best = found if best is None else min(best, found)
        return best


@register("decontaminate")
class Decontaminate(DocumentFilter):
    """Rejects documents sharing an `ngram`-word sequence with an evaluation file, as `contaminated:<file>`.

    The reason names the first file (in configuration order) with a matching sample.

    `eval_files` (fsspec paths or globs; .gz/.zst ok) are JSONL — samples in `text_field` (a dotted path, or a
    list of them; a list value gives one sample per string) — or plain text, one sample per non-blank line. A
    sample shorter than `ngram` words counts as one n-gram of its full length; samples shorter than `min_words`
    are ignored, since a handful of common words would match ordinary text. The n-gram set is built in `setup`,
    once per worker process (memory: about 12 bytes per evaluation n-gram plus the evaluation vocabulary).
    """

    eval_files: list[str] = Field(min_length=1)
    text_field: str | list[str] = "text"
    ngram: int = Field(13, ge=1)
    min_words: int = Field(8, ge=1, description="evaluation samples with fewer words are ignored")
    lowercase: bool = True
    _resolved: list[tuple[str, str, str]] = PrivateAttr(default_factory=list)  # (url, reason name, identity)
    _index: _EvalIndex | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> Decontaminate:
        try:
            found = expand_paths(self.eval_files)
        except InputNotFound as exc:
            raise ValueError(f"evaluation file not found: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"cannot read evaluation files: {exc}") from exc
        urls = [url for url, _, _ in found]
        for url in urls:
            if not _strip_compression(url.lower()).endswith((*_JSON, ".txt")):
                raise ValueError(f"{url}: evaluation files are .jsonl/.json/.ndjson or .txt (optionally .gz/.zst)")
        root = common_root(urls)
        self._resolved = [(url, relative_name(url, root), identity) for url, _, identity in found]
        return self

    @computed_field  # in the stage's fingerprint, so editing an evaluation file recomputes finished shards
    @property
    def eval_identity(self) -> list[str]:
        return [f"{url} {identity}" for url, _, identity in self._resolved]

    def setup(self) -> None:
        fields = [self.text_field] if isinstance(self.text_field, str) else list(self.text_field)
        key = (tuple(self._resolved), tuple(fields), self.ngram, self.min_words, self.lowercase)
        self._index = _build_index(*key)

    def reject_reason(self, doc: Doc) -> str | None:
        if self._index is None:  # used from Python without the executor's setup call
            self.setup()
        index = self._index
        matched = index.match(words(doc.text, self.lowercase))
        return None if matched is None else f"contaminated:{index.names[matched]}"


@functools.lru_cache(maxsize=2)
def _build_index(
    resolved: tuple[tuple[str, str, str], ...], fields: tuple[str, ...], n: int, min_words: int, lowercase: bool
) -> _EvalIndex:
    """Read every evaluation file and hash its n-grams (cached per process: tasks of one worker share it)."""
    index = _EvalIndex([name for _, name, _ in resolved])
    grams: dict[int, list[tuple[np.ndarray, int]]] = {}
    for file_index, (url, _, _) in enumerate(resolved):
        samples = sample_texts(url, list(fields))
        if not samples:
            raise ValueError(f"evaluation file {url}: no samples (is text_field {list(fields)} right?)")
        for sample in samples:
            sample_words = words(sample, lowercase)
            if len(sample_words) < min_words:
                continue
            hashes = np.array([_vocabulary_hash(index.vocabulary, w) for w in sample_words], np.uint64)
            length = min(n, len(hashes))
            grams.setdefault(length, []).append((ngram_hashes(hashes, length), file_index))
    for length, parts in grams.items():
        keys = np.concatenate([h for h, _ in parts])
        files = np.concatenate([np.full(len(h), f, np.int32) for h, f in parts])
        order = np.lexsort((files, keys))  # by hash, then file: the first of equal hashes has the lowest file
        keys, files = keys[order], files[order]
        first = np.concatenate(([True], keys[1:] != keys[:-1]))
        index.by_length[length] = (keys[first], files[first])
    return index


def _vocabulary_hash(vocabulary: dict[str, int], word: str) -> int:
    value = vocabulary.get(word)
    if value is None:
        value = vocabulary[word] = word_hash(word)
    return value


def _lookup(record: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def _strip_compression(path: str) -> str:
    for suffix in _COMPRESSED:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path
