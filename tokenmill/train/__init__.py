"""A compact Llama-style GPT that pretrains from tokenmill's token shards (the `train` extra: torch)."""
