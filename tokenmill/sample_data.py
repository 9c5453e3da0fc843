"""Deterministic, offline demo corpus for ``tokenmill sample-data``.

The text comes from what every Python install ships: the help topics in ``pydoc_data.topics`` and the
docstrings of a fixed list of stdlib modules. It is written in the real input formats (WARC, WET and
Pile-style ``.jsonl.zst``) and salted with the defects a curation pipeline exists to remove: exact and
near duplicates, boilerplate-only pages, a non-UTF-8 page, a non-HTML response, a redirect, and very
short or empty documents. The same seed always yields byte-identical files.
"""

import collections
import html
import importlib
import inspect
import io
import itertools
import json
import os
import random
import re
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from pydoc_data.topics import topics as PYDOC_TOPICS
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

SITE = "https://docs.example.org"
MIRROR = "https://mirror.example.net/python"

# Modules with long docstrings on Python 3.10-3.12 that import without side effects and are present in
# minimal builds (no ssl/sqlite3). The list is explicit so the corpus never depends on what is installed.
MODULES = (
    "pdb", "configparser", "re", "socketserver", "json", "argparse", "http.client", "urllib.request",
    "shelve", "http.cookies", "csv", "cmd", "hashlib", "socket", "timeit", "unittest", "copy", "uuid",
    "plistlib", "pydoc", "heapq", "inspect", "urllib.parse", "struct", "sched", "doctest", "subprocess",
    "ftplib", "os", "http.server", "typing", "random", "http.cookiejar", "tempfile", "smtplib",
    "tokenize", "difflib", "collections", "mimetypes", "getopt",
)  # fmt: skip

WEB_EXACT_DUPLICATES = 8
WEB_NEAR_DUPLICATES = 8
WET_PAGES = 18  # original pages in the WET file, plus copies of two of them
PILE_EXACT_DUPLICATES = 3
PILE_NEAR_DUPLICATES = 3
NEAR_DUPLICATE_EDIT_RATE = 0.03

_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_NAV = {"Home": "/", "Topics": "/topics/", "Library": "/library/", "Search": "/search.html"}
_FOOTER_LINKS = {"Privacy": "/privacy.html", "Contact": "/contact.html", "About": "/about.html"}
_FOOTER = (
    "© 2024 Example Docs Project. Content adapted from the Python documentation. All rights reserved.",
    "This site uses cookies to analyse traffic and remember your preferences. By continuing to browse "
    "you agree to our cookie policy.",
)
_BOILERPLATE_PAGES = {"about": "About us", "contact": "Contact", "privacy": "Privacy", "search": "Search"}
# Every character here exists in cp1252 but is not ASCII, so the encoded page cannot pass as UTF-8.
_CP1252_PARAGRAPHS = (
    "Our next community meetup takes place at the “Bean & Byte” café next to the station. Entry costs "
    "€ 5, which covers coffee and a pastry. Nobody will think your questions are naïve, and the "
    "organisers only ask you to bring a laptop. We will start with short talks about the “with” "
    "statement, followed by a relaxed Q&A session.",
    "Please RSVP by Friday so we can reserve enough seats — the café holds about forty people.",
)
# A valid 1x1 transparent PNG (signature, IHDR, IDAT, IEND), pasted so no zlib version can change it.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000b4944415478da636000020000050001e9fadcd80000000049454e44ae426082"
)
_REPLACEMENT_WORDS = ("thing", "value", "really", "also", "module", "simply", "data", "often", "code")
_SHORT_DOCS = ("Page not found.", "Click here to subscribe!", "Loading…", "Share this article")

Block = tuple[str, str]  # (HTML tag, text)


@dataclass(frozen=True)
class _Page:
    """One HTTP response to archive; ``kind`` drives both the summary counts and the WET selection."""

    url: str
    body: bytes
    content_type: str
    kind: str
    text: str = ""  # what a WET extractor would emit for the page
    status: str = "200 OK"
    location: str | None = None


