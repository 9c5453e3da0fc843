"""Training throughput: tokens per second and model FLOPs utilisation (MFU) of tokenmill's GPT.

First the machine's matmul peak is measured (a large square matmul, float32 and bfloat16, best of a few
repeats), then two shapes are trained for a few steps on random token ids, in float32 and under bfloat16
autocast, with the trainer's own optimizer, clipping and autocast (the data pipeline is left out: it is not what
limits a step):

    reference   n_layer 4, n_head 4, n_embd 128, block 64, batch 12, vocab 65    (nanoGPT's CPU "baby GPT")
    6x384       n_layer 6, n_head 6, n_embd 384, block 256, batch 8, vocab 8192

MFU = F * tokens/s / measured peak, where F is the model's own count of training FLOPs per token,
`GPT.flops_per_token()`: 6N (N counts every parameter once, the tied embedding included) plus the attention
scores, 12 * n_layer * n_embd * block_size (PaLM's estimate, as nanoGPT's MFU). On CPU the default is one thread
(torch.set_num_threads(1)) for per-core figures. Other processes on a busy machine take the core part of the
time, so the CPU figures are given both per wall-clock second and per second of this process's CPU time (the
peak and MFU use the latter); the load average and the CPU/wall ratio show how busy the machine was.

    .venv/bin/python benchmarks/train.py                     # CPU, 1 thread, float32 and bfloat16
    .venv/bin/python benchmarks/train.py --device cuda       # a GPU (written for it, not run here)
    .venv/bin/python benchmarks/train.py --threads 2 --steps 20 --only reference

The "nanoGPT (issue)" column holds the figures recorded in the training issue for nanoGPT on one CPU core
(about 9,900 tokens/s for the reference shape, about 710 tokens/s or 59 GFLOP/s for 6x384). They are quoted,
not re-measured here: nanoGPT's code is not available offline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass

import torch

from tokenmill.train.config import TrainConfig
from tokenmill.train.model import GPT, GPTConfig
from tokenmill.train.trainer import Runtime, make_optimizer

# nanoGPT on one CPU core, float32, as recorded in the issue (not measured by this script).
ISSUE_NANOGPT_TOKENS_PER_S = {"reference": 9_900, "6x384": 710}


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    vocab_size: int


SHAPES = (
    Shape("reference", 4, 4, 128, 64, 12, 65),
    Shape("6x384", 6, 6, 384, 256, 8, 8192),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, seconds: float = 1.0) -> float:
    """Best GFLOP/s of a size x size matmul over a few timed rounds of about `seconds / 3` each (per second of
    this process's CPU time on a CPU, so that other processes' share of the core does not count)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):  # warm-up: oneDNN / cuBLAS pick their kernels on the first calls
        a @ b
    synchronize(device)
    burst = 1 if device.type == "cpu" else 10  # GPU calls are asynchronous: time bursts between synchronizations
    best = 0.0
    for _ in range(3):
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds / 3:
            for _ in range(burst):
                a @ b
            synchronize(device)
            count += burst
        elapsed = time.process_time() - cpu if device.type == "cpu" else time.perf_counter() - start
        best = max(best, 2 * size**3 * count / elapsed / 1e9)
    return best


def train_speed(shape: Shape, device: torch.device, dtype: torch.dtype, steps: int, warmup: int) -> dict:
    """Tokens/s of full training steps (forward, backward, clipping, AdamW) on random ids."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=shape.vocab_size,
        block_size=shape.block_size,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
    )
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, TrainConfig(), fused=device.type == "cuda")
    rt = Runtime(device, dtype if dtype != torch.float32 else None)
    data = torch.randint(0, shape.vocab_size, (steps + warmup, shape.batch_size, shape.block_size + 1))

    def step(i: int) -> None:
        batch = data[i].to(device)
        with rt.autocast():
            _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(warmup, warmup + steps):
        step(i)
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = steps * shape.batch_size * shape.block_size
    # On a CPU the rate per second of this process's CPU time is what an idle core would give (the wall-clock rate
    # counts the time other processes held the core); on a GPU it is the wall-clock rate.
    busy = cpu if device.type == "cpu" else wall
    return {
        "parameters": model.num_parameters(),
        "tokens_per_s": tokens / wall,
        "tokens_per_busy_s": tokens / busy,
        "gflops": model.flops_per_token() * tokens / busy / 1e9,
        "cpu_per_wall": cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU only; default 1: per core)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default: 30 CPU, 50 GPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--only", choices=[s.name for s in SHAPES], help="benchmark one shape")
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s)"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here, as on the CPU
        hardware = torch.cuda.get_device_name(device)
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    load_before = os.getloadavg()
    print(f"torch {torch.__version__} on {device.type}: {hardware}")
    print(f"load average before: {load_before[0]:.2f} (1 min) on {os.cpu_count()} CPUs")

    size = 1024 if device.type == "cpu" else 8192
    peaks = {name: matmul_peak(device, DTYPES[name], size) for name in dtypes}
    for name, peak in peaks.items():
        print(f"measured matmul peak, {name} {size}x{size}: {peak:,.1f} GFLOP/s")

    shapes = [s for s in SHAPES if args.only in (None, s.name)]
    results = []
    header = (
        f"{'shape':<10} {'dtype':<9} {'params':>11} {'tokens/s':>9} {'tok/cpu-s':>9} {'GFLOP/s':>8} {'MFU':>6} "
        f"{'cpu/wall':>8} {'nanoGPT (issue)':>15} {'ratio':>6} {'ratio cpu':>9}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for shape in shapes:
        steps = args.steps or (30 if device.type == "cpu" else 50)
        if device.type == "cpu" and shape.name == "6x384" and args.steps is None:
            steps = 8  # about 1.5 s a step on one idle core
        for name in dtypes:
            speed = train_speed(shape, device, DTYPES[name], steps, args.warmup)
            speed |= {"shape": shape.name, "dtype": name, "steps": steps, "mfu": speed["gflops"] / peaks[name]}
            # The issue's figures are float32 on one CPU core: compared only with the same.
            same_setting = device.type == "cpu" and name == "float32" and args.threads == 1
            reference = ISSUE_NANOGPT_TOKENS_PER_S.get(shape.name) if same_setting else None
            speed["nanogpt_issue_tokens_per_s"] = reference
            rates = (speed["tokens_per_s"], speed["tokens_per_busy_s"])
            ratios = [f"{rate / reference:.2f}" if reference else "-" for rate in rates]
            print(
                f"{shape.name:<10} {name:<9} {speed['parameters']:>11,} {speed['tokens_per_s']:>9,.0f} "
                f"{speed['tokens_per_busy_s']:>9,.0f} {speed['gflops']:>8.1f} {speed['mfu']:>6.1%} "
                f"{speed['cpu_per_wall']:>8.2f} {reference or '-':>15} {ratios[0]:>6} {ratios[1]:>9}"
            )
            results.append(speed)
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    if device.type == "cpu":
        print(
            "tokens/s is wall-clock; tok/cpu-s, GFLOP/s and MFU are per second of this process's CPU time (what an "
            "idle core would give); cpu/wall below 1 means other processes held the core part of the time"
        )
        if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) - 0.5:
            print("note: other processes competed for the CPUs during this run; the wall-clock figures are low")
    print(
        "nanoGPT (issue): tokens/s recorded in the training issue for nanoGPT, float32, one CPU core; quoted, not "
        "re-measured (nanoGPT's code is not available offline). ratio = ours / theirs (wall-clock, and per CPU "
        "second), float32 rows only."
    )
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"device": hardware, "peaks_gflops": peaks, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
