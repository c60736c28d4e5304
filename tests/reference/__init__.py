"""Naive plain-Python reference implementations the engine is checked against."""
