"""The demo corpus is deterministic, parses as real WARC/WET/Pile data, and contains the planted defects."""

import collections
import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
import zstandard
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders

from tokenmill.sample_data import make_sample_data

WARCS = ("web/sample-0000.warc.gz", "web/sample-0001.warc.gz")
WET = "web/sample.warc.wet.gz"
PILES = ("pile/sample-0000.jsonl.zst", "pile/sample-0001.jsonl.zst")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("sample")
    return root, make_sample_data(root)


def _records(path: Path) -> list[tuple[str, dict[str, str], StatusAndHeaders | None, bytes]]:
    """(type, WARC headers, HTTP headers, payload) for every record, reading each payload fully."""
    with open(path, "rb") as fh:
        return [
            (r.rec_type, dict(r.rec_headers.headers), r.http_headers, r.content_stream().read())
            for r in ArchiveIterator(fh)
        ]


def _responses(root: Path) -> list[tuple[dict[str, str], StatusAndHeaders, bytes]]:
    return [(h, http, body) for name in WARCS for kind, h, http, body in _records(root / name) if kind == "response"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_no_temp_leftovers(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert make_sample_data(first, seed=7) == make_sample_data(second, seed=7)
    files = _files(first)
    assert sorted(files) == sorted([*WARCS, WET, *PILES])
    assert files == _files(second)
    make_sample_data(first, seed=7)  # regenerating over an existing corpus replaces it identically
    assert _files(first) == files
    make_sample_data(tmp_path / "c", seed=8)
    assert _files(tmp_path / "c") != files


def test_warc_record_types_and_counts_match_summary(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    records = [record for name in WARCS for record in _records(root / name)]
    types = collections.Counter(kind for kind, *_ in records)
    assert types == {
        "warcinfo": 2,
        "request": summary["warc_responses"],
        "response": summary["warc_responses"],
    }
    assert 100 <= summary["warc_responses"] <= 130
    assert sum((root / name).stat().st_size for name in WARCS) < 3_000_000
    for name in WARCS:  # each file opens with its own warcinfo
        assert _records(root / name)[0][0] == "warcinfo"

    ids = [headers["WARC-Record-ID"] for _, headers, _, _ in records]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("<urn:uuid:") for i in ids)
    assert all(headers["WARC-Date"].startswith("2024-01-01T") for _, headers, _, _ in records)
    response_ids = {h["WARC-Target-URI"]: h["WARC-Record-ID"] for k, h, _, _ in records if k == "response"}
    for kind, headers, http, _ in records:
        if kind == "request":
            assert headers["WARC-Concurrent-To"] == response_ids[headers["WARC-Target-URI"]]
            assert http.protocol == "GET"

    responses = _responses(root)
    statuses = collections.Counter(http.get_statuscode() for _, http, _ in responses)
    assert statuses["301"] == summary["redirects"] == 1
    assert statuses["200"] == summary["warc_responses"] - 1
    for _, http, body in responses:
        assert http.get_header("Content-Length") == str(len(body))
        if http.get_statuscode() == "301":
            assert body == b""
            assert http.get_header("Location") in response_ids


def test_planted_page_kinds(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    html = [body for _, http, body in _responses(root) if http.get_header("Content-Type").startswith("text/html")]
    boilerplate = [body for body in html if body and b"<article>" not in body]
    assert len(boilerplate) == summary["boilerplate_pages"] == 4
    assert all(b"<nav" in body and b"cookie" in body for body in boilerplate)

    pngs = [body for _, http, body in _responses(root) if http.get_header("Content-Type") == "image/png"]
    assert len(pngs) == summary["non_html_records"] == 1
    png = pngs[0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    offset, chunks = 8, []
    while offset < len(png):  # every chunk's CRC must check out for this to be a real PNG
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks.append(kind)
        offset += 12 + length
    assert chunks == [b"IHDR", b"IDAT", b"IEND"]


def test_cp1252_page_is_not_utf8(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    pages = [
        body
        for _, http, body in _responses(root)
        if http.get_header("Content-Type") == "text/html; charset=windows-1252"
    ]
    assert len(pages) == summary["non_utf8_pages"] == 1
    with pytest.raises(UnicodeDecodeError):
        pages[0].decode("utf-8")
    text = pages[0].decode("cp1252")
    for expected in ("café", "naïve", "€ 5", "“with”", '<meta charset="windows-1252">'):
        assert expected in text


def test_exact_and_near_duplicate_pages(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    by_body = collections.defaultdict(list)
    bodies = {}
    for headers, _, body in _responses(root):
        by_body[hashlib.sha256(body).hexdigest()].append(headers["WARC-Target-URI"])
        bodies[headers["WARC-Target-URI"]] = body
    duplicated = [sorted(uris) for digest, uris in by_body.items() if len(uris) > 1]
    assert len(duplicated) == summary["exact_duplicates"] == 8
    for original, copy in duplicated:
        assert copy == f"{original}?utm_source=newsletter"

    mirrors = [uri for uri in bodies if uri.startswith("https://mirror.example.net/")]
    assert len(mirrors) == summary["near_duplicates"] == 8
    for uri in mirrors:
        original = bodies[uri.replace("https://mirror.example.net/python/", "https://docs.example.org/topics/")]
        near = bodies[uri]
        assert near != original
        words, near_words = collections.Counter(original.split()), collections.Counter(near.split())
        # About 3% of the article's words were edited; the shared nav/footer/markup are untouched.
        assert 0 < (words - near_words).total() <= 0.06 * words.total()


def test_wet_conversion_records(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    records = _records(root / WET)
    assert records[0][0] == "warcinfo"
    conversions = records[1:]
    assert len(conversions) == summary["wet_records"] == 20
    response_ids = {h["WARC-Target-URI"]: h["WARC-Record-ID"] for h, _, _ in _responses(root)}
    texts = collections.Counter()
    for kind, headers, _, payload in conversions:
        assert kind == "conversion"
        assert headers["Content-Type"] == "text/plain"
        assert headers["WARC-Refers-To"] == response_ids[headers["WARC-Target-URI"]]
        text = payload.decode("utf-8")
        assert len(text.split()) > 20
        texts[text] += 1
    assert sorted(texts.values(), reverse=True)[:3] == [2, 2, 1]


def test_pile_documents(corpus: tuple[Path, dict[str, int]]) -> None:
    root, summary = corpus
    docs, raw = [], b""
    for name in PILES:
        data = zstandard.ZstdDecompressor().decompress((root / name).read_bytes())
        lines = data.decode("utf-8").splitlines()
        assert lines
        docs += [json.loads(line) for line in lines]
        raw += data
    assert len(docs) == summary["pile_documents"]
    sets = collections.Counter(doc["meta"]["pile_set_name"] for doc in docs)
    assert set(sets) == {"ModuleDocs", "PydocTopics", "Pile-CC"}
    assert sets["ModuleDocs"] >= 30
    assert sum(doc["text"] == "" for doc in docs) == 1
    assert sum(len(doc["text"].split()) < 10 for doc in docs) == summary["pile_short_documents"]
    repeats = collections.Counter(doc["text"] for doc in docs if doc["text"])
    assert sum(count - 1 for count in repeats.values()) == summary["pile_exact_duplicates"]
    # ensure_ascii=False: non-ASCII text is stored as UTF-8, not as \u escapes.
    assert "Loading…".encode() in raw
