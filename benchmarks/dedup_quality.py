"""Near-duplicate detection quality: tokenmill's `dedup_minhash` against datatrove and datasketch, same documents.

The labelled set is built from the real documents of the mini-pile (../shared/data/pile):

- bases: `--bases` documents of 100 to 5,000 words, sampled at random; each gets `--variants` edited copies.
  A copy edits every whitespace token independently with probability `rate`: a third of that deletes it, a third
  replaces it by a random corpus word, a third inserts a random corpus word after it. Each copy draws its rate
  from RATES, so true similarities spread from about 0.98 down to about 0.5.
- unrelated: `--unrelated` other documents of the corpus (at most 20,000 words), unchanged.

Ground truth. Every document is the set of its word 5-grams, words being runs of letters and digits after
lowercasing (a document with fewer than 5 words is one shingle of all of them) - the tokenization tokenmill
uses by default. The exact Jaccard similarity of *every* pair of documents is computed (a sparse
document x shingle matrix times its transpose), so natural near-duplicates of the corpus count too.

- strict pairs: pairs with true Jaccard >= 0.8;
- cluster pairs: pairs in the same connected component of the graph of strict pairs. Every method here outputs
  clusters (connected components of its matches), and two edited copies of one base can be similar to the base
  but not to each other, so this is the truth a clustering method can reach; both are reported.

A method's predicted pairs are the pairs of documents in the same output cluster; precision, recall and F1 are
over pairs. Methods, all at threshold 0.8 with 128 (or 112) hash functions:

- tokenmill `dedup_minhash` with its defaults (`verify: exact`, 16 x 8), with `verify: estimate` (14 x 9) and
  with `verify: none` (9 x 13, the equal-weight optimum, which datasketch chooses too);
- datatrove's MinhashDedupSignature/Buckets/Cluster/Filter via LocalPipelineExecutor, with 9 x 13 and with its
  default 14 x 8;
- datasketch's MinHashLSH(threshold=0.8, num_perm=128) over the same 5-gram strings as the ground truth, with
  every document queried and candidate pairs joined by union-find (datasketch has no clustering of its own).

The `seconds` column is wall time including tokenmill's LocalCluster start and datatrove's executor overhead:
not a speed comparison (that is dedup_speed.py). Needs scipy, which datasketch installs.

    .venv/bin/python benchmarks/dedup_quality.py [--bases 300] [--variants 3] [--unrelated 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml
import zstandard

import tokenmill

REPO_ROOT = Path(__file__).resolve().parents[1]
PILE = REPO_ROOT.parent / "shared" / "data" / "pile"
RATES = (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
THRESHOLD, NGRAM, SHARDS = 0.8, 5, 4
_WORDS = re.compile(r"\w+")


def load_pile(directory: Path) -> list[str]:
    texts = []
    for path in sorted(directory.glob("*.jsonl.zst")):
        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
            texts += [json.loads(line)["text"] for line in io.TextIOWrapper(stream, encoding="utf-8")]
    return texts


def shingles(text: str) -> set[str]:
    """The ground truth's word 5-grams (tokenmill's default tokenization, exact strings, no hashing)."""
    words = _WORDS.findall(text.lower())
    if 0 < len(words) < NGRAM:
        return {" ".join(words)}
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def edit(text: str, rate: float, vocabulary: list[str], rng: random.Random) -> str:
    out = []
    for token in text.split():
        roll = rng.random()
        if roll < rate / 3:
            continue
        out.append(rng.choice(vocabulary) if roll < 2 * rate / 3 else token)
        if 2 * rate / 3 <= roll < rate:
            out.append(rng.choice(vocabulary))
    return " ".join(out)


def build_set(texts: list[str], n_bases: int, n_variants: int, n_unrelated: int, seed: int) -> dict[str, str]:
    """id -> text: bases `b<k>`, their copies `b<k>-v<j>-r<rate>`, unrelated documents `u<k>`, shuffled."""
    rng = random.Random(seed)
    vocabulary = sorted({w for t in texts[:500] for w in t.split()})
    order = list(range(len(texts)))
    rng.shuffle(order)
    bases = [i for i in order if 100 <= len(texts[i].split()) <= 5000][:n_bases]
    chosen = set(bases)
    unrelated = [i for i in order if i not in chosen and len(texts[i].split()) <= 20000][:n_unrelated]
    docs = {}
    for k, i in enumerate(bases):
        docs[f"b{k}"] = texts[i]
        for j in range(n_variants):
            rate = rng.choice(RATES)
            docs[f"b{k}-v{j}-r{rate}"] = edit(texts[i], rate, vocabulary, rng)
    docs.update({f"u{k}": texts[i] for k, i in enumerate(unrelated)})
    ids = list(docs)
    rng.shuffle(ids)
    return {i: docs[i] for i in ids}


def true_similar_pairs(docs: dict[str, str]) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """All pairs with exact Jaccard >= THRESHOLD (a sparse product), and a histogram of related pairs' Jaccard."""
    from scipy import sparse

    ids = list(docs)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, doc_id in enumerate(ids):
        for s in shingles(docs[doc_id]):
            rows.append(r)
            cols.append(vocab.setdefault(s, len(vocab)))
    matrix = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(ids), len(vocab)))
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    inter = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    pairs = {tuple(sorted((ids[a], ids[b]))) for a, b, j in zip(inter.row, inter.col, jac) if j >= THRESHOLD}
    histogram: dict[str, int] = defaultdict(int)
    for j in jac[jac >= 0.5]:
        histogram[f"{np.floor(j * 20) / 20:.2f}"] += 1
    return pairs, dict(sorted(histogram.items()))


