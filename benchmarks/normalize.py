"""Normalization: today's path (ftfy's encoding repair on every non-ASCII text) against the exact pre-check (ftfy
only on the segments that could change), on the same documents, in one process, in CPU seconds.

Three sets from the mini-Pile: the multilingual sample (UDHR and Genesis translations), the other non-ASCII
documents, and ASCII documents. For each: `normalize_text` (default options) both ways, and the encoding repair
alone (`ftfy.fix_text` vs `fix_mojibake`), with MB/s per core (UTF-8 bytes over `time.process_time`), the ratio,
the share of documents and bytes routed to ftfy, and a check that every output is identical. `--repeat` rounds,
the best time of each side is kept.

    .venv/bin/python benchmarks/normalize.py [--repeat N] [--data DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import ftfy

from tokenmill.curate.normalize import _FTFY_CONFIG, fix_mojibake, normalize_text
from tokenmill.curate.readers import PileReader
from tokenmill.engine.stage import Outcomes
from tokenmill.engine.stats import StageStats

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MB = 1_000_000


def todays_fix(text: str) -> str:
    return ftfy.fix_text(text, _FTFY_CONFIG)


def todays_normalize(text: str) -> str:
    """normalize_text before the pre-check: ftfy on every non-ASCII text, then the same remaining steps."""
    if text.isascii():
        return normalize_text(text)
    return normalize_text(ftfy.fix_text(text, _FTFY_CONFIG), fix_encoding=False)


def best_time(fn: Callable[[str], str], texts: list[str], repeat: int) -> tuple[float, list[str]]:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        out = [fn(text) for text in texts]
        best = min(best, time.process_time() - start)
    return best, out


def routed(texts: list[str]) -> tuple[int, int]:
    """(documents, UTF-8 bytes) that fix_mojibake hands to ftfy."""
    sizes: list[int] = []
    real = ftfy.fix_text

    def spy(text: str, config: ftfy.TextFixerConfig) -> str:
        sizes.append(len(text.encode("utf-8", "surrogatepass")))
        return real(text, config)

    docs = 0
    with mock.patch.object(ftfy, "fix_text", spy):
        for text in texts:
            before = len(sizes)
            fix_mojibake(text)
            docs += len(sizes) > before
    return docs, sum(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    reader = PileReader(paths=str(args.data / "pile" / "*.jsonl.zst"))
    docs = [doc for shard in reader.shards() for doc in reader.read(shard, Outcomes(StageStats("read")))]
    multilingual = [d.text for d in docs if d.source in ("pile/UDHR", "pile/Genesis") and not d.text.isascii()]
    other = [d.text for d in docs if d.source not in ("pile/UDHR", "pile/Genesis") and not d.text.isascii()]
    ascii_docs = [d.text for d in docs if d.text.isascii()]
    sets = [
        ("multilingual (UDHR+Genesis)", multilingual),
        ("other non-ASCII Pile", other),
        ("all non-ASCII", multilingual + other),
        ("non-ASCII, ftfy changes none", [t for t in multilingual + other if todays_fix(t) == t]),
        ("non-ASCII, ftfy repairs", [t for t in multilingual + other if todays_fix(t) != t]),
        ("ASCII Pile", ascii_docs),
    ]
    print(f"ftfy {ftfy.__version__}, best of {args.repeat} rounds, CPU seconds of one process")
    header = f"{'set':<28} {'step':<10} {'docs':>5} {'MB':>6} {'today MB/s':>10} {'new MB/s':>9} {'ratio':>6}"
    print(header + f" {'routed docs':>12} {'routed MB':>10}")
    for name, texts in sets:
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / MB
        docs_routed, bytes_routed = routed(texts)
        for step, today, new in (("fix", todays_fix, fix_mojibake), ("normalize", todays_normalize, normalize_text)):
            t_today, out_today = best_time(today, texts, args.repeat)
            t_new, out_new = best_time(new, texts, args.repeat)
            assert out_today == out_new, f"{name}/{step}: outputs differ"
            print(
                f"{name:<28} {step:<10} {len(texts):>5} {size:>6.2f} {size / t_today:>10.1f} {size / t_new:>9.1f}"
                f" {t_today / t_new:>6.2f} {docs_routed / max(len(texts), 1):>11.1%} {bytes_routed / MB:>10.3f}"
            )
    print("outputs identical: yes")


if __name__ == "__main__":
    main()
