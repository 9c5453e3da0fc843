"""Reading a segment's own Parquet output back as the next segment's input, ids and annotations intact."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from tokenmill.engine.documents import Doc, table_to_docs
from tokenmill.engine.stage import Outcomes, Shard, ShardOutput, SourceStage


class ShardSetReader(SourceStage):
    """The shards a previous segment wrote, one shard per previous shard (keys kept), in order."""

    outputs: list[tuple[str, list[str]]]
    batch_rows: int = 2048

    @classmethod
    def of(cls, outputs: list[ShardOutput]) -> ShardSetReader:
        return cls(outputs=[(o.key, list(o.files)) for o in outputs])

    @property
    def label(self) -> str:
        return "read"

    def shards(self) -> list[Shard]:
        shards = []
        for index, (key, files) in enumerate(self.outputs):
            fs, _ = url_to_fs(files[0])
            infos = [fs.info(f) for f in files]
            identity = json.dumps([[f, i.get("size"), i.get("mtime")] for f, i in zip(files, infos)], default=str)
            shards.append(Shard(index, files[0], key, sum(int(i.get("size") or 0) for i in infos), identity))
        return shards

    def read(self, shard: Shard, out: Outcomes) -> Iterator[Doc]:
        files = dict(self.outputs)[shard.name]
        for path in files:
            fs, local = url_to_fs(path)
            with fs.open(local, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=self.batch_rows):
                    for doc in table_to_docs(batch):
                        out.seen(doc.nbytes)
                        out.keep(doc)
                        yield doc


def iter_shard_columns(shard: ShardOutput, columns: list[str], batch_rows: int = 4096) -> Iterator[tuple]:
    """Yield (row, *values) for every document of a shard, in order, reading only `columns`."""
    row = 0
    for path in shard.files:
        fs, local = url_to_fs(path)
        with fs.open(local, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                data = [batch.column(name).to_pylist() for name in columns]
                for values in zip(*data):
                    yield (row, *values)
                    row += 1
