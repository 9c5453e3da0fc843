"""Gopher quality and repetition rules (Rae et al. 2021, appendix A), with datatrove's defaults and reason names.

Words are datatrove's English words (`text.py` reproduces spaCy's tokenizer in pure Python), so the decisions
agree with datatrove's `GopherQualityFilter` and `GopherRepetitionFilter`; docs/filters.md lists the few intended
differences. A threshold set to null disables its rule.
"""

from __future__ import annotations

import re
from itertools import chain, compress, filterfalse
from typing import NamedTuple

import numpy as np
from pydantic import Field, PositiveInt, PrivateAttr

from tokenmill.curate.text.words import ALPHABETIC_SPLITS, ChunkCache, chunk_words, is_punctuation
from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentFilter

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")


@register("gopher_quality")
class GopherQuality(DocumentFilter):
    """Gopher's quality rules: word count, mean word length, `#` and ellipsis per word, lines that start with a
    bullet or end with an ellipsis, the share of words with a letter, and a minimum of English stop words.

    Word counts and lengths ignore words made only of punctuation; ratios per word count every word.
    """

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    # Whole chunks worth noticing: alphabetic chunks that split into several words, and stop words.
    _watched: frozenset[str] = PrivateAttr(frozenset())

    def model_post_init(self, context: object, /) -> None:
        self._watched = ALPHABETIC_SPLITS | set(self.stop_words)

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc.text
        chunks = text.split()
        watched = self._watched.intersection(chunks)
        stats = word_stats(chunks, watched)
        if self.min_doc_words is not None and stats.content_words < self.min_doc_words:
            return "gopher_short_doc"
        if self.max_doc_words is not None and stats.content_words > self.max_doc_words:
            return "gopher_long_doc"
        if stats.content_words:  # datatrove's mean of no lengths is NaN, which passes both bounds
            mean_length = stats.content_chars / stats.content_words
            if self.min_avg_word_length is not None and mean_length < self.min_avg_word_length:
                return "gopher_below_avg_threshold"
            if self.max_avg_word_length is not None and mean_length > self.max_avg_word_length:
                return "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio is not None:
            if _ratio(text.count("#"), stats.words) > self.max_symbol_word_ratio:
                return "gopher_too_many_hashes"
            if _ratio(text.count("...") + text.count("…"), stats.words) > self.max_symbol_word_ratio:
                return "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if self.max_bullet_lines_ratio is not None:
            bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-")))
            if _ratio(bullets, len(lines)) > self.max_bullet_lines_ratio:
                return "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio is not None:
            ellipses = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
            if _ratio(ellipses, len(lines)) > self.max_ellipsis_lines_ratio:
                return "gopher_too_many_end_ellipsis"
        alpha_ratio = _ratio(stats.alpha_words, stats.words)
        if self.min_alpha_words_ratio is not None and alpha_ratio < self.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if self.min_stop_words is not None and self._stop_words_in(chunks, watched) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None

    def _stop_words_in(self, chunks: list[str], watched: set[str]) -> int:
        """Distinct stop words among the words. Stop words standing alone as chunks settle most documents; for
        the others the words of the chunks that are not plain words (`the,` `thats`) are searched too."""
        stop_words = set(self.stop_words)
        found = {word for word in stop_words & watched if chunk_words(word) == (word,)}
        if self.min_stop_words is not None and len(found) >= self.min_stop_words:
            return len(found)
        odd = chain(watched & ALPHABETIC_SPLITS, filterfalse(str.isalpha, chunks))
        found |= stop_words.intersection(chain.from_iterable(map(chunk_words, odd)))
        return len(found)


class WordStats(NamedTuple):
    """What the quality rules need from a document's words."""

    words: int
    content_words: int  # words with a character that is not punctuation
    content_chars: int  # their total length
    alpha_words: int  # words with at least one letter