def union_find_clusters(members: Iterable[str], pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    parent = {m: m for m in members}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {m: find(m) for m in parent}


def cluster_pairs(clusters: dict[str, object]) -> set[tuple[str, str]]:
    """All pairs of documents sharing a cluster label (None / -1: a singleton)."""
    groups: dict[object, list[str]] = defaultdict(list)
    for doc_id, label in clusters.items():
        if label is not None and label != -1:
            groups[label].append(doc_id)
    return {tuple(sorted((a, b))) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]}


def scores(predicted: set, truth: set) -> tuple[float, float, float]:
    hit = len(predicted & truth)
    precision = hit / len(predicted) if predicted else 1.0
    recall = hit / len(truth) if truth else 1.0
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def write_inputs(docs: dict[str, str], directory: Path) -> None:
    directory.mkdir(parents=True)
    ids = list(docs)
    for s in range(SHARDS):
        with (directory / f"part-{s}.jsonl").open("w", encoding="utf-8") as handle:
            for doc_id in ids[s::SHARDS]:
                handle.write(json.dumps({"id": doc_id, "text": docs[doc_id]}) + "\n")


def run_tokenmill(inputs: Path, work: Path, options: dict) -> dict[str, object]:
    spec = {
        "name": "quality",
        "output": str(work),
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"},
        "stages": [
            {"read": {"format": "jsonl", "paths": [str(inputs / "*.jsonl")], "id_field": "id"}},
            {"dedup_minhash": options},
            {"write": {"format": "parquet", "rejected": True}},
        ],
    }
    path = work.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(spec))
    tokenmill.run(path)
    clusters = {}
    for f in sorted(work.rglob("*.parquet")):
        if "/curated/" in str(f) or "/rejected/segment-01/" in str(f):
            table = pq.read_table(f, columns=["id", "minhash_cluster"])
            clusters.update(zip(table.column("id").to_pylist(), table.column("minhash_cluster").to_pylist()))
    return clusters


def datatrove_signature_step(folder: str, config: object) -> object:
    """datatrove's MinhashDedupSignature with its default xxhash shingle hash made to work with xxhash >= 4.

    datatrove 0.10 passes `str` to `xxhash.xxh64_intdigest`, which xxhash 4 rejects ("Strings must be encoded
    before hashing"); older xxhash hashed the UTF-8 bytes, which is what this wrapper does.
    """
    import xxhash
    from datatrove.pipeline.dedup import MinhashDedupSignature

    step = MinhashDedupSignature(folder, config=config)
    if config.hash_config.hash_fc == "xxhash":
        digest = xxhash.xxh64_intdigest if config.hash_config.precision == 64 else xxhash.xxh32_intdigest
        step._hash_func = lambda text: digest(text.encode("utf-8"))
    return step


