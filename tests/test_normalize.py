"""`normalize_text` and the `normalize` stage: examples of each option, then properties over arbitrary Unicode."""

from __future__ import annotations

import re
import unicodedata
from unittest import mock

import ftfy
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenmill.curate import normalize as normalize_module
from tokenmill.curate.normalize import _FTFY_CONFIG, Normalize, fix_mojibake, normalize_text
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


# --- The exact ftfy pre-check ----------------------------------------------------------------------------------------


def _normalize_text_reference(text: str, **opts) -> str:
    """Today's path before the pre-check: ftfy's encoding repair on every non-ASCII text, then the same steps."""
    fix_encoding = opts.pop("fix_encoding", True)
    if fix_encoding and not text.isascii():
        fixed = ftfy.fix_text(text, _FTFY_CONFIG)
        # normalize_text skips NFC when the *input* is ASCII; NFC of an ASCII result is the identity anyway.
        return normalize_text(fixed, fix_encoding=False, **opts)
    return normalize_text(text, fix_encoding=fix_encoding, **opts)


def _walk(items):
    """Every (op, argument) node of a parsed pattern, nested ones included."""
    for op, av in items:
        yield op, av
        if isinstance(av, tuple | list):
            for sub in av:
                if hasattr(sub, "data"):
                    yield from _walk(sub.data)
                elif isinstance(sub, list) and sub and isinstance(sub[0], list | tuple) and hasattr(sub[0], "data"):
                    for alt in sub:
                        yield from _walk(alt.data)
        if hasattr(av, "data"):
            yield from _walk(av.data)


def _charset(op, av, constants) -> set[str] | None:
    """The characters a LITERAL or plain (non-negated, category-free) IN node matches; None for anything else."""
    if op is constants.LITERAL:
        return {chr(av)}
    if op is constants.IN:
        chars: set[str] = set()
        for sub_op, sub_av in av:
            if sub_op is constants.LITERAL:
                chars.add(chr(sub_av))
            elif sub_op is constants.RANGE:
                chars.update(chr(c) for c in range(sub_av[0], sub_av[1] + 1))
            else:
                return None
        return chars
    return None


def test_precheck_covers_every_badness_alternative() -> None:
    """The proof behind the pre-check, on the installed ftfy's own BADNESS_RE: every alternative has a required
    character class wholly inside _TRIGGER, no match is longer than _WIDTH, and the only context-dependent construct
    is the one `^` that _BAD drops (no lookarounds or back-references, which a windowed search could not honour)."""
    try:
        import re._constants as constants
        import re._parser as parser
    except ImportError:  # Python < 3.11
        import sre_constants as constants  # type: ignore[no-redef]
        import sre_parse as parser  # type: ignore[no-redef]

    assert normalize_module._FAST_PATH, f"ftfy {ftfy.__version__}: re-check the argument in normalize.py"
    tree = parser.parse(ftfy.badness.BADNESS_RE.pattern, ftfy.badness.BADNESS_RE.flags)
    assert tree.getwidth()[1] == normalize_module._WIDTH
    [(op, (_, branches))] = tree.data
    assert op is constants.BRANCH and len(branches) > 30
    trigger = normalize_module._TRIGGER
    anchored = 0
    for branch in branches:
        nodes = list(_walk(branch.data))
        assert not any(op in (constants.ASSERT, constants.ASSERT_NOT, constants.GROUPREF) for op, _ in nodes)
        anchored += sum(op is constants.AT for op, _ in nodes)
        # Required nodes are the top-level ones of the alternative's sequence (an optional `\s?` is a MAX_REPEAT).
        required = [_charset(op, av, constants) for op, av in branch.data]
        assert any(chars and all(trigger.fullmatch(ch) for ch in chars) for chars in required), branch
    assert anchored == 1
    assert not trigger.fullmatch("\n") and not any(trigger.fullmatch(chr(c)) for c in range(128))


