"""Ingest throughput: tokenmill's readers against datatrove's, on the same files, in one run.

For each dataset both sides do the same work in this one process, one core, shard after shard:

    read -> (extract main text, for WARC) -> normalize -> write Parquet (zstd)

and the script prints documents and input megabytes per CPU-second (per core, whatever else the machine is
running), and the ratio tokenmill / datatrove. Then it runs the whole tokenmill pipeline through Dask
(`tokenmill.run`, which starts a LocalCluster) with 1 worker and with 2 workers and prints the wall times and the
speedup.

    .venv/bin/python benchmarks/ingest.py [--repeat N] [--skip-scaling] [--data DIR]

Results and the targets they are checked against are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tokenmill
from tokenmill.engine.executor import process_shard
from tokenmill.engine.spec import parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"

PILE_GLOB = "*.jsonl.zst"
# The WARC samples with HTML responses. `resiliparse-clipped.warc.gz` is left out on purpose: it is a truncated
# file kept for error-handling tests, and datatrove's reader stops the whole run on it.
WARC_FILES = (
    "dolma-sample-0000.warc.gz",
    "dolma-sample-0001.warc.gz",
    "resiliparse-warcfile.warc.gz",
    "whirlwind.warc.gz",
)
SCALING_COPIES = 4  # the 4 pile shards, each linked 4 times: 16 shards for the 1-vs-2-worker run
MB = 1_000_000

# The same whitespace rules as tokenmill's `normalize` (tokenmill/curate/normalize.py), for datatrove's side.
_SPACES = re.compile(r"[^\S\n]+")
_LINE_EDGES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass
class Measurement:
    """One timed run of one side over one dataset."""

    dataset: str
    side: str
    docs: int  # documents written
    input_mb: float  # decompressed input, identical for both sides of a dataset
    seconds: float
    details: list[str] = field(default_factory=list)  # what this side did, step by step
    cpu_seconds: float = 0.0  # CPU time, this process and its finished children

    @property
    def docs_per_s(self) -> float:
        """Documents per CPU-second: per core, and robust to other work sharing the machine."""
        return self.docs / self.cpu_seconds

    @property
    def mb_per_s(self) -> float:
        """Input megabytes per CPU-second."""
        return self.input_mb / self.cpu_seconds


@dataclass
class Dataset:
    """A set of input files, staged as links in one folder so both sides read exactly the same files."""

    name: str
    folder: Path
    glob: str
    input_mb: float


# --------------------------------------------------------------------------------------------------------------
# Inputs


def check_environment(data: Path) -> None:
    """Exit with a clear message when the shared data or datatrove's optional readers are missing."""
    missing = [p for p in (data / "pile", data / "commoncrawl") if not p.is_dir()]
    if missing:
        sys.exit(
            f"ingest benchmark: shared data not found ({', '.join(str(p) for p in missing)}).\n"
            f"It lives in ../shared/data beside the repository; pass --data DIR to point elsewhere."
        )
    absent = []
    for module, package in (("orjson", "orjson"), ("cchardet", "faust-cchardet"), ("magic", "python-magic")):
        try:
            __import__(module)
        except ImportError:
            absent.append(package)
    if absent:
        sys.exit(
            "ingest benchmark: datatrove's JsonlReader/WarcReader need its `io` extras, not installed here.\n"
            f"Install them with: .venv/bin/pip install {' '.join(absent)}"
        )


