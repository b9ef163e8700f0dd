"""The `amrwatch` command line (CONTRACT.md names every command and flag).

Exit codes: 0 success, 1 a check failed or an input was refused, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SOURCE = config.EXIT_SOURCE


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"amrwatch: {message}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- #
# Shared option groups


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


#: The simulator's montage: its three AMR channels, plus up to 240 extra ones (SimConfig.extra_channels).
MIN_SIM_CHANNELS, MAX_SIM_CHANNELS = 3, 243


def _emg_channels(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or not MIN_SIM_CHANNELS <= n <= MAX_SIM_CHANNELS:
        raise argparse.ArgumentTypeError(
            f"--channels must be a whole number from {MIN_SIM_CHANNELS} to {MAX_SIM_CHANNELS}; got {value!r}")
    return n


#: The acquirer's retransmit buffer: at least a minute (a recorder restart), at most an hour (memory).
MIN_RETRANSMIT_S, MAX_RETRANSMIT_S = 60.0, 3600.0


def _retransmit_s(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        s = None
    if s is None or not MIN_RETRANSMIT_S <= s <= MAX_RETRANSMIT_S:
        raise argparse.ArgumentTypeError(
            f"--retransmit-s must be {MIN_RETRANSMIT_S:g} to {MAX_RETRANSMIT_S:g} seconds; got {value!r}")
    return s


def _stage_seconds(value: str) -> tuple[str, float]:
    stage, _, seconds = value.partition("=")
    try:
        return stage, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stage-seconds must be STAGE=SECONDS (e.g. decompression=600); "
                                         f"got {value!r}") from None


def add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="sim", metavar="SPEC", help="sim (default), edf:PATH or lsl:STREAM_NAME")
    p.add_argument("--scenario", default="disappears-after-decompression", metavar="NAME",
                   help="simulator scenario (see README)")
    p.add_argument("--speed", type=float, default=1.0, help="run the timeline X times faster (sim, edf)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--manual", action="store_true",
                   help="simulator: leave stages and factors to `amrwatch mark` / `amrwatch factors`")
    p.add_argument("--loop", action="store_true", help="start a new session when one ends")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="simulator: multiply every stage's duration (e.g. 0.2 for a short operation)")
    p.add_argument("--noise-uv", type=float, help="simulator: noise RMS in µV")
    p.add_argument("--stage-seconds", action="append", type=_stage_seconds, metavar="STAGE=SECONDS", default=[],
                   help="simulator: the duration of one stage before --time-scale (repeatable), e.g. "
                   "decompression=600 for a long decompression")
    p.add_argument("--sample-index-channel", action="store_true",
                   help="add a SAMPLE_INDEX channel (index mod 2^24) for end-to-end loss checks")
    p.add_argument("--montage", metavar="FILE",
                   help="edf/lsl: YAML or JSON file stating each channel's muscle, side and what it records "
                   "(schema proto/schemas/montage_file.json; README 'Montage'); without it labels are recognised")
    p.add_argument("--channels", type=_emg_channels, metavar="N",
                   help=f"simulator: EMG channels in the montage, {MIN_SIM_CHANNELS} to {MAX_SIM_CHANNELS} (default "
                   f"{MIN_SIM_CHANNELS}: mentalis, orbicularis oris and oculi; more add EXTRA channels of "
                   "background EMG on no AMR pathway, e.g. to load the chain with 64 channels)")


def source_factory(args: argparse.Namespace):
    from .services.acquirer.source import open_source

    def make():
        if args.source == "sim":
            opts: dict[str, Any] = {"scenario": args.scenario, "seed": args.seed, "manual": args.manual,
                                    "time_scale": args.time_scale,
                                    "sample_index_channel": args.sample_index_channel}
            if args.noise_uv is not None:
                opts["noise_uv"] = args.noise_uv
            if args.stage_seconds:
                opts["stage_durations_s"] = dict(args.stage_seconds)
            if args.channels is not None:
                opts["extra_channels"] = args.channels - MIN_SIM_CHANNELS
            return open_source("sim", **opts)
        if getattr(args, "montage", None):
            from .services.acquirer.labels import load_montage_file

            return open_source(args.source, montage=load_montage_file(args.montage))
        return open_source(args.source)

    return make


def source_argv(args: argparse.Namespace) -> list[str]:
    out = ["--source", args.source, "--scenario", args.scenario, "--speed", str(args.speed),
           "--seed", str(args.seed), "--time-scale", str(args.time_scale)]
    if args.manual:
        out.append("--manual")
    if args.loop:
        out.append("--loop")
    if args.noise_uv is not None:
        out += ["--noise-uv", str(args.noise_uv)]
    for stage, seconds in args.stage_seconds:
        out += ["--stage-seconds", f"{stage}={seconds:g}"]
    if args.sample_index_channel:
        out.append("--sample-index-channel")
    if args.channels is not None:
        out += ["--channels", str(args.channels)]
    if getattr(args, "montage", None):
        out += ["--montage", str(Path(args.montage).resolve())]
    return out


# --------------------------------------------------------------------------- #
# Commands


def cmd_bus(args: argparse.Namespace) -> int:
    import signal

    import zmq

    from . import metrics
    from .bus import run_proxy
    from .service import setup_logging

    setup_logging("bus", args.log_level)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    forwarded = metrics.PUBLISHED.labels("forwarded")
    metrics.serve(config.metrics_port("bus") if args.metrics_port is None else args.metrics_port,
                  config.get("metrics_addr"))
    ctx = zmq.Context()
    bind_in = args.bind_in or config.get("bus_bind_in")
    bind_out = args.bind_out or config.get("bus_bind_out")
    try:
        run_proxy(ctx, bind_in, bind_out, stop=lambda: stop["flag"], version=__version__,
                  on_forward=forwarded.inc)
    except zmq.ZMQError as err:
        return fail(f"bus cannot bind {bind_in} / {bind_out}: {err}; is another stack running?")
    finally:
        from . import security

        security.stop(ctx)
        ctx.term()
    return EXIT_OK


def _service_kw(args: argparse.Namespace) -> dict[str, Any]:
    return {"bus_in": args.bus_in, "bus_out": args.bus_out, "metrics_port": args.metrics_port}


def cmd_acquirer(args: argparse.Namespace) -> int:
    from .service import setup_logging
    from .services.acquirer.service import Acquirer
    from .services.acquirer.source import SourceError

    setup_logging("acquirer", args.log_level)
    try:
        svc = Acquirer(
            source_factory(args),
            speed=args.speed,
            loop=args.loop,
            wait_for=tuple(w for w in (args.wait_for or "").split(",") if w),
            wait_timeout_s=args.wait_timeout,
            control_bind=args.control_bind,
            retransmit_s=args.retransmit_s,
            keep_state=not args.no_state,
            **_service_kw(args),
        )
    except (SourceError, ValueError) as err:
        return fail(str(err), EXIT_SOURCE)
    return svc.run()


def cmd_up(args: argparse.Namespace) -> int:
    import logging
    import os

    from .printer import make_printer
    from .service import setup_logging
    from .supervisor import Child, Supervisor

    setup_logging("up", "INFO")
    exe = [sys.executable, "-m", "amrwatch"]
    env = dict(os.environ)
    if args.data:
        env["AMRWATCH_DATA"] = args.data
    children = [Child("bus", exe + ["bus"])]
    others = [name for name in ("recorder", "analyzer", "predictor", "monitor") if name in SERVICE_COMMANDS]
    children += [Child(name, exe + [name]) for name in others]
    children.append(Child("acquirer", exe + ["acquirer", *source_argv(args), "--wait-for", ",".join(others)]))
    logging.getLogger("amrwatch.up").info(
        "starting %s; events below (Ctrl-C stops everything)", ", ".join(c.name for c in children)
    )
    sup = Supervisor(
        children,
        bus_in=config.get("bus_in"),
        bus_out=config.get("bus_out"),
        env=env,
        printer=make_printer(json_lines=args.json, quiet_measurements=args.quiet),
        exit_with=None if args.loop else "acquirer",
    )
    return sup.run()


def cmd_events(args: argparse.Namespace) -> int:
    import zmq

    from .bus import Subscriber
    from .printer import make_printer
    from .proto.messages import BY_TYPE, EVENT_TYPES, SessionEnd

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


def control_request(endpoint: str, request: dict, timeout_s: float = 3.0):
    """Send one request to the acquirer's control socket; (reply, extra frames)."""
    import zmq

    from .proto.control import ControlReply

    ctx = zmq.Context()
    from . import security

    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    security.client(sock)
    sock.connect(endpoint)
    try:
        sock.send(json.dumps(request).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None, []
        parts = sock.recv_multipart()
        return ControlReply.model_validate_json(parts[0]), parts[1:]
    finally:
        sock.close()
        ctx.term()


def _send_operator(args: argparse.Namespace, request: dict, what: str) -> int:
    endpoint = _control_endpoint(args)
    reply, _ = control_request(endpoint, request)
    if reply is None:
        return fail(f"no acquirer answered at {endpoint} within 3 s; start the stack (amrwatch up) "
                    "or give --control ENDPOINT")
    if not reply.ok:
        return fail(f"{what} refused: {reply.error}")
    print(f"{what} published for session {reply.session_id} (seq {reply.seq})")
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

    from .proto.codec import describe
    from .proto.messages import FactorValues

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

    from .bus import Subscriber
    from .proto.messages import Heartbeat

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

    from . import security

    try:
        made = security.generate(Path(args.dir), clients=tuple(args.client or ["client"]))
    except security.KeyError_ as err:
        return fail(str(err))
    for p in made:
        print(p)
    print(f"set AMRWATCH_KEYS={args.dir} for the stack and its clients; copy only server.key and a client "
          "keypair to a remote subscriber", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Each service: up/down, version, model, last heartbeat, active alarms."""
    import zmq

    from .bus import Subscriber
    from .proto.messages import Alarm, Heartbeat

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
    now = datetime.datetime.now(datetime.timezone.utc)
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
            from . import security

            keyed = security.key_dir()
            print(f"amrwatch: no heartbeat at all on {endpoint} within {args.wait:g} s: is the stack running "
                  "(amrwatch up)? If it is, keys may be the reason: "
                  + (f"this command uses AMRWATCH_KEYS={keyed}; the stack must be keyed alike"
                     if keyed else "a stack keyed with CURVE (AMRWATCH_KEYS) hears nothing from a client without "
                     "keys — set AMRWATCH_KEYS and AMRWATCH_CLIENT_KEY for this command too"), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# Service commands the stack runs; other modules register theirs here.
SERVICE_COMMANDS: dict[str, Any] = {"acquirer": cmd_acquirer}


def build_parser() -> argparse.ArgumentParser:
    from .proto.factors import FACTORS
    from .proto.messages import STAGE_ORDER

    p = argparse.ArgumentParser(prog="amrwatch", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"amrwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the whole stack natively (Ctrl-C stops it)")
    add_source(up)
    add_data(up)
    up.add_argument("--json", action="store_true", help="print events as JSON lines")
    up.add_argument("--quiet", action="store_true", help="do not print every measurement")
    up.set_defaults(func=cmd_up)

    b = sub.add_parser("bus", help="run the XSUB/XPUB bus proxy in the foreground")
    b.add_argument("--bind-in", help="where publishers connect (env AMRWATCH_BUS_BIND_IN)")
    b.add_argument("--bind-out", help="where subscribers connect (env AMRWATCH_BUS_BIND_OUT)")
    b.add_argument("--metrics-port", type=int)
    b.add_argument("--log-level", default="INFO")
    b.set_defaults(func=cmd_bus)

    a = sub.add_parser("acquirer", help="run the acquirer in the foreground")
    add_source(a)
    add_service_endpoints(a)
    a.add_argument("--control-bind", help="control socket (env AMRWATCH_CONTROL_BIND)")
    a.add_argument("--wait-for", default="", help="comma-separated services to wait for before starting")
    a.add_argument("--wait-timeout", type=float, default=20.0, help="seconds to wait for them")
    a.add_argument("--retransmit-s", dest="retransmit_s", type=_retransmit_s, default=90.0, metavar="S",
                   help=f"how long sent messages are kept for the recorder to refetch, {MIN_RETRANSMIT_S:g} to "
                   f"{MAX_RETRANSMIT_S:g} s (default 90)")
    a.add_argument("--no-state", action="store_true",
                   help="keep no session state for restarted services (they then report their state as unknown)")
    a.set_defaults(func=cmd_acquirer)

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

    for register in _extensions():
        register(sub)
    return p


def _extensions():
    """Commands contributed by the services (analyzer, predictor, recorder...)."""
    import importlib

    out = []
    for mod in (
        "amrwatch.services.analyzer.cli",
        "amrwatch.services.predictor.cli",
        "amrwatch.services.recorder.cli",
        "amrwatch.registry.cli",
        "amrwatch.services.monitor.cli",
    ):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
            continue
        out.append(m.register)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
