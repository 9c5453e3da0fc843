"""Run outputs for people: per-stage stats JSON, a funnel plot, and a Markdown + HTML report."""

from __future__ import annotations

import html
import json

from tokenmill.engine.documents import storable
from tokenmill.engine.fsio import atomic_write_bytes, atomic_write_json, join
from tokenmill.engine.result import RunResult
from tokenmill.engine.stats import StageStats


def emptied_warnings(stats: list[StageStats]) -> list[str]:
    """One loud line per stage that turned non-empty input into nothing."""
    return [
        f"stage {s.stage!r} received {s.docs_in:,} documents and kept none "
        f"(rejected: {_reasons(s.rejected) or '-'}; errors: {_reasons(s.errors) or '-'})"
        for s in stats
        if s.emptied
    ]


def write_stats(result: RunResult) -> None:
    for i, stage in enumerate(result.stats):
        atomic_write_json(
            join(result.output, "stats", f"{i:02d}-{stage.stage.replace(':', '_')}.json"), stage.to_dict()
        )
    atomic_write_json(
        join(result.output, "stats", "run.json"),
        {
            "name": result.name,
            "curated": result.curated,
            "shards_total": result.shards_total,
            "shards_skipped": result.shards_skipped,
            "failed": result.failed,
            "warnings": result.warnings,
            "analyses": result.analyses,
            "artifacts": result.artifacts,
            "seconds": round(result.seconds, 3),
            "stages": [s.to_dict() for s in result.stats],
        },
    )


def funnel_png(stats: list[StageStats]) -> bytes:
    """Documents entering each stage, split into kept, rejected by reason and errors (a PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s.stage for s in stats][::-1]
    fig, ax = plt.subplots(figsize=(9, 1.1 + 0.7 * len(stats)))
    reasons = sorted({r for s in stats for r in s.rejected} | {f"error:{r}" for s in stats for r in s.errors})
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (4, 5)]  # green means kept
    kept = [s.kept for s in stats][::-1]
    ax.barh(labels, kept, color="#2b8a3e", label="kept")
    left = list(kept)
    for i, reason in enumerate(reasons):
        counts = [
            (s.errors.get(reason[6:], 0) if reason.startswith("error:") else s.rejected.get(reason, 0)) for s in stats
        ][::-1]
        if any(counts):
            ax.barh(labels, counts, left=left, color=palette[i % len(palette)], label=reason)
            left = [a + b for a, b in zip(left, counts)]
    for y, stage in enumerate(stats[::-1]):
        ax.text(stage.docs_in, y, f"  {stage.kept:,}/{stage.docs_in:,}", va="center", fontsize=8)
    ax.set_xlabel("documents")
    ax.set_title("What happened to the data, stage by stage")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_xlim(0, max([s.docs_in for s in stats] + [1]) * 1.25)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_report(result: RunResult) -> str:
    """Write stats, `funnel.png`, `report.md` and `report.html` under the run's output; returns the .md path."""
    write_stats(result)
    atomic_write_bytes(join(result.output, "funnel.png"), funnel_png(result.stats))
    md_path = join(result.output, "report.md")
    atomic_write_bytes(md_path, storable(_markdown(result)).encode())
    atomic_write_bytes(join(result.output, "report.html"), storable(_html(result)).encode())
    return md_path


def _reasons(counter: dict) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def stage_rows(result: RunResult) -> list[list[str]]:
    """One formatted row per stage, columns as in HEADER (the console summary shows the first eight)."""
    return [
        [
            s.stage,
            f"{s.docs_in:,}",
            f"{s.kept:,}",
            f"{s.n_rejected:,}",
            f"{s.n_errors:,}",
            f"{s.changed:,}",
            f"{s.bytes_in / 1e6:,.2f}",
            f"{s.bytes_kept / 1e6:,.2f}",
            f"{s.seconds:,.2f}",
            _reasons(s.rejected) or "-",
            _reasons(s.errors) or "-",
        ]
        for s in result.stats
    ]


HEADER = [
    "stage",
    "in",
    "kept",
    "rejected",
    "errors",
    "changed",
    "MB in",
    "MB kept",
    "task s",
    "rejected by",
    "errors by",
]


def _markdown(result: RunResult) -> str:
    lines = [f"# tokenmill run: {result.name}", ""]
    lines += [
        f"- curated output: `{result.curated}` ({len(result.files)} files)",
        f"- shards: {result.shards_total} ({result.shards_skipped} skipped as already finished, "
        f"{len(result.failed)} failed)",
        f"- wall time: {result.seconds:,.1f} s",
        "",
    ]
    if result.warnings or result.failed:
        lines += ["## Warnings", ""]
        lines += [f"- **{w}**" for w in result.warnings]
        lines += [f"- **shard {k} failed: {v}**" for k, v in result.failed.items()]
        lines.append("")
    lines += ["## Stages", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in stage_rows(result)]
    lines += ["", "Every stage satisfies `in == kept + rejected + errors`.", "", "![funnel](funnel.png)", ""]
    for label, summary in {**result.analyses, **result.artifacts}.items():
        lines += [f"## {label}", ""] + [f"- {key}: {value}" for key, value in summary.items()] + [""]
    notes = [(s.stage, m) for s in result.stats for m in s.messages[:20]]
    if notes:
        lines += ["## Errors and notes (first 20 per stage)", ""]
        lines += [f"- `{m}`" for _, m in notes]
        lines.append("")
    lines += ["Full counts: `stats/run.json`.", ""]
    return "\n".join(lines)


def _html(result: RunResult) -> str:
    esc = html.escape
    warnings = "".join(f"<li class=warn>{esc(w)}</li>" for w in result.warnings)
    warnings += "".join(f"<li class=warn>shard {esc(k)} failed: {esc(v)}</li>" for k, v in result.failed.items())
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in stage_rows(result))
    notes = "".join(f"<li><code>{esc(m)}</code></li>" for s in result.stats for m in s.messages[:20])
    summary = esc(json.dumps({"shards": result.shards_total, "skipped": result.shards_skipped}))
    return f"""<!doctype html><meta charset=utf-8><title>tokenmill: {esc(result.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:3px 6px}}
table{{border-collapse:collapse}}.warn{{color:#b00;font-weight:bold}}</style>
<h1>tokenmill run: {esc(result.name)}</h1>
<p>curated output: <code>{esc(result.curated)}</code> &middot; {summary} &middot; {result.seconds:,.1f} s</p>
<ul>{warnings}</ul><table><tr>{head}</tr>{body}</table>
<p>Every stage satisfies <code>in == kept + rejected + errors</code>.</p>
<img src="funnel.png" alt="funnel"><h2>Errors and notes</h2><ul>{notes}</ul>"""
