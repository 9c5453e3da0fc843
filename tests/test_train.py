"""Training: the model, the data windows, the trainer (schedule, clipping, accumulation, precision, checkpoints,
exact resume), evaluation and sampling, Hugging Face export, the pipeline stages and bad input.

Every run is tiny (2 layers, 32 wide, 12 steps on one CPU thread) on token shards made by a real pipeline run
over a slice of tinyshakespeare (conftest_train.char_run).
"""

from __future__ import annotations

import ast
import errno
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from conftest_train import TINY, CharRun, losses, shared_char_run, train_tiny
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenmill
from tokenmill.tokenize.token_splits import TokenizerMismatch, open_split
from tokenmill.train import checkpoint
from tokenmill.train.checkpoint import CheckpointMismatch
from tokenmill.train.config import TrainConfig
from tokenmill.train.data import WindowSampler
from tokenmill.train.model import GPT, PRESETS, GPTConfig, rotary_tables, rotate
from tokenmill.train.trainer import TrainingDiverged, learning_rate, make_optimizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these models are tiny, and on a busy 2-core machine two threads mostly wait on each
    other (a 12-step run takes ~0.3 s on one thread, several seconds on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def char_run(client, tmp_path_factory) -> CharRun:
    return shared_char_run(client, tmp_path_factory)


@pytest.fixture(scope="module")
def runs(char_run: CharRun, tmp_path_factory):
    """Uninterrupted tiny runs, made on first use and shared: runs(name, **overrides) -> (directory, losses)."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, tuple[Path, list[dict[str, Any]]]] = {}

    def get(name: str, **overrides: Any) -> tuple[Path, list[dict[str, Any]]]:
        if name not in made:
            train_tiny(char_run, root / name, **overrides)
            made[name] = (root / name, losses(root / name / "metrics.jsonl"))
        return made[name]

    return get


def tiny_model(**overrides: Any) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **overrides}))


# --- the model ---------------------------------------------------------------------------------------------------


def test_model_is_llama_style_without_biases():
    model = tiny_model()
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if "bias" in n]
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    norms = [n for n in names if n.endswith("layernorm.weight") or n == "norm.weight"]
    assert len(norms) == 2 * 2 + 1  # two RMSNorms a block, one final
    block = model.layers[0]
    assert {n for n, _ in block.mlp.named_children()} == {"gate_proj", "up_proj", "down_proj"}  # SwiGLU
    assert GPTConfig(n_embd=128, n_head=4).mlp_hidden == 352  # 8/3 x 128 rounded up to a multiple of 32
    x = torch.randn(3, 5, 32)
    gated = block.mlp.down_proj(F.silu(block.mlp.gate_proj(x)) * block.mlp.up_proj(x))
    torch.testing.assert_close(block.mlp(x), gated)
    # RMSNorm: unit root-mean-square, no centring (a constant offset is not removed as LayerNorm would).
    normed = block.input_layernorm(x + 3.0)
    torch.testing.assert_close(normed.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4, rtol=0)
    assert normed.mean().abs() > 0.5


def test_output_layer_is_the_input_embedding():
    model = tiny_model()
    big = [p for p in model.parameters() if p.shape == (50, 32)]
    assert len(big) == 1 and big[0] is model.embed_tokens.weight
    assert not [k for k in model.state_dict() if "lm_head" in k]
    # Tokens 20..49 never appear in the input, so only the (tied) output projection can give their rows a gradient.
    idx = torch.randint(0, 10, (2, 16))
    model(idx, torch.randint(0, 10, (2, 16)))[1].backward()
    assert model.embed_tokens.weight.grad[20:].abs().sum() > 0


def test_attention_goes_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    tiny_model(n_layer=3)(torch.randint(0, 50, (1, 8)))
    assert len(calls) == 3 and all(c["is_causal"] for c in calls)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(0, 23))
def test_rotary_keeps_norms_and_sees_only_relative_positions(seed, m, n, shift):
    generator = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 16, generator=generator)
    cos, sin = rotary_tables(16, 64, 10000.0)

    def at(x: torch.Tensor, position: int) -> torch.Tensor:
        return rotate(x, cos[position], sin[position])

    torch.testing.assert_close(at(q, m).norm(), q.norm())
    torch.testing.assert_close(at(q, m) @ at(k, n), at(q, m + shift) @ at(k, n + shift), atol=1e-4, rtol=1e-4)


def expected_parameters(vocab: int, n_layer: int, n_embd: int, hidden: int) -> int:
    attention, mlp, norms = 4 * n_embd * n_embd, 3 * n_embd * hidden, 2 * n_embd
    return vocab * n_embd + n_layer * (attention + mlp + norms) + n_embd


@pytest.mark.parametrize(
    ("preset", "vocab", "count"),
    [("tiny", 65, 812_288), ("tiny", 8192, 1_852_544), ("small", 8192, 13_767_552), ("base", 8192, 91_245_312)],
)
def test_preset_parameter_counts(preset, vocab, count):
    with torch.device("meta"):  # no memory, no initialisation: only shapes
        model = GPT(GPTConfig(vocab_size=vocab, **PRESETS[preset]))
    c = model.config
    assert model.num_parameters() == count == expected_parameters(vocab, c.n_layer, c.n_embd, c.mlp_hidden)
    assert TrainConfig(model=preset).model_shape(vocab) == c


def test_model_is_causal_and_checks_length():
    model = tiny_model().eval()
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (idx[:, 9] + 1) % 50
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :9], after[:, :9], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, 9:], after[:, 9:])
    with pytest.raises(ValueError, match="sequence of 17 tokens exceeds block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_hf_mapping_comes_from_the_model_and_its_config():
    """Export asks GPTConfig.hf_config and GPT.hf_state_dict; transformers builds exactly these tensors from it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_model(n_head=4)
    hf = LlamaForCausalLM(LlamaConfig(**model.config.hf_config()))
    ours = model.hf_state_dict()
    theirs = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied to the embedding
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert hf.config.head_dim == model.config.head_dim == 8


def test_flops_per_token_is_6n_plus_attention():
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=65, **PRESETS["tiny"]))
    attention = 12 * 4 * 128 * 64  # n_layer x n_embd x block_size
    assert model.flops_per_token() == 6 * model.num_parameters() + attention == 5_266_944


