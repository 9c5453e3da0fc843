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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from tokenmill.curate.dedup.apply import ApplyDecisions, decisions_table
from tokenmill.curate.dedup.components import connected_components, node_partition, unique_pairs
from tokenmill.curate.dedup.partitions import (
    default_partitions,
    list_files,
    read_partition,
    read_table,
    write_partitioned,
    write_table,
)
from tokenmill.curate.dedup.signatures import (
    MinHasher,
    band_hashes,
    estimated_jaccard,
    exact_jaccard,
    optimal_bands,
)
from tokenmill.engine.fsio import join
from tokenmill.engine.registry import register
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import GlobalStage, ShardOutput
from tokenmill.engine.tasks import clean_work_dir, run_tasks

REASON = "near_duplicate"
CLUSTER_COLUMN = "minhash_cluster"
ROW_BITS = 40  # a node id is (shard order << 40) | row: 2^40 rows per shard, 2^23 shards
DOCS_PER_PARTITION = 250_000  # default partition count: memory per task ~ bands * 30 bytes * this
_BATCH_DOCS, _BATCH_CHARS = 1024, 16 << 20  # documents signed per call (bounded however large they are)
_FLUSH_DOCS, _FLUSH_BYTES = 65_536, 64 << 20  # a map task writes its partition files this often
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
        signs = [SignShard(index=i, shard=s, stage=self, dirs=dirs, partitions=n) for i, s in enumerate(shards)]
        signed = run_tasks(client, _sign_shard, signs)
        run_tasks(client, _bucket_edges, [BucketEdges(partition=p, dirs=dirs, partitions=n) for p in range(n)])
        distinct = [DistinctPairs(partition=p, dirs=dirs, partitions=n, verify=self.verify) for p in range(n)]
        pairs = run_tasks(client, _distinct_pairs, distinct)
        checked, verified = self.verify != "none", pairs
        if checked:
            verifies = [
                VerifyPairs(partition=p, dirs=dirs, threshold=self.threshold, verify=self.verify) for p in range(n)
            ]
            verified = run_tasks(client, _verify, verifies)
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
            run_tasks(client, _route_members, routes)
            keys = tuple(s.key for s in shards)
            run_tasks(client, _decide, [Decide(partition=p, dirs=dirs, shard_keys=keys) for p in range(n)])
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


@dataclass(frozen=True, kw_only=True)
class WorkDirs:
    """One analysis's directories under its work directory, one per kind of file (the phases of the module
    docstring); the tasks read and write them."""

    buckets: str  # 1: band rows, by bucket
    ids: str  # 1: each node's document id, by node
    payloads: str  # 1: what verification compares, by node
    candidates: str  # 2: edges from bucket members to their bucket's smallest node, by member
    carried: str  # 3: distinct candidate pairs with the member's payload, by centre
    edges: str  # 3 or 4: the pairs kept, the graph of the connected components
    components: str  # 5: the connected components' own work directory (their labels)
    members: str  # 6: labelled nodes, by their component's smallest node
    decisions: str  # 6: the decision files the applier reads

    @classmethod
    def under(cls, work_dir: str) -> WorkDirs:
        return cls(**{field.name: join(work_dir, field.name) for field in fields(cls)})

    def intermediate(self) -> list[str]:
        """Every directory but `decisions`, the only one read after the analysis (payloads can be large)."""
        return [getattr(self, field.name) for field in fields(self) if field.name != "decisions"]


def _batches(shard: ShardOutput) -> Iterator[tuple[list[int], list[str], list[str]]]:
    """(rows, ids, texts) of a shard in batches of at most _BATCH_DOCS documents or _BATCH_CHARS characters."""
    rows: list[int] = []
    ids: list[str] = []
    texts: list[str] = []
    chars = 0
    for row, doc_id, text in iter_shard_columns(shard, ["id", "text"]):
        rows.append(row)
        ids.append(doc_id)
        texts.append(text or "")
        chars += len(texts[-1])
        if len(rows) >= _BATCH_DOCS or chars >= _BATCH_CHARS:
            yield rows, ids, texts
            rows, ids, texts, chars = [], [], [], 0
    if rows:
        yield rows, ids, texts


