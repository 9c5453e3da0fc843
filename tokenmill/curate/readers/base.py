"""What every reader shares: input globs, a source label, a size cap, shard listing, and clean document fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from tokenmill.engine.compressed import Damage
from tokenmill.engine.documents import Doc, storable
from tokenmill.engine.fsio import common_root, expand_paths, relative_name
from tokenmill.engine.listing import broken_symlink, display_path
from tokenmill.engine.stage import Outcomes, Shard, SourceStage

DEFAULT_MAX_DOC_BYTES = 32 * 1024 * 1024


def clean_value(value: Any) -> Any:
    """`storable` (the writer's rule: lone surrogates become U+FFFD) on every string inside a JSON-like value,
    dict keys included."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(key)): clean_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(item) for item in value]
    return value


def make_doc(doc_id: Any, text: str, source: Any, url: Any = None, meta: dict[str, Any] | None = None) -> Doc:
    """A document whose every string field (id, text, source, url, all of meta) is valid UTF-8."""
    return Doc(
        id=storable(str(doc_id)),
        text=storable(text),
        source=storable(str(source)),
        url=None if url is None else storable(str(url)),
        meta=clean_value(meta) if meta else {},
    )


def count_errors(out: Outcomes, n: int, reason: str, message: str, nbytes: int = 0) -> None:
    """`n` input records lost together (a damaged stretch of a file): each is seen and counted as an error under
    `reason`, with one message saying what happened."""
    n = max(1, n)
    for i in range(n):
        out.seen(nbytes if i == 0 else 0)
    out.error(None, reason, message)
    out.stats.errors[reason] += n - 1


def damage_summary(damage: Damage) -> str:
    """How reading goes on after a damaged member, for the end of a message."""
    if damage.resume is None:
        return "the rest of the file is unreadable"
    return f"reading resumes at offset {damage.resume}"


class Reader(SourceStage):
    """A reader lists one shard per input file and streams its records as documents.

    Documents larger than `max_doc_bytes` are rejected (`too_large`) instead of being pushed through every
    filter; empty or whitespace-only texts are rejected (`empty_document`). Every string a reader puts in a
    document is valid UTF-8 (`make_doc`). A shard whose file is a broken (or looping) symlink is one
    `broken_symlink` error naming the link.
    """

    format: str
    paths: list[str] = Field(min_length=1)
    source: str | None = None
    max_doc_bytes: int = Field(DEFAULT_MAX_DOC_BYTES, gt=0)

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @property
    def label(self) -> str:
        return "read"

    def shards(self) -> list[Shard]:
        """One shard per input file. A shard's `name` (the prefix of its document ids) is valid UTF-8 even when the
        file name is not: undecodable bytes are written `\\xNN` (see `listing.display_path`)."""
        found = self.input_files()
        root = common_root([url for url, _, _ in found])
        return [
            Shard(index=i, path=url, name=display_path(relative_name(url, root)), size=size, fingerprint=identity)
            for i, (url, size, identity) in enumerate(found)
        ]

    def input_files(self) -> list[tuple[str, int, str]]:
        return expand_paths(self.paths)

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        problem = broken_symlink(shard.path)
        if problem is not None:
            out.seen(0)
            out.error(None, "broken_symlink", f"read: {display_path(shard.path)}: {problem}")
            return
        yield from self.read_file(shard, out)

    def read_file(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        """Yield the kept documents of one input file; report every record on `out` (see SourceStage.read)."""
        raise NotImplementedError

    def admit(self, doc: Doc, out: Outcomes, raw_nbytes: int | None = None, where: str | None = None) -> bool:
        """Count `doc` as read (`raw_nbytes` of input) and apply the checks every reader shares; True if kept.

        `where` (file:line or file:row) names the record in messages when the document's id comes from the data.
        """
        nbytes = doc.nbytes
        out.seen(nbytes if raw_nbytes is None else raw_nbytes)
        if nbytes > self.max_doc_bytes:
            label = doc.id if where in (None, doc.id) else f"{where} (id {doc.id})"
            out.reject(doc, "too_large", f"read: {label}: {nbytes:,} bytes > max_doc_bytes {self.max_doc_bytes:,}")
            return False
        if not doc.text.strip():
            out.reject(doc, "empty_document")
            return False
        out.keep(doc)
        return True
