"""`amrwatch hub --config rooms.toml` (the reading station) and `amrwatch hub status`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path


def _fail(text: str, code: int = 1) -> int:
    print(f"amrwatch hub: {text}", file=sys.stderr, flush=True)
    return code


def cmd_hub(args: argparse.Namespace) -> int:
    from .config import ConfigError, load

    try:
        cfg = load(Path(args.config))
    except (ConfigError, ValueError) as err:
        return _fail(str(err), 78)
    if args.action == "status":
        return _status(cfg, args.json, args.page_only)
    return _run(cfg, args.port)


def _run(cfg, port: int | None) -> int:
    import logging

    import uvicorn

    from ...metrics import serve
    from ...service import setup_logging
    from .service import Hub
    from .web import build_app

    setup_logging("hub")
    log = logging.getLogger("amrwatch.hub")
    if cfg.key_secret is None:
        log.warning("no [hub].key: connecting to the carts without CURVE (only for a cart without keys, on a "
                    "trusted network)")
    if cfg.token is None and cfg.bind not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the page binds %s without a token: anyone who reaches it can read every room and write to "
                    "them as %s; set [hub].token_file or AMRWATCH_HUB_TOKEN", cfg.bind, cfg.key_name)
    hub = Hub(cfg)
    hub.start()
    proxied = [rc for rc in cfg.rooms if rc.proxy_port]
    if proxied:
        from .proxy import RoomProxy, start

        start([(RoomProxy(rc.name, rc.monitor, cfg.token, rc.monitor_token), cfg.bind, rc.proxy_port)
               for rc in proxied])
    serve(cfg.metrics_port, cfg.bind)
    server = uvicorn.Server(uvicorn.Config(build_app(hub, cfg.token), host=cfg.bind, port=port or cfg.port,
                                           log_level="warning", access_log=False, lifespan="off", http="h11",
                                           ws="none"))
    stopping = threading.Event()

    def stop(*_):
        stopping.set()
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("following %d room(s): %s; page at http://%s:%d/ (token %s)", len(cfg.rooms),
             ", ".join(r.name for r in cfg.rooms), cfg.bind, port or cfg.port, "required" if cfg.token else "NOT set")
    try:
        server.run()
    finally:
        hub.stop()
    return 0


def _status(cfg, as_json: bool, page_only: bool = False) -> int:
    url = f"http://{cfg.bind if cfg.bind not in ('0.0.0.0', '::') else '127.0.0.1'}:{cfg.port}/api/rooms"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cfg.token}"} if cfg.token else {})
    try:
        data = json.loads(urllib.request.urlopen(req, timeout=5).read())
    except urllib.error.HTTPError as err:
        return _fail(f"{url} answered {err.code}: {err.read()[:200].decode(errors='replace')}")
    except OSError as err:
        return _fail(f"no hub at {url} ({err}); is `amrwatch hub --config …` running?")
    if page_only:
        return 0
    if as_json:
        print(json.dumps(data, indent=1))
    else:
        print(f"reader {data['reader']}")
        print(f"{'room':<16} {'link':<8} {'age s':>7} {'stale':<6} {'events':>7} {'backfill':>8} {'archive':>7} "
              f"{'gaps':>5}  stage")
        for t in data["rooms"]:
            link = "REFUSED" if t["refused"] else ("up" if t["connected"] else "down")
            age = "-" if t["age_s"] is None else f"{t['age_s']:.1f}"
            print(f"{t['room']:<16} {link:<8} {age:>7} {'STALE' if t['stale'] else 'ok':<6} {t['events']:>7} "
                  f"{t['backfilled']:>8} {(t.get('backfilled_by') or {}).get('archive', 0):>7} "
                  f"{t['gap_messages']:>5}  {t['stage'] or '-'}")
    bad = [t for t in data["rooms"] if t["stale"] or t["refused"] or not t["connected"]]
    return 1 if bad else 0


def register(sub) -> None:
    p = sub.add_parser("hub", help="the remote reading station: follow several rooms (carts) over the WAN")
    p.add_argument("action", nargs="?", choices=("run", "status"), default="run",
                   help="run the hub (default), or print the rooms of a running hub (exit 1 if any is down/stale)")
    p.add_argument("--config", required=True, metavar="ROOMS.toml", help="the rooms file (services/hub/config.py)")
    p.add_argument("--port", type=int, help="port of the page (overrides [hub].port)")
    p.add_argument("--json", action="store_true", help="status: print the JSON")
    p.add_argument("--page-only", action="store_true",
                   help="status: exit 0 when the hub's page answers, whatever the rooms (a container health check)")
    p.set_defaults(func=cmd_hub)
