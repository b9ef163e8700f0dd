"""Registry tests run on both backends: the cart's SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL cluster per test process (tests/pgserver.py)."""
    from tests.pgserver import PgServer

    try:
        server = PgServer()
    except FileNotFoundError as err:
        print(f"\nPostgreSQL tests skipped: {err}", file=sys.stderr)
        pytest.skip(f"PostgreSQL server not installed: {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def registry_url(backend: str, tmp_path: Path, request) -> str:
    """A fresh, empty registry target of the backend under test (migrated by the test or by opening it)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'central' / 'registry.sqlite'}"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def migrated_url(registry_url: str) -> str:
    """As registry_url, brought to the current schema as `amrwatch registry migrate` would."""
    from amrwatch.registry.migrate import migrate_url

    migrate_url(registry_url)
    return registry_url
