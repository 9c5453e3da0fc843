"""C4 and FineWeb quality filters: each rule on examples, spaCy-faithful sentence counting, agreement with
datatrove's own filters on the mini-pile, bad input, and properties over arbitrary Unicode."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.curate.filters.c4 import (
    SENTENCE_FINAL,
    TERMINAL_PUNCTUATION,
    C4Quality,
    count_sentences,
    split_sentences,
)
from tokenmill.curate.filters.fineweb import FineWebQuality
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import STAGES, load_builtins
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

GOOD_LINE = "The committee met on Tuesday and approved the new budget."
GOOD = "\n".join([GOOD_LINE] * 5)


def c4(text: str, **options: object) -> tuple[str | None, str]:
    return C4Quality(**options).apply(text)


def fineweb(text: str, **options: object) -> str | None:
    return FineWebQuality(**options).reject_reason(Doc(id="t", text=text))


# --- C4: line rules remove lines, document rules reject -------------------------------------------------------------


def test_c4_keeps_clean_prose_unchanged() -> None:
    assert c4(GOOD) == (None, GOOD)


def test_c4_removes_lines_without_terminal_punctuation_or_with_few_words() -> None:
    text = f"Menu\n{GOOD}\nHome | About | Contact\nRead more...\nOK.\n  Indented but fine, she said.  "
    reason, cleaned = c4(text)
    assert reason is None
    assert cleaned == f"{GOOD}\nIndented but fine, she said."  # "..." is not terminal; "OK." has one word
    quoted = f"{GOOD}\nHe said \"we will be there.\"\nShe answered 'not this time.'\nWhy not?"
    assert c4(quoted) == (None, quoted.removesuffix("\nWhy not?"))  # closing quotes are terminal; 2 words are not


def test_c4_line_rules_javascript_policy_and_long_words() -> None:
    noise = [
        "Please enable JavaScript to view the comments.",
        "By using this site you agree to our Terms of Use.",
        "This website uses cookies to improve your experience.",
        f"A word {'x' * 1001} far too long.",
    ]
    reason, cleaned = c4("\n".join([*noise, GOOD]))
    assert reason is None and cleaned == GOOD
    assert c4("\n".join([*noise, GOOD]), filter_javascript=False, filter_policy=False, max_word_length=-1)[1] == (
        "\n".join([*noise, GOOD])
    )


def test_c4_document_rules_reject() -> None:
    assert c4(f"{GOOD}\nLorem ipsum dolor sit amet, consectetur.")[0] == "lorem_ipsum"
    assert c4(f"{GOOD}\nThe code is function() {{ return 1; }} here.")[0] == "curly_bracket"
    assert c4("\n".join([GOOD_LINE] * 4))[0] == "too_few_sentences"
    # Document rules only see lines that survived the line rules, as in C4.
    assert c4(f"{GOOD}\nlorem ipsum dolor\nvar x = {{}}")[0] is None
    assert c4(f"{GOOD}\nlorem ipsum dolor sit.", filter_lorem_ipsum=False)[0] is None


def test_c4_counts_sentences_not_lines() -> None:
    one_line = "First point here. Second point here. Third one now. Fourth one too. Fifth and last."
    assert c4(one_line) == (None, one_line)
    four = "Mr. Smith met Dr. Jones in Washington. They spoke."
    assert count_sentences(four) == 2
    assert c4(four)[0] == "too_few_sentences"
    assert c4("\n".join([GOOD_LINE] * 4), min_num_sentences=-1)[0] is None


def test_c4_citations_are_removed_before_the_punctuation_check() -> None:
    reason, cleaned = c4(f"{GOOD}\nThe tower was finished in 1889.[1]\nIt is tall.[citation needed][edit]")
    assert reason is None
    assert cleaned.endswith("\nThe tower was finished in 1889.\nIt is tall.")
    assert c4(f"{GOOD}\nThe tower was finished in 1889.[1]", remove_citations=False)[1] == GOOD


def test_c4_reject_mode_rejects_instead_of_removing_and_never_edits() -> None:
    assert c4(f"{GOOD}\nMenu", line_action="reject") == ("no_terminal_punc", f"{GOOD}\nMenu")
    assert c4(f"{GOOD}\nEnable javascript now.", line_action="reject")[0] == "javascript"
    assert c4(f"{GOOD}\nWe use cookies here.", line_action="reject")[0] == "policy"
    assert c4(f"{GOOD}\nOK.", line_action="reject")[0] == "too_few_words"
    assert c4(f"{GOOD}\nSee {'y' * 1001}.", line_action="reject")[0] == "too_long_word"
    spaced = f"{GOOD}\n\n  \n{GOOD_LINE}[2]"
    assert c4(spaced, line_action="reject") == (None, spaced)  # blank lines and citations reject nothing


def test_c4_sentence_mode_applies_rules_to_sentences() -> None:
    text = "Breaking news. " + " ".join([GOOD_LINE] * 5) + " Click here"
    reason, cleaned = c4(text, split_paragraph=False)
    assert reason is None and cleaned == " ".join([GOOD_LINE] * 5)


def test_c4_stage_counts_changed_documents() -> None:
    out = Outcomes(StageStats("c4_quality"))
    docs = [Doc(id="a", text=GOOD), Doc(id="b", text=f"Menu\n{GOOD}"), Doc(id="c", text="Too short.")]
    kept = C4Quality().process_batch(docs, out)
    assert [d.id for d in kept] == ["a", "b"] and kept[1].text == GOOD
    assert out.stats.changed == 1 and out.stats.rejected == {"too_few_sentences": 1}
    out.stats.check()


# --- sentence boundaries against spaCy's sentencizer (datatrove's splitter) -------------------------------------

TRICKY = [
    "Hi!How are you. Fine.",
    "end.The dog. ok",
    "J. Smith went. Home now.",
    "U.S. economy grew. Yes.",
    "etc. and so. On",
    "word... Next one.",
    "!Hello there",
    "A. B. C.",
    'He said "no." Then left.',
    "see www.google.com. Then",
    "the end.   Next",
    "Hello? - yes.",
    "No. 5 is. Done.",
    "He is here.[1] Then.",
    "e.g. this. i.e. that.",
    "Go!!! Now?! Yes.",
    "wait...what? ok",
    "AB. Cd and Ab. Cd",
    "it 's a film . the plot is thin . 's fine",
    "You promised me to wed.\nSo would I",
    "You all right? 'Cause you gotta go.",
    "Assim, como a ManassÃ©s. E pÃ´s a Efraim.",
    "अनुच्छेद १. सभी मनुष्यों को गौरव",
    "Artigo 1ª. Tódolos seres humanos.",
    "It's 5 p.m. Time to go. Great!😀 Bye.",
    "Cost: $5. Then (again). [Done.] Yes",
    "Visit https://example.com/a.B. Now.",
    "Stop .\t. Start",
    "One.  \u2003 Two. Three .  .",
    "Trailing whitespace. Ends here.\n",
]


def test_punctuation_sets_are_datatrove_and_spacy_sets() -> None:
    from datatrove.utils.text import TERMINAL_PUNCTUATION as DATATROVE_TERMINAL

    assert TERMINAL_PUNCTUATION == DATATROVE_TERMINAL
    sentencizer = pytest.importorskip("spacy.pipeline.sentencizer")
    assert set(sentencizer.Sentencizer.default_punct_chars) == SENTENCE_FINAL


@pytest.mark.parametrize("text", TRICKY)
def test_sentences_match_spacy(text: str) -> None:
    pytest.importorskip("spacy")
    from datatrove.utils.text import split_into_sentences

    theirs = split_into_sentences(text)
    assert count_sentences(text) == len(theirs)
    assert [s.strip() for s in split_sentences(text)] == [s.strip() for s in theirs]


# --- FineWeb ------------------------------------------------------------------------------------------------------


def test_fineweb_keeps_prose_and_names_each_reason() -> None:
    prose = "\n".join(f"Paragraph {i} explains the matter at some considerable length." for i in range(6))
    assert fineweb(prose) is None
    assert fineweb("") == fineweb(" \n\t\n") == "empty"
    assert fineweb("\n".join(f"Line {i} has no final punctuation at all here" for i in range(9))) == "line_punct_ratio"
    assert fineweb("\n".join([f"Item {i}." for i in range(14)] + [prose])) == "short_line_ratio"
    repeated = "\n".join(
        [prose, "Share this article on social media today.", "Share this article on social media today."]
    )
    assert fineweb(repeated) == "char_dup_ratio"
    listing = "\n\n".join(f"{'abcdefghij' * 3}{i}." for i in range(10))
    assert fineweb(listing) == "list_ratio"


def test_fineweb_list_ratio_counts_words_like_spacy() -> None:
    # Whitespace sees 10 words for 18 newlines; spaCy splits at every hyphen, so this is no list.
    hyphenated = "\n\n".join(f"entry{i}-is-long-enough-to-be-a-real-line-{i}." for i in range(10))
    assert fineweb(hyphenated) is None
    pytest.importorskip("spacy")
    from datatrove.data import Document
    from datatrove.pipeline.filters import FineWebQualityFilter

    assert FineWebQualityFilter().filter(Document(text=hyphenated, id="h")) is True


def test_fineweb_options() -> None:
    unpunctuated = "\n".join(f"Line {i} has no final punctuation at all here" for i in range(9))
    assert fineweb(unpunctuated, line_punct_exclude_zero=True) is None
    assert fineweb(unpunctuated, stop_chars=["here"]) is None  # multi-character stops use endswith
    assert fineweb(unpunctuated, line_punct_thr=0) is None
    with pytest.raises(pydantic.ValidationError):
        FineWebQuality(short_line_lenght=10)  # type: ignore[call-arg]


def test_filters_are_registered() -> None:
    load_builtins()
    assert STAGES["c4_quality"] is C4Quality and STAGES["fineweb_quality"] is FineWebQuality
    with pytest.raises(pydantic.ValidationError):
        C4Quality(min_num_sentence=3)  # type: ignore[call-arg]


# --- agreement with datatrove on the mini-pile ------------------------------------------------------------------


def _head(text: str, limit: int = 2000) -> str:
    """At most `limit` characters, cut at a line end (or else a space) so lines stay natural and datatrove fast."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[:cut] if cut > limit // 4 else text[: max(text.rfind(" ", 0, limit), 1)]


