"""Evaluation (loss, perplexity, bits per byte on the validation split) and sampling from a checkpoint."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from tokenizers import Tokenizer

from tokenmill.tokenize.token_splits import check_tokenizer
from tokenmill.train import checkpoint
from tokenmill.train.config import TrainConfig
from tokenmill.train.data import open_windows
from tokenmill.train.model import GPT, GPTConfig


def load_model(path: str, device: str = "cpu") -> tuple[GPT, dict[str, Any]]:
    """A model from a checkpoint directory, or from a training directory: its newest checkpoint that reads back
    (`checkpoint.load_newest`; the paths are relative to it, so any working directory will do)."""
    if os.path.exists(os.path.join(path, "meta.json")):
        loaded = checkpoint.load(path, trainer_state=False)
    else:
        loaded = checkpoint.load_newest(path, trainer_state=False)
        if loaded is None:
            raise FileNotFoundError(f"{path}: no checkpoint here (expected meta.json or checkpoints/step-*)")
    model = GPT(GPTConfig(**loaded.meta["model"]))
    model.load_state_dict(loaded.weights)
    model.to(device).eval()
    return model, {**loaded.meta, "path": loaded.path}


@torch.no_grad()
def evaluate(checkpoint_path: str, tokens: str, tokenizer_json: str, batches: int = 50) -> dict[str, Any]:
    """Mean loss (nats/token), perplexity and bits per byte over up to `batches` batches of consecutive,
    non-overlapping validation windows (training's evaluation windows when `batches` is its eval_batches)."""
    model, meta = load_model(checkpoint_path)
    manifest = check_tokenizer(tokens, tokenizer_json)
    if meta.get("tokenizer_sha256") not in (None, manifest["tokenizer_sha256"]):
        raise checkpoint.CheckpointMismatch(f"{meta['path']} was trained with another tokenizer than {tokens}")
    train_config = TrainConfig(**meta["train"])
    sampler = open_windows(tokens, "validation", model.config.block_size, train_config.seed)
    tokenizer = Tokenizer.from_file(tokenizer_json)
    total_loss = total_tokens = total_bytes = 0.0
    for x, y in sampler.consecutive(batches, train_config.batch_size):
        _, loss = model(x, y)
        total_loss += loss.item() * y.numel()
        total_tokens += y.numel()
        # Bytes of text the targets stand for: decode each window's targets back to text. The document separator
        # stands for no text, so it adds no bytes (its loss still counts, as in the usual bits-per-byte).
        total_bytes += sum(len(t.encode("utf-8")) for t in tokenizer.decode_batch(y.tolist(), skip_special_tokens=True))
    loss = total_loss / total_tokens
    return {
        "checkpoint": meta["path"],
        "step": meta["step"],
        "val_loss": round(loss, 4),
        "perplexity": round(math.exp(loss), 3),
        "bits_per_byte": round(loss / math.log(2) * total_tokens / max(total_bytes, 1), 4),
        "tokens": int(total_tokens),
        "val_tokens": int(total_tokens),
    }


@torch.no_grad()
def generate(
    checkpoint_path: str,
    tokenizer_json: str,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    seed: int = 0,
) -> str:
    """Sample a continuation of `prompt` (temperature, then top-k, then nucleus/top-p filtering)."""
    model, _ = load_model(checkpoint_path)
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.encode_special_tokens = True  # a prompt's literal "<|endoftext|>" is text, as in training data
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids or [tokenizer.token_to_id("<|endoftext|>")]
    idx = torch.tensor([ids], dtype=torch.long)
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :])
        logits = logits[:, -1, :] / max(temperature, 1e-6)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1, None]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if top_p is not None:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return tokenizer.decode(idx[0, len(ids) :].tolist())