# A chunk of letters is one word with a letter and no punctuation, so only the other chunks are looked up: each
# maps to how far it departs from that (extra words, punctuation-only words and their characters, words without
# a letter), packed into one integer, 40 bits a field, so that a document's total is one C-level sum.
_FIELD_BITS = 40
_FIELD_MASK = (1 << _FIELD_BITS) - 1


def _departure(chunk: str) -> int:
    parts = chunk_words(chunk)
    symbols = [word for word in parts if is_punctuation(word)]
    letterless = sum(1 for word in parts if not any(map(str.isalpha, word)))
    fields = (len(parts) - 1, len(symbols), sum(map(len, symbols)), letterless)
    return sum(value << (_FIELD_BITS * i) for i, value in enumerate(fields))


_DEPARTURES: ChunkCache[int] = ChunkCache(_departure)


def word_stats(chunks: list[str], watched: set[str] | None = None) -> WordStats:
    """Word statistics of a text from its whitespace-separated chunks (`text.split()`). `watched`, when given,
    is a set of chunks found in `chunks` that holds every one of them in ALPHABETIC_SPLITS (the only chunks of
    letters that are not one word); callers that look for other chunks too can share that pass."""
    if watched is None:
        watched = ALPHABETIC_SPLITS.intersection(chunks)
    odd = filterfalse(str.isalpha, chunks)
    packed = sum(map(_DEPARTURES.__getitem__, odd))
    for chunk in watched & ALPHABETIC_SPLITS:
        packed += chunks.count(chunk) * _DEPARTURES[chunk]
    extra, symbols, symbol_chars, letterless = ((packed >> (_FIELD_BITS * i)) & _FIELD_MASK for i in range(4))
    total = len(chunks) + extra
    return WordStats(total, total - symbols, sum(map(len, chunks)) - symbol_chars, total - letterless)


def _ratio(part: int, whole: int) -> float:
    """part / whole, 0 for an empty whole (datatrove would divide by zero there)."""
    return part / whole if whole else 0.0


