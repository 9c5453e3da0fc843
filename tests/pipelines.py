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
