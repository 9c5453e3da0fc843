"""Per-stage accounting: every document that enters a stage is kept, rejected with a reason, or an error."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGES = 200


class ConservationError(AssertionError):
    """A stage's counts do not add up: documents were lost or invented."""


@dataclass
class StageStats:
    """Counts for one stage over one shard (or, merged, over a whole run)."""

    stage: str
    docs_in: int = 0
    bytes_in: int = 0
    kept: int = 0
    bytes_kept: int = 0
    changed: int = 0
    rejected: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] += n

    def error(self, reason: str, message: str) -> None:
        self.errors[reason] += 1
        self.note(message)

    def note(self, message: str) -> None:
        """Keep a one-line explanation (bounded: counts stay exact, messages are samples)."""
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)

    def check(self) -> StageStats:
        """Raise ConservationError unless `docs_in == kept + rejected + errors`."""
        if self.docs_in != self.kept + self.n_rejected + self.n_errors:
            raise ConservationError(
                f"stage {self.stage}: {self.docs_in} in != {self.kept} kept + {self.n_rejected} rejected "
                f"+ {self.n_errors} errors"
            )
        return self

    def merge(self, other: StageStats) -> StageStats:
        self.docs_in += other.docs_in
        self.bytes_in += other.bytes_in
        self.kept += other.kept
        self.bytes_kept += other.bytes_kept
        self.changed += other.changed
        self.rejected.update(other.rejected)
        self.errors.update(other.errors)
        self.messages.extend(other.messages[: max(0, MAX_MESSAGES - len(self.messages))])
        self.seconds += other.seconds
        return self

    @property
    def emptied(self) -> bool:
        """True when non-empty input produced no output: the silent failure users fear most."""
        return self.docs_in > 0 and self.kept == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "docs_in": self.docs_in,
            "bytes_in": self.bytes_in,
            "kept": self.kept,
            "bytes_kept": self.bytes_kept,
            "changed": self.changed,
            "rejected": dict(sorted(self.rejected.items())),
            "errors": dict(sorted(self.errors.items())),
            "messages": list(self.messages),
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageStats:
        return cls(
            stage=data["stage"],
            docs_in=data["docs_in"],
            bytes_in=data["bytes_in"],
            kept=data["kept"],
            bytes_kept=data["bytes_kept"],
            changed=data.get("changed", 0),
            rejected=Counter(data["rejected"]),
            errors=Counter(data["errors"]),
            messages=list(data.get("messages", [])),
            seconds=data.get("seconds", 0.0),
        )
