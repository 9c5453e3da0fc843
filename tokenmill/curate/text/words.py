"""Fast text statistics shared by the heuristic filters: datatrove-compatible English words and punctuation.

datatrove splits English text into words with spaCy's blank English tokenizer, which costs most of its filters'
time. `words` reproduces that tokenizer's output in pure Python. spaCy tokenizes each whitespace-separated chunk
on its own (prefixes and suffixes peeled off one at a time, special cases such as contractions and abbreviations
looked up at each step, then URLs kept whole or infixes split), so the tokens of each distinct chunk are computed
once with the same rules and then served from a cache by C-level dict lookups.

Known differences from spaCy, all in rare inputs: Latin letters are told lower or upper case by Unicode
properties (spaCy lists them by hand), only common emoticons are special cases, a special case split across two
chunks can differ (spaCy's matcher also looks across whitespace), and chunks longer than `LONG_CHUNK` characters
are split at word boundaries in one regex pass (spaCy's affix loop is quadratic on them).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from itertools import chain
from typing import Generic, TypeVar

import regex

from tokenmill.curate.text.char_classes import (
    ALPHA,
    ASCII_PUNCTUATION,
    CURRENCY,
    HYPHENS,
    LOWER,
    PUNCT,
    PUNCTUATION_WORD,
    QUOTES,
    SYMBOL,
    UNITS,
    UPPER,
    escaped,
    spaced,
)

T = TypeVar("T")

LONG_CHUNK = 2000
_LONG_CHUNK_PIECES = regex.compile(r"\w+|\S")

_PREFIX = regex.compile(
    rf"[§%=—–{escaped(PUNCT + QUOTES + CURRENCY)}]|\+(?![0-9])|\.\.+|US\$|C\$|A\$|{SYMBOL}", regex.V1
)
# One alternation anchored at the end: the earliest-starting match wins, as with spaCy's suffix search.
_SUFFIX = regex.compile(
    rf"(?:……|[{escaped(PUNCT + QUOTES)}—–]|\.\.+|{SYMBOL}|['’][sS]"
    r"|(?<=[0-9])\+|(?<=°[FfCcKk])\."
    rf"|(?<=[0-9])(?:{escaped(['US$', 'C$', 'A$', *CURRENCY])})"
    rf"|(?<=[0-9])(?:{escaped(UNITS)})"
    rf"|(?<=[0-9{LOWER}%²\-+|(?:{escaped(PUNCT + QUOTES)}])\."
    rf"|(?<=[{UPPER}][{UPPER}])\.)$",
    regex.V1,  # sets nest (`[\p{Latin}&&\p{Ll}]`) inside the classes
)
_INFIX = regex.compile(
    rf"\.\.+|…|{SYMBOL}"
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"
    rf"|(?<=[{LOWER}{escaped(QUOTES)}])\.(?=[{UPPER}{escaped(QUOTES)}])"
    rf"|(?<=[{ALPHA}]),(?=[{ALPHA}])"
    rf"|(?<=[{ALPHA}0-9])(?:{escaped(HYPHENS)})(?=[{ALPHA}])"
    rf"|(?<=[{ALPHA}0-9])[:<>=/](?=[{ALPHA}])",
    regex.V1,
)
# A URL or e-mail address: optional scheme and user, a dotted host with a lower-case TLD (or an IPv4 address),
# optional port and path. spaCy keeps such a core whole instead of splitting it at infixes.
_HOST = r"[A-Za-z0-9\u00a1-\uffff]"
_URL = regex.compile(
    r"(?:[\w+\-.]{2,}://)?(?:\S+@)?"
    rf"(?:\d{{1,3}}(?:\.\d{{1,3}}){{3}}|(?:(?:{_HOST}[A-Za-z0-9\u00a1-\uffff_-]{{0,62}})?{_HOST}\.)+[{LOWER}]{{2,63}})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?",
    regex.V1,
)


def _special_cases() -> dict[str, tuple[str, ...]]:
    """spaCy's English tokenizer exceptions: chunks split (contractions) or kept whole (abbreviations) verbatim."""
    cases: dict[str, tuple[str, ...]] = {}

    def add(*parts: str) -> None:
        cases["".join(parts)] = parts

    def cased(*words: str) -> list[str]:
        return [form for word in words for form in (word, word.title())]

    wh = ("who", "what", "when", "where", "why", "how", "there")
    clitics = {
        ("'ll",): [*cased("i", "you", "he", "she", "it", "we", "they", *wh, "that", "this", "these", "those")],
        ("'d",): [*cased("i", "you", "he", "she", "it", "we", "they", *wh, "that", "this", "these", "those")],
        ("'ve",): [*cased("i", "you", "we", "they", *wh, "these", "those", "could", "might", "must", "should")],
        ("'re",): [*cased("you", "we", "they", *wh, "these", "those")],
        ("'s",): [*cased("he", "she", "it", *wh, "that", "this")],
        ("'m",): cased("i"),
        ("'m", "a"): cased("i"),
        ("n't",): cased(*spaced("ca could do does did had may might must need ought sha should wo would"))
        + cased(*spaced("ai are is was were have has dare")),
        ("n't", "'ve"): cased(*spaced("ca could do does did had may might must need ought sha should wo would")),
    }
    clitics[("'ll", "'ve")] = clitics[("'d", "'ve")] = clitics[("'ll",)]
    clitics[("'ve",)] += cased("would")
    for tails, heads in clitics.items():
        for head in heads:
            add(head, *tails)
            add(head, *(tail.replace("'", "") for tail in tails))
    for word in ("doin", "goin", "nothin", "nuthin", "ol", "somethin", "lovin", "havin"):
        for form in cased(word):
            add(form)
            add(form + "'")
    for word in spaced("em ll nuff s S re d bout cause Cause cos Cos coz Coz cuz Cuz"):
        add("'" + word)
    for word in ("em", "ll", "nuff", "‘S", "‘s", "and/or", "w/o", "ma'am", "Ma'am", "o'clock"):
        add(word)
    add("O'clock")
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            add(str(hour), period)
    for parts in [("y'", "all"), ("y", "all"), ("how", "'d", "'y"), ("How", "'d", "'y"), ("not", "'ve"),
                  ("not", "ve"), ("Not", "'ve"), ("Not", "ve"), ("can", "not"), ("Can", "not"), ("gon", "na"),
                  ("Gon", "na"), ("got", "ta"), ("Got", "ta"), ("let", "'s"), ("Let", "'s"), ("c'm", "on"),
                  ("C'm", "on"), ("°", "c", "."), ("°", "f", "."), ("°", "k", "."), ("°", "C", "."), ("°", "F", "."),
                  ("°", "K", ".")]:  # fmt: skip
        add(*parts)
    abbreviations = (
        "'d a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd. Md. Messrs. "
        "Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt. Ak. Ala. Apr. Ariz. Ark. Aug. Calif. "
        "Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. "
        "Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. "
        "Va. Wash. Wis. ' '' \\\") C++ <space> ä. ö. ü. — "
        + " ".join(f"{letter}." for letter in string.ascii_lowercase)
    )
    emoticons = (
        ":) :-) :)) :-)) :))) :-))) :( :-( :(( :-(( :((( :-((( ;) ;-) (: (-: (; (-; ): )-: :D :-D ;D ;-D =D =) =( "
        "(= :P :-P :p :-p :/ :-/ =/ :| :-| =| :o :O :-o :-O :o) (o: :'( :') :'-( :'-) :* :-* :] :-] [: [-: =] =[ "
        "[= ]= :} :-} :3 :-3 =3 :> :-> :X :-X :x :-x :0 :-0 :1 :() >:( >:o 8) 8-) (-8 8D 8-D xD XD xDD XDD <3 <33 "
        "<333 </3 ^_^ ^__^ ^___^ -_- -__- >.< >.> <.< ._. ;_; @_@ o.O O.o o_O O_o o.o O.O o_o O_O 0.0 0_0 o.0 0.o "
        "o_0 0_o v.v V.V v_v V_V"
    )
    for word in spaced(abbreviations + " " + emoticons):
        add(word)
    for word in ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were",
                 "Well", "well", "Whore", "whore"):  # fmt: skip
        cases.pop(word, None)
    for key, parts in list(cases.items()):  # every rule also exists with a typographic apostrophe
        if "'" in key:
            cases[key.replace("'", "’")] = tuple(part.replace("'", "’") for part in parts)
    return cases


