"""Connected components of an edge list too large for one machine: alternating Large-Star / Small-Star.

The algorithm is Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). The graph is a
set of undirected edges `(a, b)` stored with `a > b`. With `m(x)` = the smallest of `x` and its neighbours:

- Large-Star replaces every edge `(a, b)` by `(a, m(b))`: each node's larger neighbours move to its minimum;
- Small-Star replaces every edge `(a, b)` by `(a, b)` when `b == m(a)`, else by `(b, m(a))`: a node's smaller
  neighbours all attach to the smallest of them, and the node itself keeps its edge to that one.

Both preserve connectivity and never add edges, and alternating them reaches, in O(log^2 n) rounds, a fixed point
where every component is a star centred on its smallest node. Then a node's component is its star's centre.

Distribution. Edges are hash-partitioned by the edge itself, so every partition holds about 1/n of the edges
however skewed the degrees are (a naive grouping by node would put a whole giant component, whose final star
centre is adjacent to every member, into one task). The per-node minimum `m(x)` is the only thing a node's edges
share; it is computed as a combinable aggregate: whoever writes an edge `(a, b)` also writes, partitioned by
node, "m(a) <= b" (pre-reduced per writer) and a request "partition q needs m(k)" for the node `k` the next
operation looks up. So each operation is two waves of one Dask task per partition:

1. combine (per node partition): minimum per node over its messages, answered to each requesting edge partition;
2. emit (per edge partition): deduplicate the edges, look up the answers, apply the operation, write the new
   edges and the next operation's messages, and return how many edges changed.

Nothing but those counts reaches the driver; the run stops when two consecutive operations change nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from tokenmill.curate.dedup.partitions import read_partition, write_partitioned, write_table
from tokenmill.engine.fsio import join
from tokenmill.engine.tasks import clean_work_dir, run_tasks

MAX_ROUNDS = 100
LARGE, SMALL = "large", "small"
_NO_PART = -1  # the `part` of a message that is a partial minimum, not a request


class ComponentsDidNotConverge(RuntimeError):
    """Large-Star / Small-Star did not reach its fixed point within the allowed number of rounds."""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: consecutive ids (as document row numbers are) spread evenly over partitions."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def node_hash(nodes: np.ndarray) -> np.ndarray:
    """A uint64 hash of int64 node ids (a bijection, so only the partition count decides collisions)."""
    return _mix(np.asarray(nodes, dtype=np.int64).view(np.uint64))


def node_partition(nodes: np.ndarray, n: int) -> np.ndarray:
    """The partition (0 .. n-1) that holds each node's label in the output of `connected_components`."""
    return (node_hash(nodes) % np.uint64(n)).astype(np.int64)


def edge_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A uint64 hash of the ordered pair (a, b): equal edges meet in one partition, hubs spread over all."""
    return _mix(node_hash(a) ^ np.asarray(b, dtype=np.int64).view(np.uint64))


def unique_pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the distinct (x, y) pairs, in ascending (x, y) order."""
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    return order[first]


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions where a new run of equal keys begins in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def distinct_edges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pairs (a, b), sorted by (a, b)."""
    index = unique_pairs(a, b)
    return a[index], b[index]


def canonical_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct undirected edges as (larger, smaller), sorted; self-loops dropped (they join nothing)."""
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    keep = u != v
    return distinct_edges(np.maximum(u, v)[keep], np.minimum(u, v)[keep])


