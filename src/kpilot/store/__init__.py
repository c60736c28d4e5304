"""Store: the embedded DuckDB event store and the identity graph."""