def link_files(sources: list[Path], folder: Path, copies: int = 1) -> None:
    """Symlink each source into `folder` (`copies` times, under distinct names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for source in sources:
            name = source.name if copies == 1 else f"x{copy}-{source.name}"
            (folder / name).symlink_to(source.resolve())


def decompressed_mb(files: list[Path]) -> float:
    """Total decompressed size of the input files, in MB (10^6 bytes)."""
    import zstandard

    total = 0
    for path in files:
        with open(path, "rb") as raw:
            if path.name.endswith(".zst"):
                stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            else:
                stream = gzip.GzipFile(fileobj=raw)
            with stream:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
    return total / MB


def stage_datasets(data: Path, workdir: Path) -> tuple[Dataset, Dataset]:
    """Link the pile shards and the WARC samples into `workdir`; return (pile, warc)."""
    pile_files = sorted((data / "pile").glob(PILE_GLOB))
    warc_files = [data / "commoncrawl" / name for name in WARC_FILES]
    absent = [str(p) for p in warc_files if not p.is_file()]
    if not pile_files or absent:
        sys.exit(f"ingest benchmark: input files missing: {absent or str(data / 'pile' / PILE_GLOB)}")
    link_files(pile_files, workdir / "pile")
    link_files(warc_files, workdir / "warc")
    pile = Dataset("pile", workdir / "pile", PILE_GLOB, decompressed_mb(pile_files))
    warc = Dataset("warc", workdir / "warc", "*.warc.gz", decompressed_mb(warc_files))
    return pile, warc


# --------------------------------------------------------------------------------------------------------------
# tokenmill's side


def tokenmill_yaml(read: str, output: Path, n_workers: int = 1) -> str:
    """A read -> normalize -> write pipeline in tokenmill's YAML, with `read` as a flow mapping."""
    return (
        f"name: bench\n"
        f"output: {json.dumps(str(output))}\n"
        f"cluster: {{n_workers: {n_workers}, threads_per_worker: 1, dashboard_address: null}}\n"
        f"stages:\n"
        f"  - read: {read}\n"
        f"  - normalize: {{}}\n"
        f"  - write: {{format: parquet}}\n"
    )


def read_spec(dataset: Dataset, extract: str | None = None) -> str:
    """tokenmill's `read:` arguments for a dataset."""
    paths = json.dumps([str(dataset.folder / dataset.glob)])
    if extract is None:
        return f"{{format: pile, paths: {paths}}}"
    return f"{{format: warc, paths: {paths}, extract: {extract}}}"


def run_tokenmill(dataset: Dataset, output: Path, extract: str | None = None) -> Measurement:
    """Every shard through `process_shard`, one after another in this process (= one core)."""
    tasks = parse_pipeline(tokenmill_yaml(read_spec(dataset, extract), output)).plan.first_tasks()
    started = time.perf_counter()
    results = [process_shard(task) for task in tasks]
    seconds = time.perf_counter() - started

    totals: dict[str, dict] = {}
    for result in results:
        for stage in result["stats"]:
            total = totals.setdefault(stage["stage"], {"docs_in": 0, "kept": 0, "rejected": {}, "errors": {}})
            total["docs_in"] += stage["docs_in"]
            total["kept"] += stage["kept"]
            for kind in ("rejected", "errors"):
                for reason, n in stage[kind].items():
                    total[kind][reason] = total[kind].get(reason, 0) + n
    details = [f"{len(tasks)} shards via process_shard"]
    for name, total in totals.items():
        dropped = {**total["rejected"], **total["errors"]}
        why = f" (dropped: {', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))})" if dropped else ""
        what = f"{name} [{extract}]" if name == "read" and extract else name
        details.append(f"{what}: {total['docs_in']} in, {total['kept']} kept{why}")
    docs = totals["normalize"]["kept"]
    details.append(f"write parquet (zstd level 3): {docs} docs")
    side = "tokenmill" + (f" ({extract})" if extract else "")
    return Measurement(dataset.name, side, docs, dataset.input_mb, seconds, details)


# --------------------------------------------------------------------------------------------------------------
# datatrove's side


