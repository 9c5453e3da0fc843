"""Distributed connected components (Large-Star / Small-Star) against a reference union-find."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenmill.curate.dedup.components import (
    ComponentsDidNotConverge,
    canonical_edges,
    connected_components,
    large_star,
    node_partition,
    small_star,
)
from tokenmill.curate.dedup.partitions import list_files, read_partition, write_partitioned


def union_find(u, v) -> dict[int, int]:
    """Reference: every endpoint mapped to the smallest node of its component."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(u, v):
        rx, ry = find(int(x)), find(int(y))
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)  # the root is always the component's smallest node
    return {x: find(x) for x in list(parent)}


def write_edges(directory: Path, u, v, n: int) -> str:
    """Edges split by an arbitrary hash (row number), as the MinHash stage may write them."""
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    rows = np.arange(len(u), dtype=np.uint64) * np.uint64(7919)
    write_partitioned(pa.table({"u": u, "v": v}), rows, n, str(directory), "edges")
    return str(directory)


def read_labels(labels_dir: str, n: int) -> dict[int, int]:
    """All labels, checking the layout: each node once, in its own partition, sorted by node."""
    labels: dict[int, int] = {}
    for p in range(n):
        table = read_partition(labels_dir, p)
        if table is None:
            continue
        nodes = table.column("node").to_numpy()
        assert table.schema.field("node").type == table.schema.field("component").type == pa.int64()
        assert (node_partition(nodes, n) == p).all() and (np.diff(nodes) > 0).all()
        labels.update(zip(nodes.tolist(), table.column("component").to_pylist()))
    assert sum(len(read_partition(labels_dir, p) or []) for p in range(n)) == len(labels)
    return labels


def components(client, root: Path, u, v, n: int = 4, **kwargs) -> tuple[dict[int, int], dict[str, int]]:
    edges_dir = write_edges(root / "edges", u, v, n)
    labels_dir, summary = connected_components(client, edges_dir, n, str(root / "work"), **kwargs)
    return read_labels(labels_dir, n), summary


def assert_matches_reference(labels: dict[int, int], summary: dict[str, int], u, v) -> None:
    expected = union_find(u, v)
    assert labels == expected
    sizes = Counter(expected.values())
    assert summary["nodes"] == len(expected)
    assert summary["components"] == len(sizes)
    assert summary["largest"] == max(sizes.values(), default=0)


def random_graph(seed: int, nodes: int, edges: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(rng.integers(-(10**12), 10**12, nodes)))  # sparse ids, negative ones too
    nodes = len(ids)
    return ids[rng.integers(0, nodes, edges)], ids[rng.integers(0, nodes, edges)]


@pytest.mark.parametrize(("seed", "nodes", "edges"), [(0, 300, 200), (1, 2000, 2000), (2, 500, 1500)])
def test_random_graphs_match_union_find(client, tmp_path, seed, nodes, edges):
    u, v = random_graph(seed, nodes, edges)
    labels, summary = components(client, tmp_path, u, v)
    assert_matches_reference(labels, summary, u, v)
    assert not list_files(str(tmp_path / "work" / "rounds"))  # intermediate rounds are cleaned up


def test_long_chain_with_shuffled_ids_converges_in_few_rounds(client, tmp_path):
    ids = np.random.default_rng(3).permutation(2000)
    u, v = ids[:-1], ids[1:]
    labels, summary = components(client, tmp_path, u, v)
    assert set(labels.values()) == {0} and summary["largest"] == 2000
    assert summary["rounds"] < 40  # label propagation would need ~2000 rounds on this path


def test_stars_self_loops_duplicates_and_many_small_components(client, tmp_path):
    hub_high = [(10_000, leaf) for leaf in range(100, 499)]  # centre larger than all its leaves
    hub_low = [(20_000, leaf) for leaf in range(20_001, 20_300)]  # centre is the minimum
    pairs = [(30_000 + 2 * i, 30_001 + 2 * i) for i in range(300)]  # 300 two-node components
    loops = [(7, 7), (8, 8), (1, 1)]  # 7 and 8 appear only in self-loops: singletons
    duplicates = [(b, a) for a, b in hub_high[:50]] + hub_low[:50] + pairs[:20]
    u, v = zip(*(hub_high + hub_low + pairs + loops + duplicates))
    labels, summary = components(client, tmp_path, u, v)
    assert_matches_reference(labels, summary, u, v)
    assert labels[7] == 7 and labels[8] == 8 and labels[10_000] == 100 and labels[20_299] == 20_000
    assert summary["components"] == 2 + 300 + 3 and summary["largest"] == 400


