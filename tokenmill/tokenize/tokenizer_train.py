"""`tokenizer_train`: a vocabulary learned by HF `tokenizers` from text streamed out of the curated shards."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from pydantic import Field, model_validator

from tokenmill.engine.fsio import join
from tokenmill.engine.identity import file_digest
from tokenmill.engine.registry import register
from tokenmill.engine.stage import DatasetContext, DatasetStage, ShardOutput
from tokenmill.tokenize.corpus import stream_texts
from tokenmill.tokenize.evaluate import evaluate_tokenizer
from tokenmill.tokenize.vocab import UNK, Model, build, minimum_vocab, save_pretrained, trainer_for

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@register("tokenizer_train")
class TokenizerTrain(DatasetStage):
    """Trains a tokenizer by streaming curated text through an iterator (memory grows with the vocabulary and
    the distinct pre-tokenized words, never with the corpus). Writes `tokenizer/tokenizer.json` and a
    directory `transformers.PreTrainedTokenizerFast.from_pretrained` loads, plus an evaluation report on the
    held-out documents (by id hash) that training never saw.
    """

    produces: ClassVar[str] = "tokenizer"
    model: Model = "bpe"
    vocab_size: int = Field(8192, gt=0)
    min_frequency: int = Field(2, ge=0)
    special_tokens: list[str] = Field(default_factory=lambda: [EOS, PAD])
    pre_tokenizer: str = Field("gpt2", pattern="^(gpt2|gpt4)$")
    split_digits: bool = False
    normalizer: str | None = Field("NFC", pattern="^(NFC|NFKC)$")
    max_bytes: int | None = Field(None, gt=0, description="stop training after this much text")
    source_weights: dict[str, float] = Field(default_factory=dict, description="source -> inclusion probability")
    heldout_fraction: float = Field(0.01, ge=0, lt=1)
    max_length: int = Field(2048, gt=0, description="model_max_length written for transformers")

    @model_validator(mode="after")
    def _consistent(self) -> TokenizerTrain:
        if EOS not in self.special_tokens:
            raise ValueError(f"special_tokens must include the document separator {EOS!r}")
        smallest = minimum_vocab(self.model, self.special_tokens)
        if self.vocab_size < smallest:
            raise ValueError(
                f"vocab_size {self.vocab_size} is below the {self.model} alphabet: at least {smallest} "
                f"({'256 bytes + ' if self.model == 'bpe' else ''}{len(self.special_tokens)} special tokens"
                f"{'' if self.model == 'bpe' or UNK in self.special_tokens else ' + <unk>'})"
            )
        for source, weight in self.source_weights.items():
            if not 0 <= weight <= 1:
                raise ValueError(f"source_weights[{source!r}] must be between 0 and 1")
        return self

    def run(self, ctx: DatasetContext) -> dict[str, Any]:
        directory = self.directory(ctx)
        future = ctx.get_client().submit(train_tokenizer, self, ctx.curated, directory, pure=False)
        summary = future.result()
        evaluation = ctx.get_client().submit(
            evaluate_tokenizer, summary["tokenizer_json"], ctx.curated, directory, self.heldout_fraction, pure=False
        )
        summary["evaluation"] = evaluation.result()
        return summary


def train_tokenizer(stage: TokenizerTrain, shards: list[ShardOutput], directory: str) -> dict[str, Any]:
    """Runs on a worker: stream, train, save; returns the artifact summary (path, sha256, sizes, seconds)."""
    started = time.perf_counter()
    tokenizer, trainer_cls = build(
        stage.model, stage.pre_tokenizer, stage.split_digits, stage.normalizer, stage.special_tokens
    )
    trainer = trainer_for(stage.model, trainer_cls, stage.vocab_size, stage.min_frequency, stage.special_tokens)
    seen = {"documents": 0, "bytes": 0}

    def texts():
        for batch in stream_texts(
            shards,
            weights=stage.source_weights,
            heldout_fraction=stage.heldout_fraction,
            max_bytes=stage.max_bytes,
        ):
            seen["documents"] += len(batch)
            seen["bytes"] += sum(len(t.encode("utf-8", "surrogatepass")) for t in batch)
            yield batch

    try:
        tokenizer.train_from_iterator(texts(), trainer)
    except Exception as exc:  # `tokenizers` raises a bare Exception; this one depends on the data, not the config
        if "not large enough to contain all chars" not in str(exc):
            raise
        raise ValueError(
            f"tokenizer_train: vocab_size {stage.vocab_size} is smaller than the number of distinct characters in "
            f"the training text, all of which a {stage.model} vocabulary must hold; raise vocab_size (or narrow "
            "the text with source_weights / max_bytes)"
        ) from exc
    if seen["documents"] == 0:
        raise ValueError("tokenizer_train: the curated dataset has no training documents")
    pad = PAD if PAD in stage.special_tokens else None
    save_pretrained(tokenizer, directory, EOS, pad, stage.max_length)
    path = join(directory, "tokenizer.json")
    digest = file_digest(path)
    return {
        "path": os.path.abspath(directory),
        "tokenizer_json": os.path.abspath(path),
        "sha256": digest,
        "model": stage.model,
        "vocab_size": tokenizer.get_vocab_size(),
        "training_documents": seen["documents"],
        "training_bytes": seen["bytes"],
        "seconds": round(time.perf_counter() - started, 3),
    }