_SPECIAL = _special_cases()
_SPECIAL_MAX = max(map(len, _SPECIAL))


# Characters that are a whole prefix or suffix by themselves whatever surrounds them (quick exits for the regexes).
_PREFIX_CHARS = frozenset("§%=—–" + PUNCT + QUOTES + CURRENCY)
_SUFFIX_CHARS = frozenset("—–" + PUNCT + QUOTES) - {"…"}
_DIGITS = frozenset("0123456789")


def _prefix_length(chunk: str, start: int, end: int) -> int:
    first = chunk[start]
    if first in _PREFIX_CHARS:
        return 1
    if first.isalnum() and first not in "UCA":
        return 0
    match = _PREFIX.match(chunk, start, end)
    return match.end() - start if match else 0


def _suffix_length(chunk: str, start: int, end: int) -> int:
    """Length of the suffix spaCy would split off `chunk[start:end]` (0 if none), in time independent of length.

    Every suffix rule is at most five characters long (plus two of look-behind) except a run of dots, so only
    the tail is searched; look-behinds must not see characters before `start`, hence the slice for short ones.
    """
    last = chunk[end - 1]
    if last in _SUFFIX_CHARS:
        return 1
    if last in _DIGITS:
        return 0
    if last.isalpha():
        if last in "sS" and end - start >= 2 and chunk[end - 2] in "'’":
            return 2
        if _DIGITS.isdisjoint(chunk[max(start, end - 6) : end]):  # units need a number before them
            return 0
    if chunk.endswith("..", start, end):
        return end - start - len(chunk[start:end].rstrip("."))
    if end - start <= 12:
        match = _SUFFIX.search(chunk[start:end])
        return len(match.group()) if match else 0
    match = _SUFFIX.search(chunk, end - 8, end)
    return match.end() - match.start() if match else 0


