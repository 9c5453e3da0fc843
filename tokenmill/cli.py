"""`tokenmill` command line: run, validate, sample-data, stages.

Every failure ends the command with exit status 1 and one line per problem on stderr (`error: ...`), naming what
failed and why; `tokenmill --debug ...` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.markup import escape
from rich.table import Table

from tokenmill.cli_failures import console, error, fail, set_debug
from tokenmill.engine.fsio import InputNotFound
from tokenmill.engine.spec import SpecError, check_pipeline, load_pipeline

MAX_SHARD_LINES = 20


@click.group()
@click.version_option(package_name="tokenmill")
@click.option("--debug", is_flag=True, help="On failure, print the full traceback too.")
def main(debug: bool) -> None:
    """tokenmill: raw web text to a trained language model, on Dask."""
    set_debug(debug)
    from tokenmill.engine import cluster

    cluster.worker_log_level = logging.ERROR if debug else logging.CRITICAL
    # User stages named by import path resolve against the current directory, as with `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@main.command()
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option(
    "--import",
    "import_code",
    is_flag=True,
    help="Also import the user modules that `custom:` and `datatrove:` stages name (runs their code).",
)
def validate(pipeline_file: str, import_code: bool) -> None:
    """Check a pipeline YAML without running it: one line per problem. Input globs are expanded; user modules
    are not imported unless --import (see docs/security.md)."""
    try:
        checked = check_pipeline(pipeline_file, import_code=import_code)
    except Exception as exc:
        fail(exc)
    pipeline = checked.pipeline
    names = ", ".join(s.label for s in pipeline.stages)
    console.print(f"[green]ok[/green] {escape(pipeline_file)}: {len(pipeline.stages)} stages ({escape(names)})")
    for note in checked.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@main.command("run")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--address", help="Dask scheduler address (overrides cluster: in the YAML).")
@click.option("--force", is_flag=True, help="Recompute every shard, ignoring finished ones.")
@click.option("--strict", is_flag=True, help="Fail when a stage turns non-empty input into empty output.")
@click.option("--output", help="Override the YAML's output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(
    pipeline_file: str, address: str | None, force: bool, strict: bool, output: str | None, quiet: bool
) -> None:
    """Run a pipeline YAML end to end."""
    from tokenmill.api import EmptyOutputError, run

    try:
        pipeline = load_pipeline(pipeline_file, {"output": output} if output else None)
        result = run(pipeline, address=address, force=force, strict=False, progress=not quiet)
    except Exception as exc:
        fail(exc)
    _summary(result)
    if result.failed:
        for name, why in sorted(result.failed.items())[:MAX_SHARD_LINES]:
            error(f"shard {name}: {why}")
        if len(result.failed) > MAX_SHARD_LINES:
            error(f"... {len(result.failed) - MAX_SHARD_LINES} more failed shard(s) in the report")
        fail(RuntimeError(f"{len(result.failed)} shard(s) failed; see {result.report}"), expected=True)
    if strict and result.warnings:
        fail(EmptyOutputError("--strict: " + "; ".join(result.warnings)), expected=True)


def _summary(result) -> None:
    table = Table(title=f"{result.name}: {result.shards_total} shards ({result.shards_skipped} skipped)")
    from tokenmill.engine.report import HEADER, stage_rows

    for column in HEADER[:8]:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in stage_rows(result):
        table.add_row(*row[:8])
    console.print(table)
    for s in result.stats:
        for message in s.messages[:10]:
            console.print(f"  {message}", markup=False, highlight=False, soft_wrap=True)
        if len(s.messages) > 10:
            console.print(f"  ... {len(s.messages) - 10} more in stats/ and the report")
    for warning in result.warnings:
        console.print(f"WARNING: {warning}", style="bold red", markup=False, soft_wrap=True)
    console.print(f"curated output: {result.curated}")
    console.print(f"report: {result.report}")


@main.command("sample-data")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def sample_data(directory: str, seed: int) -> None:
    """Write the small offline demo corpus (WARC, WET, Pile .jsonl.zst) built from Python's own docs."""
    from tokenmill.sample_data import make_sample_data

    summary = make_sample_data(directory, seed=seed)
    console.print(f"sample data in {directory}: " + ", ".join(f"{k}={v}" for k, v in summary.items()), soft_wrap=True)


@main.command()
def stages() -> None:
    """List the registered stages and reader formats."""
    from tokenmill.engine.registry import READERS, STAGES, load_builtins

    load_builtins()
    for name, cls in sorted(STAGES.items()):
        console.print(f"[bold]{name}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}")
    for fmt, cls in sorted(READERS.items()):
        console.print(f"[bold]read.format={fmt}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}")


@main.group()
def quality() -> None:
    """Train the fastText quality classifier used by the `quality` stage."""


@quality.command("train")
@click.argument("config_file", type=click.Path(dir_okay=False))
def quality_train(config_file: str) -> None:
    """Train from positive and negative sources in a YAML; writes model.bin and report.json."""
    from tokenmill.curate.quality_training import load_training_config, train_classifier

    try:
        report = train_classifier(load_training_config(config_file))
    except (SpecError, InputNotFound, ValueError, RuntimeError, OSError) as exc:
        fail(exc, expected=True)
    table = Table(title=f"quality classifier: held-out split ({report['heldout_fraction']:.0%})")
    for column in ("class", "label", "selected", "train", "held out"):
        table.add_column(column, justify="left" if column in ("class", "label") else "right")
    for name, counts in report["counts"].items():
        table.add_row(name, report["labels"][name], *(f"{counts[k]:,}" for k in ("selected", "train", "heldout")))
    console.print(table)
    if report["heldout"]:
        metrics = report["heldout"]
        console.print("  ".join(f"{k} {metrics[k]:.3f}" for k in ("precision", "recall", "f1", "accuracy")))
    console.print(f"model: {report['model']}")


def _add_model_commands() -> None:
    from tokenmill.cli_models import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_model_commands()