def large_star(a: np.ndarray, b: np.ndarray, m_of_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Large-Star on edges (a > b) given m(b): each edge becomes (a, m(b)). Returns new edges, changed count."""
    return a, m_of_b, int(np.count_nonzero(m_of_b != b))


def small_star(a: np.ndarray, b: np.ndarray, m_of_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Small-Star on edges (a > b) given m(a): (a, b) stays if b is a's minimum, else becomes (b, m(a))."""
    kept = b == m_of_a
    return np.where(kept, a, b), np.where(kept, b, m_of_a), int(np.count_nonzero(~kept))


def connected_components(
    client: Any, edges_dir: str, n_partitions: int, work_dir: str, *, max_rounds: int = MAX_ROUNDS
) -> tuple[str, dict[str, int]]:
    """Label every node of the undirected graph in `edges_dir` with the smallest node id of its component.

    `edges_dir` holds files written by `partitions.write_partitioned` with int64 columns `u`, `v` (duplicates and
    self-loops allowed), partitioned by any hash. Returns `(labels_dir, summary)`: `labels_dir` (under
    `work_dir`, read with `partitions.read_partition(labels_dir, p)`) holds columns `node`, `component`, each node
    exactly once, in partition `node_partition(node, n_partitions)`, sorted by node. The summary counts
    `components`, `nodes`, `largest` (nodes in the largest component) and `rounds` (Large-Star + Small-Star
    pairs). `work_dir/rounds` and `work_dir/labels` are replaced; the rounds' files are removed as they are used.
    Raises `ComponentsDidNotConverge` after `max_rounds` rounds (O(log^2 n) suffice; see the module docstring).
    """
    if n_partitions < 1 or max_rounds < 1:
        raise ValueError(f"n_partitions and max_rounds must be at least 1, got {n_partitions}, {max_rounds}")
    n = n_partitions
    rounds_dir, labels_dir = join(work_dir, "rounds"), join(work_dir, "labels")
    clean_work_dir(rounds_dir)
    clean_work_dir(labels_dir)
    nodes_dir, step_dir = join(rounds_dir, "nodes"), _step_dir(rounds_dir, 0, LARGE)
    inits = [
        InitPartition(partition=p, edges_dir=edges_dir, nodes_dir=nodes_dir, first_dir=step_dir, partitions=n)
        for p in _input_partitions(edges_dir)
    ]
    read = run_tasks(client, _init, inits)
    steps, quiet, changed = 0, 0, 0
    while sum(read) and quiet < 2:  # an edgeless graph needs no round: every node is its own component
        if steps == 2 * max_rounds:
            raise ComponentsDidNotConverge(
                f"connected components: no fixed point after {max_rounds} rounds ({changed} edges still changing)"
            )
        op, next_op = (LARGE, SMALL) if steps % 2 == 0 else (SMALL, LARGE)
        next_dir = _step_dir(rounds_dir, steps + 1, next_op)
        run_tasks(client, _combine, [Combine(partition=p, step_dir=step_dir, partitions=n) for p in range(n)])
        emits = [
            Emit(partition=p, op=op, step_dir=step_dir, next_dir=next_dir, next_op=next_op, partitions=n)
            for p in range(n)
        ]
        changed = sum(run_tasks(client, _emit, emits))
        clean_work_dir(step_dir)
        quiet = quiet + 1 if changed == 0 else 0
        steps, step_dir = steps + 1, next_dir
    parents_dir, sizes_dir = join(rounds_dir, "parents"), join(rounds_dir, "sizes")
    stars = [
        Stars(partition=p, step_dir=step_dir, parents_dir=parents_dir, sizes_dir=sizes_dir, partitions=n)
        for p in range(n)
    ]
    run_tasks(client, _stars, stars)
    clean_work_dir(step_dir)
    labels = [
        Label(partition=p, nodes_dir=nodes_dir, parents_dir=parents_dir, sizes_dir=sizes_dir, labels_dir=labels_dir)
        for p in range(n)
    ]
    parts = run_tasks(client, _label, labels)
    clean_work_dir(rounds_dir)
    fs, local = url_to_fs(labels_dir)
    fs.makedirs(local, exist_ok=True)  # present even for an empty graph, so readers find an empty layout
    return labels_dir, {
        "components": sum(p["components"] for p in parts),
        "nodes": sum(p["nodes"] for p in parts),
        "largest": max([p["largest"] for p in parts] + [0]),
        "rounds": (steps + 1) // 2,
    }


def _step_dir(rounds_dir: str, step: int, op: str) -> str:
    return join(rounds_dir, f"{step:03d}-{op}")


def _input_partitions(edges_dir: str) -> list[int]:
    """The partitions present in the input (its writer's partition count need not be ours)."""
    fs, local = url_to_fs(edges_dir)
    if not fs.exists(local):
        return []
    names = (path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(local, detail=False))
    return sorted(int(name[1:]) for name in names if re.fullmatch(r"p\d{5}", name))


def _name(partition: int) -> str:
    return f"t{partition:05d}"


def _write_edges(a: np.ndarray, b: np.ndarray, n: int, directory: str, op: str, name: str) -> None:
    """Write edges (a > b, distinct) for operation `op`, with the messages its combine wave needs.

    Messages are (node, value, part) rows partitioned by node: a partial minimum "m(a) <= b" (part -1) per
    distinct `a`, and a request (k, k, q) per distinct (edge partition q, looked-up node k). A request carries its
    own id as value, so the combine's minimum over a node's messages is m(k) = min(k, smaller neighbours).
    """
    hashes = edge_hash(a, b)
    write_partitioned(pa.table({"a": a, "b": b}), hashes, n, join(directory, "edges"), name)
    starts = group_starts(a)  # edges are sorted by (a, b): a group's first b is its minimum
    lookup = b if op == LARGE else a
    part = (hashes % np.uint64(n)).astype(np.int64)
    wanted = unique_pairs(lookup, part)
    node = np.concatenate([a[starts], lookup[wanted]])
    messages = pa.table(
        {
            "node": node,
            "value": np.concatenate([b[starts], lookup[wanted]]),
            "part": np.concatenate([np.full(len(starts), _NO_PART, dtype=np.int64), part[wanted]]),
        }
    )
    write_partitioned(messages, node_hash(node), n, join(directory, "messages"), name)


@dataclass(frozen=True, kw_only=True)
class InitPartition:
    """The first map over one partition of the input edges."""

    partition: int
    edges_dir: str
    nodes_dir: str
    first_dir: str  # the first Large-Star's step directory
    partitions: int


def _init(task: InitPartition) -> int:
    """Map over one input partition: its distinct nodes (for the labels) and its edges for the first Large-Star."""
    partition, n = task.partition, task.partitions
    table = read_partition(task.edges_dir, partition, ["u", "v"])
    if table is None or table.num_rows == 0:
        return 0
    u = table.column("u").to_numpy().astype(np.int64, copy=False)
    v = table.column("v").to_numpy().astype(np.int64, copy=False)
    nodes = np.unique(np.concatenate([u, v]))
    write_partitioned(pa.table({"node": nodes}), node_hash(nodes), n, task.nodes_dir, _name(partition))
    a, b = canonical_edges(u, v)
    _write_edges(a, b, n, task.first_dir, LARGE, _name(partition))
    return len(a)


@dataclass(frozen=True, kw_only=True)
class Combine:
    """The first wave of one operation, for one node partition."""

    partition: int
    step_dir: str
    partitions: int


def _combine(task: Combine) -> None:
    """Per node partition: each node's minimum over its messages, sent to every edge partition that asked."""
    partition = task.partition
    table = read_partition(join(task.step_dir, "messages"), partition)
    if table is None:
        return
    node, value, part = (table.column(c).to_numpy() for c in ("node", "value", "part"))
    order = np.argsort(node, kind="stable")
    node, value, part = node[order], value[order], part[order]
    starts = group_starts(node)
    minimum = np.repeat(np.minimum.reduceat(value, starts), np.diff(np.append(starts, len(node))))
    asked = np.flatnonzero(part != _NO_PART)
    asked = asked[unique_pairs(part[asked], node[asked])]
    replies = pa.table({"node": node[asked], "minimum": minimum[asked]})
    replies_dir = join(task.step_dir, "replies")
    write_partitioned(replies, part[asked].astype(np.uint64), task.partitions, replies_dir, _name(partition))


@dataclass(frozen=True, kw_only=True)
class Emit:
    """The second wave of one operation, for one edge partition."""

    partition: int
    op: str  # LARGE or SMALL
    step_dir: str
    next_dir: str
    next_op: str  # the operation the written edges and messages are for
    partitions: int


def _emit(task: Emit) -> int:
    """Per edge partition: apply one operation to its distinct edges; returns how many edges it changed."""
    partition, op, step_dir = task.partition, task.op, task.step_dir
    table = read_partition(join(step_dir, "edges"), partition)
    if table is None:
        return 0
    a, b = distinct_edges(table.column("a").to_numpy(), table.column("b").to_numpy())
    replies = read_partition(join(step_dir, "replies"), partition)
    known = replies.column("node").to_numpy() if replies is not None else np.zeros(0, dtype=np.int64)
    order = np.argsort(known, kind="stable")
    known = known[order]
    lookup = b if op == LARGE else a
    at = np.minimum(np.searchsorted(known, lookup), max(len(known) - 1, 0))
    if len(known) == 0 or not np.array_equal(known[at], lookup):
        raise RuntimeError(f"connected components: partition {partition} is missing node minima ({step_dir})")
    minimum = replies.column("minimum").to_numpy()[order][at]
    new_a, new_b, changed = large_star(a, b, minimum) if op == LARGE else small_star(a, b, minimum)
    new_a, new_b = distinct_edges(new_a, new_b)  # both operations keep a > b
    _write_edges(new_a, new_b, task.partitions, task.next_dir, task.next_op, _name(partition))
    return changed


@dataclass(frozen=True, kw_only=True)
class Stars:
    """One edge partition of the fixed point."""

    partition: int
    step_dir: str
    parents_dir: str
    sizes_dir: str
    partitions: int


def _stars(task: Stars) -> None:
    """Per edge partition of the fixed point, whose edges are (member, centre): parents and star sizes by node."""
    partition, n = task.partition, task.partitions
    table = read_partition(join(task.step_dir, "edges"), partition)
    if table is None:
        return
    a, b = distinct_edges(table.column("a").to_numpy(), table.column("b").to_numpy())
    write_partitioned(pa.table({"node": a, "component": b}), node_hash(a), n, task.parents_dir, _name(partition))
    centres, members = np.unique(b, return_counts=True)
    sizes = pa.table({"node": centres, "members": members.astype(np.int64)})
    write_partitioned(sizes, node_hash(centres), n, task.sizes_dir, _name(partition))


@dataclass(frozen=True, kw_only=True)
class Label:
    """One node partition of the labels."""

    partition: int
    nodes_dir: str
    parents_dir: str
    sizes_dir: str
    labels_dir: str


def _label(task: Label) -> dict[str, int]:
    """Per node partition: a node's component is its star centre, or itself (a centre, or an isolated node)."""
    partition = task.partition
    table = read_partition(task.nodes_dir, partition)
    if table is None:
        return {"components": 0, "nodes": 0, "largest": 0}
    nodes = np.unique(table.column("node").to_numpy())
    component = nodes.copy()
    parents = read_partition(task.parents_dir, partition)
    if parents is not None:
        component[np.searchsorted(nodes, parents.column("node").to_numpy())] = parents.column("component").to_numpy()
    largest = 1
    sizes = read_partition(task.sizes_dir, partition)
    if sizes is not None:  # a centre's members are counted in every edge partition that holds some of them
        _, inverse = np.unique(sizes.column("node").to_numpy(), return_inverse=True)
        largest = 1 + int(np.bincount(inverse, weights=sizes.column("members").to_numpy()).max())
    labels = pa.table({"node": nodes, "component": component})
    write_table(join(task.labels_dir, f"p{partition:05d}", "labels.parquet"), labels)
    return {"components": int(np.count_nonzero(component == nodes)), "nodes": len(nodes), "largest": largest}
