"""Shared fixtures for the training tests: one real, small character-level pipeline run (read → write →
tokenizer_train → tokenize → train → evaluate on a slice of tinyshakespeare), made once per test session, and
helpers that train tiny models on its token shards in the test process.

The run is cached in this module, so every test module that asks for it (through `shared_char_run`) shares it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import shared_file

# Small enough to train in well under a second a run, big enough that every piece of the loop is exercised.
TINY = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "max_steps": 12,
    "lr": 3e-3,
    "warmup_steps": 3,
    "eval_interval": 6,
    "eval_batches": 2,
    "log_interval": 3,
}
SLICE_BYTES = 120_000  # about 3 % of tinyshakespeare: 59 chunks of 2 KB, 8 of them held out for validation


@dataclass
class CharRun:
    """The outputs of the shared pipeline run."""

    root: Path
    pipeline: Path
    result: Any  # tokenmill's RunResult
    tokens: str
    tokenizer_json: str
    tokenizer_dir: str
    train_dir: str


_CACHE: dict[str, CharRun] = {}


def pipeline_spec(text: Path, output: Path) -> dict[str, Any]:
    """The shakespeare-char pipeline, shrunk: 2 KB chunks, a 2-layer 32-wide model, 8 steps."""
    train = {**TINY, "max_steps": 8, "eval_interval": 4}
    return {
        "name": "tiny-char",
        "output": str(output),
        "cluster": {"n_workers": 1, "threads_per_worker": 1, "dashboard_address": None},
        "stages": [
            {"read": {"format": "text", "paths": [str(text)], "split": "chunks", "chunk_bytes": 2048}},
            {"write": {}},
            {
                "tokenizer_train": {
                    "model": "char",
                    "vocab_size": 256,
                    "min_frequency": 0,
                    "special_tokens": ["<|endoftext|>"],
                    "normalizer": None,
                    "heldout_fraction": 0.1,
                }
            },
            {"tokenize": {"validation_fraction": 0.1}},
            {"train": train},
            {"evaluate": {"prompt": "ROMEO:", "max_new_tokens": 20, "batches": 2}},
        ],
    }


def shared_char_run(client, tmp_path_factory: pytest.TempPathFactory) -> CharRun:
    """The shared pipeline run, made on first call (skips when ../shared/data is absent). Wrap it in a fixture:

    @pytest.fixture(scope="module")
    def char_run(client, tmp_path_factory):
        return shared_char_run(client, tmp_path_factory)
    """
    if "run" in _CACHE:
        return _CACHE["run"]
    import tokenmill

    source = shared_file("text/tinyshakespeare.txt")
    root = tmp_path_factory.mktemp("char-run")
    text = root / "shakespeare-slice.txt"
    data = source.read_bytes()[:SLICE_BYTES]
    text.write_bytes(data[: data.rindex(b"\n") + 1])
    pipeline = root / "tiny-char.yaml"
    pipeline.write_text(yaml.safe_dump(pipeline_spec(text, root / "out"), sort_keys=False))
    result = tokenmill.run(pipeline, client=client)
    tokenizer = result.artifacts["tokenizer_train"]
    _CACHE["run"] = CharRun(
        root=root,
        pipeline=pipeline,
        result=result,
        tokens=result.artifacts["tokenize"]["path"],
        tokenizer_json=tokenizer["tokenizer_json"],
        tokenizer_dir=tokenizer["path"],
        train_dir=result.artifacts["train"]["path"],
    )
    return _CACHE["run"]


def train_tiny(char: CharRun, out_dir: Path, stop_at: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the TINY configuration (plus overrides) on the shared shards in this process."""
    from tokenmill.train.config import TrainConfig
    from tokenmill.train.trainer import train

    config = TrainConfig(**{**TINY, **overrides})
    return train(config, char.tokens, char.tokenizer_json, str(out_dir), stop_at=stop_at)


def losses(metrics_path: Path | str) -> list[dict[str, Any]]:
    """metrics.jsonl records without the wall-clock field (the only one allowed to differ between runs)."""
    with open(metrics_path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]