def test_empty_edge_sets(client, tmp_path):
    labels_dir, summary = connected_components(client, str(tmp_path / "absent"), 3, str(tmp_path / "w1"))
    assert summary == {"components": 0, "nodes": 0, "largest": 0, "rounds": 0}
    assert read_labels(labels_dir, 3) == {} and Path(labels_dir).is_dir()
    labels, summary = components(client, tmp_path / "loops", [5, 5, 9], [5, 5, 9], n=3)
    assert labels == {5: 5, 9: 9} and summary == {"components": 2, "nodes": 2, "largest": 1, "rounds": 0}


def test_identical_labels_and_rounds_for_any_partition_count(client, tmp_path):
    u, v = random_graph(4, 800, 900)
    results = [components(client, tmp_path / f"n{n}", u, v, n=n) for n in (1, 3, 8)]
    assert all(result == results[0] for result in results)
    assert_matches_reference(*results[0], u, v)


def test_a_rerun_replaces_previous_results(client, tmp_path):
    components(client, tmp_path / "first", [1, 2], [2, 3], n=2)
    edges_dir = write_edges(tmp_path / "second", [4], [5], 2)
    labels_dir, _ = connected_components(client, edges_dir, 2, str(tmp_path / "first" / "work"))
    assert read_labels(labels_dir, 2) == {4: 4, 5: 4}


def test_round_limit_raises_a_clear_error(client, tmp_path):
    ids = np.random.default_rng(5).permutation(500)
    with pytest.raises(ComponentsDidNotConverge, match="no fixed point after 1 rounds"):
        components(client, tmp_path, ids[:-1], ids[1:], max_rounds=1)


def in_memory_components(u, v) -> tuple[dict[int, int], int]:
    """The same operations iterated on one machine: checks the algorithm itself, quickly, on many graphs."""
    a, b = canonical_edges(u, v)
    steps = quiet = 0
    while len(a) and quiet < 2:
        nodes = np.unique(np.concatenate([a, b]))
        minimum = nodes.copy()
        np.minimum.at(minimum, np.searchsorted(nodes, a), b)
        if steps % 2 == 0:
            a, b, changed = large_star(a, b, minimum[np.searchsorted(nodes, b)])
        else:
            a, b, changed = small_star(a, b, minimum[np.searchsorted(nodes, a)])
        a, b = canonical_edges(a, b)
        quiet = quiet + 1 if changed == 0 else 0
        steps += 1
    labels = {int(x): int(x) for x in np.concatenate([np.asarray(u), np.asarray(v)])}
    assert len(np.unique(a)) == len(a)  # the fixed point is a forest of stars: one centre per member
    labels.update(zip(a.tolist(), b.tolist()))
    return labels, steps


edge_lists = st.lists(st.tuples(st.integers(-30, 30), st.integers(-30, 30)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(edge_lists)
def test_star_operations_reach_the_union_find_components(edges):
    u, v = [e[0] for e in edges], [e[1] for e in edges]
    labels, _ = in_memory_components(u, v)
    assert labels == union_find(u, v)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edge_lists, st.sampled_from([1, 3, 8]))
def test_distributed_components_are_union_find_and_stable(client, edges, n):
    u, v = [e[0] for e in edges], [e[1] for e in edges]
    with tempfile.TemporaryDirectory() as tmp:
        labels, summary = components(client, Path(tmp) / "g", u, v, n=n)
        assert_matches_reference(labels, summary, u, v)
        for x, y in edges:  # one label per node, so u~v <=> v~u and ~ is transitive; the label is a member
            assert labels[x] == labels[y]
        assert all(labels[label] == label <= node for node, label in labels.items())
        grown, _ = components(client, Path(tmp) / "h", [*u, 1000], [*v, 1001], n=n)  # an unrelated edge
        assert grown == {**labels, 1000: 1000, 1001: 1000}
