"""MinHash LSH near-duplicate removal: the signature math, and the global stage on a real LocalCluster."""

from __future__ import annotations

import json
import random
import re
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.curate.dedup.minhash import DOCS_PER_PARTITION, MinHashDedup
from tokenmill.curate.dedup.partitions import default_partitions
from tokenmill.curate.dedup.signatures import (
    MERSENNE,
    MinHasher,
    band_hashes,
    collision_probability,
    estimated_jaccard,
    exact_jaccard,
    ngram_hashes,
    optimal_bands,
    universal_hashes,
)
from tokenmill.engine.spec import SpecError, parse_pipeline
from tokenmill.engine.stage import ShardOutput

from pipelines import pipeline_yaml, tree_bytes

VOCAB = [f"w{i}" for i in range(5000)]


def words(seed: int, n: int = 200) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(n)]


def edited(base: list[str], rate: float, seed: int) -> list[str]:
    """Substitute about `rate` of the words."""
    rng = random.Random(seed)
    return [rng.choice(VOCAB) if rng.random() < rate else w for w in base]


def shingle_set(text: str, hasher: MinHasher) -> np.ndarray:
    blocks = list(hasher.shingles(text))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.uint64)


# --- the math ---------------------------------------------------------------------------------------------


def test_short_texts_are_one_shingle_and_wordless_texts_none():
    hasher = MinHasher(ngram=5)
    assert [len(b) for b in hasher.shingles("one two three")] == [1]
    assert len(shingle_set("a b c d e f", hasher)) == 2
    for text in ["", "   \n\t", "!!! ... ---"]:  # punctuation is not a word when normalizing
        assert list(hasher.shingles(text)) == []
    signatures, counts = hasher.signatures(["", "Hello, world!", "hello world"])
    assert counts.tolist() == [0, 1, 1]
    assert (signatures[0] == 0xFFFFFFFF).all()
    assert (signatures[1] == signatures[2]).all()  # case and punctuation are ignored by default
    raw = MinHasher(lowercase=False, normalize=False)
    assert (raw.signatures(["Hello, world!", "hello world"])[0][0] != raw.signatures(["hello world"])[0][0]).any()


def test_ngram_hashes_are_order_sensitive_32_bit():
    multipliers = MinHasher(ngram=3).multipliers
    hashes = np.array([11, 22, 33, 44], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    out = ngram_hashes(hashes, multipliers)
    assert len(out) == 2 and (out < 2**32).all()
    assert ngram_hashes(hashes[::-1], multipliers)[0] != out[1]
    assert len(ngram_hashes(hashes[:2], multipliers)) == 1 and len(ngram_hashes(hashes[:0], multipliers)) == 0


def test_universal_hashes_match_big_integer_arithmetic():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2**32, 50, dtype=np.uint64)
    a = rng.integers(1, 2**32, 7, dtype=np.uint64)
    b = rng.integers(0, 2**32, 7, dtype=np.uint64)
    out = universal_hashes(x, a, b)
    p = int(MERSENNE)
    for i in range(7):
        for j in range(50):
            assert int(out[i, j]) % p == (int(a[i]) * int(x[j]) + int(b[i])) % p
            assert int(out[i, j]) < p + 8


def test_estimate_tracks_true_jaccard():
    base = words(1, 400)
    for rate in (0.01, 0.05, 0.2):
        a, b = " ".join(base), " ".join(edited(base, rate, 2))
        truth = exact_jaccard(*(np.unique(shingle_set(t, MinHasher())) for t in (a, b)))
        estimates = []
        for seed in range(12):
            signatures, _ = MinHasher(seed=seed).signatures([a, b])
            estimates.append(estimated_jaccard(signatures[0], signatures[1]))
        assert abs(np.mean(estimates) - truth) < 0.03  # 12 x 128 samples: standard error about 0.013


def test_optimal_bands_and_s_curve():
    assert optimal_bands(0.8, 128) == (9, 13)  # the classic choice (same as datasketch's) at equal weights
    bands, rows = optimal_bands(0.8, 128, 0.9)
    assert bands * rows <= 128
    assert collision_probability(0.8, bands, rows) > collision_probability(0.8, 9, 13)  # misses cost more
    curve = collision_probability(np.linspace(0, 1, 50), bands, rows)
    assert (np.diff(curve) >= 0).all() and curve[0] == 0 and curve[-1] == 1
    with pytest.raises(ValueError):
        optimal_bands(1.0, 128)


