"""Checkpoints that survive crashes and never unpickle arbitrary objects.

A checkpoint is a directory: `model.safetensors` (weights), `trainer.pt` (optimizer and RNG state, loaded with
`torch.load(weights_only=True)`), `meta.json` (step, configurations, tokenizer hash). It is written under a
temporary name and renamed into place, then `latest.json` is updated atomically: a crash or a full disk while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tokenmill.engine.fsio import atomic_write_json


class CheckpointMismatch(ValueError):
    """A checkpoint made with a different model configuration or tokenizer."""


def save(
    directory: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict, keep: int
) -> str:
    """Write checkpoint `step` atomically; keep the newest `keep` checkpoints. Returns its path."""
    root = os.path.join(directory, "checkpoints")
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step-{step:07d}")
    tmp = os.path.join(root, f".tmp-{uuid.uuid4().hex[:8]}-step-{step:07d}")
    os.makedirs(tmp)
    try:
        save_file(
            {k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors")
        )
        state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "step": step}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from its generator
            state["cuda_rng"] = torch.cuda.get_rng_state()
        torch.save(state, os.path.join(tmp, "trainer.pt"))
        with open(os.path.join(tmp, "meta.json"), "w") as handle:
            json.dump({**meta, "step": step}, handle, indent=2, sort_keys=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(os.path.join(root, "latest.json"), {"step": step, "path": final})
    for old in sorted(p for p in os.listdir(root) if p.startswith("step-"))[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def latest(directory: str) -> str | None:
    """The newest complete checkpoint under `directory` (its `checkpoints/latest.json`), or None."""
    pointer = os.path.join(directory, "checkpoints", "latest.json")
    if not os.path.exists(pointer):
        return None
    with open(pointer) as handle:
        path = json.load(handle)["path"]
    return path if os.path.exists(os.path.join(path, "meta.json")) else None


def read_meta(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "meta.json")) as handle:
        return json.load(handle)


def check_compatible(path: str, model_config: dict, tokenizer_sha: str | None) -> dict[str, Any]:
    """Raise CheckpointMismatch naming the differences when `path` was made for another model or tokenizer."""
    meta = read_meta(path)
    theirs = meta["model"]
    diffs = [f"{k}: checkpoint {theirs.get(k)!r} vs run {v!r}" for k, v in model_config.items() if theirs.get(k) != v]
    if tokenizer_sha and meta.get("tokenizer_sha256") not in (None, tokenizer_sha):
        diffs.append("tokenizer: the checkpoint was trained with a different tokenizer")
    if diffs:
        raise CheckpointMismatch(f"checkpoint {path} does not match this run: " + "; ".join(diffs))
    return meta


def load_weights(path: str, model: torch.nn.Module) -> None:
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))


def load_trainer_state(path: str) -> dict[str, Any]:
    return torch.load(os.path.join(path, "trainer.pt"), weights_only=True)