def test_inconsistent_shapes_are_rejected():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="not divisible by n_head"):
        TrainConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="Extra inputs"):
        TrainConfig(learning_rate=1e-3)


# --- the data ----------------------------------------------------------------------------------------------------


def test_windows_are_deterministic_and_cut_from_the_streams(char_run):
    import numpy as np

    split = open_split(char_run.tokens, "train")
    x, y = WindowSampler(split, 32, seed=7).batch(step=3, micro=0, batch_size=6)
    again, _ = WindowSampler(split, 32, seed=7).batch(step=3, micro=0, batch_size=6)
    assert torch.equal(x, again)
    assert not torch.equal(x, WindowSampler(split, 32, seed=8).batch(3, 0, 6)[0])
    assert not torch.equal(x, WindowSampler(split, 32, seed=7).batch(4, 0, 6)[0])
    assert x.shape == y.shape == (6, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    for row in torch.cat([x, y[:, -1:]], dim=1).numpy():
        assert any(
            (np.lib.stride_tricks.sliding_window_view(stream, 33) == row).all(axis=1).any() for stream in split.arrays
        )


def test_rank_and_micro_batch_slices_make_the_global_batch(char_run):
    sampler = WindowSampler(open_split(char_run.tokens, "train"), 32, seed=1)
    whole_x, whole_y = sampler.batch(step=5, micro=0, batch_size=8)
    ddp = [sampler.batch(5, 0, 4, rank=r, world=2) for r in range(2)]
    accum = [sampler.batch(5, m, 4, accum=2) for m in range(2)]
    both = [sampler.batch(5, m, 2, rank=r, world=2, accum=2) for m in range(2) for r in range(2)]
    for parts in (ddp, accum, both):
        assert torch.equal(torch.cat([p[0] for p in parts]), whole_x)
        assert torch.equal(torch.cat([p[1] for p in parts]), whole_y)


def test_validation_windows_are_fixed(char_run):
    split = open_split(char_run.tokens, "validation")
    first = WindowSampler(split, 32, seed=3).fixed(batches=3, batch_size=4)
    second = WindowSampler(split, 32, seed=3).fixed(batches=3, batch_size=4)
    assert len(first) == 3 and all(x.shape == (4, 32) for x, _ in first)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    regrouped = WindowSampler(split, 32, seed=3).fixed(batches=6, batch_size=2)
    assert torch.equal(torch.cat([x for x, _ in regrouped]), torch.cat([x for x, _ in first]))


def test_block_longer_than_every_stream_is_a_clear_error(char_run, tmp_path):
    longest = max(len(a) for a in open_split(char_run.tokens, "train").arrays)
    with pytest.raises(ValueError, match=f"needs streams of at least {longest + 1} tokens; the longest has {longest}"):
        WindowSampler(open_split(char_run.tokens, "train"), longest, seed=0)
    with pytest.raises(ValueError, match="block_size 200000 needs streams of at least 200001 tokens"):
        train_tiny(char_run, tmp_path, block_size=200_000)


# --- the trainer -------------------------------------------------------------------------------------------------


def test_weight_decay_only_on_linear_matrices():
    model = tiny_model()
    decay, no_decay = make_optimizer(model, TrainConfig(weight_decay=0.1), fused=False).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decayed == {n for n, p in model.named_parameters() if n.endswith("proj.weight")}
    assert spared == {n for n, _ in model.named_parameters() if "norm" in n} | {"embed_tokens.weight"}
    # The model decides by module type, not by parameter name: a linear layer under any name decays.
    model.extra = torch.nn.Linear(32, 32, bias=False)
    decay, no_decay = model.optimizer_groups(0.1)
    assert any(p is model.extra.weight for p in decay["params"])
    assert not any(p is model.extra.weight for p in no_decay["params"])


def test_warmup_then_cosine_schedule():
    config = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert learning_rate(0, config) == pytest.approx(1e-4)  # linear warmup from lr / warmup_steps
    assert learning_rate(4, config) == pytest.approx(5e-4)
    assert learning_rate(9, config) == pytest.approx(1e-3)
    assert learning_rate(10, config) == pytest.approx(1e-3)  # the cosine starts at the peak
    assert learning_rate(60, config) == pytest.approx(5.5e-4)  # halfway: the mean of peak and floor
    assert learning_rate(110, config) == pytest.approx(1e-4)
    assert learning_rate(500, config) == pytest.approx(1e-4)  # past max_steps: the floor
    assert learning_rate(110, TrainConfig(lr=2e-3, warmup_steps=10, max_steps=110)) == pytest.approx(2e-4)


@settings(deadline=None)
@given(step=st.integers(0, 400), warmup=st.integers(0, 50), max_steps=st.integers(1, 300))
def test_schedule_stays_between_floor_and_peak_and_decays(step, warmup, max_steps):
    config = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=warmup, max_steps=max_steps)
    assert 0 < learning_rate(step, config) <= 1e-3 + 1e-12
    if step >= warmup:
        assert 1e-5 - 1e-12 <= learning_rate(step + 1, config) <= learning_rate(step, config) + 1e-12


