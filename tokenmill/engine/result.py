"""What a run returns (`tokenmill.run(...)`) and what the report is written from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmill.engine.stats import StageStats


@dataclass
class RunResult:
    """What a run produced: output files, merged per-stage stats, and what was skipped, failed or flagged.

    `stats` has one entry per stage in pipeline order (the `read` stage first; each global stage's entry counts
    what applying its decisions removed); `failed` maps a shard's name to its error; `analyses` holds each
    global stage's summary and `artifacts` each dataset stage's (tokenizer, tokens, checkpoint, evaluation).
    """

    name: str
    output: str
    curated: str
    files: list[str]
    stats: list[StageStats]
    shards_total: int
    shards_skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed
