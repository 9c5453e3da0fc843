"""Curation: readers, extraction, normalization, filters and writers."""
