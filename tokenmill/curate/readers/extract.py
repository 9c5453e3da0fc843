"""HTML to text: charset detection and main-content extraction (trafilatura or resiliparse)."""

from __future__ import annotations

import re
from typing import Literal

from resiliparse.parse.encoding import bytes_to_str, detect_encoding

Extractor = Literal["trafilatura", "resiliparse"]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def declared_charset(content_type: str | None, body: bytes) -> str | None:
    """The charset named by the HTTP Content-Type header, else by a <meta> tag near the top of the page."""
    if content_type:
        match = _HEADER_CHARSET.search(content_type)
        if match:
            return match.group(1).lower()
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii").lower() if match else None


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode an HTML payload; returns (text, charset used).

    A declared charset is trusted only if the bytes decode under it; otherwise UTF-8 is tried, then
    resiliparse's detector (which never fails: undecodable bytes become U+FFFD).
    """
    charset = declared_charset(content_type, body)
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return body.decode(_python_codec(candidate)), candidate
        except (LookupError, UnicodeDecodeError):
            continue
    detected = detect_encoding(body)
    return bytes_to_str(body, detected), detected


def _python_codec(charset: str) -> str:
    # Browsers treat these labels as windows-1252 / GBK supersets (WHATWG encoding standard).
    return {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252"}.get(
        charset, "gbk" if charset in ("gb2312", "gb_2312-80") else charset
    )


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
