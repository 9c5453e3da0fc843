"""MinHash speed and memory: signature throughput against datatrove and datasketch, and the peak memory of a
whole `dedup_minhash` run as the data grows.

1. Signature throughput, one process, one core, on the mini-pile (../shared/data/pile, 4,558 documents, 27 MB),
   documents already in memory, 128 hash functions over word 5-grams on every side:
   - tokenmill: `MinHasher.signatures` in batches of 1,024 documents, alone and with the shingle sets that
     `verify: exact` also keeps;
   - datatrove: `MinhashDedupSignature.run` (default config: 14 x 8 = 112 hashes, xxhash shingles; its
     signature files written to a temporary directory), with its xxhash call fixed for xxhash >= 4 (see
     dedup_quality.py);
   - datasketch: `MinHash(num_perm=128).update_batch` over each document's distinct 5-gram strings (lowercased
     runs of letters and digits, as tokenmill's default).
   CPU seconds of this process (`time.process_time`) are the measure, so other load on the machine counts
   little; documents per CPU second is "docs/s per core".
2. One 100 MB document (the mini-pile joined four times), in a fresh child process: the growth of its RSS
   while the signature is computed (sampled every 5 ms, above the RSS just before), alone and then with the
   shingle hashes that `verify: exact` keeps.
3. Peak memory of a whole `tokenmill.run` (read JSONL -> dedup_minhash -> write) at 1x and 8x the mini-pile: 8x
   is 32 shards, the original 4 and 7 perturbed copies of them (each copy substitutes 1% of the words, so every
   document has 7 near-duplicates). A LocalCluster of 2 worker processes (1 thread each) runs it; a thread
   samples, every 50 ms, the RSS of every child process of this one (psutil), which are the Dask workers.
   Printed are the peak of one worker, the peak of both, and the driver's own peak (it hosts the scheduler and
   holds the benchmark's texts). A control run of the same data without `dedup_minhash` (read -> write, on a
   fresh cluster too) shows what the workers need anyway.

    .venv/bin/python benchmarks/dedup_speed.py [--skip-peers] [--skip-memory] [--skip-huge]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from dedup_quality import load_pile  # the same loader: a sibling script in benchmarks/

import tokenmill
from tokenmill.curate.dedup.signatures import MinHasher

REPO_ROOT = Path(__file__).resolve().parents[1]
PILE = REPO_ROOT.parent / "shared" / "data" / "pile"
_WORDS = re.compile(r"\w+")
MB = 1_000_000


def cpu_seconds(function) -> float:
    started = time.process_time()
    function()
    return time.process_time() - started


def ours(texts: list[str], with_sets: bool) -> None:
    hasher = MinHasher()
    for start in range(0, len(texts), 1024):
        hasher.signatures(texts[start : start + 1024], [] if with_sets else None)


def datatrove(texts: list[str]) -> None:
    import xxhash
    from datatrove.data import Document
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from loguru import logger

    logger.remove()  # its progress lines would interleave with the table
    with tempfile.TemporaryDirectory(prefix="dt-sigs-") as folder:
        step = MinhashDedupSignature(folder)
        step._hash_func = lambda text: xxhash.xxh64_intdigest(text.encode("utf-8"))
        step.run(Document(text=t, id=str(i)) for i, t in enumerate(texts))


def datasketch(texts: list[str]) -> None:
    from datasketch import MinHash

    for text in texts:
        words = _WORDS.findall(text.lower())
        grams = {" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))} if words else set()
        MinHash(num_perm=128).update_batch([g.encode("utf-8", "surrogatepass") for g in grams])


def throughput(texts: list[str], peers: bool) -> None:
    megabytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / MB
    print(f"\n## Signature throughput: {len(texts)} documents, {megabytes:.1f} MB, one process\n")
    sides = [("tokenmill", lambda: ours(texts, False)), ("tokenmill + shingle sets", lambda: ours(texts, True))]
    if peers:
        sides += [("datatrove MinhashDedupSignature", lambda: datatrove(texts))]
        sides += [("datasketch MinHash", lambda: datasketch(texts))]
    print("| side | CPU s | docs/s per core | MB/s per core |\n|---|---|---|---|")
    seconds = {}
    for name, function in sides:
        seconds[name] = cpu_seconds(function)
        rate = len(texts) / seconds[name]
        print(f"| {name} | {seconds[name]:.1f} | {rate:.0f} | {megabytes / seconds[name]:.2f} |", flush=True)
    if peers:
        for peer in ("datatrove MinhashDedupSignature", "datasketch MinHash"):
            print(f"tokenmill vs {peer}: {seconds[peer] / seconds['tokenmill']:.1f}x faster", end="; ")
            print(f"with shingle sets {seconds[peer] / seconds['tokenmill + shingle sets']:.1f}x")


def rss_growth(function) -> float:
    """Peak RSS of this process while `function` runs, above its RSS just before (MB, sampled every 5 ms)."""
    me = psutil.Process()
    gc.collect()
    before = peak = me.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        function()
    finally:
        done.set()
        sampler.join()
    return (peak - before) / MB


def huge_document_child() -> dict:
    """Runs in a fresh child process: the RSS growth and CPU time for one ~100 MB document."""
    text = "\n".join(load_pile(PILE) * 4)
    hasher = MinHasher()
    started = time.process_time()
    signature_mb = rss_growth(lambda: hasher.signatures([text]))
    seconds = time.process_time() - started
    sets: list = []
    sets_mb = rss_growth(lambda: hasher.signatures([text], sets))
    return {
        "mb": len(text) / MB,
        "rss_mb": psutil.Process().memory_info().rss / MB,
        "signature_mb": signature_mb,
        "sets_mb": sets_mb,
        "shingles": len(sets[0]),
        "seconds": seconds,
    }


def huge_document() -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        r = pool.apply(huge_document_child)
    print(f"\n## One {r['mb']:.0f} MB document (process RSS with the text loaded: {r['rss_mb']:.0f} MB)\n")
    print(f"- signature: peak RSS +{r['signature_mb']:.0f} MB, {r['seconds']:.1f} CPU s")
    print(f"- signature + the {r['shingles']:,} shingle hashes kept for `verify: exact`: +{r['sets_mb']:.0f} MB")


def perturb(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    return " ".join(rng.choice(vocabulary) if rng.random() < 0.01 else w for w in text.split())


def write_shards(texts_by_shard: list[list[str]], copies: int, directory: Path) -> float:
    """`copies` x the shards as JSONL (copy 0 unchanged, the others perturbed); returns megabytes written."""
    directory.mkdir(parents=True)
    vocabulary = sorted({w for texts in texts_by_shard for t in texts[:50] for w in t.split()})
    total = 0
    for copy in range(copies):
        rng = random.Random(copy)
        for s, texts in enumerate(texts_by_shard):
            path = directory / f"copy{copy}-shard{s}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for i, text in enumerate(texts):
                    body = text if copy == 0 else perturb(text, rng, vocabulary)
                    handle.write(json.dumps({"id": f"{copy}-{s}-{i}", "text": body}) + "\n")
            total += path.stat().st_size
    return total / MB


class RssSampler(threading.Thread):
    """Samples the RSS of this process's children (the Dask workers) and of this process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process(os.getpid())
        self.per_worker: dict[int, int] = {}
        self.peak_sum = self.peak_driver = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            for child in self.me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                self.per_worker[child.pid] = max(self.per_worker.get(child.pid, 0), rss)
                total += rss
            self.peak_sum = max(self.peak_sum, total)
            self.peak_driver = max(self.peak_driver, self.me.memory_info().rss)
            time.sleep(0.05)


