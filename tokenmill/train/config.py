"""Model shape and training configuration (YAML `train:` stage keys, or `tokenmill train CONFIG`).

Torch-free, so validating a pipeline never imports torch (curation workers do not need the `train` extra).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    mlp_hidden: int | None = None  # default: 8/3 * n_embd rounded up to a multiple of 32 (SwiGLU)
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.head_dim % 2:
            raise ValueError("the head size must be even for rotary positions")
        if self.mlp_hidden is None:
            self.mlp_hidden = 32 * math.ceil(8 * self.n_embd / 3 / 32)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    def hf_config(self) -> dict:
        """The Hugging Face `config.json` keys that make `transformers` build this network as `LlamaForCausalLM`
        (export adds the special token ids and tokenmill's metadata)."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.n_embd,
            "intermediate_size": self.mlp_hidden,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.block_size,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": True,
        }


PRESETS = {
    "tiny": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256},
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
}


class TrainConfig(BaseModel):
    """Model shape (a preset plus overrides) and optimisation. Defaults follow nanoGPT's small-data recipe.

    Every number is range-checked (and finite): a bad value is a validation error naming the key, not a NaN loss
    or a traceback many steps later."""

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
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    min_lr: float | None = Field(None, ge=0, allow_inf_nan=False, description="cosine floor; default lr / 10")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0, allow_inf_nan=False)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, allow_inf_nan=False, description="0 disables clipping")
    eval_interval: int = Field(100, gt=0)
    eval_batches: int = Field(20, gt=0, description="validation batches of the global batch size per evaluation")
    log_interval: int = Field(10, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    gradient_checkpointing: bool = False
    seed: int = Field(1337, ge=0, lt=2**64)
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's)")
    mixture: dict[str, float] | None = Field(
        None, description="sample windows by source with these weights (normalised); default: uniform over tokens"
    )

    @field_validator("mixture", mode="before")
    @classmethod
    def _no_boolean_weights(cls, value: object) -> object:
        if isinstance(value, dict):
            for source, weight in value.items():
                if isinstance(weight, bool):
                    raise ValueError(f"mixture: the weight of source {source!r} must be a number, got {weight}")
        return value

    @field_validator("mixture")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("mixture names no source")
        for source, weight in value.items():
            if isinstance(weight, bool) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"mixture: the weight of source {source!r} must be a number above 0, got {weight}")
        return value

    @field_validator(
        "n_layer", "n_head", "n_embd", "block_size", "dropout", "batch_size", "grad_accum", "max_steps", "lr",
        "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip", "eval_interval", "eval_batches",
        "log_interval", "keep_checkpoints", "seed", "threads", mode="before",
    )  # fmt: skip
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML's yes/no/true/false would otherwise pass as 1 and 0
            raise ValueError(f"expected a number, got the boolean {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}: the cosine would rise")
        self.model_shape(vocab_size=256)  # raises on inconsistent shapes, e.g. n_embd not divisible by n_head
        return self

    def model_shape(self, vocab_size: int) -> GPTConfig:
        shape = dict(PRESETS[self.model])
        for key in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, key) is not None:
                shape[key] = getattr(self, key)
        return GPTConfig(vocab_size=vocab_size, dropout=self.dropout, **shape)
