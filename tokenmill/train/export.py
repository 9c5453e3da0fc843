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
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(tokenizer_dir, "tokenizer.json")) as handle:
        vocab = json.load(handle)["added_tokens"]
    eos = next((t["id"] for t in vocab if t["content"] == "<|endoftext|>"), None)
    config = {
        **model.config.hf_config(),
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
    save_file(model.hf_state_dict(), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    return out_dir
