"""FineWeb's own quality rules (Penedo et al. 2024), as datatrove's `FineWebQualityFilter` applies them."""

from __future__ import annotations

from collections import Counter

from pydantic import Field, PrivateAttr

from tokenmill.curate.filters.c4 import TERMINAL_PUNCTUATION
from tokenmill.curate.text.words import words
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentFilter


@register("fineweb_quality")
class FineWebQuality(DocumentFilter):
    """Rejects documents whose non-blank lines mostly lack terminal punctuation (`line_punct_ratio`), are mostly
    short (`short_line_ratio`), repeat each other (`char_dup_ratio`), or which hold more than 0.3 newlines per
    word (`list_ratio`); a document with no non-blank line is `empty`. Defaults are FineWeb's.

    `stop_chars` (default: Unicode's sentence terminators) are the line endings that count as punctuation.
    """

    line_punct_thr: float = Field(0.12, ge=0)
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] | None = None
    short_line_thr: float = Field(0.67, ge=0)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0)
    new_line_ratio: float = Field(0.3, ge=0)
    _stop_set: frozenset[str] | None = PrivateAttr(None)

    def model_post_init(self, context: object) -> None:
        stops = TERMINAL_PUNCTUATION if self.stop_chars is None else self.stop_chars
        # A set lookup on the last character is exact when every stop is one character; otherwise use endswith.
        self._stop_set = frozenset(stops) if all(len(stop) == 1 for stop in stops) else None

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc.text
        lines = [line for line in text.split("\n") if line and not line.isspace()]
        if not lines:
            return "empty"
        n_lines = len(lines)
        if self._stop_set is not None:
            stops = self._stop_set
            ending = sum(line[-1] in stops for line in lines)
        else:
            ending = sum(line.endswith(self.stop_chars) for line in lines)
        ratio = ending / n_lines
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return "line_punct_ratio"

        limit = self.short_line_length
        if sum(len(line) <= limit for line in lines) / n_lines > self.short_line_thr:
            return "short_line_ratio"

        repeated = sum(len(line) * (count - 1) for line, count in Counter(lines).items() if count > 1)
        newlines = text.count("\n")
        if repeated / (len(text) - newlines) > self.char_duplicates_ratio:
            return "char_dup_ratio"

        # Every whitespace-separated chunk is at least one word, so the cheap count settles most documents; only
        # list-like ones pay for the tokenizer-faithful count.
        if newlines / len(text.split()) > self.new_line_ratio and newlines / len(words(text)) > self.new_line_ratio:
            return "list_ratio"
        return None
