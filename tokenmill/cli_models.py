"""`tokenmill tokenizer train`, `train`, `eval`, `generate`, `export`: the model side of the command line."""

from __future__ import annotations

import json
import os

import click

from tokenmill.cli_failures import console, fail


def _fail(exc: BaseException) -> None:
    """One line (a config's problems: one line each), exit status 1; `tokenmill --debug` adds the traceback."""
    fail(exc, expected=True)


def _load(path: str, model: type, what: str, expected: str, drop: tuple[str, ...] = (), **overrides) -> tuple:
    """A config file validated as `model` (one line per problem, with its YAML line) or a one-line failure."""
    from tokenmill.engine.config_file import SpecError, load_config

    try:
        return load_config(path, model, what, expected, drop, overrides)
    except SpecError as exc:
        _fail(exc)


@click.group("tokenizer")
def tokenizer() -> None:
    """Train a tokenizer on curated shards."""


@tokenizer.command("train")
@click.argument("data", type=click.Path(exists=True))
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Directory for the tokenizer.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML with tokenizer_train keys.")
@click.option("--vocab-size", type=int, help="Overrides the config's vocab_size.")
def tokenizer_train(data: str, output: str, config_file: str | None, vocab_size: int | None) -> None:
    """Train on the Parquet shards in DATA (a `curated/` directory), streaming them."""
    from tokenmill.engine.config_file import SpecError, describe_error
    from tokenmill.engine.fsio import expand_paths
    from tokenmill.engine.stage import ShardOutput
    from tokenmill.tokenize.evaluate import evaluate_tokenizer
    from tokenmill.tokenize.tokenizer_train import TokenizerTrain, train_tokenizer

    overrides = {"vocab_size": vocab_size} if vocab_size else {}
    if config_file:
        stage, _ = _load(config_file, TokenizerTrain, "tokenizer config", "tokenizer_train keys", **overrides)
    else:
        try:
            stage = TokenizerTrain(**overrides)
        except ValueError as exc:
            errors = getattr(exc, "errors", lambda: [])()
            _fail(SpecError([describe_error(e, (), None, TokenizerTrain) for e in errors] or [str(exc)], "options"))
    files = [url for url, _, _ in expand_paths([data]) if url.endswith(".parquet")]
    shards = [ShardOutput(f"{i:05d}", (f,)) for i, f in enumerate(files)]
    summary = train_tokenizer(stage, shards, output)
    summary["evaluation"] = evaluate_tokenizer(summary["tokenizer_json"], shards, output, stage.heldout_fraction)
    console.print_json(json.dumps(summary))


@click.command("train")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--stop-at", type=int, help="Stop after this step with a checkpoint; run again to continue.")
def train(config_file: str, stop_at: int | None) -> None:
    """Train from a YAML: `tokens:` (a tokenize output), `tokenizer:` (tokenizer.json), `output:`, and the
    `train` stage keys. Under `torchrun --nproc_per_node N` this runs DistributedDataParallel."""
    from tokenmill.train.config import TrainConfig
    from tokenmill.train.trainer import train as run_training

    keys = ("tokens", "tokenizer", "output")
    config, paths = _load(config_file, TrainConfig, "training config", "tokens, tokenizer, output and train keys", keys)
    missing = [key for key in keys if key not in paths]
    if missing:
        _fail(ValueError(f"{config_file}: missing key {', '.join(map(repr, missing))}"))
    try:
        summary = run_training(config, paths["tokens"], paths["tokenizer"], paths["output"], stop_at=stop_at)
    except (ValueError, FileNotFoundError) as exc:  # empty split, unreadable checkpoint, mismatch: one line
        _fail(exc)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print_json(json.dumps(summary))


@click.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--tokens", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--tokenizer", "tokenizer_json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--batches", default=50, show_default=True)
def evaluate(checkpoint: str, tokens: str, tokenizer_json: str, batches: int) -> None:
    """Validation loss, perplexity and bits per byte of CHECKPOINT (a checkpoint or training directory)."""
    from tokenmill.train.evaluate import evaluate as run_eval

    try:
        console.print_json(json.dumps(run_eval(checkpoint, tokens, tokenizer_json, batches)))
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)


@click.command("generate")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--tokenizer", "tokenizer_json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt", default="", show_default=True)
@click.option("--max-new-tokens", default=200, show_default=True)
@click.option("--temperature", default=0.8, show_default=True)
@click.option("--top-k", type=int, default=200, show_default=True)
@click.option("--top-p", type=float)
@click.option("--seed", default=0, show_default=True)
def generate(checkpoint: str, tokenizer_json: str, prompt: str, max_new_tokens: int, temperature: float,
             top_k: int | None, top_p: float | None, seed: int) -> None:  # fmt: skip
    """Sample a continuation of --prompt."""
    from tokenmill.train.evaluate import generate as sample

    click.echo(prompt + sample(checkpoint, tokenizer_json, prompt, max_new_tokens, temperature, top_k, top_p, seed))


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--tokenizer-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", required=True, type=click.Path(file_okay=False))
def export(checkpoint: str, tokenizer_dir: str, output: str) -> None:
    """Write a Hugging Face Llama model directory (AutoModelForCausalLM.from_pretrained loads it)."""
    from tokenmill.train.export import export as run_export

    console.print(f"exported to {run_export(checkpoint, tokenizer_dir, output)}")


COMMANDS = (tokenizer, train, evaluate, generate, export)
