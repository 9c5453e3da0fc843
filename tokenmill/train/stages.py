"""`train` and `evaluate` as pipeline stages: they run on a Dask worker and record their lineage."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from typing import Any, ClassVar

from pydantic import Field

from tokenmill.engine.fsio import join
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DatasetContext, DatasetStage
from tokenmill.train.config import TrainConfig


@register("train")
class Train(DatasetStage, TrainConfig):
    """Pretrains the model on the pipeline's token shards with the pipeline's tokenizer (see TrainConfig)."""

    produces: ClassVar[str] = "checkpoint"
    inputs: ClassVar[tuple[str, ...]] = ("tokens", "tokenizer")

    def directory(self, ctx: DatasetContext) -> str:
        return join(ctx.output, "train")

    def run(self, ctx: DatasetContext) -> dict[str, Any]:
        from tokenmill.train.trainer import read_metrics, train

        if importlib.util.find_spec("torch") is None:
            raise RuntimeError("the train stage needs torch: pip install 'tokenmill[train]'")
        tokens = ctx.artifact("tokens", "train")["path"]
        tokenizer_json = ctx.artifact("tokenizer", "train")["tokenizer_json"]
        config = TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})
        out_dir = self.directory(ctx)
        _claim(out_dir, self.artifact_id(ctx), ctx.force)
        future = ctx.get_client().submit(train, config, tokens, tokenizer_json, out_dir, pure=False)
        if ctx.progress:
            _follow(future, os.path.join(out_dir, "metrics.jsonl"), config.max_steps, read_metrics)
        summary = future.result()
        summary["loss_curve"] = os.path.join(out_dir, "loss.png")
        return summary


@register("evaluate")
class Evaluate(DatasetStage):
    """Validation loss, perplexity and bits per byte of the trained model, plus a generated sample."""

    produces: ClassVar[str] = "evaluation"
    inputs: ClassVar[tuple[str, ...]] = ("checkpoint", "tokens", "tokenizer")
    batches: int = Field(50, gt=0)
    prompt: str = "The"
    max_new_tokens: int = Field(100, ge=0)
    temperature: float = Field(0.8, gt=0)
    top_k: int | None = Field(200, gt=0)

    def run(self, ctx: DatasetContext) -> dict[str, Any]:
        from tokenmill.train.evaluate import evaluate, generate

        checkpoint = ctx.artifact("checkpoint", "evaluate")["checkpoint"]
        tokens = ctx.artifact("tokens", "evaluate")["path"]
        tokenizer_json = ctx.artifact("tokenizer", "evaluate")["tokenizer_json"]
        client = ctx.get_client()
        summary = client.submit(evaluate, checkpoint, tokens, tokenizer_json, self.batches, pure=False).result()
        if self.max_new_tokens:
            sample = client.submit(
                generate,
                checkpoint,
                tokenizer_json,
                self.prompt,
                self.max_new_tokens,
                self.temperature,
                self.top_k,
                pure=False,
            ).result()
            summary["sample"] = repr(self.prompt + sample)
        return summary


def _claim(out_dir: str, run_id: str, force: bool) -> None:
    """Checkpoints in `out_dir` are resumed only by the run that made them (same configuration and inputs);
    a changed configuration, new data or `--force` starts from scratch."""
    marker = os.path.join(out_dir, "run_id")
    if os.path.exists(marker):
        with open(marker) as handle:
            same = handle.read().strip() == run_id
        if same and not force:
            return
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with open(marker, "w") as handle:
        handle.write(run_id + "\n")


def _follow(future: Any, metrics_path: str, total: int, read_metrics: Any) -> None:
    """A progress bar fed by the metrics file the training task writes (the driver holds no model)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    ) as bar:  # fmt: skip
        task = bar.add_task("train", total=total, loss="")
        while not future.done():
            records = read_metrics(metrics_path)
            if records:
                last = records[-1]
                bar.update(task, completed=last["step"], loss=f"loss {last['loss']:.3f}")
            time.sleep(1.0)
