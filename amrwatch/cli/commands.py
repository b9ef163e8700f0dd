"""Every command of `amrwatch`, listed explicitly: which module adds it, in the order `--help` shows.

Each room keeps its own commands next to its code (docs/architecture.md):

| module | commands |
|---|---|
| amrwatch/cli/stack.py | up, bus, acquirer |
| amrwatch/cli/live.py | events, mark, factors, health, keys, status |
| services/analyzer/cli.py | analyzer, analyze |
| services/predictor/cli.py | predictor |
| services/recorder/cli.py | recorder |
| registry/cli.py | sessions, session show, outcome add/edit/list, registry migrate |
| audit/cli.py | replay, verify, export edf |
| study/cli.py | train, report, registry synthetic, export cohort |
| registry/sync_cli.py | sync |
| services/monitor/cli.py | monitor |
| services/hub/cli.py | hub |

A module that fails to import is an error (the traceback says why), never a
missing command. The modules are imported when the parser is built, not when
`amrwatch.cli` is imported, so that a room's command module may import
`amrwatch.cli.common` without a cycle.
"""

from __future__ import annotations

import argparse

#: The services `amrwatch up` starts between the bus and the acquirer, in this order; each is a
#: command of its own (`python -m amrwatch NAME`), and the acquirer waits for their heartbeats.
STACK_SERVICES: tuple[str, ...] = ("recorder", "analyzer", "predictor", "monitor")


def register_all(sub: argparse._SubParsersAction) -> None:
    """Add every command to `sub`."""
    from ..audit import cli as audit_cli
    from ..registry import cli as registry_cli
    from ..registry import sync_cli
    from ..services.hub import cli as hub_cli
    from ..services.analyzer import cli as analyzer_cli
    from ..services.monitor import cli as monitor_cli
    from ..services.predictor import cli as predictor_cli
    from ..services.recorder import cli as recorder_cli
    from ..study import cli as study_cli
    from . import live, stack

    stack.register(sub, stack_services=STACK_SERVICES)
    live.register(sub)
    analyzer_cli.register(sub)
    predictor_cli.register(sub)
    recorder_cli.register(sub)
    registry_cli.register(sub)
    audit_cli.register(sub)

    # The one `export` group: its sub-commands come from the rooms whose data they export.
    export = sub.add_parser("export", help="export a session or the registry").add_subparsers(
        dest="export_what", required=True, metavar="WHAT")
    audit_cli.add_export(export)  # export edf: one archived session as EDF+/BDF+
    study_cli.add_export(export)  # export cohort: the registry as the study's table

    study_cli.register(sub)

    # The one `registry` group: migrations are the registry's, synthetic registries the study's.
    registry = sub.add_parser("registry", help="the session registry").add_subparsers(
        dest="registry_what", required=True, metavar="WHAT")
    registry_cli.add_registry_commands(registry)  # registry migrate
    study_cli.add_registry_commands(registry)  # registry synthetic

    sync_cli.register(sub)
    monitor_cli.register(sub)
    hub_cli.register(sub)
