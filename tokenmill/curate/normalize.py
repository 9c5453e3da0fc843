"""Text normalization: Unicode form, mojibake repair, control characters, whitespace."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

import ftfy
from pydantic import Field

from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage

# C0/C1 controls except tab and newline (carriage returns are folded into newlines first), and the byte-order
# mark, which some sources leave at the start of a text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")

# Only ftfy's encoding repair runs: its other fixes (HTML unescaping, quote uncurling, width folding) change
# legitimate text and are not what "repair mojibake" promises.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)

# --- Exact pre-check for ftfy ----------------------------------------------------------------------------------------
# `ftfy.fix_text(text, _FTFY_CONFIG)` fixes each segment independently (a segment is a line with its "\n", or a
# `max_decode_length` slice of a longer line) with `fix_and_explain`, which, with only the fixes above enabled, returns
# a segment unchanged unless (a) `ftfy.badness.is_bad(segment)` (`BADNESS_RE.search`; its first alternative is any C1
# control, so this also covers `fix_c1_controls`, and `restore_byte_a0`, `replace_lossy_sequences` and
# `decode_inconsistent_utf8` only run inside `fix_encoding` after `is_bad`) or (b) the segment holds a surrogate
# (`fix_surrogates`). So only segments where (a) or (b) may hold go through ftfy; the others are kept as they are.
#
# Deciding (a) by running BADNESS_RE over every segment is itself slow (~8 MB/s: ~37 alternatives tried at every
# position). Every alternative must match at least one character of `_TRIGGER` (a single character class, which the
# regex engine scans in one tight loop; tests/test_normalize.py proves this alternative by alternative from the
# parsed BADNESS_RE). A BADNESS_RE match is at most `_WIDTH` characters long, so a segment is bad only if
# BADNESS_RE matches inside the segment within `_WIDTH - 1` characters of one of its trigger characters: that
# window is what `_BAD` is searched over. `_BAD` is BADNESS_RE with its one anchored alternative `^[ÃÂ][ ]`
# unanchored (a superset: `^` would not match at a window's start) plus the surrogates.
#
# The argument rests on the fixing loop of the ftfy version it was checked against; any other version gets the plain
# `ftfy.fix_text` path (tests fail loudly so that the argument is re-checked rather than silently lost).
_VERIFIED_FTFY = "6.3.1"
_MAX_SEGMENT = _FTFY_CONFIG.max_decode_length
_WIDTH = 7  # longest BADNESS_RE match: 'ГўВЂВ.[A-Za-z ]' (tests check it against the parsed pattern)
_ANCHORED = "^[ÃÂ][ ]"
_CATEGORIES = ftfy.badness.MOJIBAKE_CATEGORIES
_TRIGGER_CATEGORIES = ("c1", "bad", "currency", "numeric", "law", "start_punctuation", "end_punctuation", "box")
_TRIGGER = re.compile(
    "["
    + "".join(_CATEGORIES[name] for name in (*_TRIGGER_CATEGORIES, "upper_accented"))
    + "\u0152\u0153\u00d9\u00b0\u00d7\u0402\u045e"  # Œ œ Ù ° × Ђ ў
    + "\ud800-\udfff]"
)
_FAST_PATH = ftfy.__version__ == _VERIFIED_FTFY and ftfy.badness.BADNESS_RE.pattern.count(_ANCHORED) == 1
_BAD = re.compile(
    ftfy.badness.BADNESS_RE.pattern.replace(_ANCHORED, _ANCHORED[1:]) + "|[\ud800-\udfff]",
    ftfy.badness.BADNESS_RE.flags,
)


def fix_mojibake(text: str) -> str:
    """Exactly `ftfy.fix_text(text, _FTFY_CONFIG)`, with ftfy run only on the runs of segments it could change."""
    if not _FAST_PATH:
        return ftfy.fix_text(text, _FTFY_CONFIG)
    spans = _suspect_spans(text)
    if not spans:
        return text
    # A run of whole segments is segmented by fix_text exactly as it is inside the full text.
    out = []
    done = 0
    for start, end in spans:
        out.append(text[done:start])
        out.append(ftfy.fix_text(text[start:end], _FTFY_CONFIG))
        done = end
    out.append(text[done:])
    return "".join(out)


def _suspect_spans(text: str) -> list[list[int]]:
    """Merged [start, end) runs of the ftfy segments of `text` that BADNESS_RE or a surrogate may hit: a superset of
    the segments ftfy could change."""
    n = len(text)
    spans: list[list[int]] = []
    pos = 0
    while (trigger := _TRIGGER.search(text, pos)) is not None:
        p = trigger.start()
        # The ftfy segment holding p: its line, cut into _MAX_SEGMENT slices from the line start when longer.
        line_start = text.rfind("\n", 0, p) + 1
        line_end = text.find("\n", p) + 1 or n
        start = line_start + (p - line_start) // _MAX_SEGMENT * _MAX_SEGMENT
        end = min(start + _MAX_SEGMENT, line_end)
        if _BAD.search(text, max(start, p - _WIDTH + 1), min(end, p + _WIDTH)):
            if spans and spans[-1][1] == start:
                spans[-1][1] = end
            else:
                spans.append([start, end])
            pos = end
        else:
            pos = p + 1
    return spans


@register("normalize")
class Normalize(DocumentStage):
    """Unicode NFC/NFKC, mojibake repair (ftfy), control-character removal, whitespace and blank-line
    collapsing. Lowercasing and punctuation stripping exist for special corpora and are off by default.
    A document that normalizes to nothing is rejected as `empty_after_normalize`; `changed` counts the rest.
    """

    unicode: Literal["NFC", "NFKC"] | None = "NFC"
    fix_encoding: bool = True
    remove_control: bool = True
    collapse_whitespace: bool = True
    max_blank_lines: int = Field(1, ge=0)
    lowercase: bool = False
    strip_punctuation: bool = False

    def process(self, doc: Doc) -> str | None:
        doc.text = normalize_text(
            doc.text,
            unicode=self.unicode,
            fix_encoding=self.fix_encoding,
            remove_control=self.remove_control,
            collapse_whitespace=self.collapse_whitespace,
            max_blank_lines=self.max_blank_lines,
            lowercase=self.lowercase,
            strip_punctuation=self.strip_punctuation,
        )
        return None if doc.text else "empty_after_normalize"


def normalize_text(
    text: str,
    *,
    unicode: str | None = "NFC",
    fix_encoding: bool = True,
    remove_control: bool = True,
    collapse_whitespace: bool = True,
    max_blank_lines: int = 1,
    lowercase: bool = False,
    strip_punctuation: bool = False,
) -> str:
    """Pure function behind the `normalize` stage (property-tested: never raises; idempotent when
    `fix_encoding` is off, since ftfy can find new mojibake in text that whitespace collapsing produced)."""
    ascii_only = text.isascii()
    if fix_encoding and not ascii_only:  # mojibake needs non-ASCII characters; skipping ASCII is exact
        text = fix_mojibake(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if remove_control:
        text = _CONTROL.sub("", text)
    if unicode and not ascii_only:
        text = unicodedata.normalize(unicode, text)
    # After normalization: NFKC can create capitals (U+1D57C -> 'A') and punctuation (U+FE30 -> ':').
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if unicode and (lowercase or strip_punctuation) and not text.isascii():
        # Removing the punctuation between a letter and a combining mark leaves them uncomposed.
        text = unicodedata.normalize(unicode, text)
    if collapse_whitespace:
        # str.split() splits on exactly the characters regex \s matches; per line it trims and collapses at once.
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
        text = _blank_lines(max_blank_lines).sub("\n" * (max_blank_lines + 1), text).strip()
    return text


@functools.lru_cache(maxsize=8)
def _blank_lines(keep: int) -> re.Pattern[str]:
    return re.compile("\n{" + str(keep + 2) + ",}")