def datatrove_steps(dataset: Dataset, output: Path, extract: str | None = None) -> list:
    """datatrove's reader, extractor (WARC only), the same normalization, and a zstd Parquet writer."""
    import pyarrow as pa
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.formatters import FTFYFormatter
    from datatrove.pipeline.formatters.base import BaseFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    class CollapseWhitespace(BaseFormatter):
        """tokenmill's whitespace rules: CR to LF, runs of spaces to one, at most one blank line, strip."""

        name = "collapse whitespace"

        def format(self, text: str) -> str:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            return _BLANK_LINES.sub("\n\n", _LINE_EDGES.sub("\n", _SPACES.sub(" ", text))).strip()

    class Resiliparse(BaseExtractor):
        """datatrove 0.10 ships no Resiliparse extractor; this one calls it as tokenmill does."""

        name = "resiliparse"

        def __init__(self, timeout: float) -> None:
            super().__init__(timeout)

        def extract(self, text: str) -> str:
            from resiliparse.extract.html2text import extract_plain_text
            from resiliparse.parse.html import HTMLTree

            return extract_plain_text(HTMLTree.parse(text), main_content=True, alt_texts=False, links=False)

    def meta_as_json(writer, document) -> dict:
        # One schema for every row (the pile's metadata keys vary by subset), as tokenmill stores it.
        meta = json.dumps(document.metadata, sort_keys=True, ensure_ascii=False)
        return {"id": document.id, "text": document.text, "meta": meta}

    if extract is None:
        steps: list = [JsonlReader(str(dataset.folder), glob_pattern=dataset.glob, compression="zstd")]
    else:
        # A generous timeout: datatrove's default (1 s) silently drops slow pages, which tokenmill never does.
        extractor = (
            Trafilatura(favour_precision=True, deduplicate=False, timeout=60)
            if extract == "trafilatura"
            else Resiliparse(60)
        )
        steps = [WarcReader(str(dataset.folder), glob_pattern=dataset.glob), extractor]
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("meta", pa.string())])
    steps += [
        # tokenmill's ftfy configuration: encoding repair, control characters, NFC; no HTML unescaping.
        FTFYFormatter(unescape_html=False, remove_terminal_escapes=False, normalization="NFC"),
        CollapseWhitespace(),
        ParquetWriter(
            str(output),
            compression="zstd",
            adapter=meta_as_json,
            schema=schema,
            use_content_defined_chunking=False,  # tokenmill's writer does neither
            write_page_index=False,
        ),
    ]
    return steps


def run_datatrove(dataset: Dataset, output: Path, extract: str | None = None) -> Measurement:
    """datatrove's steps chained as generators in this process (what LocalPipelineExecutor does in one task,
    minus its logging and stats files), so the work runs on one core like tokenmill's side."""
    steps = datatrove_steps(dataset, output, extract)
    started = time.perf_counter()
    pipeline: Iterator | None = None
    for step in steps:
        pipeline = step.run(pipeline, rank=0, world_size=1)
    docs = sum(1 for _ in pipeline or ())
    seconds = time.perf_counter() - started

    details = ["steps chained in-process (rank 0 of 1)"]
    for step in steps:
        counts = {key: int(value.total) for key, value in step.stats.stats.items() if key != "doc_len"}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if not k.endswith(".parquet"))
        details.append(f"{step.name}: {shown}")
    if extract == "trafilatura":
        details.append("(datatrove runs the extractor in a sandbox subprocess; the two processes take turns)")
    side = "datatrove" + (f" ({extract})" if extract else "")
    return Measurement(dataset.name, side, docs, dataset.input_mb, seconds, details)