def test_precheck_is_per_segment() -> None:
    # ftfy judges each line on its own: '^[ÃÂ] ' is bad at a line start, which is not the start of the whole text.
    text = "1\n\u00c3 la carte"
    assert not ftfy.badness.is_bad(text)
    assert ftfy.fix_text(text, _FTFY_CONFIG) == fix_mojibake(text) == "1\n\u00e0 la carte"
    # The longest alternative, 'ГўВЂВ.[A-Za-z ]', matched by nothing shorter: its window must reach all 7 characters.
    longest = "\u0413\u045e\u0412\u0402\u0412\u0436a"
    assert ftfy.badness.is_bad(longest) and normalize_module._suspect_spans(longest) == [[0, 7]]
    mixed = "clean line \u00e9\nCaf\u00c3\u00a9 ouvert\nanother clean \u00fc\n\u65e5\u672c\n"
    with mock.patch.object(ftfy, "fix_text", wraps=ftfy.fix_text) as spy:
        assert fix_mojibake(mixed) == "clean line \u00e9\nCaf\u00e9 ouvert\nanother clean \u00fc\n\u65e5\u672c\n"
    assert [call.args[0] for call in spy.call_args_list] == ["Caf\u00c3\u00a9 ouvert\n"]  # only the bad line


def test_clean_multilingual_text_skips_ftfy() -> None:
    clean = [
        "Caf\u00e9, na\u00efve fa\u00e7ade, \u00e0 la carte, \u00fcber, se\u00f1or, \u0153uvre",
        "\u0412\u0441\u0435 \u043b\u044e\u0434\u0438 \u0440\u043e\u0436\u0434\u0430\u044e\u0442\u0441\u044f",
        "\u0388\u03bb\u03bb\u03b7\u03bd\u03b5\u03c2 \u03ba\u03b1\u03b9 \u039a\u03c1\u03ae\u03c4\u03b7",
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\n\ud55c\uad6d\uc5b4",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea",
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22",
        "it\u2019s \u201cquoted\u201d \u2014 \u00c9cole, \u00c0 bient\u00f4t",
    ]
    with mock.patch.object(ftfy, "fix_text", wraps=ftfy.fix_text) as spy:
        for text in clean:
            assert fix_mojibake(text) == text == ftfy.fix_text(text, _FTFY_CONFIG)
    assert spy.call_count == len(clean)  # only the reference calls above; fix_mojibake never needed ftfy


# Text that can hold mojibake: characters of every class BADNESS_RE names, as themselves and as UTF-8 misread as
# Latin-1, Windows-1252 or MacRoman (once or twice), with C1 controls, surrogates, U+FFFD and line breaks between.
BADNESS_CHARS = sorted(
    {ch for chars in ftfy.badness.MOJIBAKE_CATEGORIES.values() for ch in re.sub(r"(.)-(.)", "", chars)}
    | {
        chr(c)
        for chars in ftfy.badness.MOJIBAKE_CATEGORIES.values()
        for a, b in re.findall(r"(.)-(.)", chars)
        for c in range(ord(a), ord(b) + 1)
    }
)
SOURCE = st.text(
    st.one_of(
        st.sampled_from(BADNESS_CHARS + list(" \n\tae.,!?1\u00a0\ufffd\u0442\u05d0\u4e2d\U0001f642")),
        st.characters(min_codepoint=0x80, max_codepoint=0x2FFF),
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF),
    ),
    max_size=40,
)


def _misread(text: str, codec: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode(codec, "replace")


mojibake = st.builds(_misread, SOURCE, st.sampled_from(["latin-1", "cp1252", "mac_roman", "sloppy-windows-1252"]))
double_mojibake = st.builds(lambda t: _misread(_misread(t, "cp1252"), "latin-1"), SOURCE)
pieces = st.one_of(SOURCE, mojibake, double_mojibake, st.sampled_from(["\n", "\r\n", "\x85", "\ud800", "\ufffd", " "]))
mixed_texts = st.lists(pieces, max_size=8).map("".join)


def _ftfy_segments(text: str, max_segment: int) -> list[tuple[int, int]]:
    """fix_text's own segmentation, written out again: lines, sliced every max_segment characters when longer."""
    segments = []
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + max_segment)
        segments.append((pos, end))
        pos = end
    return segments


