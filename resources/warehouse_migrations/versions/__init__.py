"""Warehouse revisions; a package so that setuptools ships it (Alembic skips __init__.py)."""
