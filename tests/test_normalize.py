"""`normalize_text` and the `normalize` stage: examples of each option, then properties over arbitrary Unicode."""

from __future__ import annotations

import re
import unicodedata

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenmill.curate.normalize import Normalize, normalize_text
from tokenmill.engine.documents import Doc
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

# --- Examples --------------------------------------------------------------------------------------------------------


def test_mojibake_is_repaired_and_clean_text_left_alone() -> None:
    assert normalize_text("CafÃ© au lait") == "Café au lait"
    assert normalize_text("â€œquotedâ€\x9d and itâ€™s") == "\u201cquoted\u201d and it\u2019s"
    assert normalize_text("CafÃ©", fix_encoding=False) == "CafÃ©"
    for clean in ("Café", "naïve façade", "日本語のテキスト", "Ελληνικά", "emoji 🙂 ok", "“curly” quotes stay"):
        assert normalize_text(clean) == clean
    assert normalize_text("&amp; stays escaped") == "&amp; stays escaped"  # HTML unescaping is not our job


def test_nfc_keeps_ligatures_nfkc_folds_them() -> None:
    decomposed = "Cafe\u0301"
    assert normalize_text(decomposed) == "Caf\u00e9"  # NFC composes
    assert normalize_text("\ufb01le") == "\ufb01le"  # NFC keeps the 'fi' ligature
    assert normalize_text("\ufb01le", unicode="NFKC") == "file"
    assert normalize_text("x\u00b2 \uff21", unicode="NFKC") == "x2 A"  # superscript and full-width folded
    assert normalize_text(decomposed, unicode=None, fix_encoding=False) == decomposed


def test_control_characters_are_removed() -> None:
    assert normalize_text("a\x00b\x07c\x1bd\x7fe") == "abcde"
    assert normalize_text("bell\x07 and\x08 backspace", fix_encoding=False) == "bell and backspace"
    assert normalize_text("C1 \x85\x9f gone", fix_encoding=False) == "C1 gone"
    # With encoding repair on, ftfy reads C1 controls as the Windows-1252 characters they usually are.
    assert normalize_text("wait\x85 what") == "wait\u2026 what"
    assert normalize_text("keep\x00", remove_control=False, collapse_whitespace=False) == "keep\x00"


def test_line_endings_become_newlines() -> None:
    assert normalize_text("one\r\ntwo\rthree\nfour") == "one\ntwo\nthree\nfour"
    assert normalize_text("a\r\n\r\n\r\n\r\nb") == "a\n\nb"
    assert normalize_text("a\r\nb", collapse_whitespace=False) == "a\nb"


def test_whitespace_and_blank_lines_collapse() -> None:
    assert normalize_text("  many   spaces\tand\ttabs\u00a0\u3000here  ") == "many spaces and tabs here"
    assert normalize_text("trailing   \n   leading") == "trailing\nleading"
    assert normalize_text("a\n \t \n\u2003\n\nb") == "a\n\nb"  # whitespace-only lines are blank lines
    text = "p1\n\n\n\n\np2\n\np3"
    assert normalize_text(text) == "p1\n\np2\n\np3"  # default: at most one blank line
    assert normalize_text(text, max_blank_lines=0) == "p1\np2\np3"
    assert normalize_text(text, max_blank_lines=2) == "p1\n\n\np2\n\np3"
    assert normalize_text(" a  b \n\n\n", collapse_whitespace=False) == " a  b \n\n\n"
    assert normalize_text(" \n\t\r\n ") == ""


def test_lowercase_and_punctuation_stripping_are_opt_in() -> None:
    text = "Hello, World! It's \u00abgreat\u00bb \u2014 isn't it?"
    assert normalize_text(text) == text
    assert normalize_text(text, lowercase=True) == "hello, world! it's \u00abgreat\u00bb \u2014 isn't it?"
    assert normalize_text(text, strip_punctuation=True) == "Hello World Its great isnt it"
    assert normalize_text("\u00c9COLE", lowercase=True) == "\u00e9cole"


def test_lowercase_and_punctuation_apply_after_nfkc() -> None:
    bold = "\U0001d407\U0001d41e\U0001d425\U0001d425\U0001d428"  # mathematical bold "Hello"
    assert normalize_text(bold, unicode="NFKC", lowercase=True) == "hello"
    assert normalize_text("a\ufe30b", unicode="NFKC", strip_punctuation=True) == "ab"  # U+FE30 folds to ':'


def test_stripping_punctuation_keeps_the_result_normalized() -> None:
    # Removing the ellipsis leaves 'e' next to a combining acute accent: NFC must compose them again.
    assert normalize_text("e\u2026\u0301", strip_punctuation=True) == "\u00e9"
    assert normalize_text("e.\u0301", strip_punctuation=True, fix_encoding=False) == "\u00e9"