# Dense in BADNESS_RE's characters and in what its alternatives put around them (letters, spaces, line breaks).
# The literal runs of BADNESS_RE's longer alternatives ('ГўВЂВ.[A-Za-z ]' is the longest) make long matches likely.
FRAGMENTS = [
    "\u0413\u045e\u0412\u0402\u0412",
    "\u0432\u0402",
    "\u201a\u00c4",
    "\u03b2\u20ac",
    "\u0101\u20ac",
    "\u00d8\u00b7\u00d9",
]
dense_texts = st.lists(
    st.one_of(
        st.sampled_from(BADNESS_CHARS),
        st.sampled_from(list("aZ \n\t\u00a0.\ud800\udc00\u0416\u0436")),
        st.sampled_from(FRAGMENTS),
    ),
    max_size=40,
).map("".join)


@PROPERTY
@given(st.one_of(dense_texts, mixed_texts, texts), st.sampled_from([1, 2, 3, 5, 8, 1_000_000]))
def test_every_segment_ftfy_could_change_is_routed(text: str, max_segment: int) -> None:
    # The condition itself, stronger than equal outputs: each segment on which ftfy's is_bad holds or which holds a
    # surrogate (the only segments fix_and_explain can change with our config) lies inside a routed span.
    with mock.patch.object(normalize_module, "_MAX_SEGMENT", max_segment):
        spans = normalize_module._suspect_spans(text)
    for start, end in _ftfy_segments(text, max_segment):
        segment = text[start:end]
        if ftfy.badness.is_bad(segment) or re.search("[\ud800-\udfff]", segment):
            assert any(a <= start and end <= b for a, b in spans), (segment, spans)
    for a, b in spans:  # spans are runs of whole segments
        assert any(s == a for s, _ in _ftfy_segments(text, max_segment)) or a == 0
        assert b == len(text) or any(e == b for _, e in _ftfy_segments(text, max_segment))


@PROPERTY
@given(st.one_of(mixed_texts, dense_texts, texts))
def test_fix_mojibake_equals_ftfy(text: str) -> None:
    assert fix_mojibake(text) == ftfy.fix_text(text, _FTFY_CONFIG)


@PROPERTY
@given(st.one_of(mixed_texts, dense_texts), st.integers(1, 12))
def test_fix_mojibake_equals_ftfy_when_long_lines_are_sliced(text: str, max_segment: int) -> None:
    # ftfy cuts lines longer than max_decode_length into slices; shrink it so that the slicing is exercised.
    config = _FTFY_CONFIG._replace(max_decode_length=max_segment)
    with (
        mock.patch.object(normalize_module, "_FTFY_CONFIG", config),
        mock.patch.object(normalize_module, "_MAX_SEGMENT", max_segment),
    ):
        assert fix_mojibake(text) == ftfy.fix_text(text, config)


@PROPERTY
@given(st.one_of(mixed_texts, dense_texts, texts), options)
def test_normalize_text_equals_todays_path(text: str, opts: dict) -> None:
    assert normalize_text(text, **opts) == _normalize_text_reference(text, **opts)


def test_identical_to_todays_path_on_every_mini_pile_document(pile_dir) -> None:
    from tokenmill.curate.readers import PileReader

    reader = PileReader(paths=str(pile_dir / "*.jsonl.zst"))
    docs = [doc for shard in reader.shards() for doc in reader.read(shard, Outcomes(StageStats("read")))]
    multilingual = [doc for doc in docs if doc.source in ("pile/UDHR", "pile/Genesis")]
    assert len(docs) > 4000 and len(multilingual) > 300
    changed = 0
    for doc in docs:
        fixed = fix_mojibake(doc.text)
        assert fixed == ftfy.fix_text(doc.text, _FTFY_CONFIG), doc.id
        assert normalize_text(doc.text) == _normalize_text_reference(doc.text), doc.id
        changed += fixed != doc.text
    assert changed >= 50  # the mis-decoded UDHR translations and Webtext/ABC-News mojibake really are repaired
