"""The `url_filter` stage (EasyList rules, domain lists, banned words) and the `pii` stage (e-mail and IP
redaction): examples, the real EasyList, bad input, properties, and one pipeline run with all three new stages."""

from __future__ import annotations

import gzip
import json
import random
import re

import pyarrow.parquet as pq
import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.curate.filters.pii import RedactPII, redact_pii
from tokenmill.curate.filters.urls import (
    RuleSet,
    UrlBlocklist,
    UrlFilter,
    abp_to_regex,
    host_of,
    parse_adblock,
    parse_domain_list,
    read_rules,
)
from tokenmill.engine.documents import Doc
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats


def blocklist(*rules: str, banned_words: tuple[str, ...] = ()) -> UrlBlocklist:
    return UrlBlocklist(*parse_adblock(rules), banned_words=banned_words)


def run(stage, docs: list[Doc]) -> tuple[list[Doc], StageStats]:
    out = Outcomes(StageStats(stage.stage_name))
    stage.setup()
    kept = stage.process_batch(docs, out)
    return kept, out.stats.check()


# --- Adblock Plus rules ----------------------------------------------------------------------------------------------


def test_domain_anchor_matches_the_host_and_its_subdomains_only() -> None:
    rules = blocklist("||ads.example.com^")
    assert rules.match("https://ads.example.com/x") == "url_blocklist_domain"
    assert rules.match("http://user@cdn.ads.example.com:8080/a?b") == "url_blocklist_domain"
    assert rules.match("HTTPS://ADS.EXAMPLE.COM./") == "url_blocklist_domain"
    for url in ("https://notads.example.com/", "https://ads.example.com.evil.org/", "https://x.org/?u=ads.example.com"):
        assert rules.match(url) is None, url


def test_pattern_syntax_anchors_wildcards_and_separators() -> None:
    rules = blocklist("|https://bad.", ".exe|", "/banner/*/img^", "-ad-unit.", "||tracker.net/pixel")
    assert rules.match("https://bad.example.org/") == "url_blocklist_rule"
    assert rules.match("http://bad.example.org/") is None  # `|` anchors at the start
    assert rules.match("https://x.org/setup.exe") == "url_blocklist_rule"
    assert rules.match("https://x.org/setup.exe?v=1") is None  # `|` anchors at the end
    assert rules.match("https://x.org/banner/2024/07/img?id=3") == "url_blocklist_rule"
    assert rules.match("https://x.org/banner/2024/img") == "url_blocklist_rule"  # `^` matches the end too
    assert rules.match("https://x.org/banner/2024/imgs") is None  # ... but not a letter
    assert rules.match("https://x.org/banner/img") is None  # `*` between two slashes needs both
    assert rules.match("https://news.org/top-ad-unit.js") == "url_blocklist_rule"
    assert rules.match("https://a.tracker.net/pixel.gif") == "url_blocklist_rule"
    assert rules.match("https://tracker.network/pixel.gif") is None


def test_exceptions_win_over_blocking_rules() -> None:
    rules = blocklist(
        "||example.com^", "@@||good.example.com^$document", "/ads/*", "@@/ads/allowed/*", "@@||partner.org^"
    )
    assert rules.match("https://bad.example.com/") == "url_blocklist_domain"
    assert rules.match("https://good.example.com/page") is None
    assert rules.match("https://news.org/ads/x") == "url_blocklist_rule"
    assert rules.match("https://news.org/ads/allowed/x") is None
    assert rules.match("https://partner.org/ads/x") is None


