"""URL filtering: block lists in EasyList (Adblock Plus) format or as plain domain lists, and banned URL words.

Tens of thousands of rules are compiled once per worker process into
- a set of blocked (and of allowed) domains, looked up for the URL's host and each parent domain, and
- a token index for the other rules: each rule is filed under one of its literal tokens that must appear as a
  whole token of any URL it matches (the rarest such token); a URL consults only the rules filed under its own
  tokens, one combined regex per token. Rules without such a token share one combined regex.
So a URL costs a handful of set lookups and regex searches, never a loop over rules.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, computed_field, field_validator, model_validator

from tokenmill.engine.compressed import open_decompressed
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import InputNotFound, expand_paths
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentFilter

# Element hiding, scriptlet and HTML filters act on page content, not on which URLs load.
_COSMETIC = ("##", "#@#", "#?#", "#$#", "#@?#", "#@$#", "#%#", "#@%#", "$$", "$@$")
_TYPES = {
    "script", "image", "stylesheet", "object", "xmlhttprequest", "subdocument", "ping", "websocket", "webrtc",
    "media", "font", "other", "object-subrequest", "document", "doc", "popup", "xhr", "frame", "css",
}  # fmt: skip
# A popup is a page opened as a top-level document, so popup rules name pages as much as `document` ones do.
_DOCUMENT_TYPES = {"document", "doc", "popup"}
# Options that leave a rule meaningful for a page URL; a rule with any other option is skipped.
_NEUTRAL_OPTIONS = {"~third-party", "first-party", "1p", "important", "all"}
_DOMAIN_RULE = re.compile(r"\|\|([a-z0-9-]+(?:\.[a-z0-9-]+)*)\^\|?")
_TOKEN = re.compile(r"[a-z0-9%]+")
# `||` anchors at the host or any subdomain boundary; `^` is one separator character or the end of the URL.
_HOST_ANCHOR = r"^[a-z][a-z0-9+.-]*:/+(?:[^/?#]*[.@])?"
_SEPARATOR = r"(?:[^\w%.-]|$)"


@dataclass
class RuleSet:
    """Parsed rules, before compilation: domains plus (regex, index token) pairs; `skipped` counts rules that
    cannot apply to a page URL (cosmetic, regex rules, unsupported options)."""

    domains: set[str] = field(default_factory=set)
    patterns: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    skipped: int = 0

    def merge(self, other: RuleSet) -> None:
        self.domains |= other.domains
        self.patterns += other.patterns
        self.skipped += other.skipped


def parse_adblock(lines: Iterable[str]) -> tuple[RuleSet, RuleSet]:
    """Blocking and exception (`@@`) rules of an Adblock Plus filter list, as far as they apply to page URLs."""
    block, allow = RuleSet(), RuleSet()
    for raw in lines:
        rule = raw.strip()
        if not rule or rule.startswith(("!", "[")):
            continue
        target = allow if rule.startswith("@@") else block
        rule = rule.removeprefix("@@")
        if any(marker in rule for marker in _COSMETIC):
            target.skipped += 1
            continue
        pattern, options = _split_options(rule)
        if not _applies_to_documents(options) or (
            pattern.startswith("/") and pattern.endswith("/") and len(pattern) > 1
        ):
            target.skipped += 1  # regex rules (`/.../`) are left out: they are few and unbounded in cost
            continue
        pattern = pattern.lower()
        domain = _DOMAIN_RULE.fullmatch(pattern)
        if domain:
            target.domains.add(domain.group(1))
        elif pattern.strip("*^|"):
            target.patterns.append((abp_to_regex(pattern), bounded_tokens(pattern)))
        else:
            target.skipped += 1  # matches every URL
    return block, allow


def parse_domain_list(lines: Iterable[str]) -> RuleSet:
    """One domain per line, `#` comments; hosts-file lines (`0.0.0.0 example.com`) and URLs work too."""
    rules = RuleSet()
    for raw in lines:
        entry = raw.partition("#")[0].split()
        if not entry:
            continue
        name = entry[-1].lower()
        if "://" in name:
            name = host_of(name) or ""
        name = name.strip(".").removeprefix("*.")
        if name and "/" not in name:
            rules.domains.add(name)
    return rules


def _split_options(rule: str) -> tuple[str, list[str]]:
    pattern, dollar, options = rule.rpartition("$")
    if not dollar or not options or "/" in options:  # a `$` inside the URL pattern, not an option list
        return rule, []
    return pattern, [option.strip().lower() for option in options.split(",")]


def _applies_to_documents(options: list[str]) -> bool:
    """A rule reaches a page URL unless it names resource types other than `document` or needs page context."""
    positive = set()
    for option in options:
        if option in _TYPES:
            positive.add(option)
        elif option.startswith("~") and option[1:] in _TYPES:
            if option[1:] in ("document", "doc"):
                return False
        elif option not in _NEUTRAL_OPTIONS:
            return False  # third-party, domain=, match-case, csp=, redirect=, ...: unsupported, skipped
    return not positive or bool(positive & _DOCUMENT_TYPES)


def abp_to_regex(pattern: str) -> str:
    """An Adblock Plus URL pattern (lowercase, without `@@` and options) as a regular expression."""
    prefix = suffix = ""
    if pattern.startswith("||"):
        prefix, pattern = _HOST_ANCHOR, pattern[2:]
    elif pattern.startswith("|"):
        prefix, pattern = "^", pattern[1:]
    if pattern.endswith("|"):
        suffix, pattern = "$", pattern[:-1]
    if not prefix:
        pattern = pattern.lstrip("*")  # leading and trailing wildcards change nothing in a search
    if not suffix:
        pattern = pattern.rstrip("*")
    parts = []
    for char in re.sub(r"\*+", "*", pattern):
        parts.append(".*" if char == "*" else _SEPARATOR if char == "^" else re.escape(char))
    return prefix + "".join(parts) + suffix


def bounded_tokens(pattern: str) -> tuple[str, ...]:
    """Literal tokens of `pattern` that any matching URL contains as whole tokens: runs of [a-z0-9%] with a
    non-token character, a separator `^` or an anchor on both sides (not a wildcard, not an open end)."""
    found = []
    start_anchored = pattern.startswith("|")
    body = pattern.lstrip("|")
    end_anchored = body.endswith("|")
    body = body.rstrip("|")
    for match in _TOKEN.finditer(body):
        before = body[match.start() - 1] if match.start() else ("|" if start_anchored else "")
        after = body[match.end()] if match.end() < len(body) else ("|" if end_anchored else "")
        if before not in ("", "*") and after not in ("", "*"):
            found.append(match.group())
    return tuple(found)


def host_of(url: str) -> str | None:
    """The URL's host, lowercase, without port, credentials or trailing dot; None if it has none."""
    try:
        host = urlsplit(url if "://" in url else "//" + url).hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    return host.rstrip(".") if host else None


