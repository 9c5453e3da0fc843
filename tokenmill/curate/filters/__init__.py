"""Heuristic quality filters (Gopher, C4, FineWeb): each a registered stage with named rejection reasons."""
