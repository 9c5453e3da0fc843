"""Input readers, registered under `read: {format: ...}`."""

from tokenmill.curate.readers.base import Reader
from tokenmill.curate.readers.jsonl import JsonlReader, PileReader
from tokenmill.curate.readers.tables import HFDatasetReader, ParquetReader
from tokenmill.curate.readers.text import TextReader
from tokenmill.curate.readers.warc import WarcReader, WetReader

__all__ = [
    "HFDatasetReader",
    "JsonlReader",
    "ParquetReader",
    "PileReader",
    "Reader",
    "TextReader",
    "WarcReader",
    "WetReader",
]