def test_band_hashes_equal_exactly_when_band_values_are():
    signatures = np.array([[1, 2, 3, 4], [1, 2, 9, 4], [5, 2, 3, 4]], dtype=np.uint32)
    h = band_hashes(signatures, bands=2, rows=2, seed=7)
    assert h.shape == (3, 2) and h.dtype == np.uint64
    assert h[0, 0] == h[1, 0] and h[0, 1] != h[1, 1] and h[0, 0] != h[2, 0] and h[0, 1] == h[2, 1]
    same = np.array([[1, 2, 1, 2]], dtype=np.uint32)
    assert band_hashes(same, 2, 2)[0, 0] != band_hashes(same, 2, 2)[0, 1]  # bands never share buckets


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=0, max_size=400), window=st.integers(min_value=1, max_value=40))
def test_never_raises_and_windows_change_nothing(text, window):
    whole = MinHasher(num_perm=16, ngram=3)
    windowed = MinHasher(num_perm=16, ngram=3, window_chars=window)
    expected = shingle_set(text, whole)
    if all(len(w) <= window for w in text.split()):  # only a whitespace-free run longer than a window is cut
        assert np.array_equal(shingle_set(text, windowed), expected)
    signatures, counts = whole.signatures([text, text + "\ud800"])
    assert counts[0] == len(expected) and signatures.shape == (2, 16)
    assert np.array_equal(whole.signatures([text])[0], signatures[:1])


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=200), normalize=st.booleans())
def test_ascii_fast_path_splits_words_like_str(text, normalize):
    hasher = MinHasher(normalize=normalize)
    words = re.findall(r"\w+", text.lower()) if normalize else text.lower().split()
    expected = [xxhash.xxh3_64_intdigest(w.encode(), hasher.word_seed) for w in words]
    assert hasher.word_hashes(text).tolist() == expected
    assert hasher.word_hashes(text + " é").tolist()[: len(expected)] == expected  # the general path agrees


@settings(max_examples=30, deadline=None)
@given(st.sets(st.integers(0, 60)), st.sets(st.integers(0, 60)))
def test_exact_jaccard_matches_sets(left, right):
    as_array = [np.array(sorted(s), dtype=np.uint32) for s in (left, right)]
    union = len(left | right)
    assert exact_jaccard(*as_array) == pytest.approx(len(left & right) / union if union else 0.0)


def test_huge_document_in_bounded_memory():
    text = " ".join(words(5, 150_000))  # ~0.9 MB
    hasher = MinHasher(window_chars=1 << 16)
    tracemalloc.start()
    signatures, counts = hasher.signatures([text])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert counts[0] == 150_000 - 4
    assert peak < 8 * 2**20  # the whole (shingles x num_perm) matrix would take 150 MB
    assert np.array_equal(signatures, MinHasher().signatures([text])[0])


def test_stage_validation():
    assert MinHashDedup().banding() == optimal_bands(0.8, 128, 0.95) == (16, 8)
    assert MinHashDedup(verify="estimate").banding() == (14, 9)
    assert MinHashDedup(verify=False).banding() == (9, 13) and MinHashDedup(verify=True).verify == "exact"
    assert MinHashDedup(bands=20, rows=5).banding() == (20, 5)
    spec = "name: p\noutput: /tmp/x\nstages:\n  - read: {format: jsonl, paths: [/tmp]}\n  - dedup_minhash: {KEYS}\n"
    for keys in ["{bands: 4}", "{bands: 20, rows: 8}", "{threshold: 1.5}", "{ngram: 0}"]:
        with pytest.raises(SpecError):
            parse_pipeline(spec.replace("{KEYS}", keys))


def test_default_partitions_one_per_shard_or_by_document_count(tmp_path):
    shards = []
    for k, n_docs in enumerate([3, 5, 0]):
        path = tmp_path / f"{k}.parquet"
        pq.write_table(pa.table({"id": pa.array([str(i) for i in range(n_docs)], pa.string())}), path)
        shards.append(ShardOutput(key=f"{k:05d}", files=(str(path),)))
    assert default_partitions([]) == default_partitions([], DOCS_PER_PARTITION) == 1
    assert default_partitions(shards) == default_partitions(shards, DOCS_PER_PARTITION) == 3
    assert default_partitions(shards * 100) == 256  # one per shard stops at 256 ...
    assert default_partitions(shards, docs_per_partition=3) == 3  # ceil(8 / 3) does not exceed the shards
    assert default_partitions(shards, docs_per_partition=2) == 4  # ceil(8 / 2)
    assert default_partitions(shards * 100, docs_per_partition=2) == 400  # ... the document count does not


# --- the stage on a cluster -------------------------------------------------------------------------------


