"""`amrwatch up`, `bus` and `acquirer`: the stack and the source options they share.

`up` starts the bus, the services named in `commands.STACK_SERVICES` (an
explicit table, not whatever happened to register) and the acquirer last.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__, config
from .common import EXIT_OK, EXIT_SOURCE, add_data, add_service_endpoints, fail, service_kw


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


def _reader_lost_s(value: str) -> float:
    from ..services.acquirer.readers import check_lost_after

    try:
        return check_lost_after(float(value))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err) if "reader-lost-s" in str(err) else
                                         f"--reader-lost-s must be a number of seconds; got {value!r}") from None


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
    from ..services.acquirer.source import open_source

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
            from ..services.acquirer.labels import load_montage_file

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


def cmd_bus(args: argparse.Namespace) -> int:
    import signal

    import zmq

    from .. import metrics
    from ..bus import run_proxy
    from ..service import setup_logging

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
        from .. import security

        security.stop(ctx)
        ctx.term()
    return EXIT_OK


def cmd_acquirer(args: argparse.Namespace) -> int:
    from ..service import setup_logging
    from ..services.acquirer.service import Acquirer
    from ..services.acquirer.source import SourceError

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
            reader_lost_s=args.reader_lost_s,
            keep_state=not args.no_state,
            **service_kw(args),
        )
    except (SourceError, ValueError) as err:
        return fail(str(err), EXIT_SOURCE)
    return svc.run()


def cmd_up(args: argparse.Namespace, *, services: Sequence[str]) -> int:
    """The bus, then `services` (each a command of its own), then the acquirer, which waits for them."""
    import logging
    import os

    from ..printer import make_printer
    from ..service import setup_logging
    from ..supervisor import Child, Supervisor

    setup_logging("up", "INFO")
    exe = [sys.executable, "-m", "amrwatch"]
    env = dict(os.environ)
    if args.data:
        env["AMRWATCH_DATA"] = args.data
    children = [Child("bus", exe + ["bus"])]
    others = list(services)
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


def register(sub: argparse._SubParsersAction, *, stack_services: Sequence[str]) -> None:
    up = sub.add_parser("up", help="start the whole stack natively (Ctrl-C stops it)")
    add_source(up)
    add_data(up)
    up.add_argument("--json", action="store_true", help="print events as JSON lines")
    up.add_argument("--quiet", action="store_true", help="do not print every measurement")
    up.set_defaults(func=functools.partial(cmd_up, services=tuple(stack_services)))

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
    a.add_argument("--reader-lost-s", dest="reader_lost_s", type=_reader_lost_s, default=30.0, metavar="S",
                   help="a remote reader that said it watches and has sent no request for this long is logged "
                   "as cut off (reader_note link_lost; its presence interval ends when last heard), 20 to 600 s "
                   "(default 30: three of the hub's 10 s probes)")
    a.add_argument("--no-state", action="store_true",
                   help="keep no session state for restarted services (they then report their state as unknown)")
    a.set_defaults(func=cmd_acquirer)
