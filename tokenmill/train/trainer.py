"""The training loop: AdamW, warmup + cosine, clipping, accumulation, autocast, periodic eval, exact resume,
DistributedDataParallel under `torchrun` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tokenmill.tokenize.token_splits import check_tokenizer, open_split
from tokenmill.train import checkpoint
from tokenmill.train.config import TrainConfig
from tokenmill.train.data import WindowSampler
from tokenmill.train.model import GPT


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def runtime(config: TrainConfig) -> Runtime:
    """Device, precision and (under torchrun) the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    wants_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    bf16_ok = device.type == "cpu" or torch.cuda.is_bf16_supported()
    use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda" and bf16_ok)
    return Runtime(device, torch.bfloat16 if use_bf16 else None, rank, world)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr` at `max_steps`."""
    floor = config.min_lr if config.min_lr is not None else config.lr / 10
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return floor + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (config.lr - floor)


def make_optimizer(model: GPT, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """Decoupled weight decay on matrices of linear layers only: not on norms, not on embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_tokens" not in n)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused or None)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: list, rt: Runtime) -> float:
    """Mean loss over the fixed validation batches (all the same size); under DDP each rank evaluates every
    `world`-th batch and the sums are all-reduced, so every rank gets the single-process value."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rt.device)
    for x, y in batches[rt.rank :: rt.world]:
        with rt.autocast():
            total[0] += model(x.to(rt.device), y.to(rt.device))[1].float()
        total[1] += 1
    if rt.world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def train(
    config: TrainConfig, tokens: str, tokenizer_json: str, out_dir: str, stop_at: int | None = None
) -> dict[str, Any]:
    """Train (resuming from `out_dir`'s latest checkpoint when there is one); returns a summary.

    `stop_at` ends the run early after that step with a checkpoint (a time-boxed job); running again with the
    same configuration continues exactly where it stopped.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    rt = runtime(config)
    manifest = check_tokenizer(tokens, tokenizer_json)
    model_config = config.model_shape(manifest["vocab_size"])
    torch.manual_seed(config.seed)
    model = GPT(model_config).to(rt.device)
    model.gradient_checkpointing = config.gradient_checkpointing
    optimizer = make_optimizer(model, config, fused=rt.device.type == "cuda")
    sampler = WindowSampler(open_split(tokens, "train"), model_config.block_size, config.seed)
    validation = WindowSampler(open_split(tokens, "validation"), model_config.block_size, config.seed)
    # eval_batches counts global batches: the same validation windows whatever the split into ranks and micro-batches.
    eval_batches = validation.fixed(config.eval_batches * config.grad_accum * rt.world, config.batch_size)
    meta = {
        "model": model_config.to_dict(),
        "train": config.model_dump(mode="json"),
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "tokens": manifest["path"],
    }
    start = 0
    resume_from = checkpoint.latest(out_dir)
    if resume_from:
        checkpoint.check_compatible(resume_from, model_config.to_dict(), manifest["tokenizer_sha256"])
        checkpoint.load_weights(resume_from, model)
        state = checkpoint.load_trainer_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and rt.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], rt.device)
        start = state["step"]
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if rt.main:
        os.makedirs(out_dir, exist_ok=True)
        _truncate_metrics(metrics_path, start)
    net: torch.nn.Module = model
    if config.compile:
        net = torch.compile(net)
    if rt.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    tokens_per_step = config.batch_size * config.grad_accum * model_config.block_size * rt.world
    last_good = resume_from
    tick = time.perf_counter()
    loss_value = float("nan")
    done = start
    for step in range(start, config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        total = torch.zeros((), device=rt.device)
        for micro in range(config.grad_accum):
            x, y = sampler.batch(step, micro, config.batch_size, rt.rank, rt.world, config.grad_accum)
            sync = micro == config.grad_accum - 1 or rt.world == 1
            with contextlib.nullcontext() if sync else net.no_sync(), rt.autocast():
                loss = net(x.to(rt.device), y.to(rt.device))[1] / config.grad_accum
            loss.backward()
            total += loss.detach()
        if rt.world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        loss_value = total.item()
        if not math.isfinite(loss_value):
            optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"loss became {loss_value} at step {step + 1}; stopped. Last good checkpoint: {last_good or 'none'} "
                "(lower lr, raise warmup_steps or enable grad_clip)"
            )
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        record: dict[str, Any] = {"step": done, "loss": round(loss_value, 6), "lr": optimizer.param_groups[0]["lr"]}
        if done % config.log_interval == 0 or done == config.max_steps:
            elapsed = time.perf_counter() - tick
            record["tokens_per_s"] = round(tokens_per_step * config.log_interval / max(elapsed, 1e-9), 1)
            tick = time.perf_counter()
        if done % config.eval_interval == 0 or done == config.max_steps:
            record["val_loss"] = round(evaluate_loss(model, eval_batches, rt), 6)
        if rt.main and ("val_loss" in record or done == stop_at):
            last_good = checkpoint.save(out_dir, done, model, optimizer, meta, config.keep_checkpoints)
        if rt.main:
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if done == stop_at:
            break
    if rt.main:
        plot_curve(metrics_path, os.path.join(out_dir, "loss.png"))
    summary = {
        "path": os.path.abspath(out_dir),
        "checkpoint": checkpoint.latest(out_dir),
        "parameters": model.num_parameters(),
        "steps": done if start < config.max_steps else start,
        "final_train_loss": round(loss_value, 4) if start < config.max_steps else None,
        "final_val_loss": _last_val_loss(metrics_path),
        "tokenizer_sha256": manifest["tokenizer_sha256"],
    }
    if rt.world > 1:
        dist.barrier()
    return summary


def _truncate_metrics(path: str, step: int) -> None:
    """On resume, drop metrics recorded after the checkpoint so the file reads as one uninterrupted run."""
    if not os.path.exists(path):
        return
    with open(path) as handle:
        kept = [line for line in handle if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as handle:
        handle.writelines(kept)


def read_metrics(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _last_val_loss(path: str) -> float | None:
    values = [r["val_loss"] for r in read_metrics(path) if "val_loss" in r]
    return values[-1] if values else None


def plot_curve(metrics_path: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train", linewidth=1)
    val = [r for r in records if "val_loss" in r]
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100, metadata={"Software": None})
    plt.close(fig)
