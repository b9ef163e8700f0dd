"""`amrwatch events`, `mark`, `factors`, `health`, `status` and `keys`: the operator's and the
administrator's commands against a running stack."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

from .. import config
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_bus, fail


def cmd_events(args: argparse.Namespace) -> int:
    import zmq

    from ..bus import Subscriber
    from ..printer import make_printer
    from ..proto.messages import BY_TYPE, EVENT_TYPES, SessionEnd

    types = args.type or list(EVENT_TYPES)
    unknown = [t for t in types if t not in BY_TYPE]
    if unknown:
        return fail(f"--type: unknown type(s) {unknown}; known: {sorted(BY_TYPE)}", EXIT_USAGE)
    if args.session is not None and "session_end" not in types:
        types = [*types, "session_end"]
    ctx = zmq.Context()
    endpoint = args.bus or config.get("bus_out")

    def on_seq(ev) -> None:
        if ev.kind in ("gap", "duplicate", "restarted"):
            print(f"amrwatch events: {ev.describe()}", file=sys.stderr, flush=True)

    sub = Subscriber(ctx, endpoint, types, on_seq=on_seq,
                     on_reject=lambda r, t, f: print(f"amrwatch events: refused a message: {t}", file=sys.stderr))
    show = make_printer(json_lines=args.json, show_all=bool(args.type))
    wanted = set(args.type or EVENT_TYPES)
    quiet_limit = args.timeout
    last = time.monotonic()
    seen = 0
    try:
        while True:
            msg = sub.recv(200)
            now = time.monotonic()
            if msg is None:
                if not args.follow and now - last > quiet_limit:
                    break
                continue
            last = now
            if args.session and msg.session_id != args.session:
                continue
            if msg.type in wanted and show(msg):
                seen += 1
                if args.count and seen >= args.count:
                    break
            if not args.follow and isinstance(msg, SessionEnd) and (args.session is None or msg.session_id == args.session):
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        ctx.term()
    if seen == 0 and not args.follow:
        return fail(f"no events received from {endpoint} within {quiet_limit:g} s; is the stack running (amrwatch up)?")
    return EXIT_OK


def _control_endpoint(args: argparse.Namespace) -> str:
    if args.control:
        return args.control
    if args.bus:
        return config.control_for_bus(args.bus)
    return config.get("control")


def _send_operator(args: argparse.Namespace, request: dict, what: str) -> int:
    from ..control import REQUEST_TIMEOUT_S, ControlError, no_answer
    from ..control import request as control_request

    endpoint = _control_endpoint(args)
    try:
        reply = control_request(endpoint, request)
    except ControlError as err:
        return fail(f"{what}: {err}")
    if reply is None:
        return fail(f"{no_answer(endpoint, REQUEST_TIMEOUT_S)}; start the stack (amrwatch up) "
                    "or give --control ENDPOINT")
    if not reply.ok:
        return fail(f"{what} refused: {reply.reply.error}")
    print(f"{what} published for session {reply.reply.session_id} (seq {reply.reply.seq})")
    return EXIT_OK


def cmd_mark(args: argparse.Namespace) -> int:
    return _send_operator(args, {"op": "mark", "stage": args.stage}, f"stage {args.stage}")


def _yes_no(value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "y", "true", "1"):
        return True
    if v in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"carbamazepine must be yes or no; got {value!r}")


def cmd_factors(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..proto.codec import describe
    from ..proto.messages import FactorValues

    given = {k: getattr(args, k) for k in FactorValues.model_fields if getattr(args, k) is not None}
    if not given:
        return fail("give at least one factor, e.g. --cohen-grade 3 (see amrwatch factors --help)", EXIT_USAGE)
    try:
        values = FactorValues(**given)
    except ValidationError as err:
        return fail(f"factors refused, nothing published: {describe(err, FactorValues)}")
    return _send_operator(args, {"op": "factors", "factors": values.given()}, "factors")


def cmd_health(args: argparse.Namespace) -> int:
    """Healthy = the service's own heartbeat says `ok`, not merely that a process exists."""
    import zmq

    from ..bus import Subscriber
    from ..proto.messages import Heartbeat

    ctx = zmq.Context()
    endpoint = args.bus or config.get("bus_out")
    sub = Subscriber(ctx, endpoint, ("heartbeat",))
    deadline = time.monotonic() + args.timeout
    last = None
    try:
        while time.monotonic() < deadline:
            msg = sub.recv(100)
            if isinstance(msg, Heartbeat) and msg.service == args.service:
                last = msg
                if msg.status == "ok":
                    print(f"{args.service}: ok (up {msg.uptime_s:.0f} s, version {msg.version})")
                    return EXIT_OK
    finally:
        sub.close()
        ctx.term()
    if last is not None:
        return fail(f"{args.service}: heartbeat says {last.status!r}")
    return fail(f"{args.service}: no heartbeat on {endpoint} within {args.timeout:g} s")


