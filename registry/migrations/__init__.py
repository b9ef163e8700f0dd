"""Alembic migrations of the registry schema (registry/schema.py), for SQLite and PostgreSQL."""
