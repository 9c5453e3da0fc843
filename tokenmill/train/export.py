"""Export to a Hugging Face model directory that `AutoModelForCausalLM.from_pretrained` loads as Llama."""

from __future__ import annotations

import json
import os
import shutil

from safetensors.torch import save_file

from tokenmill.train.evaluate import load_model


def export(checkpoint_path: str, tokenizer_dir: str, out_dir: str) -> str:
    """Write config.json (LlamaForCausalLM), model.safetensors and the tokenizer files into `out_dir`."""
    model, meta = load_model(checkpoint_path)
    c = model.config
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(tokenizer_dir, "tokenizer.json")) as handle:
        vocab = json.load(handle)["added_tokens"]
    eos = next((t["id"] for t in vocab if t["content"] == "<|endoftext|>"), None)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_head,
        "head_dim": c.n_embd // c.n_head,
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "tokenmill": {
            "checkpoint": meta["path"],
            "step": meta["step"],
            "tokenizer_sha256": meta.get("tokenizer_sha256"),
        },
    }
    with open(os.path.join(out_dir, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
    # Our module names are Llama's; only the `model.` prefix differs (the output layer is tied, so not stored).
    weights = {f"model.{name}": tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    return out_dir
