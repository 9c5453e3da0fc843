"""How good is a tokenizer on held-out text: bytes per token, fertility, vocabulary use, unknown rate."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tokenmill.engine.stage import ShardOutput
from tokenmill.tokenize.corpus import is_heldout
from tokenmill.tokenize.vocab import UNK

COLUMNS = ("source", "documents", "bytes", "tokens", "bytes/token", "tokens/word", "unknown rate")


def measure(tokenizer: Tokenizer, texts_by_source: dict[str, list[str]]) -> tuple[list[dict[str, Any]], float]:
    """Per-source rows (plus `all`) and the fraction of the vocabulary used on these texts."""
    unk = tokenizer.token_to_id(UNK)
    used = np.zeros(tokenizer.get_vocab_size(), dtype=bool)
    rows = []
    totals: dict[str, float] = defaultdict(float)
    for source in sorted(texts_by_source):
        texts = texts_by_source[source]
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        n_tokens = sum(len(e.ids) for e in encodings)
        n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        n_words = sum(len(t.split()) for t in texts)
        n_unk = sum(e.ids.count(unk) for e in encodings) if unk is not None else 0
        for e in encodings:
            used[e.ids] = True
        rows.append(_row(source, len(texts), n_bytes, n_tokens, n_words, n_unk))
        for key, value in (("documents", len(texts)), ("bytes", n_bytes), ("tokens", n_tokens)):
            totals[key] += value
        totals["words"] += n_words
        totals["unk"] += n_unk
    rows.append(
        _row(
            "all", int(totals["documents"]), int(totals["bytes"]), int(totals["tokens"]), totals["words"], totals["unk"]
        )
    )
    return rows, float(used.mean())


def _row(source: str, docs: int, n_bytes: int, n_tokens: int, n_words: float, n_unk: float) -> dict[str, Any]:
    return {
        "source": source,
        "documents": docs,
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes/token": round(n_bytes / n_tokens, 3) if n_tokens else 0.0,
        "tokens/word": round(n_tokens / n_words, 3) if n_words else 0.0,
        "unknown rate": round(n_unk / n_tokens, 5) if n_tokens else 0.0,
    }


def heldout_texts(shards: list[ShardOutput], fraction: float, limit_bytes: int = 50_000_000) -> dict[str, list[str]]:
    """The held-out documents (never trained on), grouped by source, up to `limit_bytes` of text."""
    from tokenmill.engine.segment_source import iter_shard_columns

    by_source: dict[str, list[str]] = defaultdict(list)
    budget = limit_bytes
    for shard in shards:
        for _, doc_id, text, source in iter_shard_columns(shard, ["id", "text", "source"]):
            if fraction > 0 and is_heldout(doc_id, fraction) and budget > 0:
                by_source[source or "unknown"].append(text)
                budget -= len(text)
    return dict(by_source)


def gpt2_reference() -> tuple[Tokenizer | None, str]:
    """GPT-2's tokenizer if it is available offline (a local HF cache), else None and the reason."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache("openai-community/gpt2", "tokenizer.json") or try_to_load_from_cache(
            "gpt2", "tokenizer.json"
        )
    except ImportError:
        return None, "huggingface_hub is not installed"
    if not isinstance(path, str) or not os.path.exists(path):
        return None, "GPT-2's tokenizer.json is not in the local Hugging Face cache (nothing is downloaded)"
    return Tokenizer.from_file(path), path


def evaluate_tokenizer(tokenizer_json: str, shards: list[ShardOutput], directory: str, fraction: float) -> dict:
    """Measure on held-out text, write `evaluation.md` and `evaluation.png` in `directory`, return the figures."""
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.encode_special_tokens = True  # not saved in tokenizer.json; measure text as `tokenize` encodes it
    texts = heldout_texts(shards, fraction)
    if not texts:
        return {"skipped": "no held-out documents (heldout_fraction is 0 or the corpus is tiny)"}
    rows, utilisation = measure(tokenizer, texts)
    reference, reason = gpt2_reference()
    gpt2_rows = measure(reference, texts)[0] if reference else None
    lines = ["# Tokenizer evaluation (held-out documents)", "", "| " + " | ".join(COLUMNS) + " |"]
    lines += ["|" + "---|" * len(COLUMNS)] + ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += ["", f"Vocabulary utilisation on held-out text: {utilisation:.1%}", ""]
    if gpt2_rows:
        lines += ["GPT-2 on the same text (bytes/token): "]
        lines += [f"- {r['source']}: {r['bytes/token']}" for r in gpt2_rows]
    else:
        lines += [f"GPT-2 comparison skipped: {reason}."]
    with open(os.path.join(directory, "evaluation.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    _plot(rows, gpt2_rows, os.path.join(directory, "evaluation.png"))
    overall = rows[-1]
    return {
        "bytes/token": overall["bytes/token"],
        "tokens/word": overall["tokens/word"],
        "unknown rate": overall["unknown rate"],
        "vocabulary utilisation": round(utilisation, 4),
        "gpt2 bytes/token": gpt2_rows[-1]["bytes/token"] if gpt2_rows else f"skipped: {reason}",
        "report": os.path.join(directory, "evaluation.md"),
    }


def _plot(rows: list[dict], reference: list[dict] | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [r["source"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(sources) + 2), 3.5))
    x = np.arange(len(sources))
    ax.bar(x - 0.2 if reference else x, [r["bytes/token"] for r in rows], width=0.4, label="this tokenizer")
    if reference:
        ax.bar(x + 0.2, [r["bytes/token"] for r in reference], width=0.4, label="GPT-2")
    ax.set_xticks(x, sources, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("bytes per token (higher: fewer tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
