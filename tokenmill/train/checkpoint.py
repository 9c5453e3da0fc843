"""Checkpoints that survive crashes and never unpickle arbitrary objects.

A checkpoint is a directory: `model.safetensors` (weights), `trainer.pt` (optimizer and RNG state, loaded with
`torch.load(weights_only=True)`), `meta.json` (step, configurations, tokenizer hash). It is written under a
temporary name and renamed into place, then `latest.json` is updated atomically: a crash or a full disk while
saving leaves the previous checkpoint intact.

`latest.json` names its checkpoint relative to the training directory (`checkpoints/step-0000012`), so a moved or
copied training directory resumes from its own checkpoints and `eval` or `export` work from any working
directory. When `latest.json` is missing, or names a checkpoint that does not read back whole (a truncated
`model.safetensors`, a corrupt `trainer.pt`), `load_newest` falls back to the newest `step-*` directory that does,
with a `CheckpointWarning` naming both.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tokenmill.engine.fsio import atomic_write_json

TRAINER_KEYS = ("optimizer", "torch_rng", "step")


class CheckpointMismatch(ValueError):
    """A checkpoint made with a different model configuration or tokenizer."""


class CheckpointCorrupt(ValueError):
    """A checkpoint whose files do not read back: missing, truncated, corrupt, or (trainer.pt) holding more than
    tensors and plain data."""


class CheckpointWarning(UserWarning):
    """Another checkpoint is used than the one `latest.json` names (it is missing or does not read back)."""


@dataclass
class Loaded:
    """A checkpoint read back whole."""

    path: str
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    trainer: dict[str, Any] | None  # optimizer state, RNG state, step; None when not asked for


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
    # Relative to the training directory: the pointer stays right when the directory is moved or copied.
    atomic_write_json(
        os.path.join(root, "latest.json"), {"step": step, "path": f"checkpoints/{os.path.basename(final)}"}
    )
    for old in checkpoints(directory)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(directory: str) -> list[str]:
    """The `step-N` directories under `directory/checkpoints`, newest first (temporary ones are left out)."""
    root = os.path.join(directory, "checkpoints")
    if not os.path.isdir(root):
        return []
    steps = [(int(n[5:]), n) for n in os.listdir(root) if n.startswith("step-") and n[5:].isdigit()]
    return [os.path.join(root, name) for _, name in sorted(steps, reverse=True)]


def _pointer(directory: str) -> str | None:
    """The checkpoint `latest.json` names (whether or not it exists), or None when there is no readable pointer.

    Only the name counts: runs before the relative pointer recorded an absolute path (or one relative to the
    trainer's working directory), which after a move or copy would name another directory's checkpoint."""
    try:
        with open(os.path.join(directory, "checkpoints", "latest.json")) as handle:
            recorded = json.load(handle)["path"]
        name = os.path.basename(os.path.normpath(recorded))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return os.path.join(directory, "checkpoints", name) if name.startswith("step-") else None


def latest(directory: str) -> str | None:
    """The checkpoint `directory/checkpoints/latest.json` names when its meta.json is there, else None (no
    validation: `load_newest` reads the files back and falls back to an older checkpoint)."""
    path = _pointer(directory)
    return path if path and os.path.exists(os.path.join(path, "meta.json")) else None


def _corrupt(path: str, name: str, problem: str) -> CheckpointCorrupt:
    return CheckpointCorrupt(f"checkpoint {path}: {name} {problem}")


def read_meta(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, "meta.json")) as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        raise _corrupt(path, "meta.json", "is missing") from None
    except (OSError, ValueError):
        raise _corrupt(path, "meta.json", "is not valid JSON (truncated or corrupt)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) or not isinstance(meta.get("step"), int):
        raise _corrupt(path, "meta.json", "lacks the model shape or the step")
    return meta


def read_weights(path: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(os.path.join(path, "model.safetensors"))
    except FileNotFoundError:
        raise _corrupt(path, "model.safetensors", "is missing") from None
    except Exception as exc:  # safetensors' own error type: a header or length that does not add up
        raise _corrupt(
            path, "model.safetensors", f"does not read back ({type(exc).__name__}: truncated or corrupt)"
        ) from None


def load_trainer_state(path: str) -> dict[str, Any]:
    """Optimizer state, RNG state and step. Only tensors and plain data are accepted; anything else, like a
    truncated file, is CheckpointCorrupt (torch's own message, which suggests unpickling arbitrary objects, is
    not passed on)."""
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles in terms that invite unsafe loading, too
            warnings.simplefilter("ignore")
            state = torch.load(os.path.join(path, "trainer.pt"), weights_only=True)
    except FileNotFoundError:
        raise _corrupt(path, "trainer.pt", "is missing") from None
    except Exception as exc:
        problem = f"does not read back ({type(exc).__name__}): truncated, corrupt, or holding more than tensors"
        raise _corrupt(path, "trainer.pt", problem + " and plain data") from None
    if not isinstance(state, dict) or any(key not in state for key in TRAINER_KEYS):
        raise _corrupt(path, "trainer.pt", f"lacks one of {', '.join(TRAINER_KEYS)}")
    return state


def load(path: str, trainer_state: bool = True) -> Loaded:
    """Read checkpoint `path` back whole (its trainer state too unless `trainer_state` is false); raises
    CheckpointCorrupt naming the first file that does not read."""
    meta = read_meta(path)
    weights = read_weights(path)
    trainer = load_trainer_state(path) if trainer_state else None
    if trainer is not None and trainer["step"] != meta["step"]:
        raise _corrupt(path, "trainer.pt", f"is for step {trainer['step']}, meta.json for step {meta['step']}")
    return Loaded(path, meta, weights, trainer)


def load_newest(directory: str, trainer_state: bool = True) -> Loaded | None:
    """The checkpoint of training directory `directory` to continue from (or evaluate): the one `latest.json`
    names; when that is missing or does not read back, the newest `step-*` directory that does, with a
    CheckpointWarning saying why. None when there is no checkpoint directory; CheckpointCorrupt when none reads."""
    root = os.path.join(directory, "checkpoints")
    pointer = os.path.join(root, "latest.json")
    named, existing = _pointer(directory), checkpoints(directory)
    candidates = ([named] if named in existing else []) + [p for p in existing if p != named]
    problems = [f"{pointer} names {named}, which does not exist"] if named and named not in existing else []
    for path in candidates:
        try:
            loaded = load(path, trainer_state)
        except CheckpointCorrupt as exc:
            problems.append(str(exc))
            continue
        if path != named:
            state = "unreadable" if os.path.exists(pointer) else "missing"
            why = "; ".join(problems) if problems else f"{pointer} is {state}"
            warnings.warn(f"{why}; using the newest complete checkpoint {path}", CheckpointWarning, stacklevel=2)
        return loaded
    if candidates:
        raise CheckpointCorrupt(
            f"no readable checkpoint in {root}: {'; '.join(problems)} (move {root} away to train from scratch)"
        )
    if problems:
        warnings.warn(f"{problems[0]}; there is no checkpoint to use", CheckpointWarning, stacklevel=2)
    return None


def check_compatible(
    path: str, model_config: dict, tokenizer_sha: str | None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Raise CheckpointMismatch naming the differences when `path` (its `meta`, read from disk when not given)
    was made for another model or tokenizer."""
    meta = meta if meta is not None else read_meta(path)
    theirs = meta["model"]
    diffs = [f"{k}: checkpoint {theirs.get(k)!r} vs run {v!r}" for k, v in model_config.items() if theirs.get(k) != v]
    if tokenizer_sha and meta.get("tokenizer_sha256") not in (None, tokenizer_sha):
        diffs.append("tokenizer: the checkpoint was trained with a different tokenizer")
    if diffs:
        raise CheckpointMismatch(f"checkpoint {path} does not match this run: " + "; ".join(diffs))
    return meta


def load_weights(path: str, model: torch.nn.Module) -> None:
    model.load_state_dict(read_weights(path))
