"""What every command module shares: exit codes, the error line, the common options.

Exit codes: 0 success, 1 a check failed or an input was refused, 2 usage
(and 66 when the acquirer's source cannot be opened, config.EXIT_SOURCE).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SOURCE = config.EXIT_SOURCE


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"amrwatch: {message}", file=sys.stderr)
    return code


def add_bus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bus", metavar="ENDPOINT", help="bus endpoint to subscribe to "
                   f"(default {config.get('bus_out')}, env AMRWATCH_BUS_OUT)")


def add_service_endpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bus-in", metavar="ENDPOINT", help="where publishers connect "
                   f"(default {config.get('bus_in')}, env AMRWATCH_BUS_IN)")
    p.add_argument("--bus-out", metavar="ENDPOINT", help="where subscribers connect "
                   f"(default {config.get('bus_out')}, env AMRWATCH_BUS_OUT)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0 disables)")
    p.add_argument("--log-level", default="INFO")


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help=f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)")


def service_kw(args: argparse.Namespace) -> dict[str, Any]:
    """The endpoints and metrics port every service's constructor takes (add_service_endpoints)."""
    return {"bus_in": args.bus_in, "bus_out": args.bus_out, "metrics_port": args.metrics_port}


def data_dir(args: argparse.Namespace) -> Path:
    """--data if given, else the configured data directory (AMRWATCH_DATA)."""
    return Path(args.data) if getattr(args, "data", None) else config.data_dir()
