"""`amrwatch replay`, `verify` and `export edf`: an archived session read back, re-run or exported
(audit/). The `export` group itself is made in amrwatch/cli/commands.py, which adds `edf` from here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amrwatch import config
from amrwatch.cli import common as base
from amrwatch.cli.common import data_dir as _data_dir


def _bus_in(args: argparse.Namespace) -> str:
    if args.bus_in:
        return args.bus_in
    if args.bus:
        head, _, port = args.bus.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"--bus must look like tcp://HOST:PORT; got {args.bus!r}")
        return f"{head}:{int(port) - 1}"  # the documented layout: bus_in, bus_out, control on consecutive ports
    return config.get("bus_in")


def cmd_replay(args: argparse.Namespace) -> int:
    from amrwatch.audit.replay import ReplayError, replay_session

    try:
        bus_in = _bus_in(args)
        wait = tuple(w for w in (args.wait_for or "").split(",") if w)
        result = replay_session(_data_dir(args), args.id, speed=args.speed, bus_in=bus_in,
                                bus_out=args.bus or config.get("bus_out"), wait_for=wait,
                                wait_timeout_s=args.wait_timeout, log=lambda s: print(s, file=sys.stderr),
                                force=args.force)
    except ReplayError as err:
        return base.fail(str(err))
    except ValueError as err:
        return base.fail(str(err), base.EXIT_USAGE)
    print(f"replayed session {args.id} as session {result.session_id}: {result.n_frames} frames, "
          f"{result.n_stimuli} stimuli, {result.n_messages} messages in {result.seconds:.1f} s")
    return base.EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from amrwatch.archive.index import cores
    from amrwatch.audit.verify import VerifyError, verify_session

    try:
        report = verify_session(_data_dir(args), args.id, model_dir=args.model or config.model_dir(),
                                hmac_key_file=args.hmac_key_file, index_workers=cores())
    except VerifyError as err:
        return base.fail(str(err))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for line in report.lines():
            print(line)
    return base.EXIT_OK if report.ok else base.EXIT_FAILED


def cmd_export_edf(args: argparse.Namespace) -> int:
    from amrwatch.audit.export_edf import ExportError, export_edf

    try:
        info = export_edf(_data_dir(args), args.id, Path(args.out))
    except ExportError as err:
        return base.fail(str(err))
    print(f"wrote {args.out}: {info.n_channels} signals, {info.duration_s:.1f} s, {info.n_annotations} annotations"
          + (f" ({info.missing_samples} missing samples written as 0 µV, each gap annotated)"
             if info.missing_samples else ""))
    return base.EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    data_help = f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)"

    rp = sub.add_parser("replay", help="republish an archived session on the bus, tagged as a replay")
    rp.add_argument("id", metavar="ID")
    rp.add_argument("--speed", type=float, default=1.0, help="X times faster than recorded (default 1)")
    rp.add_argument("--data", metavar="DIR", help=data_help)
    base.add_bus(rp)
    rp.add_argument("--bus-in", metavar="ENDPOINT",
                    help=f"where to publish (default {config.get('bus_in')}, or --bus's port - 1)")
    rp.add_argument("--wait-for", default="recorder,analyzer,predictor",
                    help="services whose heartbeat must say they receive before the replay starts "
                         "(comma-separated; default recorder,analyzer,predictor; empty: none)")
    rp.add_argument("--wait-timeout", type=float, default=20.0, help="seconds to wait for them")
    rp.add_argument("--force", action="store_true",
                    help="replay an archive that fails its integrity check (says what is skipped)")
    rp.set_defaults(func=cmd_replay)

    v = sub.add_parser("verify", help="check an archived session's integrity and re-run its analysis and "
                                      "predictions; exit 1 on any difference")
    v.add_argument("id", metavar="ID")
    v.add_argument("--data", metavar="DIR", help=data_help)
    v.add_argument("--model", metavar="DIR", help="the model the session was predicted with, if not the shipped "
                   "one (model.onnx + model_card.json; env AMRWATCH_MODEL_DIR)")
    v.add_argument("--hmac-key-file", metavar="FILE", help="checkpoint.json must be signed with the key in FILE")
    v.add_argument("--json", action="store_true", help="the report as one JSON object")
    v.set_defaults(func=cmd_verify)


def add_export(ex: argparse._SubParsersAction) -> None:
    """`export edf` (the group is made in amrwatch/cli/commands.py)."""
    data_help = f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)"
    e = ex.add_parser("edf", help="EDF+ of a session: signals in µV, annotations for stimuli, stages, AMR "
                                  "state changes and decisions")
    e.add_argument("id", metavar="ID")
    e.add_argument("out", metavar="OUT.edf", help="OUT.edf (EDF+, 16-bit) or OUT.bdf (BDF+, 24-bit)")
    e.add_argument("--data", metavar="DIR", help=data_help)
    e.set_defaults(func=cmd_export_edf)