def test_rules_that_cannot_apply_to_a_page_url_are_skipped() -> None:
    block, allow = parse_adblock(
        [
            "[Adblock Plus 2.0]",
            "! comment",
            "##.ad-banner",
            "example.com##.sidebar",
            "example.com#@#.ad",
            "example.com#?#div:-abp-has(.ad)",
            "/ad[0-9]+\\.js/",
            "||scripts.example^$script",
            "||third.example^$third-party",
            "||some.example^$domain=news.org",
            "||nodoc.example^$~document",
            "*",
            "@@||x.org^$generichide",
        ]
    )
    assert not block.domains and not block.patterns and not allow.domains
    assert block.skipped == 10 and allow.skipped == 1
    block, _ = parse_adblock(["||pop.example^$popup", "||all.example^$all", "/promo/*$~script,~third-party"])
    assert block.domains == {"pop.example", "all.example"} and len(block.patterns) == 1


def test_regex_translation() -> None:
    assert re.search(abp_to_regex("||a.com^"), "http://x.a.com:80/")
    assert not re.search(abp_to_regex("||a.com^"), "http://xa.com/")
    assert abp_to_regex("**ads**") == "ads"
    assert re.search(abp_to_regex("a*b"), "a---b") and not re.search(abp_to_regex("a*b"), "b-a")
    assert re.search(abp_to_regex("q^"), "x.org/q") and not re.search(abp_to_regex("q^"), "x.org/q.js")


def test_banned_words_are_whole_url_tokens() -> None:
    rules = blocklist(banned_words=("casino",))
    assert rules.match("https://best-casino.example/") == "url_banned_word"
    assert rules.match("https://example.org/CASINO/night") == "url_banned_word"
    assert rules.match("https://casinos.example/") is None


# --- Domain lists and files ------------------------------------------------------------------------------------------


def test_plain_domain_lists() -> None:
    rules = parse_domain_list(
        [
            "# comment",
            "",
            "spam.example",
            "0.0.0.0 hosts.example  # hosts file",
            "*.wild.example",
            "https://u.example/x",
        ]
    )
    assert rules.domains == {"spam.example", "hosts.example", "wild.example", "u.example"}
    matcher = UrlBlocklist(rules, RuleSet())
    assert matcher.match("http://www.spam.example/") == "url_blocklist_domain"
    assert matcher.match("http://a.wild.example/") == "url_blocklist_domain"
    assert matcher.match("http://spam.example.org/") is None


def test_list_format_is_detected_per_file(tmp_path) -> None:
    plain = tmp_path / "domains.txt.gz"
    plain.write_bytes(gzip.compress(b"# my list\nbad.example\n"))
    adblock = tmp_path / "rules.txt"
    adblock.write_text("! rules\n/ads/*\n||bad.example^\n")
    assert read_rules(str(plain))[0].domains == {"bad.example"}
    block, _ = read_rules(str(adblock))
    assert block.domains == {"bad.example"} and len(block.patterns) == 1


def test_real_easylist(commoncrawl_dir) -> None:
    block, allow = read_rules(str(commoncrawl_dir / "easylist.txt.gz"))
    rules = UrlBlocklist(block, allow)
    assert len(block.domains) > 30_000 and len(block.patterns) > 3_000 and rules.skipped > 20_000
    assert rules.match("https://cdnads.com/anything") == "url_blocklist_domain"
    assert rules.match("https://www.news-site.example/ads/video/1") == "url_blocklist_rule"
    for url in ("https://en.wikipedia.org/wiki/Advertising", "https://www.bbc.co.uk/news/world-123", "https://a.b/"):
        assert rules.match(url) is None, url


