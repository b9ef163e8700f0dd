"""`amrwatch monitor`: the live page (started by `amrwatch up` and compose)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...cli.common import add_data, add_service_endpoints, fail
from .settings import ENV_ALLOWED_HOSTS, ENV_BIND, ENV_PORT, ENV_TOKEN, ENV_TOKEN_FILE


def cmd_monitor(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ... import config
    from ...proto.codec import describe
    from ...service import setup_logging
    from .service import Monitor
    from .settings import ServerSettings, SweepSettings, TokenError, ViewSettings, resolve_token

    setup_logging("monitor", args.log_level)
    try:
        token = resolve_token(Path(args.token_file) if args.token_file else None)
    except TokenError as err:
        return fail(str(err))
    env = config.monitor_env()
    bind = args.bind or env.bind or "127.0.0.1"
    port_text = str(args.port) if args.port is not None else (env.port or "8080")
    try:
        port = int(port_text)
    except ValueError:
        return fail(f"--port / {ENV_PORT} must be a TCP port 1-65535; got {port_text!r}")
    data = Path(args.data) if args.data else config.data_dir()
    try:
        hosts = tuple(args.allow_host or ()) + env.allowed_hosts
        server = ServerSettings(bind=bind, port=port, token=token, data_dir=data, client_queue=args.client_queue,
                                send_buffer_bytes=args.send_buffer, allowed_hosts=hosts,
                                max_live_clients=args.max_live_clients)
        sweeps = SweepSettings(analysis_window_ms=tuple(args.window_ms))
        view = ViewSettings(waterfall_sweeps=args.waterfall)
    except ValidationError as err:
        return fail(f"monitor settings refused: {describe(err)}")
    svc = Monitor(server, sweeps, view, control=args.control, bus_in=args.bus_in, bus_out=args.bus_out,
                  metrics_port=args.metrics_port)
    svc.hub.view.publish_sweeps = args.publish_sweeps
    return svc.run()


def register(sub) -> None:
    p = sub.add_parser("monitor", help="serve the live monitor page (bus → browser)")
    add_service_endpoints(p)
    add_data(p)
    p.add_argument("--bind", metavar="ADDR",
                   help=f"address the page listens on (default 127.0.0.1; 0.0.0.0 for every interface; env {ENV_BIND})")
    p.add_argument("--port", type=int, help=f"TCP port of the page (default 8080; env {ENV_PORT})")
    p.add_argument("--token-file", metavar="PATH",
                   help=f"file holding the page's access token (env {ENV_TOKEN_FILE}, or the token itself in "
                        f"{ENV_TOKEN}); without one the page is open to whoever reaches the address")
    p.add_argument("--control", metavar="ENDPOINT", help="acquirer control socket for stage and factor inputs "
                   "(default env AMRWATCH_CONTROL)")
    p.add_argument("--window-ms", type=float, nargs=2, default=(6.0, 25.0), metavar=("START", "END"),
                   help="analysis window shaded on the sweeps (default 6 25)")
    p.add_argument("--client-queue", type=int, default=20_000, metavar="N",
                   help="page messages queued per browser before it is disconnected to resynchronise (default 20000)")
    p.add_argument("--send-buffer", type=int, default=256 * 1024, metavar="BYTES",
                   help="kernel send buffer per browser, bounding what a stalled page holds (default 262144)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="a host name the page answers to besides localhost/127.0.0.1/::1 and the bind address "
                        f"(repeatable; env {ENV_ALLOWED_HOSTS}, comma-separated); other Host headers are refused")
    p.add_argument("--max-live-clients", type=int, default=32, metavar="N",
                   help="open pages served at once; one more is refused with the reason (default 32)")
    p.add_argument("--waterfall", type=int, default=30, metavar="N", help="sweeps stacked per channel (default 30)")
    p.add_argument("--publish-sweeps", action="store_true",
                   help="publish the display sweeps on the bus (sweep_display, ~30 kbit/s at 1 Hz on 3 channels) "
                        "for remote readers (amrwatch hub), who then never pull the raw frames")
    p.set_defaults(func=cmd_monitor)
