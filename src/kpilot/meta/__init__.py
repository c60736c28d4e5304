"""Metadata database (projects, keys, import runs) through SQLAlchemy 2 + Alembic."""
