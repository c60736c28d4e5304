"""Benchmark suite: synthetic product generator, the dashboard workload, plain reference implementations."""