def test_normalize_stage_counts_changes_and_rejects_empty_results() -> None:
    docs = [
        Doc(id="mojibake", text="CafÃ©   ouvert"),
        Doc(id="clean", text="Already clean text."),
        Doc(id="controls-only", text="\x00\x01 \r\n \t"),
        Doc(id="crlf", text="line\r\nline"),
    ]
    out = Outcomes(StageStats("normalize"), [])
    kept = Normalize().process_batch(docs, out)
    assert [(d.id, d.text) for d in kept] == [
        ("mojibake", "Café ouvert"),
        ("clean", "Already clean text."),
        ("crlf", "line\nline"),
    ]
    assert out.stats.changed == 2
    assert out.stats.rejected == {"empty_after_normalize": 1}
    assert [(doc.id, reason) for doc, reason in out.rejected] == [("controls-only", "empty_after_normalize")]
    assert out.stats.check().kept == 3 and not out.stats.errors


def test_normalize_stage_options_are_passed_through_and_validated() -> None:
    stage = Normalize(unicode="NFKC", lowercase=True, strip_punctuation=True, max_blank_lines=0)
    doc = Doc(id="d", text="\ufb01NE, Print!\n\n\nNext")
    assert stage.process(doc) is None and doc.text == "fine print\nnext"
    with pytest.raises(pydantic.ValidationError):
        Normalize(unicode="NFD")
    with pytest.raises(pydantic.ValidationError):
        Normalize(max_blank_lines=-1)
    with pytest.raises(pydantic.ValidationError):
        Normalize(lowercse=True)


# --- Properties ------------------------------------------------------------------------------------------------------

# Arbitrary code points (surrogates included), plus text built from the characters the rules are about.
TRICKY = list(
    " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u3000\u200b\ufeff"
    "\x00\x07\x1b\x7f\x80\x81\x9f.,!\u2026\u00ab-_'\""
    "aAeE\u00c3\u00a9\u00e2\u20ac\u2122\u0301\u0308\ufb01\uff21\u00b2\u0130\u1e9e\U0001d400"
)
texts = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=80),
    st.text(st.sampled_from(TRICKY), max_size=60),
)
options = st.fixed_dictionaries(
    {
        "unicode": st.sampled_from(["NFC", "NFKC", None]),
        "remove_control": st.booleans(),
        "collapse_whitespace": st.booleans(),
        "max_blank_lines": st.integers(0, 3),
        "lowercase": st.booleans(),
        "strip_punctuation": st.booleans(),
    }
)
PROPERTY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
C0_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f]")
C1 = re.compile(r"[\x7f-\x9f]")


@PROPERTY
@given(texts, options, st.booleans())
def test_never_raises_and_returns_str(text: str, opts: dict, fix_encoding: bool) -> None:
    assert isinstance(normalize_text(text, fix_encoding=fix_encoding, **opts), str)


@PROPERTY
@given(texts, options)
def test_idempotent_without_encoding_repair(text: str, opts: dict) -> None:
    # Encoding repair alone is not idempotent: collapsing 'Ã\t\xa0' to 'Ã ' creates new mojibake ('Ã ' = 'à').
    once = normalize_text(text, fix_encoding=False, **opts)
    assert normalize_text(once, fix_encoding=False, **opts) == once


@PROPERTY
@given(texts, st.sampled_from(["NFC", "NFKC"]), st.integers(0, 3), st.booleans())
def test_default_output_invariants(text: str, form: str, max_blank_lines: int, fix_encoding: bool) -> None:
    out = normalize_text(text, unicode=form, max_blank_lines=max_blank_lines, fix_encoding=fix_encoding)
    # The only C0 control left is the newline: tabs and other whitespace controls fold into single spaces.
    assert not C0_BUT_NEWLINE.search(out)
    assert not C1.search(out)
    assert out == out.strip()
    assert "  " not in out and " \n" not in out and "\n " not in out
    assert "\n" * (max_blank_lines + 2) not in out
    assert not any(ch.isspace() and ch not in " \n" for ch in out)
    assert unicodedata.is_normalized(form, out)


@PROPERTY
@given(texts, st.sampled_from(["NFC", "NFKC"]), st.booleans())
def test_lowercase_and_strip_punctuation_hold_on_the_output(text: str, form: str, fix_encoding: bool) -> None:
    lowered = normalize_text(text, unicode=form, lowercase=True, fix_encoding=fix_encoding)
    assert lowered == lowered.lower()
    assert unicodedata.is_normalized(form, lowered)
    stripped = normalize_text(text, unicode=form, strip_punctuation=True, fix_encoding=fix_encoding)
    assert not any(unicodedata.category(ch).startswith("P") for ch in stripped)
    assert unicodedata.is_normalized(form, stripped)


@PROPERTY
@given(texts)
def test_ascii_text_never_changes_except_whitespace_and_controls(text: str) -> None:
    ascii_text = text.encode("ascii", "ignore").decode("ascii")
    out = normalize_text(ascii_text)
    assert out.isascii()
    assert out.split() == re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", ascii_text).replace("\r", "\n").split()
