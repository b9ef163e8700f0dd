"""The hub against a keyed cart on loopback: a hub whose key the cart does not authorize gets nothing (and says
so on its tile); a reader whose key is revoked on the cart is cut off within the stated bound
(amrwatch/security.py: REVOKE_POLL_S polling, then its connections are shut down)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import zmq
import zmq.auth
from amrwatch.proto.messages import Stimulus

from amrwatch import security
from amrwatch.bus import Subscriber

from ..conftest import free_port
from .polling import wait_for
from .wan import ROOT

pytestmark = pytest.mark.slow  # real carts and a hub, 20-40 s

#: The stated bound for a revoked reader (the cart's watcher polls every REVOKE_POLL_S; the cut is immediate).
REVOKED_WITHIN_S = 2 * security.REVOKE_POLL_S + 0.5


def _hub(tmp_path, name: str, key_secret, stack_env, keys) -> tuple[subprocess.Popen, str, str]:
    token = secrets.token_urlsafe(24)
    (tmp_path / f"{name}.token").write_text(token)
    port = free_port()
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[hub]\nkey = "{key_secret}"\nport = {port}\ntoken_file = "{tmp_path / (name + ".token")}"\n'
                   f'stale_after_s = 2\ndata = "{tmp_path / name}"\n\n[[room]]\nname = "OR-1"\n'
                   f'bus = "{stack_env["AMRWATCH_BUS_OUT"]}"\ncontrol = "{stack_env["AMRWATCH_CONTROL"]}"\n'
                   f'server_key = "{keys / "server.key"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMRWATCH_")}
    p = subprocess.Popen([sys.executable, "-m", "amrwatch", "hub", "--config", str(cfg)], env=env, cwd=ROOT,
                         stdout=open(tmp_path / f"{name}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    return p, f"http://127.0.0.1:{port}", token


def _tile(url: str, token: str) -> dict | None:
    req = urllib.request.Request(url + "/api/rooms", headers={"Authorization": f"Bearer {token}"})
    try:
        return json.loads(urllib.request.urlopen(req, timeout=5).read())["rooms"][0]
    except OSError:
        return None




def test_unauthorized_hub_gets_nothing_and_a_revoked_reader_is_cut_off(procs, stack_env, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "reader-anna"))
    intruder = tmp_path / "intruder"
    intruder.mkdir()
    _, intruder_secret = zmq.auth.create_certificates(str(intruder), "reader-mallory")
    os.chmod(intruder_secret, 0o600)
    stack_env["AMRWATCH_KEYS"] = str(keys)
    procs.start("bus")
    procs.start("acquirer", "--speed", "1", "--loop")
    monkeypatch.setenv("AMRWATCH_KEYS", str(keys))
    hubs = []
    ctx = zmq.Context()
    try:
        good, good_url, good_tok = _hub(tmp_path, "anna", keys / "reader-anna.key_secret", stack_env, keys)
        bad, bad_url, bad_tok = _hub(tmp_path, "mallory", intruder_secret, stack_env, keys)
        hubs += [good, bad]
        # The cart's own view: stimuli it publishes (the clock of "nothing more").
        local = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("stimulus",))

        def stimuli(n: int, timeout_s: float) -> None:
            got, deadline = 0, time.monotonic() + timeout_s
            while got < n and time.monotonic() < deadline:
                if isinstance(local.recv(200), Stimulus):
                    got += 1
            assert got == n, f"the cart published {got} stimuli, {n} expected"

        wait_for("the authorized hub following the room", lambda: (t := _tile(good_url, good_tok)) and t["connected"]
              and t["events"] >= 5, 60)
        t_bad = wait_for("the unauthorized hub's tile saying it was refused",
                      lambda: (t := _tile(bad_url, bad_tok)) and t["refused"] and t, 30)
        assert "refused the hub's CURVE key" in t_bad["refused"]
        stimuli(3, 30)
        t_bad = _tile(bad_url, bad_tok)
        assert t_bad["events"] == 0 and not t_bad["connected"] and t_bad["age_s"] is None, t_bad
        assert not (tmp_path / "mallory" / "OR-1" / "events.jsonl").read_text()

        # Revoke reader-anna on the cart: its hub is cut off within the bound and gets nothing more.
        (keys / "authorized" / "reader-anna.key").unlink()
        revoked_at = time.monotonic()
        wait_for("the revoked reader's link cut", lambda: (t := _tile(good_url, good_tok)) and not t["connected"],
                 REVOKED_WITHIN_S + 5, every_s=0.05)  # fine polling: the cut's time is measured
        cut_s = time.monotonic() - revoked_at
        print(f"revoked reader cut off {cut_s:.2f} s after its key was removed (bound {REVOKED_WITHIN_S:g} s)")
        assert cut_s <= REVOKED_WITHIN_S
        n = _tile(good_url, good_tok)["events"]
        stimuli(3, 30)
        t = _tile(good_url, good_tok)
        assert t["events"] == n and not t["connected"], t
        wait_for("the revoked reader's tile saying it is refused", lambda: _tile(good_url, good_tok)["refused"], 15)
    finally:
        for p in hubs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        ctx.destroy(linger=0)
