"""Character classes of the heuristic filters' word splitter: the punctuation datatrove counts, and spaCy's English
prefix/suffix/infix character sets (spacy/lang/char_classes.py), as regex fragments and tables."""

from __future__ import annotations

import string

import regex

# Characters datatrove counts as punctuation (its PUNCTUATION_SET): ASCII punctuation, common CJK and typographic
# marks, C0/C1 control characters other than tab and newline, and Unicode's sentence terminators as of the table
# datatrove copied (three Khmer signs more, sixteen recent ones fewer).
ASCII_PUNCTUATION = string.punctuation + "".join(map(chr, [*range(0, 9), *range(11, 32), 127]))
PUNCTUATION_WORD = regex.compile(
    "[[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u17d6\\u17d9\\u17da"
    + regex.escape(string.punctuation + "«´»–—’“”„…∶━►、。〈〉《》「」【】！％（），．１：；？～", special_only=False)
    + r"][\p{Sentence_Terminal}--[\u1B4E\u1B4F\u1B7F\u2024\u2CF9-\u2CFB\u2E60\u2E61\uFE12\uFE15\uFE16"
    + r"\U000113D4\U000113D5\U00016D6E\U00016D6F]]]+",
    regex.V1,
)


def spaced(words: str) -> list[str]:
    return words.split()


# Character classes of spaCy's English rules (spacy/lang/char_classes.py): cased Latin, Greek and Cyrillic
# letters (Latin from Unicode properties, the others as spaCy lists them) and whole blocks of uncased scripts
# (Ethiopic, Bengali, Hebrew, Arabic, Sinhala, Devanagari, Kannada, Tamil, Telugu, Hangul, kana, CJK).
UNCASED = (
    r"\u1200-\u137F\u0980-\u09FF\u0591-\u05F4\uFB1D-\uFB4F\u0620-\u064A\u066E-\u06D5\u06E5-\u06FF\u0750-\u077F"
    r"\u08A0-\u08BD\uFB50-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7\uFDF0-\uFDFB\uFE70-\uFEFC\U0001EE00-\U0001EEBB\u0D80-\u0DFF"
    r"\u0900-\u097F\u0C80-\u0CFF\u0B80-\u0BFF\u0C00-\u0C7F\uAC00-\uD7AF\u1100-\u11FF\u3040-\u30FF\u4E00-\u9FFF"
    r"\u3400-\u4DBF\U00020000-\U0002EBEF\u2E80-\u2FDF\u2FF0-\u303F\u31C0-\u31EF\u3200-\u33FF\uF900-\uFAFF"
    r"\uFE30-\uFE4F\U0001F200-\U0001F2FF\U0002F800-\U0002FA1F"
)
GREEK_CYRILLIC_LOWER = "α-ωάέίόώήύёа-яәөүҗңһіїєґѓѕјљњќѐѝ"
GREEK_CYRILLIC_UPPER = "Α-ΩΆΈΊΌΏΉΎЁА-ЯӘӨҮҖҢҺІЇЄҐЃЅЈЉЊЌЀЍ"
LOWER = r"[\p{Latin}&&\p{Ll}]" + GREEK_CYRILLIC_LOWER + UNCASED
UPPER = r"[\p{Latin}&&\p{Lu}]" + GREEK_CYRILLIC_UPPER + UNCASED
ALPHA = r"[\p{Latin}&&[\p{Ll}\p{Lu}\p{Lt}]]" + GREEK_CYRILLIC_LOWER + GREEK_CYRILLIC_UPPER + UNCASED
QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
UNITS = spaced(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh mph "
    "hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм кг г мг "
    "м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ غرام جرام جم "
    "كغ ملغ كوب اكواب"
)
HYPHENS = ["-", "–", "—", "--", "---", "——", "~"]
# Symbols (`So`) that Unicode added after spaCy's symbol table was drawn up, mostly recent emoji: not symbols here.
NEWER_SYMBOLS = (
    r"\u166D\u2427-\u2429\u2B96\u2B97\u2BC9\u2BFF\u2E50\u2E51\u2FFC-\u2FFF\u31E4-\u31EF\u32FF\uFBC3-\uFDCF\uFDFE"
    r"\uFDFF\U0001019C\U00010ED1-\U00010ED8\U00011FD5-\U00011FF1\U0001CC00-\U0001CFC3\U0001D1E9-\U0001D1FF"
    r"\U0001D253-\U0001D27F\U0001E14F\U0001ED2E\U0001F10D-\U0001F10F\U0001F16C-\U0001F16F\U0001F1AD\U0001F1AE"
    r"\U0001F6D5-\U0001F6DF\U0001F6FA-\U0001F6FC\U0001F774-\U0001F77F\U0001F7D9-\U0001F7FF\U0001F8B0-\U0001F8C1"
    r"\U0001F90C-\U0001F90F\U0001F93F\U0001F971\U0001F972\U0001F977-\U0001F979\U0001F97B\U0001F9A3-\U0001F9AF"
    r"\U0001F9BA-\U0001F9BF\U0001F9C3-\U0001F9CF\U0001FA00-\U0001FA57\U0001FA70-\U0001FBFA"
)
SYMBOL = rf"[\p{{So}}--[{NEWER_SYMBOLS}]]"


def escaped(items: str | list[str]) -> str:
    if isinstance(items, str):
        return regex.escape(items, special_only=False)
    return "|".join(regex.escape(item, special_only=False) for item in items)