def parent_domains(host: str) -> list[str]:
    """`a.b.example.com` -> [`a.b.example.com`, `b.example.com`, `example.com`, `com`]."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


class UrlBlocklist:
    """Compiled rules: `match(url)` names why a URL is blocked, or returns None."""

    def __init__(self, block: RuleSet, allow: RuleSet, banned_words: Iterable[str] = ()) -> None:
        self.blocked_domains = frozenset(block.domains)
        self.allowed_domains = frozenset(allow.domains)
        self.banned_words = frozenset(word.lower() for word in banned_words)
        self.skipped = block.skipped + allow.skipped
        frequency = Counter(token for _, tokens in block.patterns + allow.patterns for token in set(tokens))
        self._block = _TokenIndex(block.patterns, frequency)
        self._allow = _TokenIndex(allow.patterns, frequency)

    def match(self, url: str) -> str | None:
        lowered = url.lower()
        tokens = set(_TOKEN.findall(lowered))
        if self.banned_words and not self.banned_words.isdisjoint(tokens):
            return "url_banned_word"
        host = host_of(lowered)
        domains = parent_domains(host) if host else []
        if not self.blocked_domains.isdisjoint(domains):
            reason = "url_blocklist_domain"
        elif self._block.search(lowered, tokens):
            reason = "url_blocklist_rule"
        else:
            return None
        if not self.allowed_domains.isdisjoint(domains) or self._allow.search(lowered, tokens):
            return None
        return reason


class _TokenIndex:
    """Regexes filed under their rarest whole-URL token; one combined regex per token, compiled on first use."""

    def __init__(self, patterns: list[tuple[str, tuple[str, ...]]], frequency: Counter) -> None:
        by_token: dict[str, list[str]] = {}
        unindexed = []
        for regex, tokens in patterns:
            if tokens:
                rarest = min(tokens, key=lambda token: (frequency[token], -len(token), token))
                by_token.setdefault(rarest, []).append(regex)
            else:
                unindexed.append(regex)
        self._sources = {token: "|".join(sorted(set(regexes))) for token, regexes in by_token.items()}
        self._compiled: dict[str, re.Pattern[str]] = {}
        self._fallback = re.compile("|".join(sorted(set(unindexed)))) if unindexed else None
        self.unindexed = len(unindexed)

    def search(self, url: str, tokens: set[str]) -> bool:
        for token in tokens & self._sources.keys():
            regex = self._compiled.get(token)
            if regex is None:
                regex = self._compiled[token] = re.compile(self._sources[token])
            if regex.search(url):
                return True
        return self._fallback is not None and self._fallback.search(url) is not None


def read_rules(url: str) -> tuple[RuleSet, RuleSet]:
    """(block, allow) rules of one list file; Adblock Plus syntax is recognised by its header or its markers."""
    with open_decompressed(url) as stream:
        lines = stream.read().decode("utf-8", "replace").splitlines()
    content = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "!"))]
    is_adblock = (bool(lines) and lines[0].lstrip().startswith("[Adblock")) or any(
        line.startswith(("||", "@@", "|")) or "##" in line or "^" in line for line in content
    )
    return parse_adblock(lines) if is_adblock else (parse_domain_list(lines), RuleSet())


@functools.lru_cache(maxsize=4)
def load_blocklist(
    files: tuple[tuple[str, str], ...], domains: tuple[str, ...], banned_words: tuple[str, ...]
) -> UrlBlocklist:
    """Compile the lists once per worker process; `files` holds (url, identity) so an edited file reloads."""
    block, allow = RuleSet(), RuleSet()
    for url, _identity in files:
        file_block, file_allow = read_rules(url)
        block.merge(file_block)
        allow.merge(file_allow)
    block.merge(parse_domain_list(domains))
    return UrlBlocklist(block, allow, banned_words)


@register("url_filter")
class UrlFilter(DocumentFilter):
    """Rejects documents whose URL is on a block list: `url_blocklist_domain` (the host or a parent domain is
    listed), `url_blocklist_rule` (an Adblock Plus URL rule matches), `url_banned_word` (a banned word is a
    whole token of the URL). `@@` exception rules and domains win over blocking rules.

    `blocklists` are fsspec paths or globs (.gz/.zst ok), each an EasyList-style filter list or a plain domain
    list; `domains` adds domains inline. Documents without a URL are kept (`missing_url: keep`) or rejected as
    `url_missing`.
    """

    blocklists: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    banned_words: list[str] = Field(default_factory=list)
    missing_url: Literal["keep", "reject"] = "keep"
    _files: list[tuple[str, str]] = PrivateAttr(default_factory=list)
    _blocklist: UrlBlocklist | None = PrivateAttr(default=None)

    @field_validator("blocklists", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolve(self) -> UrlFilter:
        try:
            found = expand_paths(self.blocklists) if self.blocklists else []
        except InputNotFound as exc:
            raise ValueError(f"block list not found: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"cannot read block lists: {exc}") from exc
        self._files = [(url, identity) for url, _, identity in found]
        return self

    @computed_field  # in the stage's fingerprint, so editing a block list recomputes finished shards
    @property
    def blocklist_identity(self) -> list[str]:
        return [f"{url} {identity}" for url, identity in self._files]

    def setup(self) -> None:
        self._blocklist = load_blocklist(tuple(self._files), tuple(self.domains), tuple(self.banned_words))

    def reject_reason(self, doc: Doc) -> str | None:
        if not doc.url:
            return "url_missing" if self.missing_url == "reject" else None
        blocklist = self._blocklist  # one read: pydantic's private attributes cost about 2 µs each
        if blocklist is None:
            self.setup()
            blocklist = self._blocklist
        return blocklist.match(doc.url)
