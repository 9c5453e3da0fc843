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

from tokenmill.tokenize.token_splits import check_tokenizer
from tokenmill.train import checkpoint
from tokenmill.train.config import TrainConfig
from tokenmill.train.data import MixtureSampler, Sampler, open_windows
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
    """AdamW over the model's parameter groups (it decides what decays: `GPT.optimizer_groups`)."""
    groups = model.optimizer_groups(config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused or None)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: list, rt: Runtime) -> float:
    """Mean loss per target token over the fixed validation batches (the last may be smaller); under DDP each rank
    evaluates every `world`-th batch and the sums are all-reduced, so every rank gets the single-process value."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=rt.device)
    for x, y in batches[rt.rank :: rt.world]:
        with rt.autocast():
            total[0] += model(x.to(rt.device), y.to(rt.device))[1].double() * y.numel()
        total[1] += y.numel()
    if rt.world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


@dataclass
class Run:
    """One training run's state: made by `setup`, moved on by `resume` and `optimisation_step`."""

    config: TrainConfig
    rt: Runtime
    model: GPT
    optimizer: torch.optim.AdamW
    sampler: Sampler
    eval_batches: list
    meta: dict[str, Any]
    out_dir: str
    tokenizer_sha256: str
    net: torch.nn.Module | None = None  # what forward and backward go through: the model, compiled and/or in DDP
    start: int = 0  # the first step to run (the resumed checkpoint's step)
    last_good: str | None = None  # the newest checkpoint on disk, named when the loss diverges

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.out_dir, "metrics.jsonl")

    @property
    def val_tokens(self) -> int:
        """Target tokens one evaluation sees (each once)."""
        return sum(y.numel() for _, y in self.eval_batches)

    @property
    def tokens_per_step(self) -> int:
        c = self.config
        return c.batch_size * c.grad_accum * self.model.config.block_size * self.rt.world


def setup(config: TrainConfig, tokens: str, tokenizer_json: str, out_dir: str) -> Run:
    """Runtime, model (initialised from `seed`), optimizer, training and validation batches, checkpoint metadata."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rt = runtime(config)
    manifest = check_tokenizer(tokens, tokenizer_json)
    model_config = config.model_shape(manifest["vocab_size"])
    torch.manual_seed(config.seed)
    model = GPT(model_config).to(rt.device)
    model.gradient_checkpointing = config.gradient_checkpointing
    optimizer = make_optimizer(model, config, fused=rt.device.type == "cuda")
    sampler = open_windows(tokens, "train", model_config.block_size, config.seed, config.mixture)
    validation = open_windows(tokens, "validation", model_config.block_size, config.seed)
    # eval_batches counts global batches: the same validation windows whatever the split into ranks and micro-batches;
    # consecutive and non-overlapping, so none is seen twice (fewer when the split is small).
    eval_batches = validation.consecutive(config.eval_batches * config.grad_accum * rt.world, config.batch_size)
    meta = {
        "model": model_config.to_dict(),
        "train": config.model_dump(mode="json"),
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "tokens": manifest["path"],
    }
    return Run(config, rt, model, optimizer, sampler, eval_batches, meta, out_dir, manifest["tokenizer_sha256"])


def resume(run: Run) -> None:
    """Continue from the output directory's newest checkpoint that reads back whole, if any (the one latest.json
    names, else an older one with a warning): weights, optimizer, RNG state and step."""
    loaded = checkpoint.load_newest(run.out_dir)
    if loaded is None:
        return
    checkpoint.check_compatible(loaded.path, run.meta["model"], run.tokenizer_sha256, loaded.meta)
    run.model.load_state_dict(loaded.weights)
    state = loaded.trainer
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and run.rt.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], run.rt.device)
    run.start, run.last_good = state["step"], loaded.path


def prepare(run: Run) -> None:
    """Create the output directory, drop metrics written after the resumed checkpoint, then compile and wrap the
    model for DDP."""
    if run.rt.main:
        os.makedirs(run.out_dir, exist_ok=True)
        _truncate_metrics(run.metrics_path, run.start)
    net: torch.nn.Module = run.model
    if run.config.compile:
        net = torch.compile(net)
    if run.rt.world > 1:
        device_ids = [run.rt.device.index] if run.rt.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    run.net = net


def optimisation_step(run: Run, step: int) -> float:
    """One optimizer step (0-based `step`): schedule, accumulated micro-batches, divergence check, clipping,
    AdamW. Returns the step's loss (the mean over ranks)."""
    config, rt, optimizer = run.config, run.rt, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, config)
    total = torch.zeros((), device=rt.device)
    for micro in range(config.grad_accum):
        x, y = run.sampler.batch(step, micro, config.batch_size, rt.rank, rt.world, config.grad_accum)
        sync = micro == config.grad_accum - 1 or rt.world == 1  # DDP all-reduces gradients only on the last one
        with contextlib.nullcontext() if sync else run.net.no_sync(), rt.autocast():
            loss = run.net(x.to(rt.device), y.to(rt.device))[1] / config.grad_accum
        loss.backward()
        total += loss.detach()
    if rt.world > 1:
        dist.all_reduce(total, op=dist.ReduceOp.AVG)
    loss_value = total.item()
    if not math.isfinite(loss_value):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(
            f"loss became {loss_value} at step {step + 1}; stopped. Last good checkpoint: {run.last_good or 'none'} "
            "(lower lr, raise warmup_steps or enable grad_clip)"
        )
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value


