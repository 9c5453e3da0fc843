"""The document stage that applies a global stage's per-shard decisions in the next segment."""

from __future__ import annotations

import pyarrow as pa
from pydantic import PrivateAttr

from tokenmill.curate.dedup.partitions import list_files, read_table
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import join
from tokenmill.engine.stage import DocumentStage, Outcomes, Shard

_TYPES = {"string": pa.string(), "int64": pa.int64(), "float32": pa.float32()}


class ApplyDecisions(DocumentStage):
    """Rejects or annotates documents by (shard, row) from decision files a global analysis wrote.

    Decision files live in `<decisions_dir>/s<shard>/*.parquet` with columns `row`, `reason` (null: keep and
    annotate only), `ref` (the document kept in its place, recorded as `meta.duplicate_of`) and the
    annotation columns named in `annotate`. Documents without a decision pass through unchanged.
    """

    stage_label: str
    decisions_dir: str
    analysis_id: str
    annotate: dict[str, str] = {}
    _decisions: dict[int, tuple] = PrivateAttr(default_factory=dict)
    _row: int = PrivateAttr(default=0)

    @property
    def label(self) -> str:
        return self.stage_label

    def columns(self) -> dict[str, pa.DataType]:
        return {name: _TYPES[kind] for name, kind in self.annotate.items()}

    def start_shard(self, shard: Shard) -> None:
        self._row = 0
        self._decisions = {}
        names = list(self.annotate)
        for path in list_files(join(self.decisions_dir, f"s{shard.name}")):
            table = read_table(path)
            rows = table.column("row").to_pylist()
            reasons = table.column("reason").to_pylist()
            refs = table.column("ref").to_pylist()
            values = [table.column(n).to_pylist() for n in names]
            for i, row in enumerate(rows):
                previous = self._decisions.get(row)
                if previous is None or (previous[0] is None and reasons[i] is not None):
                    self._decisions[row] = (reasons[i], refs[i], {n: v[i] for n, v in zip(names, values)})

    def process_batch(self, docs: list[Doc], out: Outcomes) -> list[Doc]:
        kept = []
        for doc in docs:
            out.seen(doc.nbytes)
            decision = self._decisions.get(self._row)
            self._row += 1
            if decision is not None:
                reason, ref, annotations = decision
                doc.annotations.update(annotations)
                if reason is not None:
                    if ref is not None:
                        doc.meta["duplicate_of"] = ref
                    out.reject(doc, reason)
                    continue
            out.keep(doc)
            kept.append(doc)
        return kept


def decisions_table(rows: list[int], reasons: list[str | None], refs: list[str | None], **annotations) -> pa.Table:
    """A decision file's table (annotation columns by keyword)."""
    return pa.table({"row": pa.array(rows, pa.int64()), "reason": reasons, "ref": refs, **annotations})
