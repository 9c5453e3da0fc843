"""Building HF `tokenizers` objects from configuration: byte-level BPE, Unigram, word-level, character-level."""

from __future__ import annotations

import json
import os
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

Model = Literal["bpe", "unigram", "wordlevel", "char"]
# GPT-4's (cl100k) split pattern: contractions, letters, 1-3 digit numbers, punctuation runs, whitespace.
GPT4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
UNK = "<unk>"


def build(
    model: Model, pre_tokenizer: str, split_digits: bool, normalizer: str | None, special_tokens: list[str]
) -> tuple[Tokenizer, type]:
    """An untrained tokenizer and its trainer class for `model`."""
    if model == "bpe":
        tokenizer = Tokenizer(models.BPE())
        if pre_tokenizer == "gpt4":
            split = pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated")
            parts = [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        else:
            parts = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        tokenizer.decoder = decoders.ByteLevel()
        trainer: type = trainers.BpeTrainer
    elif model == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        parts = [pre_tokenizers.Metaspace()]
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer
    elif model == "wordlevel":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        parts = [pre_tokenizers.Whitespace()]
        trainer = trainers.WordLevelTrainer
    else:  # one token per character (Unicode code point), as in nanoGPT's character-level Shakespeare
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        parts = [pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")]
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer
    if split_digits:
        parts.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(parts) if len(parts) > 1 else parts[0]
    if normalizer:
        tokenizer.normalizer = getattr(normalizers, normalizer)()
    # Text that happens to contain "<|endoftext|>" must stay text, never become the control token.
    tokenizer.encode_special_tokens = True
    return tokenizer, trainer


def trainer_for(
    model: Model, trainer_cls: type, vocab_size: int, min_frequency: int, special_tokens: list[str]
) -> trainers.Trainer:
    if model == "bpe":
        return trainer_cls(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    # The unknown token must be in the vocabulary (the word-level trainers do not add it, and encoding an unseen
    # word would fail); placed after the user's special tokens so the document separator keeps id 0.
    special_tokens = with_unk(special_tokens)
    if model == "unigram":
        return trainer_cls(vocab_size=vocab_size, special_tokens=special_tokens, unk_token=UNK, show_progress=False)
    return trainer_cls(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens, show_progress=False
    )


def with_unk(special_tokens: list[str]) -> list[str]:
    return special_tokens if UNK in special_tokens else [*special_tokens, UNK]


def minimum_vocab(model: Model, special_tokens: list[str]) -> int:
    """The smallest vocabulary a model can have: byte-level BPE needs all 256 bytes plus the special tokens,
    the others at least their special tokens and `<unk>`."""
    return 256 + len(special_tokens) if model == "bpe" else len(with_unk(special_tokens))


def save_pretrained(tokenizer: Tokenizer, directory: str, eos: str, pad: str | None, max_length: int) -> None:
    """Write `tokenizer.json` plus the files `transformers.PreTrainedTokenizerFast.from_pretrained` reads."""
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    special = {"eos_token": eos, "bos_token": eos}
    if pad:
        special["pad_token"] = pad
    if tokenizer.token_to_id(UNK) is not None:
        special["unk_token"] = UNK
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length, **special}
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        with open(os.path.join(directory, name), "w") as handle:
            json.dump(data, handle, indent=2)
