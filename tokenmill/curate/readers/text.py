"""Plain text files: the whole file, its paragraphs, or chunks of about `chunk_bytes` cut at line ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from tokenmill.curate.readers.base import Reader
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import open_decompressed
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard


@register_reader("text")
class TextReader(Reader):
    """UTF-8 text (`.txt`, `.gz`, `.zst`). `split: file` makes one document per file, `paragraph` one per
    blank-line-separated block, `chunks` consecutive pieces of about `chunk_bytes` ending at a line end (so
    a single long text, like a book, can be split into training and validation documents)."""

    format: Literal["text"] = "text"
    split: Literal["file", "paragraph", "chunks"] = "file"
    chunk_bytes: int = Field(65536, gt=0)

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        with open_decompressed(shard.path) as stream:
            data = stream.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.seen(len(data))
            out.error(None, "invalid_utf8", f"read: {shard.name}: invalid UTF-8 at byte {exc.start}")
            return
        for index, piece in enumerate(self._pieces(text)):
            doc = Doc(id=f"{shard.name}:{index}", text=piece, source=self.source or "text")
            if self.admit(doc, out):
                yield doc

    def _pieces(self, text: str) -> Iterator[str]:
        if self.split == "file":
            yield text
        elif self.split == "paragraph":
            yield from (p for p in text.split("\n\n") if p)
        else:
            start = 0
            while start < len(text):
                end = text.find("\n", start + self.chunk_bytes)
                end = len(text) if end < 0 else end + 1
                yield text[start:end]
                start = end
