"""Streaming text out of curated shards: deterministic per-document sampling by id, never the whole corpus."""

from __future__ import annotations

from collections.abc import Iterator

from tokenmill.engine.identity import unit_hash
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import ShardOutput


def is_heldout(doc_id: str, fraction: float) -> bool:
    return fraction > 0 and unit_hash("heldout:" + doc_id) < fraction


def stream_texts(
    shards: list[ShardOutput],
    *,
    weights: dict[str, float] | None = None,
    heldout_fraction: float = 0.0,
    heldout: bool = False,
    max_bytes: int | None = None,
    batch: int = 1000,
) -> Iterator[list[str]]:
    """Yield batches of texts from the shards, in shard order.

    `weights` maps a source to the probability (0..1) of including each of its documents (sources not named:
    1.0); `heldout_fraction` of documents (by id hash) are excluded, or with `heldout=True` the only ones
    yielded; the stream stops after `max_bytes` of UTF-8 text.
    """
    weights = weights or {}
    budget = max_bytes if max_bytes is not None else float("inf")
    texts: list[str] = []
    for shard in shards:
        for _, doc_id, text, source in iter_shard_columns(shard, ["id", "text", "source"]):
            if is_heldout(doc_id, heldout_fraction) != heldout:
                continue
            weight = weights.get(source, 1.0)
            if weight < 1.0 and unit_hash("sample:" + doc_id) >= weight:
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > budget:
                if texts:
                    yield texts
                return
            budget -= size
            texts.append(text)
            if len(texts) >= batch:
                yield texts
                texts = []
    if texts:
        yield texts