def cmd_keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import security

    try:
        made = security.generate(Path(args.dir), clients=tuple(args.client or ["client"]))
    except security.KeyDirError as err:
        return fail(str(err))
    for p in made:
        print(p)
    print(f"set AMRWATCH_KEYS={args.dir} for the stack and its clients; copy only server.key and a client "
          "keypair to a remote subscriber", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Each service: up/down, version, model, last heartbeat, active alarms."""
    import zmq

    from ..bus import Subscriber
    from ..proto.messages import Alarm, Heartbeat

    ctx = zmq.Context()
    endpoint = args.bus or config.get("bus_out")
    sub = Subscriber(ctx, endpoint, ("heartbeat", "alarm"))
    seen: dict[str, Heartbeat] = {}
    alarms: dict[str, Alarm] = {}
    deadline = time.monotonic() + args.wait
    try:
        while time.monotonic() < deadline:
            msg = sub.recv(100)
            if isinstance(msg, Heartbeat):
                seen[msg.service] = msg
            elif isinstance(msg, Alarm):
                if msg.state == "raised":
                    alarms[msg.alarm_key] = msg
                else:
                    alarms.pop(msg.alarm_key, None)
    finally:
        sub.close()
        ctx.term()
    expected = list(config.SERVICES) + [s for s in seen if s not in config.SERVICES]
    rows = []
    now = datetime.datetime.now(datetime.UTC)
    for name in expected:
        hb = seen.get(name)
        row = {"service": name, "up": hb is not None and hb.status in ("ok", "starting"),
               "status": hb.status if hb else "down", "version": hb.version if hb else None,
               "last_heartbeat_s": round((now - hb.ts_utc).total_seconds(), 2) if hb else None,
               "active_alarms": list(hb.active_alarms) if hb else [],
               "model": (hb.info.get("model_sha256") if hb else None),
               "synthetic_model": (hb.info.get("synthetic") if hb else None)}
        rows.append(row)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        for a in alarms.values():
            print(json.dumps({"alarm": a.alarm_key, "kind": a.kind, "priority": a.priority, "message": a.message}))
    else:
        print(f"{'service':<10} {'state':<8} {'version':<8} {'heartbeat':<10} alarms")
        for r in rows:
            hb = "—" if r["last_heartbeat_s"] is None else f"{r['last_heartbeat_s']:.1f} s ago"
            extra = f"  model {r['model'][:12]}{' (synthetic)' if r['synthetic_model'] else ''}" if r["model"] else ""
            print(f"{r['service']:<10} {r['status'].upper():<8} {r['version'] or '—':<8} {hb:<10} "
                  f"{', '.join(r['active_alarms']) or '—'}{extra}")
        for a in alarms.values():
            print(f"ALARM [{a.priority}] {a.kind}: {a.message}")
    down = [r["service"] for r in rows if not r["up"]]
    if down:
        print(f"amrwatch: down: {', '.join(down)}", file=sys.stderr)
        if not seen:
            from .. import security

            keyed = security.key_dir()
            print(f"amrwatch: no heartbeat at all on {endpoint} within {args.wait:g} s: is the stack running "
                  "(amrwatch up)? If it is, keys may be the reason: "
                  + (f"this command uses AMRWATCH_KEYS={keyed}; the stack must be keyed alike"
                     if keyed else "a stack keyed with CURVE (AMRWATCH_KEYS) hears nothing from a client without "
                     "keys — set AMRWATCH_KEYS and AMRWATCH_CLIENT_KEY for this command too"), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    from ..proto.messages import STAGE_ORDER

    e = sub.add_parser("events", help="print the live event stream")
    add_bus(e)
    e.add_argument("--follow", action="store_true", help="keep printing until Ctrl-C")
    e.add_argument("--json", action="store_true", help="one JSON object per line")
    e.add_argument("--type", action="append", metavar="T", help="only this type (repeatable)")
    e.add_argument("--session", metavar="ID", help="only this session")
    e.add_argument("--timeout", type=float, default=10.0,
                   help="without --follow: stop after this many quiet seconds (default 10)")
    e.add_argument("--count", type=int, default=0, help="stop after N events shown")
    e.set_defaults(func=cmd_events)

    m = sub.add_parser("mark", help="publish a surgical stage marker for the running session")
    m.add_argument("stage", choices=STAGE_ORDER, metavar="STAGE", help=" | ".join(STAGE_ORDER))
    add_bus(m)
    m.add_argument("--control", metavar="ENDPOINT", help=f"acquirer control socket (default {config.get('control')})")
    m.set_defaults(func=cmd_mark)

    f = sub.add_parser("factors", help="publish the patient's factors for the running session")
    from ..proto.factors import FACTORS

    for fac in FACTORS:  # options, types and help from proto's one factor table
        f.add_argument(fac.option, dest=fac.name, metavar={"bool": "yes|no", "int": "N", "float": "X"}[fac.kind],
                       help=fac.describe() if fac.levels or fac.kind == "bool" else f"{fac.describe()}; {fac.hint}",
                       type={"bool": _yes_no, "int": int, "float": float}[fac.kind])
    add_bus(f)
    f.add_argument("--control", metavar="ENDPOINT", help=f"acquirer control socket (default {config.get('control')})")
    f.set_defaults(func=cmd_factors)

    h = sub.add_parser("health", help="exit 0 if SERVICE's heartbeat says ok (compose healthcheck)")
    h.add_argument("service", metavar="SERVICE")
    add_bus(h)
    h.add_argument("--timeout", type=float, default=5.0)
    h.set_defaults(func=cmd_health)

    k = sub.add_parser("keys", help="CURVE keys for encrypted, authenticated sockets")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kg = ksub.add_parser("generate", help="create server and client keypairs (secrets 0600) in DIR")
    kg.add_argument("dir", metavar="DIR")
    kg.add_argument("--client", action="append", metavar="NAME", help="client keypair name (repeatable)")
    kg.set_defaults(func=cmd_keys)

    st = sub.add_parser("status", help="each service: up/down, version, model, heartbeat, alarms; exit 1 if down")
    add_bus(st)
    st.add_argument("--json", action="store_true")
    st.add_argument("--wait", type=float, default=2.0, help="seconds to listen for heartbeats")
    st.set_defaults(func=cmd_status)