@register("gopher_repetition")
class GopherRepetition(DocumentFilter):
    """Gopher's repetition rules: the share of duplicated lines and paragraphs (by count and by characters), the
    characters covered by the most frequent 2-, 3- and 4-gram, and by repeated 5- to 10-grams.

    Fractions of characters are of the whole text. `top_n_grams` and `dup_n_grams` map n to its threshold.
    """

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: dict[PositiveInt, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[PositiveInt, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc.text
        if not text:
            return "empty"
        size = len(text)
        blocks = paragraphs(text)
        repeats, repeated_chars = duplicates(blocks)
        if self.dup_para_frac is not None and repeats / len(blocks) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac is not None and repeated_chars / size > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = line_runs(text)
        repeats, repeated_chars = duplicates(lines)
        if self.dup_line_frac is not None and repeats / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac is not None and repeated_chars / size > self.dup_line_char_frac:
            return "dup_line_char_frac"
        grams = NGrams(*word_hashes(text))
        for n, fraction in self.top_n_grams.items():
            if grams.top_chars_bound(n) / size > fraction and grams.top_chars(n) / size > fraction:
                return f"top_{n}_gram"
        for n, fraction in self.dup_n_grams.items():
            if grams.repeated_chars_bound(n) / size > fraction and grams.repeated_chars(n) / size > fraction:
                return f"duplicated_{n}_n_grams"
        return None


def paragraphs(text: str) -> list[str]:
    """The stripped text split at runs of two or more newlines (datatrove's paragraphs)."""
    text = text.strip()
    return _PARAGRAPH_BREAK.split(text) if "\n\n\n" in text else text.split("\n\n")


def line_runs(text: str) -> list[str]:
    """The text split at runs of newlines, as `re.split(r"\n+", text)` (datatrove's lines) but without regex:
    empty pieces survive only at the two ends."""
    if not text:
        return [""]
    lines = list(filter(None, text.split("\n")))
    if text.startswith("\n"):
        lines.insert(0, "")
    if text.endswith("\n"):
        lines.append("")
    return lines


def duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their total length."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


def word_hashes(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The string hash and the length of each word of `text` (`hash(w)`, `len(w)` for w in `words(text)`).

    Most chunks are made of letters and are one word each: their hashes and lengths are taken straight from
    the chunks, and only the other chunks are tokenized (through the cache) and spliced in.
    """
    chunks = text.split()
    count = len(chunks)
    hashes = np.fromiter(map(hash, chunks), dtype=np.int64, count=count)
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=count)
    odd = ~np.fromiter(map(str.isalpha, chunks), dtype=bool, count=count)
    splits = ALPHABETIC_SPLITS.intersection(chunks)
    if splits:
        odd |= np.isin(np.array(chunks, dtype=object), list(splits))
    if not odd.any():
        return hashes, lengths
    pieces = list(map(chunk_words, compress(chunks, odd.tolist())))
    odd_words = list(chain.from_iterable(pieces))
    per_chunk = np.ones(count, dtype=np.int64)
    per_chunk[odd] = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    owner = np.repeat(np.arange(count), per_chunk)  # the chunk of each word
    all_hashes, all_lengths, from_odd = hashes[owner], lengths[owner], odd[owner]
    all_hashes[from_odd] = np.fromiter(map(hash, odd_words), dtype=np.int64, count=len(odd_words))
    all_lengths[from_odd] = np.fromiter(map(len, odd_words), dtype=np.int64, count=len(odd_words))
    return all_hashes, all_lengths


class NGrams:
    """The word n-grams of one document, hashed with numpy so that counting them needs no Python loop.

    Words are known by their (cached) 64-bit string hashes. An n-gram's hash mixes its words' hashes with one odd
    multiplier per position, modulo 2**64; repeated n-grams are then confirmed on the word hashes themselves.
    Different words or n-grams sharing a hash (odds about 1e-13 per document) could only overstate a count.
    """

    _MULTIPLIERS = np.random.default_rng(0x60FE).integers(1, 2**63, size=64, dtype=np.uint64) * 2 + 1

    def __init__(self, hashes: np.ndarray, lengths: np.ndarray) -> None:
        self.size = len(hashes)
        self._ids = hashes.view(np.uint64)
        self._ends = np.zeros(self.size + 1, dtype=np.int64)  # character offsets of word ends, laid end to end
        np.cumsum(lengths, out=self._ends[1:])
        self._unigrams: tuple[int, int] | None = None
        self._repeats: dict[int, np.ndarray] = {}  # n -> start positions of n-grams that may occur twice
        self._later: dict[int, np.ndarray] = {}  # n -> those of them that may repeat an earlier one
        self._covered: dict[int, int] = {}  # m -> characters of words inside an m-gram of `_later[m]`

    def _mixed(self, n: int, starts: np.ndarray | None = None) -> np.ndarray:
        """Hashes of the n-grams starting at `starts` (default: everywhere)."""
        ids = self._ids
        with np.errstate(over="ignore"):
            if starts is None:
                stop = self.size - n + 1
                mixed = ids[:stop] * self._MULTIPLIERS[0]
                for k in range(1, n):
                    mixed += ids[k : k + stop] * self._MULTIPLIERS[k % 64]
            else:
                mixed = ids[starts] * self._MULTIPLIERS[0]
                for k in range(1, n):
                    mixed += ids[starts + k] * self._MULTIPLIERS[k % 64]
        return mixed

    def top_chars_bound(self, n: int) -> int:
        """An upper bound of `top_chars(n)` from word frequencies alone: each of the n words of the top n-gram
        occurs at least as often as the n-gram, so count * length <= n * max(count(w) * len(w)) + (n-1) * max
        count(w). It spares the exact count for almost every document."""
        if self.size < n:
            return 0
        if self._unigrams is None:
            order = np.argsort(self._ids)
            ordered = self._ids[order]
            firsts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            counts = np.diff(firsts, append=self.size)
            word = order[firsts]
            self._unigrams = int((counts * (self._ends[word + 1] - self._ends[word])).max()), int(counts.max())
        most_chars, most_count = self._unigrams
        return n * most_chars + (n - 1) * most_count

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (words joined by spaces, times its count); ties go to
        the n-gram seen first, as with datatrove's `Counter.most_common(1)`."""
        if self.size < n:
            return 0
        _, first, counts = np.unique(self._mixed(n), return_index=True, return_counts=True)
        most = counts.max()
        start = int(first[counts == most].min())
        return int(most) * (int(self._ends[start + n] - self._ends[start]) + n - 1)

    def repeated_chars_bound(self, n: int) -> int:
        """An upper bound of `repeated_chars(n)`: the characters of words inside some m-gram that repeats an
        earlier one, for the longest m <= n already searched (n itself if none). Every counted n-gram repeats an
        earlier one, so all its m-grams do, and counted n-grams never overlap. It spares most documents the scan."""
        if self.size < n:
            return 0
        shorter = max((m for m in self._repeats if m <= n), default=n)
        if shorter not in self._covered:
            self._repeated_starts(shorter)
            starts, size = self._later[shorter], self.size + 1
            edges = np.bincount(starts, minlength=size) - np.bincount(starts + shorter, minlength=size)
            covered = np.cumsum(edges[:-1]) > 0
            self._covered[shorter] = int((self._ends[1:] - self._ends[:-1])[covered].sum()) if starts.size else 0
        return self._covered[shorter]

    def repeated_chars(self, n: int) -> int:
        """Characters of n-grams that repeat an earlier one, scanning left to right and jumping past each repeat
        (datatrove's `find_all_duplicate`); only positions whose n-gram hash occurs twice are visited in Python."""
        if self.size < n:
            return 0
        starts = self._repeated_starts(n)
        if not starts.size:
            return 0
        ids, ends = self._ids, self._ends
        seen: set[bytes] = set()
        total = resume = 0
        for start in starts.tolist():
            if start < resume:
                continue
            gram = ids[start : start + n].tobytes()
            if gram in seen:
                total += int(ends[start + n] - ends[start])
                resume = start + n
            else:
                seen.add(gram)
        return total

    def _repeated_starts(self, n: int) -> np.ndarray:
        """Start positions of the n-grams whose hash occurs twice. An n-gram can repeat only where the shorter
        m-grams at its start and at its end repeat, so a known shorter m narrows the search."""
        if n in self._repeats:
            return self._repeats[n]
        shorter = max((m for m in self._repeats if m < n), default=None)
        if shorter is None:
            starts, mixed = np.arange(self.size - n + 1), self._mixed(n)
        else:
            known = self._repeats[shorter]
            repeats = np.zeros(self.size + 1, dtype=bool)
            repeats[known] = True
            starts = known[known <= self.size - n]
            starts = starts[repeats[starts + (n - shorter)]]
            mixed = self._mixed(n, starts)
        later = starts[:0]
        if starts.size:
            twice, again = _occurrences(mixed)
            starts, later = starts[twice], starts[again]
        self._repeats[n], self._later[n] = starts, later
        return starts


def _occurrences(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the values that occur at least twice, and of their occurrences after the first (one sort, cheaper
    than np.unique's inverse)."""
    order = np.argsort(values)
    ordered = values[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        nowhere = np.zeros(len(values), dtype=bool)
        return nowhere, nowhere
    runs = np.flatnonzero(np.concatenate(([True], ~same)))  # where each run of equal values starts in `ordered`
    run = np.cumsum(np.concatenate(([True], ~same))) - 1
    twice_sorted = (np.diff(runs, append=len(values)) > 1)[run]
    again_sorted = twice_sorted & (order != np.minimum.reduceat(order, runs)[run])
    twice, again = np.empty(len(values), dtype=bool), np.empty(len(values), dtype=bool)
    twice[order], again[order] = twice_sorted, again_sorted
    return twice, again