def test_gradients_are_clipped(char_run, tmp_path, monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = real(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        calls.append((max_norm, before.item(), after.item()))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train_tiny(char_run, tmp_path / "clipped", max_steps=4, grad_clip=0.05)
    assert len(calls) == 4 and all(max_norm == 0.05 for max_norm, _, _ in calls)
    assert all(before > 0.05 and after <= 0.05 * 1.0001 for _, before, after in calls)
    calls.clear()
    train_tiny(char_run, tmp_path / "unclipped", max_steps=4, grad_clip=0)
    assert calls == []


def assert_same_trajectory(a: list[dict], b: list[dict], tolerance: float) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "val_loss"):
            assert (key in x) == (key in y)
            if key in x:
                assert abs(x[key] - y[key]) <= tolerance, (x, y)


def test_grad_accumulation_matches_the_larger_batch(runs):
    # Measured: at most 1e-6 apart (one unit of the 6 decimals metrics.jsonl keeps); only summation order differs.
    _, big = runs("batch8", batch_size=8)
    _, accumulated = runs("batch4x2", batch_size=4, grad_accum=2)
    assert_same_trajectory(big, accumulated, tolerance=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(runs, monkeypatch):
    import tokenmill.train.model as model_module

    used = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: used.append(1) or real(*a, **k))
    _, plain = runs("batch8", batch_size=8)
    _, recomputed = runs("batch8-checkpointing", batch_size=8, gradient_checkpointing=True)
    assert used, "gradient checkpointing was not used"
    assert_same_trajectory(plain, recomputed, tolerance=1e-5)


def test_bf16_autocast_on_cpu(runs, monkeypatch):
    dtypes = []
    real = GPT.forward

    def spy(self, idx, targets=None):
        logits, loss = real(self, idx, targets)
        if self.training:
            dtypes.append(logits.dtype)
        return logits, loss

    monkeypatch.setattr(GPT, "forward", spy)
    _, bf16 = runs("bf16", dtype="bfloat16")
    assert set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(r["loss"]) for r in bf16) and bf16[-1]["loss"] < bf16[0]["loss"] - 0.2
    _, fp32 = runs("baseline")
    assert bf16 != fp32  # it really ran in another precision


