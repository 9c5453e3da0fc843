"""Identities: one stable id for configurations, one number in [0, 1) for deterministic sampling, one file
digest. Everything that decides "is this the same work?" goes through here, so the rules are the same
everywhere (fingerprints, artifact ids, analysis ids, held-out splits)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import fsspec
import xxhash

_CHUNK = 1 << 20


def stable_id(payload: Any) -> str:
    """sha256 of `payload` as canonical JSON (sorted keys; non-JSON values by `str`): equal configs, equal ids."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from `parts` (e.g. a salt and a document id): the same on every machine and run."""
    key = "\x00".join(str(part) for part in parts)
    return xxhash.xxh64_intdigest(key.encode("utf-8", "surrogatepass")) / 2**64


def file_digest(url: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed in 1 MiB chunks (any fsspec URL); `algorithm` is `sha256` or `xxh3`
    (xxh3-128: fast enough to fingerprint inputs by content)."""
    digest: Any = xxhash.xxh3_128() if algorithm == "xxh3" else hashlib.new(algorithm)
    with fsspec.open(url, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