class _Stamper:
    """Hands out WARC-Record-IDs and WARC-Dates that depend only on the seed, never on the clock.

    IDs are derived from (kind, key) rather than from call order, so the WET file can name the
    response a conversion record refers to without having to read the WARC back.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._tick = itertools.count()

    def record_id(self, kind: str, key: str) -> str:
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'tokenmill-sample/{self._seed}/{kind}/{key}')}>"

    def headers(self, kind: str, key: str) -> dict[str, str]:
        date = _EPOCH + timedelta(seconds=next(self._tick))
        # WARC-Type first: warcio replaces it in place, which keeps the conventional header order.
        return {
            "WARC-Type": kind,
            "WARC-Record-ID": self.record_id(kind, key),
            "WARC-Date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _topic_names() -> list[str]:
    """Sorted pydoc topic names, keeping one name per distinct text.

    Some topics share a text (``if`` and ``else`` on 3.11); an unplanted duplicate would make the
    summary's duplicate counts wrong.
    """
    first_by_text: dict[str, str] = {}
    for name in sorted(PYDOC_TOPICS):
        first_by_text.setdefault(PYDOC_TOPICS[name].strip(), name)
    return list(first_by_text.values())


def _topic_article(text: str) -> tuple[str, list[Block]]:
    """Split a pydoc topic (reST-like plain text) into a title and headings, paragraphs and code."""
    title_block, *rest = re.split(r"\n\s*\n", text.strip("\n"))
    blocks: list[Block] = []
    for block in filter(str.strip, rest):
        lines = block.splitlines()
        underline = lines[-1].strip()
        if len(lines) == 2 and underline and set(underline) <= set("=-~^*"):
            blocks.append(("h2", lines[0].strip()))
        elif all(line.startswith(" ") for line in lines) and not block.rstrip().endswith((".", ":")):
            # Indented text that does not end like a sentence is a grammar rule or a code example.
            blocks.append(("pre", textwrap.dedent(block)))
        else:
            blocks.append(("p", " ".join(block.split())))
    return title_block.splitlines()[0].strip(), blocks


def _near_duplicate(text: str, rng: random.Random) -> str:
    """Substitute or delete ~3% of the words; exactly that many, so every copy really differs."""
    words = len(re.findall(r"[A-Za-z]+", text))
    chosen = set(rng.sample(range(words), max(1, round(words * NEAR_DUPLICATE_EDIT_RATE))))
    position = itertools.count()

    def edit(match: re.Match[str]) -> str:
        if next(position) not in chosen:
            return match.group()
        return rng.choice(_REPLACEMENT_WORDS) if rng.random() < 0.5 else ""

    return re.sub(r"[A-Za-z]+", edit, text)


def _html(title: str, blocks: list[Block] | None, charset: str = "utf-8") -> str:
    """A docs-site page: head, nav bar, optional article, and a copyright/cookie footer."""

    def links(bar: dict[str, str], sep: str) -> str:
        return sep.join(f'<a href="{href}">{label}</a>' for label, href in bar.items())

    # Quotes are left unescaped in text nodes, where they are legal, as most real pages do.
    title = html.escape(title, quote=False)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="{charset}">\n<title>{title} — Example Docs</title>',
        '<link rel="stylesheet" href="/static/site.css">\n</head>',
        f'<body>\n<header><nav class="site-nav">{links(_NAV, " ")}</nav></header>',
    ]
    if blocks is not None:
        parts.append(f"<main>\n<article>\n<h1>{title}</h1>")
        parts += [f"<{tag}>{html.escape(text, quote=False)}</{tag}>" for tag, text in blocks]
        parts.append("</article>\n</main>")
    parts.append('<footer class="site-footer">')
    parts += [f"<p>{line}</p>" for line in (*_FOOTER, links(_FOOTER_LINKS, " · "))]
    parts.append("</footer>\n</body>\n</html>\n")
    return "\n".join(parts)


def _page(url: str, title: str, blocks: list[Block] | None, kind: str, charset: str = "utf-8") -> _Page:
    # The WET text mimics Common Crawl's extractor: nav and footer boilerplate are left in.
    lines = [title, " ".join(_NAV), *(text for _, text in blocks or ()), *_FOOTER, " · ".join(_FOOTER_LINKS)]
    body = _html(title, blocks, charset).encode(charset)
    return _Page(url, body, f"text/html; charset={charset}", kind, text="\n".join(lines))


def _build_pages(rng: random.Random) -> list[_Page]:
    """All responses for the crawl: one page per pydoc topic plus the planted defects."""
    articles = {name: _topic_article(PYDOC_TOPICS[name]) for name in _topic_names()}
    pages = [_page(f"{SITE}/topics/{name}.html", *article, "topic") for name, article in articles.items()]
    # Duplicates come from long topics so that a ~3% edit is still a near duplicate, not a new page.
    long_topics = [name for name in articles if len(PYDOC_TOPICS[name]) >= 2000]
    picked = rng.sample(long_topics, WEB_EXACT_DUPLICATES + WEB_NEAR_DUPLICATES)
    by_name = dict(zip(articles, pages, strict=True))
    for name in picked[:WEB_EXACT_DUPLICATES]:
        original = by_name[name]
        pages.append(replace(original, url=f"{original.url}?utm_source=newsletter", kind="exact_duplicate"))
    for name in picked[WEB_EXACT_DUPLICATES:]:
        title, blocks = articles[name]
        # Prose paragraphs are one line each and edits never add newlines, so the split lines back up.
        prose = "\n".join(text for tag, text in blocks if tag == "p")
        edited = iter(_near_duplicate(prose, rng).split("\n"))
        blocks = [(tag, next(edited) if tag == "p" else text) for tag, text in blocks]
        pages.append(_page(f"{MIRROR}/{name}.html", title, blocks, "near_duplicate"))
    pages += [_page(f"{SITE}/{slug}.html", title, None, "boilerplate") for slug, title in _BOILERPLATE_PAGES.items()]
    cafe = [("p", text) for text in _CP1252_PARAGRAPHS]
    pages.append(_page(f"{SITE}/community/cafe-meetup.html", "Community meetup", cafe, "non_utf8", "windows-1252"))
    pages.append(_Page(f"{SITE}/static/logo.png", _PNG, "image/png", "non_html"))
    # An extension-less legacy URL that permanently redirects to its topic page.
    moved = f"{SITE}/topics/{picked[0]}.html"
    legacy = moved.removesuffix(".html")
    pages.append(_Page(legacy, b"", "text/html", "redirect", status="301 Moved Permanently", location=moved))
    return pages


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write via a temporary sibling and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _record(writer: WARCWriter, headers: dict[str, str], uri: str, payload: bytes, **kwargs: Any) -> None:
    # Passing WARC-Record-ID and WARC-Date in ``headers`` stops warcio from using uuid4 and the clock.
    record = writer.create_warc_record(
        uri, headers["WARC-Type"], io.BytesIO(payload), len(payload), warc_headers_dict=headers, **kwargs
    )
    writer.write_record(record)


def _warcinfo(writer: WARCWriter, stamps: _Stamper, filename: str, description: str) -> None:
    fields = f"software: tokenmill sample-data\r\nformat: WARC File Format 1.0\r\ndescription: {description}\r\n"
    _record(writer, {**stamps.headers("warcinfo", filename), "WARC-Filename": filename}, "", fields.encode())


def _write_warc(fh: BinaryIO, filename: str, pages: list[_Page], stamps: _Stamper) -> None:
    writer = WARCWriter(fh, gzip=True)
    _warcinfo(writer, stamps, filename, "demo crawl of pydoc help topics")
    for page in pages:
        parts = urlsplit(page.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request_fields = [("Host", parts.netloc), ("User-Agent", "tokenmill-sample/0.1"), ("Accept", "*/*")]
        request = StatusAndHeaders(f"GET {target} HTTP/1.1", request_fields, is_http_request=True)
        fields = [("Content-Type", page.content_type), ("Content-Length", str(len(page.body)))]
        fields += [("Location", page.location)] if page.location else []
        response = StatusAndHeaders(page.status, fields, protocol="HTTP/1.1")
        concurrent = {"WARC-Concurrent-To": stamps.record_id("response", page.url)}
        _record(writer, {**stamps.headers("request", page.url), **concurrent}, page.url, b"", http_headers=request)
        _record(writer, stamps.headers("response", page.url), page.url, page.body, http_headers=response)


def _write_wet(fh: BinaryIO, pages: list[_Page], stamps: _Stamper) -> None:
    writer = WARCWriter(fh, gzip=True)
    _warcinfo(writer, stamps, "sample.warc.wet.gz", "plain text of the demo crawl")
    for page in pages:
        headers = {
            **stamps.headers("conversion", page.url),
            "WARC-Refers-To": stamps.record_id("response", page.url),
        }
        _record(writer, headers, page.url, page.text.encode("utf-8"), warc_content_type="text/plain")


def _pile_documents(rng: random.Random) -> list[tuple[str, str]]:
    """(text, pile_set_name) pairs: module docstrings, pydoc topics, and the planted defects."""
    docs = []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__
        if doc and doc.strip():
            docs.append((inspect.cleandoc(doc), "ModuleDocs"))
    docs += [(PYDOC_TOPICS[name].strip(), "PydocTopics") for name in _topic_names()]
    long_docs = [doc for doc in docs if len(doc[0].split()) >= 150]
    picked = rng.sample(long_docs, PILE_EXACT_DUPLICATES + PILE_NEAR_DUPLICATES)
    docs += picked[:PILE_EXACT_DUPLICATES]
    docs += [(_near_duplicate(text, rng), source) for text, source in picked[PILE_EXACT_DUPLICATES:]]
    docs += [(text, "Pile-CC") for text in (*_SHORT_DOCS, "")]
    return docs


def _write_pile(fh: BinaryIO, docs: list[tuple[str, str]]) -> None:
    lines = (json.dumps({"text": t, "meta": {"pile_set_name": s}}, ensure_ascii=False) + "\n" for t, s in docs)
    # Single-shot, single-threaded compression: one frame with a fixed layout, identical on every run.
    fh.write(zstandard.ZstdCompressor(level=10, threads=0).compress("".join(lines).encode("utf-8")))


def make_sample_data(directory: str | os.PathLike, seed: int = 0) -> dict[str, int]:
    """Write the demo corpus under ``directory`` and return counts of what was planted in it.

    Creates ``web/sample-0000.warc.gz`` and ``web/sample-0001.warc.gz`` (request/response pairs),
    ``web/sample.warc.wet.gz`` (plain-text conversion records) and ``pile/sample-000{0,1}.jsonl.zst``
    (Pile-style JSON lines). Output depends only on ``seed`` and the running Python's stdlib text, so
    two calls with the same seed produce byte-identical files. Existing files are replaced atomically.
    """
    root = Path(directory)
    rng = random.Random(seed)
    stamps = _Stamper(seed)
    pages = _build_pages(rng)

    crawl_order = rng.sample(pages, len(pages))
    half = len(crawl_order) // 2
    for index, part in enumerate((crawl_order[:half], crawl_order[half:])):
        name = f"sample-{index:04d}.warc.gz"
        _write_atomically(root / "web" / name, lambda fh, n=name, p=part: _write_warc(fh, n, p, stamps))

    # Two pages appear with their exact-duplicate copies, so text-level dedup has work in the WET too.
    copies = [page for page in pages if page.kind == "exact_duplicate"][:2]
    copied = {page.url.split("?")[0] for page in copies}
    others = [page for page in pages if page.kind == "topic" and page.url not in copied]
    originals = [page for page in pages if page.url in copied]
    wet_pages = originals + rng.sample(others, WET_PAGES - len(originals)) + copies
    _write_atomically(root / "web" / "sample.warc.wet.gz", lambda fh: _write_wet(fh, wet_pages, stamps))

    docs = _pile_documents(rng)
    rng.shuffle(docs)
    half = len(docs) // 2
    for index, part in enumerate((docs[:half], docs[half:])):
        _write_atomically(root / "pile" / f"sample-{index:04d}.jsonl.zst", lambda fh, p=part: _write_pile(fh, p))

    kinds = collections.Counter(page.kind for page in pages)
    return {
        "warc_responses": len(pages),
        "exact_duplicates": kinds["exact_duplicate"],
        "near_duplicates": kinds["near_duplicate"],
        "boilerplate_pages": kinds["boilerplate"],
        "non_utf8_pages": kinds["non_utf8"],
        "non_html_records": kinds["non_html"],
        "redirects": kinds["redirect"],
        "wet_records": len(wet_pages),
        "pile_documents": len(docs),
        "pile_exact_duplicates": PILE_EXACT_DUPLICATES,
        "pile_near_duplicates": PILE_NEAR_DUPLICATES,
        "pile_short_documents": len(_SHORT_DOCS) + 1,  # + the empty document
    }
