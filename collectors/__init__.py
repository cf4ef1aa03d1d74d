"""Collectors: everything that produces hop events (SDK, ingest routes, taps, the shop simulator)."""
