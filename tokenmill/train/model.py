"""The model: a decoder-only transformer with Llama-style blocks, readable top to bottom.

RMSNorm, rotary positions (the "rotate half" convention Hugging Face's Llama uses, so exported weights give the
same logits), SwiGLU MLPs, no biases, tied input/output embeddings, attention through
`scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tokenmill.train.config import PRESETS, GPTConfig

__all__ = ["GPT", "PRESETS", "GPTConfig", "Rotary", "rotary_tables", "rotate"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32, as Hugging Face's LlamaRMSNorm does, so exports match under autocast too.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Rotary(nn.Module):
    """The attention layers' positions: cos and sin tables for `block_size` positions, computed once and shared by
    every layer (`positions(length)` is what `Block` passes through to `Attention` untouched)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        cos, sin = rotary_tables(config.head_dim, config.block_size, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[:length], self.sin[:length]


class Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.k_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.v_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.o_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, positions: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch, length, width = x.shape
        cos, sin = positions
        shape = (batch, length, self.n_head, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), positions))
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.gradient_checkpointing = False
        self.rotary = Rotary(config)
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decoupled weight decay on the weight matrices of linear layers only, by module
        type — never on norm gains, nor on the (tied) embedding."""
        linear = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        parameters = list(self.parameters())
        return [
            {"params": [p for p in parameters if id(p) in linear], "weight_decay": weight_decay},
            {"params": [p for p in parameters if id(p) not in linear], "weight_decay": 0.0},
        ]

    def num_parameters(self) -> int:
        """Parameters, counting the tied embedding once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        length = idx.shape[1]
        if length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens exceeds block_size {self.config.block_size}")
        x = self.embed_tokens(idx)
        positions = self.rotary(length)
        for block in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, positions, use_reentrant=False)
            else:
                x = block(x, positions)
        logits = F.linear(self.norm(x), self.embed_tokens.weight)  # tied output embedding
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token of a `block_size` window: 6 per parameter (forward and backward matmuls) plus
        the attention scores and their weighted sum, 12 * n_layer * n_head * head_dim * block_size (PaLM's
        appendix B, as nanoGPT estimates MFU)."""
        c = self.config
        return 6 * self.num_parameters() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under Hugging Face Llama's names (`GPTConfig.hf_config` is the matching config): the module
        names are Llama's already, only the `model.` prefix differs; the tied output layer is not stored."""
        return {f"model.{name}": tensor.contiguous() for name, tensor in self.state_dict().items()}