def _by_node(nodes: np.ndarray, n: int) -> np.ndarray:
    """Hashes for `write_partitioned` that put each row in `node_partition(node)`, the components' layout."""
    return node_partition(nodes, n).astype(np.uint64)


def _signature_array(signatures: np.ndarray) -> pa.Array:
    """(n, k) uint32 signatures as a fixed-size binary column (4k bytes a row)."""
    width = signatures.shape[1] * 4
    data = pa.py_buffer(np.ascontiguousarray(signatures).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(signatures), [None, data])


def _signature_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The inverse of `_signature_array`: a (n, k) uint32 matrix."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.byte_width
    raw = np.frombuffer(array.buffers()[1], dtype=np.uint8)[array.offset * width : (array.offset + len(array)) * width]
    return raw.view(np.uint32).reshape(len(array), width // 4)


def _list_array(arrays: list[np.ndarray]) -> pa.Array:
    """Shingle-hash arrays as a large_list<uint32> column."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint32()))


def _arrays(column: pa.ChunkedArray | pa.Array) -> Iterator[np.ndarray]:
    """The inverse of `_list_array`: one numpy array per row."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets, values = array.offsets.to_numpy(), array.values.to_numpy()
    for start, end in pairwise(offsets):
        yield values[start:end]


@dataclass(frozen=True, kw_only=True)
class SignShard:
    """Phase 1 for one shard."""

    index: int  # the shard's position, the high bits of its nodes (so "smallest" is first in (shard, row) order)
    shard: ShardOutput
    stage: MinHashDedup
    dirs: WorkDirs
    partitions: int


def _sign_shard(task: SignShard) -> dict[str, int]:
    """Phase 1: one shard's documents as band rows, ids and verification payloads."""
    shard, stage, n = task.shard, task.stage, task.partitions
    hasher, (bands, rows_per_band) = stage.hasher(), stage.banding()
    buffers: dict[str, list[pa.Table]] = {"buckets": [], "ids": [], "payloads": []}
    directories = {"buckets": task.dirs.buckets, "ids": task.dirs.ids, "payloads": task.dirs.payloads}
    held = held_bytes = flushes = docs = empty = 0

    def flush() -> None:
        nonlocal held, held_bytes, flushes
        name = f"s{shard.key}-{flushes:05d}"
        for kind, tables in buffers.items():
            if tables:
                table = pa.concat_tables(tables)
                column = table.column("bucket" if kind == "buckets" else "node").to_numpy()
                by = column if kind == "buckets" else _by_node(column, n)
                write_partitioned(table, by, n, directories[kind], name)
            tables.clear()
        held, held_bytes, flushes = 0, 0, flushes + 1

    for rows, ids, texts in _batches(shard):
        sets: list[np.ndarray] | None = [] if stage.verify == "exact" else None
        signatures, counts = hasher.signatures(texts, sets)
        present = np.flatnonzero(counts > 0)
        docs, empty = docs + len(rows), empty + len(rows) - len(present)
        nodes = (np.int64(task.index) << np.int64(ROW_BITS)) | np.asarray(rows, dtype=np.int64)[present]
        signatures = signatures[present]
        buckets = band_hashes(signatures, bands, rows_per_band, stage.seed)
        band = np.tile(np.arange(bands, dtype=np.int32), len(nodes))
        buffers["buckets"].append(
            pa.table({"band": band, "bucket": buckets.reshape(-1), "node": np.repeat(nodes, bands)})
        )
        buffers["ids"].append(pa.table({"node": nodes, "id": pa.array([ids[i] for i in present], pa.string())}))
        if stage.verify != "none":
            payload = _list_array([sets[i] for i in present]) if sets is not None else _signature_array(signatures)
            buffers["payloads"].append(pa.table({"node": nodes, "payload": payload}))
            held_bytes += payload.nbytes
        held += len(rows)
        if held >= _FLUSH_DOCS or held_bytes >= _FLUSH_BYTES:
            flush()
    flush()
    return {"docs": docs, "empty": empty}


@dataclass(frozen=True, kw_only=True)
class BucketEdges:
    """Phase 2 for one bucket partition."""

    partition: int
    dirs: WorkDirs
    partitions: int


def _bucket_edges(task: BucketEdges) -> None:
    """Phase 2: per bucket partition, an edge from every bucket member to the bucket's smallest node."""
    partition, n = task.partition, task.partitions
    table = read_partition(task.dirs.buckets, partition)
    if table is None:
        return
    band, bucket, node = (table.column(c).to_numpy() for c in ("band", "bucket", "node"))
    order = np.lexsort((node, bucket, band))
    band, bucket, node = band[order], bucket[order], node[order]
    first = np.ones(len(node), dtype=bool)
    first[1:] = (band[1:] != band[:-1]) | (bucket[1:] != bucket[:-1])
    centre = node[np.maximum.accumulate(np.where(first, np.arange(len(node)), 0))]
    small, large = centre[~first], node[~first]
    if len(small) == 0:
        return
    keep = unique_pairs(small, large)
    small, large = small[keep], large[keep]
    edges = pa.table({"u": small, "v": large})
    write_partitioned(edges, _by_node(large, n), n, task.dirs.candidates, f"b{partition:05d}")


def _rows_for(directory: str, partition: int, nodes: np.ndarray) -> pa.Table:
    """The rows of `nodes` (all in this node partition), sorted by node, read file by file (bounded memory)."""
    wanted = pa.array(np.unique(nodes))
    parts = []
    for path in list_files(join(directory, f"p{partition:05d}")):
        table = read_table(path)
        parts.append(table.filter(pc.is_in(table.column("node"), value_set=wanted)))
    table = pa.concat_tables(parts).sort_by("node") if parts else None
    if table is None or table.num_rows != len(wanted):
        raise RuntimeError(f"dedup_minhash: {directory} partition {partition} lacks some nodes (incomplete work dir)")
    return table


def _rows_of(nodes: np.ndarray, table: pa.Table) -> np.ndarray:
    """Row of each node in `table`, which is sorted by node and holds every one of them."""
    return np.searchsorted(table.column("node").to_numpy(), nodes)


@dataclass(frozen=True, kw_only=True)
class DistinctPairs:
    """Phase 3 for one partition of members."""

    partition: int
    dirs: WorkDirs
    partitions: int
    verify: Literal["exact", "estimate", "none"]


def _distinct_pairs(task: DistinctPairs) -> int:
    """Phase 3: distinct candidate pairs (u < v) of one partition of members v; returns how many."""
    partition, n, dirs = task.partition, task.partitions, task.dirs
    table = read_partition(dirs.candidates, partition)
    if table is None:
        return 0
    u, v = table.column("u").to_numpy(), table.column("v").to_numpy()
    keep = unique_pairs(u, v)
    u, v = u[keep], v[keep]
    name = f"c{partition:05d}"
    if task.verify == "none":
        write_partitioned(pa.table({"u": u, "v": v}), _by_node(u, n), n, dirs.edges, name)
        return len(u)
    payloads = _rows_for(dirs.payloads, partition, v)
    carried = pa.table({"u": u, "v": v, "payload": payloads.column("payload").take(pa.array(_rows_of(v, payloads)))})
    write_partitioned(carried, _by_node(u, n), n, dirs.carried, name)
    return len(u)


@dataclass(frozen=True, kw_only=True)
class VerifyPairs:
    """Phase 4 for one partition of centres."""

    partition: int
    dirs: WorkDirs
    threshold: float
    verify: Literal["exact", "estimate"]


def _verify(task: VerifyPairs) -> int:
    """Phase 4: per partition of centres u, keep the carried pairs whose similarity reaches the threshold."""
    partition, verify = task.partition, task.verify
    files = list_files(join(task.dirs.carried, f"p{partition:05d}"))
    if not files:
        return 0
    centres = np.concatenate([read_table(f, ["u"]).column("u").to_numpy() for f in files])
    payloads = _rows_for(task.dirs.payloads, partition, centres)
    shingles = list(_arrays(payloads.column("payload"))) if verify == "exact" else []
    distinct: dict[int, np.ndarray] = {}  # a centre's sorted distinct shingles, however many members it has

    def centre_set(row: int) -> np.ndarray:
        if row not in distinct:
            distinct[row] = np.unique(shingles[row])
        return distinct[row]

    kept = []
    for path in files:
        table = read_table(path)
        u = table.column("u").to_numpy()
        rows = _rows_of(u, payloads)
        if verify == "estimate":
            theirs = payloads.column("payload").take(pa.array(rows))
            similar = estimated_jaccard(_signature_matrix(table.column("payload")), _signature_matrix(theirs))
        else:
            members = _arrays(table.column("payload"))
            similar = np.array([exact_jaccard(np.unique(m), centre_set(r)) for r, m in zip(rows, members)])
        keep = similar >= task.threshold
        kept.append(pa.table({"u": u[keep], "v": table.column("v").to_numpy()[keep]}))
    edges = pa.concat_tables(kept)
    if edges.num_rows:
        write_table(join(task.dirs.edges, f"p{partition:05d}", f"v{partition:05d}.parquet"), edges)
    return edges.num_rows


@dataclass(frozen=True, kw_only=True)
class RouteMembers:
    """Phase 6a for one partition of labels."""

    partition: int
    labels_dir: str  # connected_components' output
    dirs: WorkDirs
    partitions: int


def _route_members(task: RouteMembers) -> None:
    """Phase 6a: send each labelled node to the partition of its component's smallest node."""
    partition, n = task.partition, task.partitions
    table = read_partition(task.labels_dir, partition)
    if table is None or table.num_rows == 0:
        return
    component = table.column("component").to_numpy()
    write_partitioned(table, _by_node(component, n), n, task.dirs.members, f"l{partition:05d}")


@dataclass(frozen=True, kw_only=True)
class Decide:
    """Phase 6b for one partition of kept nodes."""

    partition: int
    dirs: WorkDirs
    shard_keys: tuple[str, ...]  # by shard index, to name the decision files


def _decide(task: Decide) -> None:
    """Phase 6b: per partition of kept nodes, the decision rows of their clusters' members, by shard."""
    partition = task.partition
    members = read_partition(task.dirs.members, partition)
    if members is None:
        return
    node, component = members.column("node").to_numpy(), members.column("component").to_numpy()
    ids = _rows_for(task.dirs.ids, partition, component)
    kept_id = ids.column("id").take(pa.array(_rows_of(component, ids)))
    removed = node != component
    shard_order, row = node >> ROW_BITS, node & ((1 << ROW_BITS) - 1)
    for order in np.unique(shard_order):
        mine = np.flatnonzero(shard_order == order)
        mine = mine[np.argsort(row[mine], kind="stable")]
        cluster = kept_id.take(pa.array(mine)).to_pylist()
        table = decisions_table(
            row[mine].tolist(),
            [REASON if r else None for r in removed[mine]],
            [c if r else None for c, r in zip(cluster, removed[mine])],
            **{CLUSTER_COLUMN: pa.array(cluster, pa.string())},
        )
        write_table(join(task.dirs.decisions, f"s{task.shard_keys[order]}", f"p{partition:05d}.parquet"), table)
