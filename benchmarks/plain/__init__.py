"""The standard workload written plainly in pandas, Polars and DuckDB SQL (the baselines kpilot is compared with)."""