def run_datatrove(inputs: Path, work: Path, bands: int, rows: int) -> dict[str, object]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig(n_grams=NGRAM, num_buckets=bands, hashes_per_bucket=rows)
    sigs, buckets, remove = work / "sigs", work / "buckets", work / "remove"

    def execute(pipeline: list, tasks: int, name: str) -> None:
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / name)).run()

    execute([JsonlReader(str(inputs)), datatrove_signature_step(str(sigs), config)], 1, "signatures")
    execute([MinhashDedupBuckets(str(sigs), str(buckets), config=config)], bands, "buckets")
    execute([MinhashDedupCluster(str(buckets), str(remove), config=config, save_cluster_id=True)], 1, "cluster")
    kept, removed = work / "kept", work / "removed"
    filtering = MinhashDedupFilter(
        str(remove), exclusion_writer=JsonlWriter(str(removed), compression=None), load_cluster_ids=True
    )
    execute([JsonlReader(str(inputs)), filtering, JsonlWriter(str(kept), compression=None)], 1, "filter")
    clusters = {}
    for f in sorted([*kept.glob("*.jsonl"), *removed.glob("*.jsonl")]):
        for line in filter(None, f.read_text(encoding="utf-8").split("\n")):  # not splitlines: U+2028 in text
            record = json.loads(line)
            clusters[record["id"]] = record["metadata"]["minhash_cluster_id"]
    return clusters


def run_datasketch(docs: dict[str, str]) -> dict[str, object]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    signatures = {}
    for doc_id, text in docs.items():
        grams = shingles(text)
        if not grams:
            continue
        signature = MinHash(num_perm=128, seed=1)
        signature.update_batch([g.encode("utf-8", "surrogatepass") for g in grams])
        signatures[doc_id] = signature
        lsh.insert(doc_id, signature)
    pairs = [(a, b) for a, sig in signatures.items() for b in lsh.query(sig) if a != b]
    return union_find_clusters(docs, pairs)


def timed(function: Callable[[], dict]) -> tuple[dict, float]:
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        result = function()
    return result, time.perf_counter() - started


def singletons_to_none(clusters: dict[str, object]) -> dict[str, object]:
    sizes: dict[object, int] = defaultdict(int)
    for label in clusters.values():
        sizes[label] += 1
    return {d: (label if sizes[label] > 1 else None) for d, label in clusters.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bases", type=int, default=300)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--unrelated", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=PILE)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if not args.data.exists():
        sys.exit(f"{args.data} is absent: this benchmark needs ../shared/data/pile")

    docs = build_set(load_pile(args.data), args.bases, args.variants, args.unrelated, args.seed)
    strict, histogram = true_similar_pairs(docs)
    closure = cluster_pairs(union_find_clusters(docs, strict))
    print(f"documents: {len(docs)} ({args.bases} bases x {1 + args.variants}, {args.unrelated} unrelated)")
    print(f"true pairs: {len(strict)} strict (Jaccard >= {THRESHOLD}), {len(closure)} in clusters")
    print("pairs by true Jaccard (bucket start: count): " + ", ".join(f"{k}: {v}" for k, v in histogram.items()))

    methods: list[tuple[str, str, Callable[[Path], dict]]] = [
        ("tokenmill (verify: exact, default)", "16 x 8", lambda w: run_tokenmill(w / "in", w / "tm", {})),
        ("tokenmill (verify: estimate)", "14 x 9", lambda w: run_tokenmill(w / "in", w / "tm", {"verify": "estimate"})),
        ("tokenmill (verify: none)", "9 x 13", lambda w: run_tokenmill(w / "in", w / "tm", {"verify": "none"})),
        ("datatrove", "9 x 13", lambda w: run_datatrove(w / "in", w / "dt", 9, 13)),
        ("datatrove (default)", "14 x 8", lambda w: run_datatrove(w / "in", w / "dt", 14, 8)),
        ("datasketch MinHashLSH", "9 x 13", lambda w: run_datasketch(docs)),
    ]
    print(
        "\n| method | bands x rows | pairs found | strict P | strict R | strict F1 | cluster P | cluster R "
        "| cluster F1 | seconds |"
    )
    print("|" + "---|" * 10)
    for name, banding, method in methods:
        with tempfile.TemporaryDirectory(prefix="dedup-quality-") as tmp:
            work = Path(tmp)
            write_inputs(docs, work / "in")
            clusters, seconds = timed(lambda method=method, work=work: method(work))
        predicted = cluster_pairs(singletons_to_none(clusters))
        sp, sr, sf = scores(predicted, strict)
        cp, cr, cf = scores(predicted, closure)
        print(
            f"| {name} | {banding} | {len(predicted)} | {sp:.3f} | {sr:.3f} | {sf:.3f} | "
            f"{cp:.3f} | {cr:.3f} | {cf:.3f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
