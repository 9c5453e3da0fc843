"""HTML to text: charset detection and main-content extraction (trafilatura or resiliparse)."""

from __future__ import annotations

import re
from typing import Literal

from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from tokenmill.curate.readers.charsets import decode, encoding_for_label

Extractor = Literal["trafilatura", "resiliparse"]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def declared_charset(content_type: str | None, body: bytes) -> str | None:
    """The charset label named by the HTTP Content-Type header, else by a <meta> tag near the top of the page."""
    label, _ = _declaration(content_type, body)
    return label


def _declaration(content_type: str | None, body: bytes) -> tuple[str | None, str | None]:
    """(label, WHATWG encoding) declared for an HTML payload, following the HTML standard's order and rules: the
    transport layer (HTTP `Content-Type` charset) first, then the <meta charset> / <meta http-equiv> prescan. A
    label the Encoding Standard does not know is ignored (so a Python-only codec name like `unicode_escape` or
    `rot13` never decodes a page). A meta prescan result of UTF-16 means UTF-8 (the bytes that spelled the tag
    were ASCII), and x-user-defined means windows-1252.

    One deliberate deviation: a UTF-16 label from HTTP on a payload without a byte-order mark is believed only when
    the bytes look like UTF-16 (at least one NUL in eight bytes); a browser would render an ASCII page so served
    as CJK mojibake, which is no use as text.
    """
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        label = match.group(1).lower() if match else None
        encoding = encoding_for_label(label)
        if encoding in ("UTF-16LE", "UTF-16BE") and body.count(0) * 8 < len(body):
            encoding = None
        if encoding is not None:
            return label, encoding
    match = _META_CHARSET.search(body[:4096])
    if match:
        label = match.group(1).decode("ascii").lower()
        encoding = encoding_for_label(label)
        if encoding in ("UTF-16LE", "UTF-16BE"):
            encoding = "UTF-8"
        elif encoding == "x-user-defined":
            encoding = "windows-1252"
        if encoding is not None:
            return label, encoding
    return None, None


_BOMS = ((b"\xef\xbb\xbf", "UTF-8"), (b"\xfe\xff", "UTF-16BE"), (b"\xff\xfe", "UTF-16LE"))


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode an HTML payload; returns (text, charset used).

    A byte-order mark decides first (and is removed), as in browsers. Otherwise the declared encoding (see
    `_declaration`) is trusted only if the bytes decode under it; then UTF-8 is tried, then resiliparse's
    detector (which never fails: undecodable bytes become U+FFFD). The charset returned is the declared label
    when the page was decoded with the encoding it names, else the name of the encoding used. A label that
    names the WHATWG `replacement` encoding (iso-2022-kr, hz-gb-2312, ...) decodes to a single U+FFFD with
    charset "replacement", as the standard prescribes.
    """
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return decode(body[len(bom) :], encoding, "replace"), encoding.lower()
    label, encoding = _declaration(content_type, body)
    if encoding == "replacement":
        return decode(body, encoding), "replacement"
    if encoding is not None:
        try:
            named = encoding_for_label(label)
            return decode(body, encoding), (label if named == encoding and label else encoding.lower())
        except UnicodeDecodeError:
            pass
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    detected = detect_encoding(body)
    known = encoding_for_label(detected)
    if known is not None and known not in ("replacement", "UTF-16LE", "UTF-16BE"):
        return decode(body, known, "replace"), detected
    return bytes_to_str(body, detected), detected


def extract_text(html: str, extractor: Extractor, url: str | None = None) -> str:
    """Main-content text of an HTML page ('' when nothing but boilerplate is found)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False)
    import trafilatura

    text = trafilatura.extract(
        html, url=url, favor_precision=True, include_comments=False, deduplicate=False, with_metadata=False
    )
    return text or ""