def _split_core(core: str, specials: dict[str, tuple[str, ...]]) -> list[str]:
    """spaCy's last step on what affix splitting left: a special case, a whole URL, or pieces between infixes."""
    special = specials.get(core)
    if special is not None:
        return list(special)
    if core.isalnum():  # no infix rule can match
        return [core]
    if "." in core and _URL.fullmatch(core):
        return [core]
    pieces = []
    start = 0
    for match in _INFIX.finditer(core):
        if match.start() == 0:  # spaCy ignores an infix at the very start
            continue
        if match.start() != start:
            pieces.append(core[start : match.start()])
        pieces.append(match.group())
        start = match.end()
    if start < len(core):
        pieces.append(core[start:])
    return pieces


def _split_affixes(chunk: str, specials: dict[str, tuple[str, ...]]) -> list[str]:
    """spaCy's affix loop: peel one prefix and one suffix per round until none is left or a special case remains."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    start, end = 0, len(chunk)
    last = -1
    while start < end and end - start != last:
        if end - start <= _SPECIAL_MAX and chunk[start:end] in specials:
            break
        last = end - start
        pre = _prefix_length(chunk, start, end)
        if pre and end - start - pre <= _SPECIAL_MAX and chunk[start + pre : end] in specials:
            prefixes.append(chunk[start : start + pre])
            start += pre
            break
        suf = _suffix_length(chunk, start + pre, end)
        if suf and end - start - suf <= _SPECIAL_MAX and chunk[start : end - suf] in specials:
            suffixes.append(chunk[end - suf : end])
            end -= suf
            break
        if pre and suf and pre + suf <= end - start:
            prefixes.append(chunk[start : start + pre])
            suffixes.append(chunk[end - suf : end])
            start, end = start + pre, end - suf
        elif pre:
            prefixes.append(chunk[start : start + pre])
            start += pre
        elif suf:
            suffixes.append(chunk[end - suf : end])
            end -= suf
    core = _split_core(chunk[start:end], specials) if start < end else []
    return [*prefixes, *core, *reversed(suffixes)]


@functools.cache
def _merge_rules() -> tuple[dict[tuple[str, ...], tuple[str, ...]], int, frozenset[str]]:
    """Special cases that affix splitting would break apart (`i.`, `''`, `:}`), keyed by those pieces.

    spaCy re-joins such pieces wherever they appear side by side inside a chunk (`kaku-i.` -> `kaku - i.`).
    Returns the rules, the longest key (in tokens) and the tokens that can start a key.
    """
    rules = {}
    for key, tokens in _SPECIAL.items():
        pieces = tuple(_split_affixes(key, {}))
        if len(pieces) > 1 and pieces != tokens:
            rules[pieces] = tokens
    return rules, max(map(len, rules)), frozenset(pieces[0] for pieces in rules)


def _merge_specials(tokens: list[str]) -> list[str]:
    """Re-join runs of tokens that spell a special case, longest runs first, as spaCy's special-case matcher does."""
    rules, longest, starters = _merge_rules()
    if starters.isdisjoint(tokens[:-1]):
        return tokens
    found = [
        (j - i, i, j)
        for i in range(len(tokens) - 1)
        for j in range(i + 2, min(i + longest, len(tokens)) + 1)
        if tuple(tokens[i:j]) in rules
    ]
    if not found:
        return tokens
    taken: set[int] = set()
    chosen = []
    for _, i, j in sorted(found, key=lambda span: (-span[0], span[1])):
        if i not in taken and j - 1 not in taken:
            chosen.append((i, j))
        taken.update(range(i, j))
    merged: list[str] = []
    position = 0
    for i, j in sorted(chosen):
        merged += tokens[position:i]
        merged += rules[tuple(tokens[i:j])]
        position = j
    return merged + tokens[position:]


