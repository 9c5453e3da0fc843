"""Draw docs/img/minhash-s-curve.png: the LSH S-curves `dedup_minhash` chooses at threshold 0.8, 128 hashes.

.venv/bin/python benchmarks/minhash_s_curve.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tokenmill.curate.dedup.minhash import MinHashDedup
from tokenmill.curate.dedup.signatures import collision_probability

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "minhash-s-curve.png"


def main() -> None:
    similarity = np.linspace(0, 1, 401)
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for verify, style in (("exact", "-"), ("estimate", "--"), ("none", ":")):
        bands, rows = MinHashDedup(verify=verify).banding()
        curve = collision_probability(similarity, bands, rows)
        at = float(collision_probability(0.8, bands, rows))
        label = f"verify: {verify} - {bands} bands x {rows} rows (P at 0.8 = {at:.2f})"
        axes.plot(similarity, curve, style, label=label)
    axes.axvline(0.8, color="grey", linewidth=0.8)
    axes.set_xlabel("Jaccard similarity of two documents' word 5-gram sets")
    axes.set_ylabel("probability of becoming a candidate pair")
    axes.set_title("dedup_minhash S-curves (threshold 0.8, num_perm 128)")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
