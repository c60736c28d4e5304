"""Compute: JSON query specs, compiled to SQL per dialect and run by an engine."""
