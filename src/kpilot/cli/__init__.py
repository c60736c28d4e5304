"""Command-line interface (Typer + Rich): tables for people, ``--json`` for machines."""
