"""Compute engines beyond the embedded store: the Parquet lake export and Apache Spark."""
