"""Tokenizers trained on curated shards (HF `tokenizers`), their evaluation, and tokenized Arrow datasets."""