def test_metrics_curve_and_checkpoint_files(runs):
    directory, records = runs("baseline")
    assert [r["step"] for r in records] == list(range(1, 13))
    raw = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in raw if "tokens_per_s" in r] == [3, 6, 9, 12]
    assert [r["step"] for r in raw if "val_loss" in r] == [6, 12]
    assert all(set(r) <= {"step", "loss", "lr", "tokens_per_s", "val_loss", "val_tokens"} for r in raw)
    assert all(r["val_tokens"] == 2 * 4 * 32 for r in raw if "val_loss" in r)  # eval_batches 2 x batch 4 x block 32
    assert records[0]["lr"] == pytest.approx(1e-3)  # warmup step 1 of 3 towards 3e-3
    assert (directory / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    root = directory / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-0000006", "step-0000012"]
    latest = checkpoint.latest(str(directory))
    assert latest == str(root / "step-0000012")
    assert sorted(os.listdir(latest)) == ["meta.json", "model.safetensors", "trainer.pt"]
    meta = checkpoint.read_meta(latest)
    assert meta["step"] == 12 and meta["model"]["n_embd"] == 32 and meta["train"]["max_steps"] == 12


def only_plain_data(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and only_plain_data(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(only_plain_data(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


def test_checkpoints_load_without_unpickling_objects(runs):
    from safetensors.torch import load_file

    directory, _ = runs("baseline")
    latest = checkpoint.latest(str(directory))
    state = torch.load(os.path.join(latest, "trainer.pt"), weights_only=True)
    assert only_plain_data(state)
    assert set(state) >= {"optimizer", "torch_rng", "step"} and state["step"] == 12
    weights = load_file(os.path.join(latest, "model.safetensors"))
    model = GPT(GPTConfig(**checkpoint.read_meta(latest)["model"]))
    assert set(weights) == set(model.state_dict())
    model.load_state_dict(weights)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"dropout": 0.1}, {"dropout": 0.1, "grad_accum": 2}],
    ids=["plain", "dropout", "dropout-accum2"],
)
def test_stop_and_resume_is_exact(char_run, runs, tmp_path, overrides):
    name = "-".join(f"{k}{v}" for k, v in overrides.items()) or "baseline"
    _, uninterrupted = runs(name, **overrides)
    summary = train_tiny(char_run, tmp_path, stop_at=5, **overrides)
    assert summary["steps"] == 5 and summary["checkpoint"].endswith("step-0000005")
    assert [r["step"] for r in losses(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    summary = train_tiny(char_run, tmp_path, **overrides)
    assert summary["steps"] == 12
    assert losses(tmp_path / "metrics.jsonl") == uninterrupted  # bitwise: every loss, val_loss and lr


def test_resume_at_the_end_trains_no_more(char_run, runs, tmp_path):
    train_tiny(char_run, tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    summary = train_tiny(char_run, tmp_path)
    assert summary["steps"] == 12 and summary["final_train_loss"] is None
    assert (tmp_path / "metrics.jsonl").read_text() == before


# --- eval, generate, export (the command line) -------------------------------------------------------------------


def cli(*args: str) -> Any:
    """`tokenmill ARGS` in this process (JSON reports go to stderr, generated text to stdout)."""
    from tokenmill.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_eval_reports_loss_perplexity_and_bits_per_byte(char_run, runs):
    directory, records = runs("baseline")
    args = ["eval", str(directory), "--tokens", char_run.tokens, "--tokenizer", char_run.tokenizer_json]
    result = cli(*args, "--batches", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stderr)
    assert report["step"] == 12 and report["checkpoint"].endswith("step-0000012")
    # The same fixed validation windows as training's last evaluation (eval_batches 2 x batch_size 4).
    assert report["val_loss"] == pytest.approx(records[-1]["val_loss"], abs=1e-4)
    assert report["perplexity"] == pytest.approx(math.exp(report["val_loss"]), rel=1e-3)
    assert report["tokens"] == 2 * 4 * 32
    # Characters of ASCII text are one byte each; the few document separators stand for no bytes.
    bits_per_token = report["val_loss"] / math.log(2)
    assert bits_per_token - 1e-4 <= report["bits_per_byte"] <= bits_per_token * 1.01  # both rounded to 4 places
    assert report["val_tokens"] == report["tokens"]


def test_generate_is_seeded_and_uses_the_trained_tokenizer(char_run, runs):
    from tokenizers import Tokenizer

    from tokenmill.train.evaluate import generate

    directory, _ = runs("baseline")
    args = ["generate", str(directory), "--tokenizer", char_run.tokenizer_json, "--prompt", "ROMEO:"]
    first = cli(*args, "--max-new-tokens", "40", "--seed", "1", "--top-p", "0.9")
    assert first.exit_code == 0, first.output
    assert first.stdout == cli(*args, "--max-new-tokens", "40", "--seed", "1", "--top-p", "0.9").stdout
    assert first.stdout != cli(*args, "--max-new-tokens", "40", "--seed", "2", "--top-p", "0.9").stdout
    assert first.stdout.startswith("ROMEO:")
    text = first.stdout[len("ROMEO:") : -1]
    assert 0 < len(text) <= 40  # one character a token (the separator decodes to nothing)
    vocabulary = Tokenizer.from_file(char_run.tokenizer_json).get_vocab()
    assert set(text) <= set(vocabulary)

    # top_k=1, a tiny top_p and a tiny temperature all reduce to greedy decoding, whatever the seed.
    def sample(**kwargs: Any) -> str:
        options = {"max_new_tokens": 20, "top_k": None, "top_p": None, "temperature": 1.0, **kwargs}
        return generate(str(directory), char_run.tokenizer_json, "ROMEO:", **options)

    greedy = sample(top_k=1, seed=1)
    assert greedy == sample(top_k=1, seed=2) == sample(top_p=1e-9, seed=3) == sample(temperature=1e-7, seed=4)
    from tokenmill.train.evaluate import load_model

    model, _ = load_model(str(directory))
    tokenizer = Tokenizer.from_file(char_run.tokenizer_json)
    idx = torch.tensor([tokenizer.encode("ROMEO:").ids])
    with torch.no_grad():
        for _ in range(20):
            idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert greedy == tokenizer.decode(idx[0, 6:].tolist())


def test_export_loads_in_transformers_with_the_same_logits(char_run, runs, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from tokenmill.train.evaluate import load_model

    directory, _ = runs("baseline")
    out = tmp_path / "hf"
    result = cli("export", str(directory), "--tokenizer-dir", char_run.tokenizer_dir, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ours, _ = load_model(str(directory))
    idx = torch.randint(0, ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (hf(idx).logits - ours(idx)[0]).abs().max().item()
    assert difference < 1e-5
    text = "ROMEO: O, she doth teach the torches!\n"
    expected = Tokenizer.from_file(char_run.tokenizer_json).encode(text).ids
    for loaded in (AutoTokenizer.from_pretrained(out), PreTrainedTokenizerFast.from_pretrained(out)):
        assert loaded(text)["input_ids"] == expected
        assert loaded.eos_token == "<|endoftext|>"


# --- bad input ---------------------------------------------------------------------------------------------------


def test_checkpoint_from_another_configuration(char_run, tmp_path):
    train_tiny(char_run, tmp_path, max_steps=3, eval_interval=3)
    with pytest.raises(CheckpointMismatch) as caught:
        train_tiny(char_run, tmp_path, n_embd=64)
    message = str(caught.value)
    assert "n_embd: checkpoint 32 vs run 64" in message and "mlp_hidden" in message
    assert "n_layer" not in message


def test_shards_made_with_another_tokenizer(char_run, tmp_path):
    from tokenizers import Tokenizer

    other = Tokenizer.from_file(char_run.tokenizer_json)
    other.add_special_tokens(["<|other|>"])
    other.save(str(tmp_path / "other.json"))
    config = TrainConfig(**TINY)
    from tokenmill.train.trainer import train

    with pytest.raises(TokenizerMismatch, match="is not the tokenizer these shards were made with"):
        train(config, char_run.tokens, str(tmp_path / "other.json"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(char_run, runs, tmp_path, monkeypatch):
    real = GPT.forward
    training_calls = []

    def poisoned(self, idx, targets=None):
        logits, loss = real(self, idx, targets)
        if self.training:
            training_calls.append(1)
            if len(training_calls) >= 9:  # from step 9 on
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 9; stopped\. Last good checkpoint: .*step-0000006"
    ):
        train_tiny(char_run, tmp_path)
    latest = checkpoint.latest(str(tmp_path))
    assert latest.endswith("step-0000006")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step-0000006"]
    weights = GPT(GPTConfig(**checkpoint.read_meta(latest)["model"]))
    checkpoint.load_weights(latest, weights)
    assert all(torch.isfinite(p).all() for p in weights.parameters())
    assert [r["step"] for r in losses(tmp_path / "metrics.jsonl")] == list(range(1, 9))
    # Fixed (here: the poison removed), the run resumes from step 6 and ends as if nothing had happened.
    monkeypatch.setattr(GPT, "forward", real)
    train_tiny(char_run, tmp_path)
    assert losses(tmp_path / "metrics.jsonl") == runs("baseline")[1]


@pytest.mark.parametrize("target", ["save_file", "torch.save"])
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(char_run, runs, tmp_path, monkeypatch, target):
    saves = []
    real = checkpoint.save_file if target == "save_file" else torch.save

    def fill_disk(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"partial")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(obj, path, *args, **kwargs)

    if target == "save_file":
        monkeypatch.setattr(checkpoint, "save_file", fill_disk)
    else:
        monkeypatch.setattr(checkpoint.torch, "save", fill_disk)
    with pytest.raises(OSError) as caught:
        train_tiny(char_run, tmp_path)  # checkpoints at steps 6 and 12: the second one fails
    assert caught.value.errno == errno.ENOSPC
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-0000006"]  # no temporary directory
    assert json.loads((root / "latest.json").read_text())["step"] == 6
    latest = checkpoint.latest(str(tmp_path))
    assert latest == str(root / "step-0000006")
    assert checkpoint.load_trainer_state(latest)["step"] == 6
    checkpoint.load_weights(latest, GPT(GPTConfig(**checkpoint.read_meta(latest)["model"])))
    monkeypatch.undo()
    train_tiny(char_run, tmp_path)  # disk freed: resume from step 6
    assert losses(tmp_path / "metrics.jsonl") == runs("baseline")[1]


def test_train_command_reports_config_errors(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("tokenizer: t.json\noutput: out\n")
    result = cli("train", str(config))
    assert result.exit_code == 1 and "missing key 'tokens'" in result.stderr
    config.write_text("tokens: x\ntokenizer: t.json\noutput: out\nlearning_rate: 0.1\n")
    result = cli("train", str(config))
    assert result.exit_code == 1 and "learning_rate (line 4): unknown key; known: batch_size" in result.stderr


# --- resuming from moved, incomplete and damaged training directories --------------------------------------------


@pytest.fixture
def count_steps(monkeypatch):
    """How many optimizer steps train() runs (a resumed run runs only the rest)."""
    import tokenmill.train.trainer as trainer_module

    counted = []
    real = trainer_module.optimisation_step
    monkeypatch.setattr(trainer_module, "optimisation_step", lambda run, step: counted.append(step) or real(run, step))
    return counted


def test_moved_run_directory_resumes_from_its_own_checkpoint(char_run, runs, tmp_path, count_steps):
    train_tiny(char_run, tmp_path / "first", stop_at=5)
    pointer = json.loads((tmp_path / "first/checkpoints/latest.json").read_text())
    assert pointer == {"step": 5, "path": "checkpoints/step-0000005"}  # relative to the training directory
    shutil.move(tmp_path / "first", tmp_path / "moved")
    count_steps.clear()
    summary = train_tiny(char_run, tmp_path / "moved")
    assert count_steps == list(range(5, 12))  # resumed at step 6, not retrained from scratch
    assert summary["steps"] == 12 and summary["checkpoint"] == str(tmp_path / "moved/checkpoints/step-0000012")
    assert losses(tmp_path / "moved/metrics.jsonl") == runs("baseline")[1]
    # A copy whose latest.json is in the older, absolute form names the original's checkpoint: the copy's own is
    # used (by name), never the other directory's.
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    legacy = {"step": 12, "path": str(tmp_path / "moved/checkpoints/step-0000012")}
    (tmp_path / "copy/checkpoints/latest.json").write_text(json.dumps(legacy))
    assert checkpoint.latest(str(tmp_path / "copy")) == str(tmp_path / "copy/checkpoints/step-0000012")


def test_eval_and_export_from_another_working_directory(char_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_tiny(char_run, Path("run"), max_steps=3, eval_interval=3)  # a relative output directory
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for where in ("../run", str(tmp_path / "run")):
        result = cli(
            "eval", where, "--tokens", char_run.tokens, "--tokenizer", char_run.tokenizer_json, "--batches", "1"
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stderr)["step"] == 3
    result = cli("export", "../run", "--tokenizer-dir", char_run.tokenizer_dir, "--output", "hf")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "elsewhere/hf/config.json").read_text())["tokenmill"]["step"] == 3


def test_missing_latest_json_resumes_from_the_newest_checkpoint(char_run, runs, tmp_path, count_steps):
    train_tiny(char_run, tmp_path, stop_at=9)  # checkpoints at 6 (evaluation) and 9 (stop)
    (tmp_path / "checkpoints/latest.json").unlink()
    count_steps.clear()
    with pytest.warns(checkpoint.CheckpointWarning) as caught:
        train_tiny(char_run, tmp_path)
    message = str(caught[0].message)
    assert "latest.json is missing" in message and message.endswith("checkpoints/step-0000009")
    assert count_steps == [9, 10, 11]
    assert losses(tmp_path / "metrics.jsonl") == runs("baseline")[1]


class RunsShell:
    """A pickled object that runs a shell command when unpickled without weights_only."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def damage(step_dir: Path, how: str, tmp_path: Path) -> str:
    """Damage one checkpoint as a crash, a bad copy or an attacker would; returns the file it names."""
    if how == "truncated-weights":
        data = (step_dir / "model.safetensors").read_bytes()
        (step_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    if how == "truncated-trainer":
        data = (step_dir / "trainer.pt").read_bytes()
        (step_dir / "trainer.pt").write_bytes(data[: len(data) // 3])
        return "trainer.pt"
    if how == "garbage-trainer":  # torch's own error for this suggests weights_only=False
        (step_dir / "trainer.pt").write_bytes(b"\x80\x04not a checkpoint" * 50)
        return "trainer.pt"
    if how == "hostile-trainer":
        state = {"step": 12, "optimizer": {}, "torch_rng": RunsShell(f"touch {tmp_path / 'pwned'}")}
        torch.save(state, step_dir / "trainer.pt")
        return "trainer.pt"
    assert how == "truncated-meta"
    (step_dir / "meta.json").write_text((step_dir / "meta.json").read_text()[:40])
    return "meta.json"


DAMAGE = ["truncated-weights", "truncated-trainer", "garbage-trainer", "hostile-trainer", "truncated-meta"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(char_run, runs, tmp_path, how, count_steps):
    directory, uninterrupted = runs("baseline")
    shutil.copytree(directory, tmp_path / "run")
    bad = damage(tmp_path / "run/checkpoints/step-0000012", how, tmp_path)
    count_steps.clear()
    with pytest.warns(checkpoint.CheckpointWarning) as caught:
        summary = train_tiny(char_run, tmp_path / "run")
    assert [w.category for w in caught] == [checkpoint.CheckpointWarning]  # torch's own warnings are not passed on
    message = str(caught[0].message)
    assert f"step-0000012: {bad}" in message and message.endswith(
        "using the newest complete checkpoint " + str(tmp_path / "run/checkpoints/step-0000006")
    )
    assert "weights_only" not in message and not (tmp_path / "pwned").exists()
    assert count_steps == list(range(6, 12)) and summary["steps"] == 12
    assert losses(tmp_path / "run/metrics.jsonl") == uninterrupted
    checkpoint.load(summary["checkpoint"])  # the damaged checkpoint was written again, whole


def test_no_readable_checkpoint_is_one_clear_error(char_run, runs, tmp_path):
    directory, _ = runs("baseline")
    shutil.copytree(directory, tmp_path / "run")
    for step in ("step-0000006", "step-0000012"):
        damage(tmp_path / "run/checkpoints" / step, "garbage-trainer", tmp_path)
    with pytest.raises(checkpoint.CheckpointCorrupt) as caught:
        train_tiny(char_run, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"no readable checkpoint in {tmp_path / 'run/checkpoints'}: ")
    assert "step-0000012: trainer.pt does not read back" in message and "step-0000006: trainer.pt" in message
    assert "weights_only" not in message and caught.value.__cause__ is None and caught.value.__context__ is None
    # eval needs only the weights, which are intact; once they are gone too it fails in one line.
    args = ["--tokens", char_run.tokens, "--tokenizer", char_run.tokenizer_json, "--batches", "1"]
    assert cli("eval", str(tmp_path / "run"), *args).exit_code == 0
    for step in ("step-0000006", "step-0000012"):
        damage(tmp_path / "run/checkpoints" / step, "truncated-weights", tmp_path)
    result = cli("eval", str(tmp_path / "run"), *args)
    assert result.exit_code == 1 and "no readable checkpoint" in result.stderr and "model.safetensors" in result.stderr
    assert "Traceback" not in result.output and "weights_only" not in result.output


# --- hostile options and data -------------------------------------------------------------------------------------


HOSTILE_OPTIONS = [
    ("lr: .inf", "lr: Input should be a finite number"),
    ("lr: .nan", "lr: Input should be a finite number"),
    ("lr: -3.0e-3", "lr: Input should be greater than 0"),
    ("min_lr: .nan", "min_lr: Input should be a finite number"),
    ("min_lr: 0.1", "min_lr 0.1 is above lr 0.003"),
    ("beta1: 1.5", "beta1: Input should be less than 1"),
    ("beta2: 5", "beta2: Input should be less than 1"),
    ("beta2: -0.9", "beta2: Input should be greater than or equal to 0"),
    ("weight_decay: -0.1", "weight_decay: Input should be greater than or equal to 0"),
    ("weight_decay: .inf", "weight_decay: Input should be a finite number"),
    ("grad_clip: -1", "grad_clip: Input should be greater than or equal to 0"),
    ("grad_clip: .inf", "grad_clip: Input should be a finite number"),
    ("dropout: .nan", "dropout: Input should be less than 1"),
    ("max_steps: yes", "max_steps: Value error, expected a number, got the boolean True"),
    ("seed: -1", "seed: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize(("line", "expected"), HOSTILE_OPTIONS, ids=[line for line, _ in HOSTILE_OPTIONS])
def test_hostile_training_options_are_validation_errors(char_run, tmp_path, line, expected):
    from pydantic import ValidationError

    from tokenmill.train.stages import Train

    config = tmp_path / "train.yaml"
    paths = {"tokens": char_run.tokens, "tokenizer": char_run.tokenizer_json, "output": str(tmp_path / "out")}
    config.write_text(yaml.safe_dump({**TINY, **paths}) + line + "\n")  # the line overrides TINY's value
    result = cli("train", str(config))
    problems = re.sub(r" \(line \d+\)", "", result.stderr).lower()  # `key (line N): message` from the loader
    assert result.exit_code == 1 and expected.lower() in problems, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()  # refused before any work
    key, value = line.split(": ")
    with pytest.raises(ValidationError, match=key):  # the pipeline stage takes the same keys, and refuses the same
        Train(**{**TINY, key: yaml.safe_load(value)})


def tokens_with_validation(char_run: CharRun, tmp_path: Path, documents: list[list[int]]) -> str:
    """A copy of the shared token shards whose validation split holds `documents` only, written the way
    `tokenize` writes it (an Arrow stream of the same schema: no record batch at all for validation_fraction 0)."""
    import pyarrow as pa

    copy = tmp_path / "tokens"
    shutil.copytree(char_run.tokens, copy)
    (arrow,) = (copy / "validation").glob("data-*.arrow")
    schema = pa.ipc.open_stream(pa.memory_map(str(arrow))).schema
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        if documents:
            ids = pa.array(documents, type=schema.field("input_ids").type)
            names = pa.array([f"doc-{i}" for i in range(len(documents))])
            writer.write_batch(pa.record_batch([ids, names, pa.array(["text"] * len(documents))], schema=schema))
    manifest = json.loads((copy / "manifest.json").read_text())
    tokens = sum(map(len, documents))
    manifest["splits"]["validation"] = {"documents": len(documents), "tokens": tokens, "by_source": {}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        ([], "holds no tokens: nothing to validate on (tokenize with a validation_fraction above 0)"),
        ([[5] * 9 + [0]], "block_size 32 needs streams of at least 33 tokens; the longest has 10"),
    ],
    ids=["no-documents", "one-short-document"],
)
def test_empty_validation_split_is_named(char_run, runs, tmp_path, documents, expected):
    import dataclasses

    from tokenmill.train.data import EmptySplit

    tokens = tokens_with_validation(char_run, tmp_path, documents)
    with pytest.raises(EmptySplit) as caught:
        train_tiny(dataclasses.replace(char_run, tokens=tokens), tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"the validation split {os.path.join(tokens, 'validation')}")
    assert message.endswith(expected) and "\n" not in message
    assert isinstance(caught.value, ValueError) and not (tmp_path / "run").exists()
    directory, _ = runs("baseline")
    result = cli("eval", str(directory), "--tokens", tokens, "--tokenizer", char_run.tokenizer_json)
    assert result.exit_code == 1 and "the validation split" in result.stderr and "Traceback" not in result.output


# --- the pipeline stages (last: the force re-run rewrites the shared run) -----------------------------------------


def test_pipeline_trains_evaluates_and_records_lineage(char_run):
    artifacts = char_run.result.artifacts
    trained = artifacts["train"]
    assert trained["steps"] == 8 and os.path.exists(os.path.join(trained["checkpoint"], "model.safetensors"))
    assert os.path.exists(trained["loss_curve"]) and trained["parameters"] > 0
    evaluation = artifacts["evaluate"]
    assert evaluation["checkpoint"] == trained["checkpoint"]
    assert evaluation["perplexity"] == pytest.approx(math.exp(evaluation["val_loss"]), rel=1e-3)
    assert evaluation["bits_per_byte"] > 0 and ast.literal_eval(evaluation["sample"]).startswith("ROMEO:")
    report = Path(char_run.result.report).read_text() if char_run.result.report else ""
    assert "perplexity" in report and "sample" in report
    lineage = json.loads((Path(char_run.train_dir).parent / "lineage.json").read_text())
    stages = {s["stage"]: s for s in lineage["stages"]}
    assert [s["stage"] for s in lineage["stages"]] == ["tokenizer_train", "tokenize", "train", "evaluate"]
    assert stages["tokenizer_train"]["inputs"] == {"data": lineage["data"]}
    assert stages["tokenize"]["inputs"]["tokenizer"] == stages["tokenizer_train"]["id"]
    assert stages["train"]["inputs"]["tokens"] == stages["tokenize"]["id"]
    assert stages["train"]["inputs"]["tokenizer"] == stages["tokenizer_train"]["id"]
    assert stages["evaluate"]["inputs"]["checkpoint"] == stages["train"]["id"]
    assert stages["train"]["produces"] == "checkpoint"


def test_pipeline_rerun_skips_training_and_force_retrains(char_run, client):
    train_dir = Path(char_run.train_dir)
    metrics = train_dir / "metrics.jsonl"
    first = losses(metrics)
    stamp = metrics.stat().st_mtime_ns, (train_dir / "done.json").read_text()
    again = tokenmill.run(char_run.pipeline, client=client)
    assert (metrics.stat().st_mtime_ns, (train_dir / "done.json").read_text()) == stamp
    assert again.artifacts["train"] == char_run.result.artifacts["train"]
    assert again.artifacts["evaluate"] == char_run.result.artifacts["evaluate"]
    forced = tokenmill.run(char_run.pipeline, client=client, force=True)
    assert metrics.stat().st_mtime_ns != stamp[0]
    assert forced.artifacts["train"]["steps"] == 8
    assert losses(metrics) == first  # retrained from scratch: the same data and seed give the same run