class Throughput:
    """Tokens per second since the previous reading."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.tick = time.perf_counter()

    def read(self, steps: int) -> float:
        elapsed, self.tick = time.perf_counter() - self.tick, time.perf_counter()
        return round(self.tokens_per_step * steps / max(elapsed, 1e-9), 1)


def save_checkpoint(run: Run, step: int) -> None:
    """Rank 0 writes checkpoint `step` (the others hold the same state)."""
    if run.rt.main:
        run.last_good = checkpoint.save(
            run.out_dir, step, run.model, run.optimizer, run.meta, run.config.keep_checkpoints
        )


def log(run: Run, record: dict[str, Any]) -> None:
    """Append one step's record to metrics.jsonl (rank 0)."""
    if run.rt.main:
        with open(run.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def finish(run: Run, done: int, loss_value: float) -> dict[str, Any]:
    """Draw the loss curve and summarise the run; under DDP, wait for every rank."""
    config = run.config
    if run.rt.main:
        plot_curve(run.metrics_path, os.path.join(run.out_dir, "loss.png"))
    trained = run.start < config.max_steps
    summary = {
        "path": os.path.abspath(run.out_dir),
        "checkpoint": checkpoint.latest(run.out_dir),
        "parameters": run.model.num_parameters(),
        "steps": done,
        "final_train_loss": round(loss_value, 4) if trained else None,
        "final_val_loss": _last_val_loss(run.metrics_path),
        "val_tokens": run.val_tokens,
        "tokenizer_sha256": run.tokenizer_sha256,
    }
    if isinstance(run.sampler, MixtureSampler):  # how often max_steps repeats each source
        windows = config.batch_size * config.grad_accum * run.rt.world
        summary["mixture"] = run.sampler.epochs(config.max_steps, windows)
    if run.rt.world > 1:
        dist.barrier()
    return summary


def train(
    config: TrainConfig, tokens: str, tokenizer_json: str, out_dir: str, stop_at: int | None = None
) -> dict[str, Any]:
    """Train (resuming from `out_dir`'s latest checkpoint when there is one); returns a summary.

    `stop_at` ends the run early after that step with a checkpoint (a time-boxed job); running again with the
    same configuration continues exactly where it stopped.
    """
    run = setup(config, tokens, tokenizer_json, out_dir)
    resume(run)
    prepare(run)
    throughput = Throughput(run.tokens_per_step)
    loss_value, done = float("nan"), run.start
    for step in range(run.start, config.max_steps):
        loss_value = optimisation_step(run, step)
        done = step + 1
        last = done == config.max_steps
        record: dict[str, Any] = {"step": done, "loss": round(loss_value, 6), "lr": run.optimizer.param_groups[0]["lr"]}
        if done % config.log_interval == 0 or last:
            record["tokens_per_s"] = throughput.read(config.log_interval)
        if done % config.eval_interval == 0 or last:
            record["val_loss"] = round(evaluate_loss(run.model, run.eval_batches, run.rt), 6)
            record["val_tokens"] = run.val_tokens
        if "val_loss" in record or done == stop_at:
            save_checkpoint(run, done)
        log(run, record)
        if done == stop_at:
            break
    return finish(run, done, loss_value)


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