def write_docs(directory, shards: list[list[tuple[str, str]]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for k, docs in enumerate(shards):
        with (directory / f"{k:02d}.jsonl").open("w") as handle:
            for doc_id, text in docs:
                handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")


def run_minhash(tmp, name="p", options=None, client=None):
    stages = [{"dedup_minhash": options or {}}]
    spec = pipeline_yaml(tmp / f"{name}.yaml", str(tmp / "in/*.jsonl"), tmp / name, stages=stages)
    return tokenmill.run(spec, client=client)


def rows(directory) -> dict[str, dict]:
    return {r["id"]: r for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist()}


def family_docs() -> list[list[tuple[str, str]]]:
    """Three shards: three base texts with light and heavy edits, unrelated texts, and degenerate ones."""
    docs = []
    for b in range(3):
        base = words(100 + b, 300)
        docs += [(f"b{b}", " ".join(base)), (f"b{b}-light", " ".join(edited(base, 0.01, b)))]
        docs += [
            (f"b{b}-light2", " ".join(edited(base, 0.01, 10 + b))),
            (f"b{b}-heavy", " ".join(edited(base, 0.4, b))),
        ]
    docs += [(f"u{i}", " ".join(words(500 + i, 150))) for i in range(5)]
    docs += [("one-a", "Word"), ("one-b", "word!"), ("one-c", "other"), ("punct", "?!"), ("blank", " ")]
    return [docs[k::3] for k in range(3)]


def test_variants_are_clustered_and_unrelated_documents_kept(tmp_path, client):
    write_docs(tmp_path / "in", family_docs())
    result = run_minhash(tmp_path, client=client)
    kept, rejected = rows(tmp_path / "p/curated"), rows(tmp_path / "p/rejected/segment-01")
    clusters = {doc_id: r["minhash_cluster"] for doc_id, r in {**kept, **rejected}.items()}
    for b in range(3):
        family = [f"b{b}", f"b{b}-light", f"b{b}-light2"]
        assert len({clusters[d] for d in family}) == 1 and clusters[family[0]] in kept
        assert clusters[f"b{b}-heavy"] is None and f"b{b}-heavy" in kept
    assert clusters["one-a"] == clusters["one-b"] and clusters["one-c"] is None
    assert all(clusters[f"u{i}"] is None for i in range(5)) and clusters["punct"] is None
    assert {r["reason"] for r in rejected.values()} == {"near_duplicate"}
    for doc_id, r in rejected.items():
        assert json.loads(r["meta"])["duplicate_of"] == r["minhash_cluster"] != doc_id
        assert kept[r["minhash_cluster"]]["minhash_cluster"] == r["minhash_cluster"]
    summary = result.analyses["dedup_minhash"]
    assert summary["documents removed"] == len(rejected) == 7 and summary["clusters"] == 4
    assert summary["largest cluster"] == 3 and summary["bands x rows"] == "16 x 8"
    assert result.stats[-1].rejected == {"near_duplicate": 7}


def test_one_and_two_workers_identical_with_and_without_verification(tmp_path, client):
    from distributed import Client, LocalCluster

    write_docs(tmp_path / "in", family_docs())
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as one:
        for verify in ("exact", "estimate", "none"):
            options = {"verify": verify, "partitions": 3}
            run_minhash(tmp_path, f"two-{verify}", options, client=client)
            run_minhash(tmp_path, f"one-{verify}", options, client=one)
            assert tree_bytes(tmp_path / f"one-{verify}/curated") == tree_bytes(tmp_path / f"two-{verify}/curated")
            assert len(rows(tmp_path / f"one-{verify}/curated")) == 14


def test_nothing_duplicated_removes_nothing_and_rerun_resumes(tmp_path, client):
    write_docs(
        tmp_path / "in", [[(f"u{s}-{i}", " ".join(words(s * 100 + i, 120))) for i in range(8)] for s in range(2)]
    )
    first = run_minhash(tmp_path, client=client)
    assert first.stats[-1].rejected == {} and first.stats[-1].kept == 16
    assert all(r["minhash_cluster"] is None for r in rows(tmp_path / "p/curated").values())
    assert first.analyses["dedup_minhash"]["documents removed"] == 0
    again = run_minhash(tmp_path, client=client)
    assert again.shards_skipped == again.shards_total == 4


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.01, 0.03, 0.3])), min_size=2, max_size=12),
    split=st.integers(1, 3),
)
def test_clusters_are_an_equivalence_and_an_unrelated_document_changes_nothing(tmp_path_factory, client, plan, split):
    docs = [(f"d{i}", " ".join(edited(words(base, 120), rate, i))) for i, (base, rate) in enumerate(plan)]
    results = {}
    for extra in (False, True):
        tmp = tmp_path_factory.mktemp("prop")
        shards = [docs[k::split] for k in range(split)]
        if extra:
            shards[-1] = [*shards[-1], ("unrelated", " ".join(words(999, 120)))]
        write_docs(tmp / "in", [s for s in shards if s])
        run_minhash(tmp, options={"partitions": 2}, client=client)
        kept, rejected = rows(tmp / "p/curated"), rows(tmp / "p/rejected/segment-01")
        results[extra] = {d: r["minhash_cluster"] for d, r in {**kept, **rejected}.items()}
        for doc_id, cluster in results[extra].items():
            if cluster is not None:  # every cluster has exactly one kept member, its own label
                assert (doc_id in kept) == (doc_id == cluster) and results[extra][cluster] == cluster
    assert results[True].pop("unrelated") is None
    assert results[True] == results[False]
