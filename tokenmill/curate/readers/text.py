"""Plain text files: the whole file, its paragraphs, or chunks of about `chunk_bytes` cut at line ends."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from tokenmill.curate.readers.base import Reader, count_errors, damage_summary, make_doc
from tokenmill.engine.compressed import Damage, VerifiedReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.listing import display_path
from tokenmill.engine.registry import register_reader
from tokenmill.engine.stage import Outcomes, Shard

_BOM = b"\xef\xbb\xbf"
_PARAGRAPH_BREAK = re.compile(rb"\r?\n\r?\n")


@register_reader("text")
class TextReader(Reader):
    """UTF-8 text (`.txt`, `.gz`, `.zst`, `.bz2`, `.xz`). `split: file` makes one document per file, `paragraph`
    one per blank-line-separated block (LF or CRLF line ends), `chunks` consecutive pieces of about `chunk_bytes`
    bytes ending at a line end (so a single long text, like a book, can be split into training and validation
    documents). A UTF-8 byte-order mark at the start of the file is dropped.

    Each piece is decoded on its own: invalid UTF-8 costs that paragraph or chunk (one `invalid_utf8` error naming
    file, piece and byte offset), not the file. Compressed input is used only once its member verified; a member
    that fails is one error (`corrupt_stream`/`truncated_stream`) for the piece it interrupts, and reading resumes
    with a new piece at the next good member. With `split: file` any damage costs the one document.
    """

    format: Literal["text"] = "text"
    split: Literal["file", "paragraph", "chunks"] = "file"
    chunk_bytes: int = Field(65536, gt=0)

    def read_file(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        index = 0
        offset = 0  # decompressed offset of buffer[0]
        buffer = bytearray()
        at_start = True
        for item in VerifiedReader(shard.path):
            if isinstance(item, Damage):
                message = (
                    f"read: {display_path(shard.path)} @ offset {item.offset}: {item.detail}; "
                    f"{'the file' if self.split == 'file' else f'piece {index}'} is counted as an error, "
                    f"not kept; {damage_summary(item)}"
                )
                count_errors(out, 1, item.reason, message, len(buffer))
                index += 1
                offset += len(buffer)
                buffer.clear()
                if self.split == "file":
                    return
                continue
            data = item.data
            if at_start:
                at_start = False
                if data.startswith(_BOM):
                    data, offset = data[len(_BOM) :], len(_BOM)
            buffer += data
            if self.split == "file":
                continue
            consumed = 0
            for piece, at in self._pieces(buffer, final=False):
                yield from self._emit(shard, index, offset + at, piece, out)
                index += 1
                consumed = at + len(piece)
            if consumed:
                del buffer[:consumed]
                offset += consumed
        for piece, at in self._pieces(buffer, final=True):
            yield from self._emit(shard, index, offset + at, piece, out)
            index += 1

    def _pieces(self, buffer: bytearray, final: bool) -> Iterator[tuple[bytes, int]]:
        """Complete pieces of `buffer` as (bytes, offset in buffer); with `final`, the rest too."""
        if self.split == "file":
            if final:
                yield bytes(buffer), 0
            return
        start = 0
        if self.split == "paragraph":
            for match in _PARAGRAPH_BREAK.finditer(buffer):
                if match.start() > start:
                    yield bytes(buffer[start : match.start()]), start
                start = match.end()
            if final and start < len(buffer):
                yield bytes(buffer[start:]), start
            return
        while start < len(buffer):
            end = buffer.find(b"\n", start + self.chunk_bytes)
            if end < 0:
                if final:
                    yield bytes(buffer[start:]), start
                return
            yield bytes(buffer[start : end + 1]), start
            start = end + 1

    def _emit(self, shard: Shard, index: int, offset: int, piece: bytes, out: Outcomes) -> Iterator[Doc]:
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.seen(len(piece))
            where = shard.name if self.split == "file" else f"{shard.name}:{index}"
            out.error(None, "invalid_utf8", f"read: {where}: invalid UTF-8 at byte {offset + exc.start}")
            return
        doc = make_doc(f"{shard.name}:{index}", text, self.source or "text")
        if self.admit(doc, out):
            yield doc
