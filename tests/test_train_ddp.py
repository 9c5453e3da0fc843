"""DistributedDataParallel on CPU: `torchrun --nproc_per_node 2 -m tokenmill train CONFIG` (gloo) follows the
single-process run with the same global batch.

Not bitwise: each rank sums its half of the batch, then gloo averages the two halves' gradients; one process sums
all eight rows at once. Floating-point addition is not associative, so the last bits differ and the difference
can grow a little over the steps. Measured on the 12-step tiny run: at most 1e-6 apart (one unit of the 6 decimals
metrics.jsonl keeps) in train and validation loss, 1.2e-7 in the final weights; the test allows 1e-4.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest_train import TINY, CharRun, losses, shared_char_run, train_tiny
from safetensors.torch import load_file

from tokenmill.train import checkpoint

TORCHRUN = Path(sys.executable).parent / "torchrun"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def char_run(client, tmp_path_factory) -> CharRun:
    return shared_char_run(client, tmp_path_factory)


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(char_run, tmp_path):
    if not TORCHRUN.exists():
        pytest.skip(f"{TORCHRUN} is absent")
    config = tmp_path / "train.yaml"
    spec = {**TINY, "batch_size": TINY["batch_size"] // 2, "threads": 1}
    spec |= {"tokens": char_run.tokens, "tokenizer": char_run.tokenizer_json, "output": str(tmp_path / "ddp")}
    config.write_text(yaml.safe_dump(spec))
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "tokenmill", "train", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(re.search(r"^\{.*?^\}", done.stderr, re.DOTALL | re.MULTILINE).group())
    assert summary["steps"] == 12

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_tiny(char_run, tmp_path / "single", batch_size=TINY["batch_size"])
    finally:
        torch.set_num_threads(before)
    ddp, single = losses(tmp_path / "ddp/metrics.jsonl"), losses(tmp_path / "single/metrics.jsonl")
    assert [r["step"] for r in ddp] == list(range(1, 13))  # one metrics file, written by rank 0 only
    assert [r["step"] for r in ddp if "val_loss" in r] == [r["step"] for r in single if "val_loss" in r] == [6, 12]
    for a, b in zip(ddp, single):
        assert a["lr"] == b["lr"]
        assert abs(a["loss"] - b["loss"]) <= TOLERANCE, (a, b)
        assert abs(a.get("val_loss", 0) - b.get("val_loss", 0)) <= TOLERANCE, (a, b)
    # The weights end up where the single process put them, too.
    ours = load_file(os.path.join(checkpoint.latest(str(tmp_path / "ddp")), "model.safetensors"))
    theirs = load_file(os.path.join(checkpoint.latest(str(tmp_path / "single")), "model.safetensors"))
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-4