def tokenize_chunk(chunk: str) -> tuple[str, ...]:
    """spaCy's English tokens of one whitespace-free chunk (prefixes, suffixes, special cases, URL, infixes)."""
    special = _SPECIAL.get(chunk)
    if special is not None:
        return special
    if chunk.isalpha() or chunk.isdecimal():  # no rule splits letters from letters or digits from digits
        return (chunk,)
    if len(chunk) > LONG_CHUNK:  # spaCy's affix loop is quadratic on such strings (minified code, garbage)
        return tuple(_LONG_CHUNK_PIECES.findall(chunk))
    if chunk.isascii():  # the commonest shapes, `word,` `word.` `(word`, decided as the rules below would
        head, last = chunk[:-1], chunk[-1]
        if head.isalpha() and head not in _SPECIAL:
            if last in _SUFFIX_CHARS:
                return (head, last)
            if last == ".":
                # spaCy's `.` suffix rule wants a lower-case letter or two upper-case letters before it.
                return (head, last) if head[-1].islower() or (len(head) > 1 and head[-2:].isupper()) else (chunk,)
        first, tail = chunk[0], chunk[1:]
        if first in _PREFIX_CHARS and tail.isalpha() and tail not in _SPECIAL:
            return (first, tail)
    tokens = _split_affixes(chunk, _SPECIAL)
    return tuple(_merge_specials(tokens) if len(tokens) > 1 else tokens)


class ChunkCache(dict[str, T], Generic[T]):
    """A bounded memo of per-chunk results: a miss runs `compute(chunk)`; chunks over 64 characters (URLs, hashes,
    minified code) are not kept. At `size` entries the memo becomes an older generation that still answers, and
    promotes what it answers, until the next turnover: frequent chunks survive, memory stays bounded."""

    def __init__(self, compute: Callable[[str], T], size: int = 1 << 18) -> None:
        super().__init__()
        self._compute = compute
        self._size = size
        self._older: dict[str, T] = {}

    def __missing__(self, chunk: str) -> T:
        value = self._older.get(chunk)
        if value is None:
            value = self._compute(chunk)
        if len(chunk) <= 64:
            if len(self) >= self._size:
                self._older = dict(self)
                self.clear()
            self[chunk] = value
        return value


_CHUNKS: ChunkCache[tuple[str, ...]] = ChunkCache(tokenize_chunk)
# Alphabetic chunks that are not one word: contractions written without an apostrophe (`dont`, `cannot`).
# Every other chunk made only of letters is exactly one word, which lets callers skip most chunks.
ALPHABETIC_SPLITS: frozenset[str] = frozenset(
    key for key, parts in _SPECIAL.items() if key.isalpha() and len(parts) > 1
)


# The words of one whitespace-free chunk of text (an item of `text.split()`), cached; a C-level call, so that
# mapping it over chunks costs no Python frame per chunk.
chunk_words: Callable[[str], tuple[str, ...]] = _CHUNKS.__getitem__


def words(text: str) -> list[str]:
    """English word tokens as datatrove's `split_into_words(text)` (spaCy's blank English tokenizer) gives them.

    Punctuation marks are tokens of their own, contractions are split (`don't` -> `do`, `n't`), abbreviations
    (`Mr.`, `U.S.`) and URLs stay whole, whitespace is never part of a token.
    """
    return list(chain.from_iterable(map(_CHUNKS.__getitem__, text.split())))


def is_punctuation(word: str) -> bool:
    """True if `word` is not empty and every character of it is punctuation in datatrove's sense (its
    PUNCTUATION_SET: ASCII and common CJK/typographic punctuation, control characters, sentence terminators)."""
    if word.isascii():
        return bool(word) and not word.strip(ASCII_PUNCTUATION)
    return PUNCTUATION_WORD.fullmatch(word) is not None
