"""Versioned ClickHouse migrations of the store: ``NNNN_name.sql``, applied in order by
``tracer.clickhouse.Store.open`` and recorded in ``schema_migrations``. A package so that the
``.sql`` files ship as package data and are found with ``importlib.resources``."""
