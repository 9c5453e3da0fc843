"""PII redaction: e-mail addresses and IP addresses (IPv4 and IPv6) become placeholders.

Every pattern is anchored so that a long run of address-like characters costs linear time: a match can only start
where the previous character cannot belong to the same address (a lookbehind), and repetitions are bounded by
the lengths the standards allow (local part <= 64, labels <= 63). Candidates the patterns let through are checked
with `ipaddress`, which also decides what is public.
"""

from __future__ import annotations

import ipaddress
import re

import pyarrow as pa
from pydantic import field_validator

from tokenmill.engine.documents import Doc
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DocumentStage

_LOCAL_CHAR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# A local part starts and ends with a non-dot; the domain has at least one dot and an alphabetic TLD, so package
# pins (`lodash@4.17.21`) and `user@localhost` are not addresses.
EMAIL = re.compile(
    rf"(?<!{_LOCAL_CHAR}){_LOCAL_CHAR}(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]{{0,62}}{_LOCAL_CHAR})?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Not part of a longer dotted number (`1.2.3.4.5`, section `2.1.1.1.3`) or a word (`v1.2.3.4`); leading zeros
# are refused, as `ipaddress` does, so zero-padded dates and codes are left alone.
IPV4 = re.compile(rf"(?<![A-Za-z0-9_.]){_OCTET}(?:\.{_OCTET}){{3}}(?![A-Za-z0-9_]|\.[0-9])")
# Hex groups and colons (optionally ending in a dotted IPv4), validated afterwards by `ipaddress`.
IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![A-Za-z0-9_:]|\.[0-9])"
)


def is_redactable_ip(candidate: str, public_only: bool) -> bool:
    """A valid address (public unless `public_only` is off). IPv6 needs three hex groups, so `::1`, `a::b`
    and Perl/C++ names like `Foo::Bar` never count."""
    if ":" in candidate and sum(1 for group in candidate.split(":") if group) < 3:
        return False
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return address.is_global or not public_only


_ADDRESS_CHARS = frozenset("@.:")


def check_placeholder(placeholder: str) -> str:
    """Placeholders may not contain `@`, `.` or `:`, the characters every address needs (see `redact_pii`)."""
    if not _ADDRESS_CHARS.isdisjoint(placeholder):
        raise ValueError(f"placeholder {placeholder!r} must not contain '@', '.' or ':'")
    return placeholder


def redact_pii(
    text: str,
    *,
    emails: bool = True,
    ips: bool = True,
    public_ips_only: bool = True,
    email_placeholder: str = "<EMAIL>",
    ip_placeholder: str = "<IP_ADDRESS>",
) -> tuple[str, int, int]:
    """`text` with e-mail and IP addresses replaced, and how many of each were replaced.

    A replacement changes the neighbourhood of the next address (the lookbehinds now see the placeholder's `>`
    where there was a letter), so one pass can uncover an address (`a@b.cc=d@e.cc`): passes repeat until one finds
    nothing, which makes redaction idempotent. Each replacement removes an `@`, `.` or `:` and placeholders may
    contain none, so the passes end.
    """
    for placeholder in (email_placeholder, ip_placeholder):
        check_placeholder(placeholder)
    n_emails = n_ips = 0
    while True:
        text, found_emails, found_ips = _redact_once(
            text, emails, ips, public_ips_only, email_placeholder, ip_placeholder
        )
        if not found_emails and not found_ips:
            return text, n_emails, n_ips
        n_emails += found_emails
        n_ips += found_ips


def _redact_once(
    text: str, emails: bool, ips: bool, public_only: bool, email_placeholder: str, ip_placeholder: str
) -> tuple[str, int, int]:
    """One pass. E-mails go first, so `8.8.8.8@example.com` is one e-mail rather than an IP beside a dangling
    domain; IPv6 before IPv4, so an IPv6 address ending in dotted IPv4 (`64:ff9b::8.8.8.8`) is replaced whole."""
    n_emails = n_ips = 0
    if emails and "@" in text:
        text, n_emails = EMAIL.subn(email_placeholder, text)
    if ips:

        def replace(match: re.Match[str]) -> str:
            nonlocal n_ips
            if not is_redactable_ip(match.group(), public_only):
                return match.group()
            n_ips += 1
            return ip_placeholder

        if text.count(":") >= 2:
            text = IPV6.sub(replace, text)
        if "." in text:
            text = IPV4.sub(replace, text)
    return text, n_emails, n_ips


@register("pii")
class RedactPII(DocumentStage):
    """Replaces e-mail addresses with `email_placeholder` and IP addresses with `ip_placeholder`; by default only
    public (globally routable) IPs, since private, loopback and documentation addresses identify nobody.

    Never rejects. Documents whose text changed are counted in the stage's `changed`; the per-document counts
    are the annotation columns `pii_emails` and `pii_ips`.
    """

    emails: bool = True
    ips: bool = True
    public_ips_only: bool = True
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP_ADDRESS>"

    @field_validator("email_placeholder", "ip_placeholder")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        return check_placeholder(value)

    def columns(self) -> dict[str, pa.DataType]:
        return {"pii_emails": pa.int32(), "pii_ips": pa.int32()}

    def process(self, doc: Doc) -> str | None:
        doc.text, doc.annotations["pii_emails"], doc.annotations["pii_ips"] = redact_pii(
            doc.text,
            emails=self.emails,
            ips=self.ips,
            public_ips_only=self.public_ips_only,
            email_placeholder=self.email_placeholder,
            ip_placeholder=self.ip_placeholder,
        )
        return None