def whole_run(texts_by_shard: list[list[str]], copies: int, dedup: bool) -> dict:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="dedup-speed-") as tmp:
        root = Path(tmp)
        megabytes = write_shards(texts_by_shard, copies, root / "in")
        spec = {
            "name": f"minhash-{copies}x",
            "output": str(root / "out"),
            "stages": [
                {"read": {"format": "jsonl", "paths": [str(root / "in" / "*.jsonl")], "id_field": "id"}},
                *([{"dedup_minhash": {}}] if dedup else []),
                {"write": {"format": "parquet"}},
            ],
        }
        (root / "p.yaml").write_text(yaml.safe_dump(spec))
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            sampler = RssSampler()
            sampler.start()
            started = time.perf_counter()
            result = tokenmill.run(root / "p.yaml", client=client)
            seconds = time.perf_counter() - started
            sampler.done.set()
            sampler.join()
    workers = sorted(sampler.per_worker.values(), reverse=True)[:2]
    return {
        "copies": copies,
        "docs": result.stats[0].docs_in,
        "mb": megabytes,
        "removed": result.analyses["dedup_minhash"]["documents removed"] if dedup else 0,
        "seconds": seconds,
        "worker_peak": max(workers) / MB,
        "sum_peak": sampler.peak_sum / MB,
        "driver_peak": sampler.peak_driver / MB,
    }


def memory(texts: list[str]) -> None:
    shards = [texts[s::4] for s in range(4)]
    runs = {(copies, dedup): whole_run(shards, copies, dedup) for copies in (1, 8) for dedup in (False, True)}
    print("\n## Peak memory of a whole run (2 worker processes)\n")
    print("| data | pipeline | docs | input MB | removed | wall s | peak RSS, one worker | peak RSS, both | driver |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (copies, dedup), r in runs.items():
        print(
            f"| {copies}x | {'read, dedup_minhash, write' if dedup else 'read, write (control)'} | {r['docs']} | "
            f"{r['mb']:.0f} | {r['removed']} | {r['seconds']:.0f} | {r['worker_peak']:.0f} MB | "
            f"{r['sum_peak']:.0f} MB | {r['driver_peak']:.0f} MB |"
        )
    extra = {c: runs[c, True]["worker_peak"] - runs[c, False]["worker_peak"] for c in (1, 8)}
    print(
        f"8x the data: peak worker RSS x{runs[8, True]['worker_peak'] / runs[1, True]['worker_peak']:.2f}; "
        f"above the control run: +{extra[1]:.0f} MB at 1x, +{extra[8]:.0f} MB at 8x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-peers", action="store_true", help="only tokenmill's throughput")
    parser.add_argument("--skip-memory", action="store_true", help="no whole-run memory measurement")
    parser.add_argument("--skip-huge", action="store_true", help="no 100 MB document")
    args = parser.parse_args()
    if not PILE.exists():
        sys.exit(f"{PILE} is absent: this benchmark needs ../shared/data/pile")
    logging.disable(logging.WARNING)
    texts = load_pile(PILE)
    throughput(texts, not args.skip_peers)
    if not args.skip_huge:
        huge_document()
    if not args.skip_memory:
        memory(texts)


if __name__ == "__main__":
    main()
