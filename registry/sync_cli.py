"""`amrwatch sync`: push this cart's closed sessions to the central registry and archive root (registry/sync.py)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from amrwatch.cli.common import EXIT_FAILED, EXIT_OK, add_data, fail

#: sysexits EX_UNAVAILABLE: the central registry or archive root cannot be reached; everything stays on the cart.
EXIT_UNREACHABLE = 69


def cmd_sync(args: argparse.Namespace) -> int:
    from amrwatch import config

    cart, site = config.cart_identity()
    to_reg, to_arch = config.sync_targets()
    args.cart, args.site = args.cart or cart, args.site or site
    args.to_registry, args.to_archive = args.to_registry or to_reg, args.to_archive or to_arch
    if not args.to_registry or not args.to_archive:
        return fail("sync needs the central registry (--to-registry URL or $AMRWATCH_CENTRAL_REGISTRY) and the "
                    "central archive root (--to-archive DIR or $AMRWATCH_CENTRAL_ARCHIVE)", 2)
    stop = threading.Event()
    while True:
        code = _once(args)
        if not args.every or stop.wait(args.every):
            return code


def _once(args: argparse.Namespace) -> int:
    from amrwatch.registry.migrate import display_url
    from amrwatch.registry.store import Registry, RegistryError
    from amrwatch.registry.sync import Syncer, SyncError, parse_resolve, reachable

    from amrwatch import config

    data = Path(args.data) if args.data else config.data_dir()
    root = Path(args.to_archive)
    if not root.is_dir():
        return fail(f"central archive root {root} is not a directory (not mounted?); nothing was pushed, the "
                    "sessions wait on the cart", EXIT_UNREACHABLE)
    why = reachable(args.to_registry)
    if why is not None:
        return fail(f"central registry not reachable: {why}; nothing was pushed, the sessions wait on the cart",
                    EXIT_UNREACHABLE)
    try:
        resolve = parse_resolve(args.resolve)
        with Registry.existing(data) as local, Registry(args.to_registry) as central:
            shown = display_url(central.engine.url)
            report = Syncer(local, data, central, root, cart=args.cart, site=args.site, resolve=resolve).run()
    except (SyncError, RegistryError) as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"sync stopped: {err}; what was pushed stays pushed, the next run resumes", EXIT_UNREACHABLE)
    except Exception as err:  # the driver's (connection lost mid-run): everything not committed is retried
        return fail(f"sync stopped: {type(err).__name__}: {str(err).strip()[:300]}; what was pushed stays pushed, "
                    "the next run resumes", EXIT_UNREACHABLE)
    for sid, why in report.refused.items():
        print(f"amrwatch sync: session {sid} NOT pushed: {why}", file=sys.stderr)
    print(f"sync {args.cart}@{args.site} -> {shown} + {root}: {len(report.pushed)} pushed "
          f"({report.archives_copied} archives, {report.archive_bytes / 1e6:.1f} MB, verified at the destination), "
          f"{report.unchanged} already there, {len(report.refused)} refused, {report.waiting_open} still recording"
          + (f", {report.corrupt} marked corrupt (never pushed)" if report.corrupt else ""))
    return EXIT_FAILED if report.refused else EXIT_OK


def register(sub) -> None:
    s = sub.add_parser("sync", help="push closed sessions (registry rows, outcomes, archive) to the central registry "
                                    "and archive root; resumable, idempotent")
    add_data(s)
    s.add_argument("--to-registry", metavar="URL", help="central registry, e.g. postgresql://amrwatch_sync@registry."
                   "hospital/amrwatch?sslmode=verify-full (default $AMRWATCH_CENTRAL_REGISTRY)")
    s.add_argument("--to-archive", metavar="DIR", help="central archive root, a mounted share "
                   "(default $AMRWATCH_CENTRAL_ARCHIVE)")
    s.add_argument("--cart", metavar="NAME", help="this cart's name (default $AMRWATCH_CART)")
    s.add_argument("--site", metavar="NAME", help="this cart's site/institution (default $AMRWATCH_SITE)")
    s.add_argument("--resolve", action="append", metavar="SESSION:TIMEPOINT=central|cart",
                   help="settle an outcome conflict the last sync reported (repeatable)")
    s.add_argument("--every", type=float, default=0, metavar="SECONDS",
                   help="keep running, syncing every SECONDS (as a service); 0: once")
    s.set_defaults(func=cmd_sync)


__all__ = ["register"]
