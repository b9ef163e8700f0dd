"""`amrwatch recorder`: the live recorder in the foreground.

The commands that read archives back live in their rooms: `sessions` and
`session show` in registry/cli.py, `replay`, `verify` and `export edf` in
audit/cli.py (docs/architecture.md).
"""

from __future__ import annotations

import argparse

from ... import config
from ...cli import common as base
from ...cli.common import data_dir as _data_dir


def cmd_recorder(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ...proto.codec import describe
    from ...service import setup_logging
    from .recorder_settings import RecorderSettings
    from .service import Recorder
    from amrwatch.archive.settings import ArchiveSettings

    setup_logging("recorder", args.log_level)
    try:
        archive = ArchiveSettings(hmac_key_file=args.hmac_key_file) if args.hmac_key_file else ArchiveSettings()
        archive.load_hmac_key()
        settings = RecorderSettings(grace_s=args.grace, archive=archive)
    except ValidationError as err:
        return base.fail(f"recorder settings refused: {describe(err, RecorderSettings)}", base.EXIT_USAGE)
    except ValueError as err:
        return base.fail(str(err), base.EXIT_USAGE)
    from amrwatch.archive.datalock import lock_or_exit

    lock = lock_or_exit(_data_dir(args), "amrwatch recorder")
    if isinstance(lock, int):
        return lock
    try:
        svc = Recorder(data_dir=_data_dir(args), settings=settings, control=args.control,
                       archive_read_bind=args.archive_read_bind or config.archive_read_bind(),
                       **base.service_kw(args))
        return svc.run()
    finally:
        lock.release()


def register(sub: argparse._SubParsersAction) -> None:
    data_help = f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)"

    r = sub.add_parser("recorder", help="run the recorder (archive + registry) in the foreground")
    base.add_service_endpoints(r)
    r.add_argument("--data", metavar="DIR", help=data_help)
    r.add_argument("--control", metavar="ENDPOINT",
                   help=f"acquirer control socket, for refetching lost messages (default {config.get('control')})")
    r.add_argument("--archive-read-bind", metavar="ENDPOINT",
                   help="serve the archive read-out (archive_read: events a remote reader missed, CURVE with the "
                   "cart's keys) on ENDPOINT, e.g. tcp://0.0.0.0:5553 (default: env AMRWATCH_ARCHIVE_READ_BIND; "
                   "unset: not served)")
    r.add_argument("--grace", type=float, default=3.0,
                   help="seconds a session stays open after its end for late events (default 3)")
    r.add_argument("--hmac-key-file", metavar="FILE", help="sign checkpoint.json with the key in FILE")
    r.set_defaults(func=cmd_recorder)
