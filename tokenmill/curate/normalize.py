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
        text = ftfy.fix_text(text, _FTFY_CONFIG)
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
