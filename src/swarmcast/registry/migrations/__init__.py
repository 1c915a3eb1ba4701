"""Alembic's environment and revisions for the registry's schema (run by registry/db.py at start)."""
