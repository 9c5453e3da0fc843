"""C4 quality rules (Raffel et al. 2020, section 2.2), as datatrove's `C4QualityFilter` applies them.

Line rules (no terminal punctuation, too few words, an over-long word, "javascript", cookie/policy boilerplate)
remove lines; document rules ("lorem ipsum", a curly bracket, fewer than five sentences) reject the document.

C4 counts sentences with spaCy's rule-based sentencizer over spaCy's English tokenizer, which costs far more than
every other rule together. Here sentences are found on `words` (a pure-Python reproduction of that tokenizer) and
only counted when the kept lines are too few to settle the rule on their own: every kept line holds a sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import chain, islice, pairwise
from typing import Literal

from pydantic import Field

from tokenmill.curate.text.words import words
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage

END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


@register("c4_quality")
class C4Quality(DocumentStage):
    """C4's heuristic rules; `line_action: reject` rejects a document instead of removing its offending lines.

    Defaults are C4's (and datatrove's): lines must end in terminal punctuation and hold at least 3 words, no word
    may exceed 1000 characters, and the cleaned document must hold at least 5 sentences. With `split_paragraph:
    false` the rules apply to sentences instead of lines. Setting a number to -1 disables its rule.
    """

    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = Field(5, ge=-1)
    min_words_per_line: int = Field(3, ge=-1)
    max_word_length: int = Field(1000, ge=-1)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    line_action: Literal["remove", "reject"] = "remove"

    def process(self, doc: Doc) -> str | None:
        reason, text = self.apply(doc.text)
        if reason is None and text != doc.text:
            doc.text = text
        return reason

    def apply(self, text: str) -> tuple[str | None, str]:
        """(rejection reason or None, the text with removed lines gone); pure, never raises."""
        lowered = text.lower()  # one pass decides whether any line can need lower-casing at all
        lorem = self.filter_lorem_ipsum and "lorem ipsum" in lowered
        javascript = self.filter_javascript and "javascript" in lowered
        policy = self.filter_policy and any(key in lowered for key in ("cookie", "terms of use", "privacy policy"))
        brace = self.filter_curly_bracket and "{" in text
        cite = self.remove_citations and "[" in text
        max_word, min_words = self.max_word_length, self.min_words_per_line
        rejecting = self.line_action == "reject"

        pieces = text.splitlines() if self.split_paragraph else split_sentences(text)
        kept: list[str] = []
        for piece in pieces:
            line = stripped = piece.strip()
            dropped = None
            if max_word != -1 and len(line) > max_word and max(map(len, line.split())) > max_word:
                dropped = "too_long_word"
            else:
                if cite and "[" in line:
                    line = CITATION.sub("", line)
                if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                    dropped = "no_terminal_punc"
                elif min_words > 0 and len(stripped.split(maxsplit=min_words - 1)) < min_words:
                    dropped = "too_few_words"  # counted before citation removal, as C4 does
                elif lorem and "lorem ipsum" in line.lower():
                    return "lorem_ipsum", text
                elif javascript and "javascript" in line.lower():
                    dropped = "javascript"
                elif brace and "{" in line:
                    return "curly_bracket", text
                elif policy and any(phrase in line.lower() for phrase in POLICY_SUBSTRINGS):
                    dropped = "policy"
            if dropped is None:
                kept.append(line)
            elif rejecting and stripped:  # blank lines carry nothing to reject a document for
                return dropped, text

        if 0 < len(kept) < self.min_num_sentences and self.split_paragraph:
            # Every kept line is a sentence; look for only as many further sentence starts as are missing.
            missing = self.min_num_sentences - len(kept)
            starts = (start for line in kept for start in sentence_starts(line))
            if sum(1 for _ in islice(starts, missing)) < missing:
                return "too_few_sentences", text
        elif len(kept) < self.min_num_sentences:
            return "too_few_sentences", text
        if rejecting:
            return None, text
        return None, ("\n" if self.split_paragraph else " ").join(kept).strip()


# --- spaCy-compatible English sentence boundaries --------------------------------------------------------------
#
# spaCy's sentencizer starts a new sentence at the first non-punctuation token after a token that is exactly one
# sentence-final character. `words` reproduces spaCy's English tokens (abbreviations such as "Mr." or "a." stay
# whole, "end.The" is cut in three); spaCy also makes a token of every whitespace run but a single space, which
# `words` drops, so such runs are recovered from the gaps between tokens.

# Unicode's sentence terminators (the Sentence_Terminal property, as datatrove lists them).
TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a"
    "\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945"
    "\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d"
    "\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce"
    "\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f"
    "\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87"
    "\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142"
    "\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c"
    "\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd"
    "\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b"
    "\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5"
    "\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
# spaCy's sentencizer splits on 128 of them: those added to Unicode after its list was written are missing.
SENTENCE_FINAL = TERMINAL_PUNCTUATION - frozenset(
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89"
    "\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"
)
_ASCII_PUNCT = frozenset("!\"#%&'()*,-./:;?@[\\]_{}")  # ASCII characters of Unicode category P*


def count_sentences(text: str) -> int:
    """Sentences spaCy's sentencizer finds in `text` (at least 1, like datatrove's `split_into_sentences`)."""
    return sum(1 for _ in sentence_starts(text)) + 1


def split_sentences(text: str) -> list[str]:
    """`text` cut where spaCy's sentencizer starts sentences (whitespace between sentences stays attached)."""
    cuts = [0, *sentence_starts(text), len(text)]
    return [text[a:b] for a, b in pairwise(cuts)]


def sentence_starts(text: str) -> Iterator[int]:
    """Offsets where a sentence other than the first starts, lazily (callers often need only the first few)."""
    position = 0
    pending = False  # a sentence-final token was seen and no non-punctuation token since
    for token in chain.from_iterable(map(words, _windows(text))):
        at = text.find(token, position)
        if at < 0:  # `words` returns substrings of `text` in order; stop rather than guess if that ever breaks
            return
        if pending and text[position:at] not in ("", " "):  # a whitespace token ends the pending sentence
            yield position
            pending = False
        if token in SENTENCE_FINAL:
            pending = True
        elif pending and not _is_punctuation(token):
            yield at
            pending = False
        position = at + len(token)
    if pending and text[position:] not in ("", " "):
        yield position


def _windows(text: str, size: int = 2000) -> Iterator[str]:
    """`text` in pieces cut before a space: spaCy tokenizes between spaces independently, so tokenizing piece by
    piece gives the same tokens, and a caller that stops early has not paid for the rest of a long line."""
    start = 0
    while start < len(text):
        end = text.find(" ", start + size)
        end = len(text) if end < 0 else end
        yield text[start:end]
        start = end


def _is_punctuation(token: str) -> bool:
    """spaCy's `is_punct`: every character is Unicode punctuation."""
    if token.isascii():
        return all(char in _ASCII_PUNCT for char in token)
    return all(unicodedata.category(char)[0] == "P" for char in token)
