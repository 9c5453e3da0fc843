"""Training configuration (YAML `train:` stage keys, or `tokenmill train CONFIG`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenmill.train.model import PRESETS, GPTConfig


class TrainConfig(BaseModel):
    """Model shape (a preset plus overrides) and optimisation. Defaults follow nanoGPT's small-data recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    model: Literal["tiny", "small", "base"] = "tiny"
    n_layer: int | None = Field(None, gt=0)
    n_head: int | None = Field(None, gt=0)
    n_embd: int | None = Field(None, gt=0)
    block_size: int | None = Field(None, gt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(12, gt=0, description="windows per micro-batch (per rank under DDP)")
    grad_accum: int = Field(1, gt=0)
    max_steps: int = Field(200, gt=0)
    lr: float = Field(1e-3, gt=0)
    min_lr: float | None = Field(None, ge=0, description="cosine floor; default lr / 10")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    eval_interval: int = Field(100, gt=0)
    eval_batches: int = Field(20, gt=0, description="validation batches of the global batch size per evaluation")
    log_interval: int = Field(10, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    gradient_checkpointing: bool = False
    seed: int = 1337
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's)")

    @model_validator(mode="after")
    def _shape(self) -> TrainConfig:
        self.model_shape(vocab_size=256)  # raises on inconsistent shapes, e.g. n_embd not divisible by n_head
        return self

    def model_shape(self, vocab_size: int) -> GPTConfig:
        shape = dict(PRESETS[self.model])
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, key) is not None:
                shape[key] = getattr(self, key)
        return GPTConfig(vocab_size=vocab_size, dropout=self.dropout, **shape)
