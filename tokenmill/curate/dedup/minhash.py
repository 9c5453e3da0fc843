"""Near-duplicate removal with MinHash LSH, global over all shards (docs/dedup.md, "Near-duplicates").

Every phase is one Dask task per shard or per partition, and phases meet only through hash-partitioned Parquet
files under the work directory, so no task holds more than about 1/partitions of the data:

1. sign (per shard): MinHash signatures (signatures.py); per document and band a row (band, bucket, node),
   partitioned by bucket; per document its (node, id) and what verification compares - its signature
   (`verify: estimate`) or its shingle hashes (`verify: exact`) - partitioned by node.
2. buckets (per bucket partition): the members of a bucket become candidate edges to its smallest node (a
   star), written by member.
3. pairs (per member partition): distinct candidate pairs; to verify, the member's payload travels to the
   partition of the star's centre, where 4. verify loads each centre's payload once, streams the members'
   file by file, and keeps the pairs whose (estimated or exact) Jaccard similarity reaches the threshold.
   A centre of a huge cluster thus costs one pass over its members, never all of them in memory at once.
5. connected components of the kept edges (components.py).
6. decide: each member learns its component's smallest node's document id (a join by that node); the smallest
   node is kept, the others are removed as `near_duplicate`, all are annotated with `minhash_cluster`.

A node is `(shard order << 40) | row`, so "smallest" means first in (shard, row) order, and results do not
depend on the number of workers or the order in which tasks finish.

This module holds the stage (its options and banding choice); the tasks of each phase, with their payloads,
are in minhash_tasks.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tokenmill.curate.dedup.apply import ApplyDecisions
from tokenmill.curate.dedup.components import connected_components
from tokenmill.curate.dedup.minhash_tasks import (
    CLUSTER_COLUMN,
    BucketEdges,
    Decide,
    DistinctPairs,
    RouteMembers,
    SignShard,
    VerifyPairs,
    WorkDirs,
    bucket_edges,
    decide,
    distinct_pairs,
    route_members,
    sign_shard,
    verify_pairs,
)
from tokenmill.curate.dedup.partitions import default_partitions
from tokenmill.curate.dedup.signatures import MinHasher, optimal_bands
from tokenmill.engine.fsio import join
from tokenmill.engine.registry import register
from tokenmill.engine.stage import GlobalStage, ShardOutput
from tokenmill.engine.tasks import clean_work_dir, run_tasks

DOCS_PER_PARTITION = 250_000  # default partition count: memory per task ~ bands * 30 bytes * this
_MISS_WEIGHT = {"none": 0.5, "estimate": 0.9, "exact": 0.95}


@register("dedup_minhash")
class MinHashDedup(GlobalStage):
    """Removes near-duplicate documents: documents whose word n-gram sets have Jaccard similarity >= `threshold`
    (candidates from MinHash LSH, checked as `verify` says) are clustered transitively; the first document of
    each cluster in (shard, row) order is kept and the others are removed as `near_duplicate` with
    `meta.duplicate_of`; every member gets the kept document's id in the `minhash_cluster` column.
    """

    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash functions (signature length)")
    ngram: int = Field(5, ge=1, le=64, description="words per shingle")
    bands: int | None = Field(None, ge=1, description="LSH bands (with `rows`); default: chosen from threshold")
    rows: int | None = Field(None, ge=1, description="signature values per band (with `bands`)")
    seed: int = Field(1, ge=0, description="seed of the hash functions")
    verify: Literal["exact", "estimate", "none"] = Field(
        "exact", description="check candidate pairs: exact Jaccard of shingle sets, or estimated from signatures"
    )
    lowercase: bool = Field(True, description="fold case before splitting into words")
    normalize: bool = Field(True, description="words are runs of letters/digits (punctuation ignored)")
    partitions: int | None = Field(None, gt=0, description="hash partitions; default from the document count")

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_flag(cls, value: Any) -> Any:
        return {True: "exact", False: "none"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_banding(self) -> MinHashDedup:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both `bands` and `rows`, or neither (then they are chosen from threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        """(bands, rows): the override, or the S-curve minimising weighted false positives and negatives.

        Unverified, both errors are final and weigh 0.5 each. Exact verification removes every false candidate,
        so only misses are final and weigh 0.95; an estimate still passes some false candidates near the
        threshold, so misses weigh 0.9 (docs/dedup.md shows the measured effect of each choice).
        """
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, _MISS_WEIGHT[self.verify])

    def hasher(self) -> MinHasher:
        return MinHasher(self.num_perm, self.ngram, self.seed, self.lowercase, self.normalize)

    def analyze(self, client: Any, shards: list[ShardOutput], work_dir: str) -> dict[str, Any]:
        clean_work_dir(work_dir)
        n = self.partitions or default_partitions(shards, DOCS_PER_PARTITION)
        bands, rows = self.banding()
        dirs = WorkDirs.under(work_dir)
        hasher, common = self.hasher(), {"seed": self.seed, "verify": self.verify, "dirs": dirs, "partitions": n}
        signs = [
            SignShard(index=i, shard=s, hasher=hasher, bands=bands, rows_per_band=rows, **common)
            for i, s in enumerate(shards)
        ]
        signed = run_tasks(client, sign_shard, signs)
        run_tasks(client, bucket_edges, [BucketEdges(partition=p, dirs=dirs, partitions=n) for p in range(n)])
        distinct = [DistinctPairs(partition=p, dirs=dirs, partitions=n, verify=self.verify) for p in range(n)]
        pairs = run_tasks(client, distinct_pairs, distinct)
        checked, verified = self.verify != "none", pairs
        if checked:
            verifies = [
                VerifyPairs(partition=p, dirs=dirs, threshold=self.threshold, verify=self.verify) for p in range(n)
            ]
            verified = run_tasks(client, verify_pairs, verifies)
        summary: dict[str, Any] = {
            "documents hashed": sum(s["docs"] for s in signed),
            "empty documents (never matched)": sum(s["empty"] for s in signed),
            "bands x rows": f"{bands} x {rows}",
            "candidate pairs": sum(pairs),
            "verification": self.verify,
            "pairs verified similar": sum(verified) if checked else "not verified",
            "clusters": 0,
            "documents removed": 0,
            "largest cluster": 0,
            "partitions": n,
        }
        if sum(verified):
            labels, found = connected_components(client, dirs.edges, n, dirs.components)
            routes = [RouteMembers(partition=p, labels_dir=labels, dirs=dirs, partitions=n) for p in range(n)]
            run_tasks(client, route_members, routes)
            keys = tuple(s.key for s in shards)
            run_tasks(client, decide, [Decide(partition=p, dirs=dirs, shard_keys=keys) for p in range(n)])
            summary["clusters"] = found["components"]
            summary["documents removed"] = found["nodes"] - found["components"]
            summary["largest cluster"] = found["largest"]
        for directory in dirs.intermediate():
            clean_work_dir(directory)
        return summary

    def applier(self, work_dir: str, analysis_id: str) -> ApplyDecisions:
        return ApplyDecisions(
            stage_label=self.stage_name,
            decisions_dir=join(work_dir, "decisions"),
            analysis_id=analysis_id,
            annotate={CLUSTER_COLUMN: "string"},
        )
