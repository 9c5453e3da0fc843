"""The Dask tasks of a MinHash analysis (`dedup_minhash`, minhash.py), each with its frozen payload.

One task function per phase of minhash.py's docstring - signing shards, bucket edges, distinct pairs,
verification, routing members to their component's smallest node, deciding - with the payload it takes
(`run_tasks`), the work directories they meet through (`WorkDirs`), and the Parquet column helpers they share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.curate.dedup.apply import decisions_table
from tokenmill.curate.dedup.components import node_partition, unique_pairs
from tokenmill.curate.dedup.partitions import list_files, read_partition, read_table, write_partitioned, write_table
from tokenmill.curate.dedup.signatures import MinHasher, band_hashes, estimated_jaccard, exact_jaccard
from tokenmill.engine.fsio import join
from tokenmill.engine.segment_source import iter_shard_columns
from tokenmill.engine.stage import ShardOutput

REASON = "near_duplicate"
CLUSTER_COLUMN = "minhash_cluster"
ROW_BITS = 40  # a node id is (shard order << 40) | row: 2^40 rows per shard, 2^23 shards
_BATCH_DOCS, _BATCH_CHARS = 1024, 16 << 20  # documents signed per call (bounded however large they are)
_FLUSH_DOCS, _FLUSH_BYTES = 65_536, 64 << 20  # a map task writes its partition files this often


@dataclass(frozen=True, kw_only=True)
class WorkDirs:
    """One analysis's directories under its work directory, one per kind of file (the phases of minhash.py's
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
    hasher: MinHasher
    bands: int
    rows_per_band: int
    seed: int
    verify: str  # the stage's `verify`: which payloads to keep for the verification phase
    dirs: WorkDirs
    partitions: int


def sign_shard(task: SignShard) -> dict[str, int]:
    """Phase 1: one shard's documents as band rows, ids and verification payloads."""
    shard, n = task.shard, task.partitions
    hasher, bands, rows_per_band = task.hasher, task.bands, task.rows_per_band
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
        sets: list[np.ndarray] | None = [] if task.verify == "exact" else None
        signatures, counts = hasher.signatures(texts, sets)
        present = np.flatnonzero(counts > 0)
        docs, empty = docs + len(rows), empty + len(rows) - len(present)
        nodes = (np.int64(task.index) << np.int64(ROW_BITS)) | np.asarray(rows, dtype=np.int64)[present]
        signatures = signatures[present]
        buckets = band_hashes(signatures, bands, rows_per_band, task.seed)
        band = np.tile(np.arange(bands, dtype=np.int32), len(nodes))
        buffers["buckets"].append(
            pa.table({"band": band, "bucket": buckets.reshape(-1), "node": np.repeat(nodes, bands)})
        )
        buffers["ids"].append(pa.table({"node": nodes, "id": pa.array([ids[i] for i in present], pa.string())}))
        if task.verify != "none":
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


def bucket_edges(task: BucketEdges) -> None:
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


def distinct_pairs(task: DistinctPairs) -> int:
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


def verify_pairs(task: VerifyPairs) -> int:
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


def route_members(task: RouteMembers) -> None:
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


def decide(task: Decide) -> None:
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
