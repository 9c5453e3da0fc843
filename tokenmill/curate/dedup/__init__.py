"""Deduplication: global stages that see the whole dataset through hash-partitioned files, never the driver."""
