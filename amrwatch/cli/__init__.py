"""The `amrwatch` command line (docs/contract.md names every command and flag).

`main` builds one parser from the command modules listed in `commands.py`
(each room adds its own commands there); `common.py` holds what they share.

Exit codes: 0 success, 1 a check failed or an input was refused, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__, config, priority
from .common import EXIT_OK, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    from .commands import register_all

    p = argparse.ArgumentParser(prog="amrwatch", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"amrwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in config.SERVICES:
        # Before the service makes its threads: they inherit the process's priority (amrwatch/priority.py).
        try:
            note = priority.apply(args.command)
        except ValueError as err:
            print(f"amrwatch {args.command}: {err}", file=sys.stderr)
            return EXIT_USAGE
        if note:
            print(f"amrwatch {args.command}: warning: {note}", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
