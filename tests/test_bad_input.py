"""Bad input never crashes a read: each bad record is one error (or rejection) with a one-line message naming the
file and the line, record or offset, and the good records around it are kept."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tracemalloc
import zlib
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest
import yaml
from warcio.archiveiterator import ArchiveIterator

from tokenmill.curate.readers import JsonlReader, WarcReader
from tokenmill.engine.documents import Doc
from tokenmill.engine.fsio import InputNotFound
from tokenmill.engine.spec import parse_pipeline
from tokenmill.engine.stage import Outcomes

from pipelines import output_ids, read_all, run_shards

# --- JSON lines --------------------------------------------------------------------------------------------------

BAD_LINES: list[tuple[bytes, str | None]] = [  # (line, error reason or None for a kept/rejected document)
    (b'{"text": "good one", "id_hint": 1}', None),
    (b'{"text": "caf\xe9 in latin-1"}', "invalid_utf8"),
    (b'{"text": "unterminated', "malformed_json"),
    (b'["text", "a list, not an object"]', "not_an_object"),
    (b'{"body": "no text field"}', "missing_text"),
    (b'{"text": 42}', "missing_text"),
    (b'{"text": ""}', None),
    (b'{"text": " \\t\\n  "}', None),
    (b"[" * 100_000, "malformed_json"),  # deeper than json's recursion limit
    (b'{"text": "x", "n": ' + b"9" * 5000 + b"}", "malformed_json"),  # over Python's int digit limit
    (b"   ", None),  # blank line: skipped, not a record
    (b'{"text": "good two"}', None),
]


def write_bad_jsonl(path: Path) -> None:
    path.write_bytes(b"\n".join(line for line, _ in BAD_LINES) + b"\n")


def test_bad_jsonl_lines_are_errors_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    write_bad_jsonl(path)
    docs, out = read_all(JsonlReader(paths=[str(path)]))
    stats = out.stats

    assert [(d.id, d.text) for d in docs] == [("bad.jsonl:1", "good one"), ("bad.jsonl:12", "good two")]
    assert docs[0].meta == {"id_hint": 1}
    assert stats.errors == {"invalid_utf8": 1, "malformed_json": 3, "not_an_object": 1, "missing_text": 2}
    assert stats.rejected == {"empty_document": 2}
    assert sorted(doc.id for doc, _ in out.rejected) == ["bad.jsonl:7", "bad.jsonl:8"]
    assert stats.docs_in == len(BAD_LINES) - 1  # every line but the blank one

    assert len(stats.messages) == stats.n_errors
    expected = {f"bad.jsonl:{n}": reason for n, (_, reason) in enumerate(BAD_LINES, 1) if reason}
    for message, (where, reason) in zip(stats.messages, expected.items()):
        assert "\n" not in message and len(message) <= 500
        assert message.startswith(f"read: {where}: "), (message, reason)
    assert "invalid UTF-8 at byte 13" in stats.messages[0]
    assert "field 'text' is missing" in stats.messages[3] and "field 'text' is int" in stats.messages[4]
    assert "RecursionError" in stats.messages[5] and "digits" in stats.messages[6]


def test_bad_jsonl_through_process_shard_keeps_good_lines(tmp_path: Path) -> None:
    path = tmp_path / "in" / "bad.jsonl"
    path.parent.mkdir()
    write_bad_jsonl(path)
    (result,) = run_shards(tmp_path, {"format": "jsonl", "paths": [str(path)]})
    read = result["stats"][0]
    assert read["kept"] == 2 and sum(read["errors"].values()) == 7 and read["rejected"] == {"empty_document": 2}
    assert output_ids(tmp_path) == ["bad.jsonl:1", "bad.jsonl:12"]
    rejected = pq.read_table(next((tmp_path / "out" / "rejected").glob("*.parquet"))).to_pylist()
    assert sorted((r["id"], r["stage"], r["reason"]) for r in rejected) == [
        ("bad.jsonl:7", "read", "empty_document"),
        ("bad.jsonl:8", "read", "empty_document"),
    ]


def test_a_100_mb_document_is_rejected_too_large_and_its_neighbours_kept(tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"text": "small before"}\n{"text": "')
        handle.write(b"x" * size)
        handle.write(b'", "id": "huge"}\n{"text": "small after"}\n')

    tracemalloc.start()
    try:
        docs, out = read_all(JsonlReader(paths=[str(path)], id_field="id"), keep_rejected=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [d.text for d in docs] == ["small before", "small after"]
    assert out.stats.rejected == {"too_large": 1} and not out.stats.errors
    (message,) = out.stats.messages
    assert message == f"read: big.jsonl:2 (id huge): {size:,} bytes > max_doc_bytes {32 * 1024 * 1024:,}"
    # The line is held as bytes, as decoded text and as the parsed string: ~3x. Far less than 5x means no
    # accidental extra copies (e.g. per-stage duplication); the rejected text is not kept when not asked for.
    assert peak < 5 * size, f"peak {peak / 2**20:.0f} MiB"


# --- Compressed streams that break mid-file ------------------------------------------------------------------------


def jsonl_line(i: int) -> bytes:
    words = " ".join(hashlib.sha256(f"{i}-{k}".encode()).hexdigest() for k in range(3))  # hardly compressible
    return json.dumps({"text": f"document {i}: {words}"}).encode() + b"\n"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_gzip_jsonl_keeps_nothing_decoded_from_the_broken_member(tmp_path: Path, damage: str) -> None:
    # 1000 lines, fully flushed to a byte-aligned deflate block, then either the end of the file (no end-of-stream
    # marker) or bytes that are not a valid deflate block. The member never passes its CRC check, so nothing decoded
    # from it is kept: every line is an error of that file (tests/test_reliability_readers.py covers more shapes).
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
    head = compressor.compress(b"".join(jsonl_line(i) for i in range(1000))) + compressor.flush(zlib.Z_FULL_FLUSH)
    path = tmp_path / "in" / "corrupt.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(head if damage == "truncated" else head + b"\xff" * 64)
    with pytest.raises((EOFError, zlib.error)):  # the file really is broken
        gzip.decompress(path.read_bytes())

    (result,) = run_shards(tmp_path, {"format": "jsonl", "paths": [str(path)]})
    read = result["stats"][0]
    reason = "truncated_stream" if damage == "truncated" else "corrupt_stream"
    assert set(read["errors"]) == {reason} and read["errors"][reason] >= 900
    assert read["kept"] == 0 and output_ids(tmp_path) == []
    assert read["docs_in"] == read["kept"] + sum(read["rejected"].values()) + sum(read["errors"].values())
    (message,) = read["messages"]
    assert str(path) in message and "@ offset 0" in message and "none kept" in message and "\n" not in message
    assert result["stats"][1]["docs_in"] == 0  # normalize saw exactly what was read


# --- WARC cut mid-record --------------------------------------------------------------------------------------------


class Record(NamedTuple):
    offset: int  # where the record starts
    kind: str
    header_len: int  # bytes of WARC headers, blank line included
    block_end: int  # where its Content-Length bytes end; blank lines follow up to the next record


def warc_records(data: bytes) -> list[Record]:
    records = ArchiveIterator(io.BytesIO(data))
    found = []
    for record in records:
        offset = records.offset
        header_len = data.index(b"\r\n\r\n", offset) + 4 - offset
        block_end = offset + header_len + int(record.rec_headers.get_header("Content-Length"))
        found.append(Record(offset, record.rec_type, header_len, block_end))
    return found


@pytest.fixture(scope="module")
def plain_warc(sample_dir: Path) -> tuple[bytes, list[Record]]:
    data = gzip.decompress((sample_dir / "web" / "sample-0000.warc.gz").read_bytes())
    return data, warc_records(data)


def read_cut(path: Path, data: bytes) -> tuple[list[Doc], Outcomes]:
    path.write_bytes(data)
    return read_all(WarcReader(paths=[str(path)], extract="resiliparse"))


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("response", "body"),
        ("response", "warc_headers"),
        ("response", "content_length"),  # warcio took "Content-Length: " (empty) as a complete empty record
        ("response", "http_headers"),
        ("request", "body"),  # a cut-off request used to be counted as an ordinary non_document_record
        ("request", "content_length"),
    ],
)
def test_truncated_uncompressed_warc_gives_one_error_and_keeps_earlier_records(
    plain_warc: tuple[bytes, list[Record]], tmp_path: Path, kind: str, where: str
) -> None:
    data, records = plain_warc
    index = [i for i, record in enumerate(records) if record.kind == kind][10]
    offset, _, header_len, _ = records[index]
    cut = {
        "warc_headers": offset + 60,
        "content_length": data.index(b"Content-Length: ", offset) + len(b"Content-Length: "),
        "http_headers": offset + header_len + 10,
        "body": offset + header_len + 90,
    }[where]
    path = tmp_path / "cut.warc"
    docs, out = read_cut(path, data[:cut])
    reference, _ = read_cut(tmp_path / "cut-full.warc", data)

    before = [(doc.id.replace("cut-full", "cut"), doc.text) for doc in reference if int(doc.id.split(":")[1]) < index]
    assert [(doc.id, doc.text) for doc in docs] == before
    assert out.stats.n_errors == 1, out.stats.messages
    assert set(out.stats.errors) <= {"truncated_record", "corrupt_stream"}
    (message,) = out.stats.messages
    assert str(path) in message and "offset" in message and "\n" not in message


def test_every_cut_inside_a_warc_record_is_reported(plain_warc: tuple[bytes, list[Record]], tmp_path: Path) -> None:
    """Sweep cut points through one request and one response record: a cut that loses any byte of a record is
    exactly one error; only a cut in the blank lines between records (nothing lost) reads cleanly."""
    data, records = plain_warc
    index = next(i for i, record in enumerate(records) if record.kind == "request" and i > 10)
    assert records[index + 1].kind == "response"
    path = tmp_path / "cut.warc"
    checked = 0
    for cut in range(records[index].offset + 1, records[index + 2].offset, 3):
        _, out = read_cut(path, data[:cut])
        complete = any(r.block_end <= cut <= records[i + 1].offset for i, r in enumerate(records[:-1]))
        if complete:
            assert not out.stats.errors, (cut, out.stats.messages)
        else:
            assert out.stats.n_errors == 1, (cut, data[cut - 20 : cut])
            assert set(out.stats.errors) <= {"truncated_record", "corrupt_stream"}
        checked += 1
    assert checked > 150


def test_missing_input_path_fails_at_plan_naming_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nowhere" / "*.jsonl")
    spec = {
        "name": "missing",
        "output": str(tmp_path / "out"),
        "stages": [{"read": {"format": "jsonl", "paths": [pattern]}}],
    }
    with pytest.raises(InputNotFound, match="no input files match") as raised:
        parse_pipeline(yaml.safe_dump(spec)).plan.first_tasks()
    assert pattern in str(raised.value)
    assert not (tmp_path / "out").exists()
