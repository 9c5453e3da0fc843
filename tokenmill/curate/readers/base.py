"""What every reader shares: input globs, a source label, a size cap, and shard listing."""

from __future__ import annotations

from pydantic import Field, field_validator

from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import common_root, expand_paths, relative_name
from tokenmill.engine.stage import Outcomes, Shard, SourceStage

DEFAULT_MAX_DOC_BYTES = 32 * 1024 * 1024


class Reader(SourceStage):
    """A reader lists one shard per input file and streams its records as documents.

    Documents larger than `max_doc_bytes` are rejected (`too_large`) instead of being pushed through every
    filter; empty or whitespace-only texts are rejected (`empty_document`).
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
        found = self.input_files()
        root = common_root([url for url, _, _ in found])
        return [
            Shard(index=i, path=url, name=relative_name(url, root), size=size, fingerprint=identity)
            for i, (url, size, identity) in enumerate(found)
        ]

    def input_files(self) -> list[tuple[str, int, str]]:
        return expand_paths(self.paths)

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
