"""`amrwatch recorder`, `sessions`, `session show`, `replay`, `verify` and `export edf`.

The `export` group is shared: this module creates it (`export edf`) and
outcomes_cli adds `export cohort` to the same group.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ... import cli as base
from ... import config


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data) if getattr(args, "data", None) else config.data_dir()


# --------------------------------------------------------------------------- #
# the service


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
        svc = Recorder(data_dir=_data_dir(args), settings=settings, control=args.control, **base._service_kw(args))
        return svc.run()
    finally:
        lock.release()


# --------------------------------------------------------------------------- #
# sessions / session show

_LIST_FIELDS = ("session_id", "started_at", "ended_at", "status", "source", "scenario", "replay_of",
                "model_sha256", "model_synthetic", "patient_token", "status_reason")


def _registry(args: argparse.Namespace):
    from amrwatch.registry.store import REGISTRY_FILE, Registry

    d = _data_dir(args)
    if not (d / REGISTRY_FILE).exists():
        raise FileNotFoundError(f"no registry at {d / REGISTRY_FILE}: nothing was recorded in {d} "
                                "(give --data DIR, or set AMRWATCH_DATA)")
    return Registry.in_data_dir(d)


def cmd_sessions(args: argparse.Namespace) -> int:
    try:
        reg = _registry(args)
    except FileNotFoundError as err:
        return base.fail(str(err))
    with reg:
        rows = reg.list()
    try:
        if args.json:
            for r in rows:
                d = r.as_dict()
                print(json.dumps({k: d[k] for k in _LIST_FIELDS}))
            return base.EXIT_OK
        if not rows:
            print("no sessions recorded yet")
            return base.EXIT_OK
        print(f"{'session':<28} {'started (UTC)':<20} {'status':<9} {'source':<18} {'scenario':<32} replay of")
        for r in rows:
            print(f"{r.session_id:<28} {r.started_at[:19].replace('T', ' '):<20} {r.status:<9} {r.source[:18]:<18} "
                  f"{(r.scenario or '—')[:32]:<32} {r.replay_of or '—'}")
    except BrokenPipeError:  # `amrwatch sessions | head`
        sys.stderr.close()
    return base.EXIT_OK


def session_summary(data_dir: Path, session_id: str) -> dict[str, Any]:
    """What `session show` prints: the registry row and what the archive holds."""
    from amrwatch.archive.writer import session_path
    from amrwatch.archive.session import ArchivedSession
    from amrwatch.registry.store import Registry

    with Registry.in_data_dir(data_dir) as reg:
        row = reg.get(session_id)
        replays = [r.session_id for r in reg.list() if r.replay_of == session_id]
    out: dict[str, Any] = {k: v for k, v in row.as_dict().items() if k not in ("montage", "settings")}
    out["channels"] = [c["name"] for c in row.montage.get("channels", [])]
    out["sampling_rate_hz"] = row.montage.get("sampling_rate_hz")
    out["replays"] = replays
    d = session_path(data_dir, session_id)
    out["archive"] = str(d)
    if not d.is_dir():
        out["archive_state"] = "missing"
        return out
    with ArchivedSession(d) as session:  # the directory exists; an empty one reads as empty
        idx = session.index
        counts: dict[str, int] = {"emg_frame": len(idx.frames)} if len(idx.frames) else {}
        for e in idx.events:
            counts[e.type] = counts.get(e.type, 0) + 1
        sig = session.signal()
        fs = row.montage.get("sampling_rate_hz") or 0
        out["records"] = idx.record_count
        out["messages"] = dict(sorted(counts.items()))
        out["samples"] = int(sig.hi[-1]) if sig.hi.size else 0
        out["duration_s"] = round(out["samples"] / fs, 3) if fs else None
        out["missing_samples"] = sum(b - a for a, b in sig.missing_samples())
        out["stages"] = [e.header["stage"] for e in idx.events_of("stage") if e.session_id == session_id]
        out["gaps"] = [{"record": no, "publisher": g.publisher, "type": g.type, "from_seq": g.from_seq,
                        "to_seq": g.to_seq, "reason": g.reason} for no, g in idx.gaps]
        out["resumes"] = len(idx.resumes)
        course = [e.header["course"] for e in idx.events_of("amr_course") if e.session_id == session_id]
        out["course"] = course[-1] if course else None
        decisions = [f"{e.header['kind']} ({e.header['priority']})" for e in idx.events_of("decision")
                     if e.session_id == session_id]
        out["decisions"] = decisions
        out["closed"] = idx.close is not None
        out["torn"] = idx.stopped_at is not None
    return out


def cmd_session_show(args: argparse.Namespace) -> int:
    from amrwatch.registry.store import UnknownSession

    try:
        _registry(args).close()
        info = session_summary(_data_dir(args), args.id)
    except (FileNotFoundError, UnknownSession) as err:
        return base.fail(str(err))
    if args.json:
        print(json.dumps(info))
        return base.EXIT_OK
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, list):
            v = ", ".join(v if all(isinstance(x, str) for x in v) else [json.dumps(x) for x in v]) or "—"
        elif isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items()) or "—"
        print(f"{k:<{width}}  {'—' if v is None else v}")
    return base.EXIT_OK


# --------------------------------------------------------------------------- #
# replay / verify / export


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
    from amrwatch.audit.verify import VerifyError, verify_session

    try:
        report = verify_session(_data_dir(args), args.id, model_dir=args.model or os.environ.get("AMRWATCH_MODEL_DIR"),
                                hmac_key_file=args.hmac_key_file)
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


def _subcommands(sub, name: str, help_text: str):
    """The sub-command group `name` (shared with another module that may have created it)."""
    existing = sub.choices.get(name)
    if existing is None:
        return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_what", required=True,
                                                                  metavar="WHAT")
    for action in existing._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"`amrwatch {name}` exists without sub-commands; cannot add to it")


def register(sub) -> None:
    base.SERVICE_COMMANDS["recorder"] = cmd_recorder
    data_help = f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)"

    r = sub.add_parser("recorder", help="run the recorder (archive + registry) in the foreground")
    base.add_service_endpoints(r)
    r.add_argument("--data", metavar="DIR", help=data_help)
    r.add_argument("--control", metavar="ENDPOINT",
                   help=f"acquirer control socket, for refetching lost messages (default {config.get('control')})")
    r.add_argument("--grace", type=float, default=3.0,
                   help="seconds a session stays open after its end for late events (default 3)")
    r.add_argument("--hmac-key-file", metavar="FILE", help="sign checkpoint.json with the key in FILE")
    r.set_defaults(func=cmd_recorder)

    s = sub.add_parser("sessions", help="list archived sessions (newest last)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--data", metavar="DIR", help=data_help)
    s.set_defaults(func=cmd_sessions)

    sh = sub.add_parser("session", help="one archived session")
    shs = sh.add_subparsers(dest="session_what", required=True, metavar="WHAT")
    show = shs.add_parser("show", help="registry row and archive contents of one session")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.add_argument("--data", metavar="DIR", help=data_help)
    show.set_defaults(func=cmd_session_show)

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

    ex = _subcommands(sub, "export", "export a session or the registry")
    e = ex.add_parser("edf", help="EDF+ of a session: signals in µV, annotations for stimuli, stages, AMR "
                                  "state changes and decisions")
    e.add_argument("id", metavar="ID")
    e.add_argument("out", metavar="OUT.edf", help="OUT.edf (EDF+, 16-bit) or OUT.bdf (BDF+, 24-bit)")
    e.add_argument("--data", metavar="DIR", help=data_help)
    e.set_defaults(func=cmd_export_edf)
