"""Helpers that write small inputs and pipeline YAMLs for executor tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_jsonl_shards(directory: Path, n_shards: int, docs_per_shard: int, prefix: str = "part") -> list[Path]:
    """Deterministic JSONL shards of prose-like documents."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        path = directory / f"{prefix}-{s:03d}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for d in range(docs_per_shard):
                words = " ".join(f"word{(s * 7 + d * 3 + k) % 97}" for k in range(5 + (d % 11) * 4))
                handle.write(json.dumps({"text": f"Document {s}-{d}. {words}.", "id": f"s{s}d{d}"}) + "\n")
        paths.append(path)
    return paths


def pipeline_yaml(
    path: Path, inputs: str, output: Path, stages: list[dict] | None = None, n_workers: int = 2, **extra
) -> Path:
    """Write a pipeline YAML reading JSONL from `inputs` through `stages` into `output`."""
    spec = {
        "name": path.stem,
        "output": str(output),
        "cluster": {"n_workers": n_workers, "threads_per_worker": 1, "dashboard_address": None},
        "stages": [{"read": {"format": "jsonl", "paths": [inputs], "id_field": "id"}}]
        + (stages if stages is not None else [{"normalize": {}}])
        + [{"write": {"format": "parquet", "rejected": True}}],
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Relative path -> content for every file under `directory` (for byte-identity checks)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def read_all(reader, keep_rejected: bool = True):
    """Every document of every shard of `reader`, with the read stage's outcomes; conservation is checked."""
    from tokenmill.engine.stage import Outcomes
    from tokenmill.engine.stats import StageStats

    out = Outcomes(StageStats("read"), [] if keep_rejected else None)
    docs = [doc for shard in reader.shards() for doc in reader.read(shard, out)]
    out.stats.check()
    return docs, out


def run_shards(tmp_path: Path, read: dict) -> list[dict]:
    """`read -> normalize -> write` planned and run shard by shard in-process (no cluster), as the executor does."""
    from tokenmill.engine.executor import process_shard
    from tokenmill.engine.spec import parse_pipeline

    spec = {
        "name": "in-process",
        "output": str(tmp_path / "out"),
        "stages": [{"read": read}, {"normalize": {}}, {"write": {"format": "parquet", "rejected": True}}],
    }
    return [process_shard(task) for task in parse_pipeline(yaml.safe_dump(spec)).plan.first_tasks()]


def output_ids(tmp_path: Path) -> list[str]:
    """Ids of the curated output of `run_shards`, in file order."""
    import pyarrow.parquet as pq

    files = sorted((tmp_path / "out" / "curated").glob("*.parquet"))
    return [i for f in files for i in pq.read_table(f).column("id").to_pylist()]


def write_curated(path: Path, rows: list[tuple[str, str, str]]):
    """A curated shard of (id, text, source) rows in the base schema; returns its ShardOutput."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenmill.engine.documents import BASE_SCHEMA
    from tokenmill.engine.stage import ShardOutput

    columns = {"id": [r[0] for r in rows], "text": [r[1] for r in rows], "source": [r[2] for r in rows]}
    table = pa.table({**columns, "url": [None] * len(rows), "meta": [None] * len(rows)}, schema=BASE_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return ShardOutput(path.stem, (str(path),))