def test_token_index_agrees_with_trying_every_rule(commoncrawl_dir) -> None:
    """The index is only a shortcut: on the real list it must decide exactly as a loop over every rule would."""
    with gzip.open(commoncrawl_dir / "easylist.txt.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    block, allow = parse_adblock(lines)
    rules = UrlBlocklist(block, allow)
    block_regexes = [re.compile(regex) for regex, _ in block.patterns]
    allow_regexes = [re.compile(regex) for regex, _ in allow.patterns]
    rng = random.Random(7)
    # Half the URLs spell out a rule (wildcards and separators filled in), half splice rule fragments together.
    spelled = [
        rule.lstrip("|").rstrip("|").replace("*", rng.choice(["", "x/", "-ad-"])).replace("^", rng.choice(["/", "?"]))
        for rule in lines
        if rule and rule[0] not in "!@[|" and "$" not in rule and "#" not in rule and not rule.startswith("/")
    ]
    fragments = [part for rule in spelled for part in re.split(r"[^\w.-]+", rule) if len(part) > 1]
    urls = []
    for i in range(600):
        if i % 2:
            path = rng.choice(spelled)
        else:
            path = "".join(rng.choice(fragments) + rng.choice("/-.?=&_") for _ in range(rng.randint(1, 4)))
        urls.append(f"https://{rng.choice(['www.', 'cdn.', ''])}site{rng.randint(0, 9)}.example/{path}")
    hits = 0
    for url in urls:
        lowered = url.lower()
        blocked = any(regex.search(lowered) for regex in block_regexes)
        allowed = any(regex.search(lowered) for regex in allow_regexes)
        expected = "url_blocklist_rule" if blocked and not allowed else None
        assert rules.match(url) == expected, url
        hits += expected is not None
    assert hits > 200  # the sample exercises the index, not only misses


# --- The url_filter stage --------------------------------------------------------------------------------------------


def test_stage_reasons_missing_urls_and_fingerprint(tmp_path) -> None:
    listing = tmp_path / "block.txt"
    listing.write_text("[Adblock Plus 2.0]\n||bad.example^\n/popunder/*\n")
    docs = [
        Doc(id="a", text="x", url="https://bad.example/p"),
        Doc(id="b", text="x", url="https://ok.example/popunder/1"),
        Doc(id="c", text="x", url="https://ok.example/fine"),
        Doc(id="d", text="x", url="https://inline.example/"),
        Doc(id="e", text="x", url="https://ok.example/free-casino"),
        Doc(id="f", text="x", url=None),
        Doc(id="g", text="x", url=""),
    ]
    stage = UrlFilter(blocklists=str(listing), domains=["inline.example"], banned_words=["casino"])
    kept, stats = run(stage, list(docs))
    assert [d.id for d in kept] == ["c", "f", "g"]
    assert stats.rejected == {
        "url_blocklist_domain": 2,
        "url_blocklist_rule": 1,
        "url_banned_word": 1,
    }
    kept, stats = run(UrlFilter(blocklists=[str(listing)], missing_url="reject"), list(docs))
    assert stats.rejected["url_missing"] == 2
    assert UrlFilter(blocklists=[str(listing)]).model_dump()["blocklist_identity"][0].startswith(str(listing))
    with pytest.raises(pydantic.ValidationError, match="block list not found"):
        UrlFilter(blocklists=[str(tmp_path / "absent.txt")])


def test_url_filter_bad_input_never_errors() -> None:
    urls = [
        "",
        "not a url",
        "http://[::1",
        "http://",
        "://x",
        "a" * 10_000_000,
        "http://例え.テスト/パス",
        "\x00\ud800",
    ]
    docs = [Doc(id=str(i), text="t", url=url) for i, url in enumerate(urls)]
    kept, stats = run(UrlFilter(domains=["example.com"], banned_words=["zz"]), docs)
    assert len(kept) == len(urls) and stats.n_errors == 0
    assert host_of("http://[::1") is None and host_of("Example.COM/x") == "example.com"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_url_matching_never_raises_and_is_deterministic(url: str) -> None:
    rules = _PROPERTY_RULES
    assert rules.match(url) == rules.match(url)
    assert rules.match(url) in (None, "url_blocklist_domain", "url_blocklist_rule", "url_banned_word")


_PROPERTY_RULES = blocklist("||a.b^", "/x^", "|h*q|", "@@/x/ok", "^^", banned_words=("w",))


# --- PII -------------------------------------------------------------------------------------------------------------


def test_emails_are_redacted_but_package_pins_and_local_names_are_not() -> None:
    assert redact_pii("write to john.doe+news@mail.example.co.uk today") == ("write to <EMAIL> today", 1, 0)
    assert redact_pii("<a@b.org>, c_d@e-f.io.") == ("<<EMAIL>>, <EMAIL>.", 2, 0)
    for text in ("lodash@4.17.21", "root@localhost", "@handle", "a@b", "user@.com", "x@-bad.com"):
        assert redact_pii(text) == (text, 0, 0), text
    assert redact_pii("x@y.com", email_placeholder="[email]")[0] == "[email]"
    assert redact_pii("x@y.com", emails=False) == ("x@y.com", 0, 0)


def test_adjacent_addresses_and_placeholders() -> None:
    # The second address only becomes one once the first is replaced: redaction repeats until nothing changes.
    assert redact_pii("a@b.cc=d@e.cc") == ("<EMAIL><EMAIL>", 2, 0)
    assert redact_pii("0@0.AA=8.8.8.8@") == ("<EMAIL>=<IP_ADDRESS>@", 1, 1)
    with pytest.raises(ValueError, match="must not contain"):
        redact_pii("x", email_placeholder="user@example.com")
    with pytest.raises(pydantic.ValidationError, match="must not contain"):
        RedactPII(ip_placeholder="0.0.0.0")


def test_ipv4_needs_valid_octets_and_clear_boundaries() -> None:
    assert redact_pii("dns 8.8.8.8, ip=203.0.113.9? 1.1.1.1:53") == (
        "dns <IP_ADDRESS>, ip=203.0.113.9? <IP_ADDRESS>:53",
        0,
        2,
    )
    for text in ("v1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "2023.01.02", "v8.8.8.8", "section 8.8.8.8.1"):
        assert redact_pii(text) == (text, 0, 0), text
    assert redact_pii("at 8.8.8.8.") == ("at <IP_ADDRESS>.", 0, 1)


def test_private_addresses_are_kept_unless_asked() -> None:
    text = "lan 192.168.1.1 lo 127.0.0.1 doc 192.0.2.7 v6 fe80::1:2:3"
    assert redact_pii(text) == (text, 0, 0)
    redacted, _, n = redact_pii(text, public_ips_only=False)
    assert redacted == "lan <IP_ADDRESS> lo <IP_ADDRESS> doc <IP_ADDRESS> v6 <IP_ADDRESS>" and n == 4


def test_ipv6_addresses_but_not_times_macs_or_scoped_names() -> None:
    text = "cf 2606:4700:4700::1111 g [2001:4860:4860::8888]:53 full 2a00:1450:4001:0829:0000:0000:0000:200e"
    assert redact_pii(text) == ("cf <IP_ADDRESS> g [<IP_ADDRESS>]:53 full <IP_ADDRESS>", 0, 3)
    assert redact_pii("nat64 64:ff9b::8.8.8.8") == ("nat64 <IP_ADDRESS>", 0, 1)
    for other in ("12:30:45", "00:1a:2b:3c:4d:5e", "std::vector", "Foo::Bar", "a::b", "::", "ab:cd:ef"):
        assert redact_pii(other, public_ips_only=False) == (other, 0, 0), other


def test_pii_stage_annotates_counts_and_counts_changes() -> None:
    docs = [Doc(id="a", text="mail a@b.com or c@d.org from 8.8.8.8"), Doc(id="b", text="nothing here")]
    stage = RedactPII()
    kept, stats = run(stage, docs)
    assert [d.text for d in kept] == ["mail <EMAIL> or <EMAIL> from <IP_ADDRESS>", "nothing here"]
    assert [(d.annotations["pii_emails"], d.annotations["pii_ips"]) for d in kept] == [(2, 1), (0, 0)]
    assert stats.changed == 1 and stats.n_rejected == 0
    assert set(stage.columns()) == {"pii_emails", "pii_ips"}


def test_pii_bad_input_never_errors() -> None:
    texts = [
        "",
        "x" * 10_000_000 + " a@b.com",  # a 10 MB single line
        "a@" * 1_000_000,
        "1." * 1_000_000,
        "1:" * 1_000_000,
        bytes(range(256)).decode("latin-1") * 100,
        "lone \ud800 a@b.com \udfff",
        "почта ivan@почта.рф и ivan@mail.ru, 服务器8.8.8.8",
    ]
    docs = [Doc(id=str(i), text=text) for i, text in enumerate(texts)]
    kept, stats = run(RedactPII(), docs)
    assert len(kept) == len(texts) and stats.n_errors == 0
    assert kept[1].text.endswith(" <EMAIL>") and kept[1].annotations["pii_emails"] == 1
    assert kept[7].text == "почта ivan@почта.рф и <EMAIL>, 服务器<IP_ADDRESS>"


_PII_ALPHABET = st.sampled_from([*"ab1290.:@-_[]<>=+' fF\n", "8.8.8.8", "x@y.com", "2606:4700::1", "::", "AA"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_PII_ALPHABET, max_size=40).map("".join)))
def test_redaction_never_raises_is_deterministic_and_idempotent(text: str) -> None:
    once = redact_pii(text, public_ips_only=False)
    assert once == redact_pii(text, public_ips_only=False)
    redacted, n_emails, n_ips = once
    assert redact_pii(redacted, public_ips_only=False) == (redacted, 0, 0)
    if "<" not in text:
        assert redacted.count("<EMAIL>") == n_emails and redacted.count("<IP_ADDRESS>") == n_ips


# --- A pipeline with the three stages ------------------------------------------------------------------------------


def test_pipeline_with_language_url_filter_and_pii(tmp_path, client) -> None:
    records = [
        {
            "id": "en",
            "url": "https://news.example/a",
            "text": "The council approved the new park plan on Monday. "
            "Write to press@news.example or visit from 8.8.8.8 for details.",
        },
        {"id": "fr", "url": "https://news.example/b", "text": "Le conseil municipal a approuvé le nouveau projet."},
        {"id": "ad", "url": "https://ads.tracker.example/c", "text": "Click here to claim the prize you have won."},
        {"id": "nourl", "text": "This document has no address but is written in plain English prose."},
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in/part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "block.txt").write_text("tracker.example\n")
    spec = {
        "name": "langid-url-pii",
        "output": str(tmp_path / "out"),
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None},
        "stages": [
            {
                "read": {
                    "format": "jsonl",
                    "paths": [str(tmp_path / "in/*.jsonl")],
                    "id_field": "id",
                    "url_field": "url",
                }
            },
            {"url_filter": {"blocklists": [str(tmp_path / "block.txt")]}},
            {"language": {"keep": ["en"], "min_score": 0.5}},
            {"pii": {}},
            {"write": {"format": "parquet", "rejected": True}},
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = tokenmill.run(path, client=client)
    _, urls, language, pii = result.stats
    assert urls.rejected == {"url_blocklist_domain": 1} and urls.kept == 3
    assert language.rejected == {"language_not_kept": 1} and language.kept == 2
    assert pii.kept == 2 and pii.changed == 1
    table = pq.read_table(sorted((tmp_path / "out/curated").glob("*.parquet"))[0]).to_pylist()
    rows = {row["id"]: row for row in table}
    assert set(rows) == {"en", "nourl"}
    assert rows["en"]["language"] == "en" and rows["en"]["language_score"] > 0.5
    assert "<EMAIL>" in rows["en"]["text"] and "<IP_ADDRESS>" in rows["en"]["text"]
    assert (rows["en"]["pii_emails"], rows["en"]["pii_ips"], rows["nourl"]["pii_emails"]) == (1, 1, 0)