@pytest.fixture(scope="session")
def pile_sample(pile_dir: Path) -> list[Doc]:
    """Every 9th mini-pile document (507 of 4558, all sources), cut to 2 kB to keep datatrove's side quick."""
    from tokenmill.curate.readers import PileReader

    reader = PileReader(paths=[str(pile_dir / "*.jsonl.zst")])
    out = Outcomes(StageStats("read"))
    docs = [doc for shard in reader.shards() for doc in reader.read(shard, out)]
    return [Doc(id=d.id, text=_head(d.text), source=d.source) for d in docs[::9]]


@pytest.fixture(scope="session")
def datatrove_results(pile_sample: list[Doc]) -> dict[str, list[tuple[str | None, str]]]:
    """datatrove's (reason, resulting text) per document, computed once per session."""
    pytest.importorskip("spacy")
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter

    results = {}
    for family, peer in (("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())):
        decisions = []
        for doc in pile_sample:
            document = Document(text=doc.text, id=doc.id)
            verdict = peer.filter(document)
            decisions.append((None, document.text) if verdict is True else (verdict[1], document.text))
        results[family] = decisions
    return results


@pytest.mark.parametrize("family", ["c4", "fineweb"])
def test_agrees_with_datatrove_on_mini_pile(family: str, pile_sample: list[Doc], datatrove_results: dict) -> None:
    stage = C4Quality() if family == "c4" else FineWebQuality()
    docs = [Doc(id=d.id, text=d.text) for d in pile_sample]
    ours = [stage.process(doc) for doc in docs]
    theirs = datatrove_results[family]
    assert len(docs) >= 500
    assert sum(1 for doc in docs if doc.text.count("\n") < 4) > 50  # short documents put sentence counting to work
    same_decision = sum((r is None) == (t is None) for r, (t, _) in zip(ours, theirs))
    assert same_decision / len(docs) >= 0.99
    assert sum(r == t for r, (t, _) in zip(ours, theirs)) >= same_decision - len(docs) // 100  # same reasons too
    assert ("too_few_sentences" if family == "c4" else "line_punct_ratio") in ours
    if family == "c4":
        kept = [(doc.text, text) for doc, r, (t, text) in zip(docs, ours, theirs) if r is None and t is None]
        assert sum(a == b for a, b in kept) / len(kept) >= 0.99


# --- bad input and properties ------------------------------------------------------------------------------------

BAD = {
    "empty": "",
    "whitespace": " \n\t\r\n\u2003\n",
    "one 10 MB line": (("a clause that goes on, " * 25 + "and ends. ") * 17_000)[:10_000_000],
    "10 MB word": "x" * 10_000_000 + ".",
    "binary": bytes(range(256)).decode("latin-1") * 40 + "\ud800\udfff",
    "mixed scripts": "Это тест. 这是一个测试。 هذا اختبار. यह एक परीक्षा है। Ελληνικά! 😀\n" * 50,
    "abbreviations only": "A. " * 200_000,
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gets_a_decision(name: str) -> None:
    text = BAD[name]
    for stage in (C4Quality(), C4Quality(split_paragraph=False), C4Quality(line_action="reject"), FineWebQuality()):
        doc = Doc(id=name, text=text)
        reason = stage.process(doc)
        assert reason is None or isinstance(reason, str)
    assert c4("")[0] == "too_few_sentences" and fineweb("") == "empty"


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.text(alphabet=" .!?\n'\"aB1[]{}-", max_size=80)
)
def test_never_raises_and_is_deterministic(text: str) -> None:
    stages = (C4Quality(), C4Quality(split_paragraph=False, min_num_sentences=1), C4Quality(line_action="reject"))
    for stage in (*stages, FineWebQuality()):
        first = stage.process(Doc(id="h", text=text))
        assert first == stage.process(Doc(id="h", text=text))
    parts = split_sentences(text)
    assert "".join(parts) == text and count_sentences(text) == len(parts) >= 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([GOOD_LINE, "Menu", "Ends without a stop", "Why? Yes! No.", "", "  x y z.  "]), max_size=12
    )
)
def test_c4_keeps_only_input_lines_and_is_idempotent(lines: list[str]) -> None:
    stage = C4Quality(remove_citations=False, min_num_sentences=1)
    reason, cleaned = stage.apply("\n".join(lines))
    if reason is None:
        assert set(cleaned.splitlines()) <= {line.strip() for line in lines}
        assert stage.apply(cleaned) == (None, cleaned)
