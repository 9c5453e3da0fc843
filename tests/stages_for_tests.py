"""User-style stages for tests, loaded by import path exactly as a user's own module would be."""

from __future__ import annotations

import time

import pyarrow as pa

from tokenmill.engine.documents import Doc
from tokenmill.engine.stage import DocumentStage


class SlowStage(DocumentStage):
    """Keeps everything, slowly: gives fault tests time to kill things mid-run."""

    seconds_per_doc: float = 0.01

    def process(self, doc: Doc) -> str | None:
        time.sleep(self.seconds_per_doc)
        return None


class CountWords(DocumentStage):
    """Annotates each document with its word count (a declared output column)."""

    def columns(self) -> dict[str, pa.DataType]:
        return {"n_words": pa.int64()}

    def process(self, doc: Doc) -> str | None:
        doc.annotations["n_words"] = len(doc.words())
        return None


def reject_short(doc: Doc, min_words: int = 5) -> str | None:
    """A plain-function filter."""
    return "too_short" if len(doc.words()) < min_words else None


def explode_on_marker(doc: Doc) -> str | None:
    """Raises for one kind of document: the error must cost that document only."""
    if "EXPLODE" in doc.text:
        raise ValueError("boom")
    return None


def reject_all(doc: Doc) -> str | None:
    return "always"
