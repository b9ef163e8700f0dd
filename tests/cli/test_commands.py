"""The command list is explicit: every service `up` starts is a command, and a command module that
fails to import stops `amrwatch` with the reason instead of leaving its commands out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from amrwatch.cli import build_parser
from amrwatch.cli.commands import STACK_SERVICES


def _commands() -> set[str]:
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    return set(sub.choices)


def test_every_service_up_starts_is_a_command_of_its_own():
    have = _commands()
    assert set(STACK_SERVICES) <= have, f"up would start {set(STACK_SERVICES) - have}, which are not commands"
    assert {"bus", "acquirer", "export"} <= have


@pytest.mark.parametrize("module", ["amrwatch.services.monitor.cli", "amrwatch.study.cli"])
def test_a_command_module_that_cannot_be_imported_is_an_error_not_a_missing_command(module: str):
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from amrwatch.cli import main\n"
            "sys.exit(main(['status', '--help']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and module in r.stderr, r.stderr[-2000:]


def test_building_the_command_line_imports_no_registry_database_library():
    """Every command builds the whole parser; `analyze` and `verify` of an archive never touch the registry,
    and SQLAlchemy cost them a quarter of a second (issue #18): the parser takes the registry's vocabularies
    from registry/vocab.py, not from the store."""
    code = ("import sys\n"
            "from amrwatch.cli import build_parser\n"
            "build_parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_the_registry_vocabularies_are_the_stores():
    from amrwatch.registry import store, vocab

    for name in ("COMPLICATIONS", "OUTCOME_CLASSES", "RECORDING_TIMEPOINTS", "TIMEPOINTS", "STATUSES",
                 "PRESENCE_CLOSED_BY", "REGISTRY_FILE"):
        assert getattr(store, name) is getattr(vocab, name)