# --------------------------------------------------------------------------------------------------------------
# Timing


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (datatrove's extractor sandbox is one)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def background_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes kept busy over `seconds` (from /proc/stat; None where it is absent).

    The machine is shared: timings taken while this is well above 0 are slower than the code is."""
    try:
        with open("/proc/stat") as handle:
            before = [int(x) for x in handle.readline().split()[1:]]
        time.sleep(seconds)
        with open("/proc/stat") as handle:
            after = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return None
    delta = [b - a for a, b in zip(before, after)]
    idle = delta[3] + delta[4]  # idle + iowait
    return (sum(delta) - idle) / max(1, sum(delta)) * (os.cpu_count() or 1)


def timed(run: Callable[[], Measurement]) -> Measurement:
    """Run one measurement and attach the CPU seconds it used."""
    cpu = cpu_seconds()
    measured = run()
    measured.cpu_seconds = cpu_seconds() - cpu
    return measured


def best_of(repeat: int, runs: dict[str, Callable[[Path], Measurement]], scratch: Path) -> dict[str, Measurement]:
    """One untimed warm-up run of each side (imports, caches), then `repeat` rounds alternating the sides;
    keep each side's run with the least CPU time. Every run writes to a fresh folder."""
    best: dict[str, Measurement] = {}
    for round_ in range(repeat + 1):
        for key, run in runs.items():
            output = scratch / f"{key}-{round_}"
            measured = timed(lambda run=run, output=output: run(output))
            shutil.rmtree(output, ignore_errors=True)
            if round_ > 0 and (key not in best or measured.cpu_seconds < best[key].cpu_seconds):
                best[key] = measured
    return best


def compare(dataset: Dataset, extract: str | None, repeat: int, scratch: Path) -> tuple[Measurement, Measurement]:
    """tokenmill and datatrove on one dataset: (ours, theirs), each the best of `repeat` runs."""
    runs = {
        "tokenmill": lambda out: run_tokenmill(dataset, out, extract),
        "datatrove": lambda out: run_datatrove(dataset, out, extract),
    }
    best = best_of(repeat, runs, scratch / f"{dataset.name}-{extract or 'plain'}")
    return best["tokenmill"], best["datatrove"]


@dataclass
class Scaling:
    """Best wall times of the whole-run scaling measurement."""

    shards: int
    docs: int
    in_process: float  # the same shards through process_shard in this process: no Dask at all
    wall: dict[int, float]  # workers -> wall seconds of tokenmill.run, cluster start and stop included
    startup: dict[int, float]  # workers -> seconds to start and stop an idle LocalCluster of that size


def cluster_startup_seconds(n_workers: int) -> float:
    """Wall time to start and stop a LocalCluster like the one `tokenmill.run` starts, with a client."""
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(n_workers)
    return time.perf_counter() - started


def scaling(pile: Dataset, repeat: int, scratch: Path) -> Scaling:
    """`tokenmill.run` over the pile shards linked SCALING_COPIES times, with 1 and with 2 workers (alternating,
    best of `repeat`); the same shards in-process for reference; the bare cluster start-up cost."""
    replicated = Dataset("pile-x16", scratch / "pile-x16", pile.glob, pile.input_mb * SCALING_COPIES)
    link_files(sorted(pile.folder.glob(pile.glob)), replicated.folder, SCALING_COPIES)
    shards = len(list(replicated.folder.glob(pile.glob)))
    wall: dict[int, float] = {}
    in_process = float("inf")
    docs = 0
    for round_ in range(repeat):
        in_process = min(in_process, run_tokenmill(replicated, scratch / f"in-process-{round_}").seconds)
        shutil.rmtree(scratch / f"in-process-{round_}", ignore_errors=True)
        for workers in (1, 2):
            output = scratch / f"scaling-{workers}-{round_}"
            pipeline = parse_pipeline(tokenmill_yaml(read_spec(replicated), output, workers))
            started = time.perf_counter()
            result = tokenmill.run(pipeline, force=True)
            seconds = time.perf_counter() - started
            shutil.rmtree(output, ignore_errors=True)
            if not result.ok:
                sys.exit(f"ingest benchmark: scaling run with {workers} worker(s) failed: {result.failed}")
            docs = result.stats[-1].kept
            wall[workers] = min(wall.get(workers, seconds), seconds)
    startup = {workers: min(cluster_startup_seconds(workers) for _ in range(repeat)) for workers in (1, 2)}
    return Scaling(shards, docs, in_process, wall, startup)


# --------------------------------------------------------------------------------------------------------------
# Report


def print_table(pairs: list[tuple[Measurement, Measurement]]) -> None:
    """The per-core table: one row per side, the ratio on tokenmill's row."""
    header = (
        f"{'dataset':<8} {'side':<24} {'docs':>5} {'MB':>6} {'seconds':>8} {'cpu s':>6} "
        f"{'docs/s':>7} {'MB/s':>6} {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for ours, theirs in pairs:
        for m in (ours, theirs):
            ratio = f"{ours.mb_per_s / theirs.mb_per_s:.2f}" if m is ours else ""
            print(
                f"{m.dataset:<8} {m.side:<24} {m.docs:>5} {m.input_mb:>6.2f} {m.seconds:>8.3f} {m.cpu_seconds:>6.2f} "
                f"{m.docs_per_s:>7.1f} {m.mb_per_s:>6.2f} {ratio:>5}"
            )


def print_details(pairs: list[tuple[Measurement, Measurement]]) -> None:
    """What each side did (from its own counters), so the reader can check the work was comparable."""
    for ours, theirs in pairs:
        for m in (ours, theirs):
            print(f"  {m.dataset} / {m.side}:")
            for line in m.details:
                print(f"    {line}")


def print_scaling(result: Scaling) -> None:
    """1 worker against 2 workers: wall time of the whole run, start-up included."""
    print(f"  in-process, no Dask: {result.in_process:6.2f} s ({result.docs / result.in_process:.0f} docs/s)")
    for workers, wall in sorted(result.wall.items()):
        label = f"{workers} worker{'s' if workers > 1 else ''}:"
        print(
            f"  {label:<21}{wall:6.2f} s wall ({result.docs / wall:.0f} docs/s); "
            f"an idle cluster of this size starts and stops in {result.startup[workers]:.2f} s"
        )
    speedup = result.wall[1] / result.wall[2]
    print(f"  speedup 2 vs 1 workers: {speedup:.2f}x (target >= 1.7x; wall times, nothing subtracted)")


def describe_load(when: str) -> None:
    """Print how busy the machine was with other work; warn when timings will be pessimistic."""
    busy = background_cores()
    if busy is None:
        return
    note = "  (warning: other processes are using the CPU; timings are pessimistic)" if busy > 0.2 else ""
    print(f"other load {when}: {busy:.2f} of {os.cpu_count()} cores busy{note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best is kept")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the 1-vs-2-worker Dask run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default ../shared/data)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_environment(args.data)
    from datatrove.utils.logging import logger as datatrove_logger

    datatrove_logger.remove()  # its INFO lines per file would drown the table
    datatrove_logger.add(sys.stderr, level="ERROR")
    # The scheduler's HTTP server falls back to a free port when 8787 is taken (another cluster on the machine).
    warnings.filterwarnings("ignore", message="Port .* is already in use")

    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    print(f"data: {args.data.resolve()}; each figure is the best of {args.repeat} runs after one warm-up run")
    describe_load("before the per-core runs")
    with tempfile.TemporaryDirectory(prefix="tokenmill-bench-") as tmp:
        scratch = Path(tmp)
        pile, warc = stage_datasets(args.data, scratch)
        print(
            f"inputs (decompressed): pile {pile.input_mb:.2f} MB (4 shards), warc {warc.input_mb:.2f} MB "
            f"({len(WARC_FILES)} files)"
        )
        pairs = [
            compare(pile, None, args.repeat, scratch),
            compare(warc, "trafilatura", args.repeat, scratch),
            compare(warc, "resiliparse", args.repeat, scratch),
        ]
        print()
        print("Per core: one process, shards one after another. docs = documents written; MB = decompressed input;")
        print("seconds = wall; cpu s = CPU time incl. child processes; docs/s and MB/s per CPU-second (= per core,")
        print("unaffected by other work on the machine); ratio = ours / datatrove MB/s")
        print_table(pairs)
        print()
        print("What each side did:")
        print_details(pairs)
        if not args.skip_scaling:
            print()
            describe_load("before the scaling runs")
            print(f"Scaling: tokenmill.run (LocalCluster) on the 4 pile shards linked {SCALING_COPIES}x = 16 shards")
            print_scaling(scaling(pile, args.repeat, scratch))


if __name__ == "__main__":
    main()
