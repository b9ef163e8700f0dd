"""Hubs away longer than the cart's retransmit window get the rest from the cart's archive read-out.

The cart (real processes, CURVE with one key directory): bus + acquirer (simulator, speed 1, the shortest
retransmit window the acquirer accepts, `--retransmit-s 60`) + recorder with `--archive-read-bind`. No
analyzer or predictor: the acquirer's own events (session_start, stage, stimulus) are enough to age out, and
two more services on 2 shared cores would measure the machine. No network namespace either (no root needed):
the hubs reach the cart through a TCP relay of the test's own (tests/hub/relay.py, no delay), and SIGSTOP on
the relay is the partition — connections stay open and go quiet, as through a failed WAN link. The partition
lasts until the cart itself says (its `streams` op: `oldest_seq` of `stimulus`) that the stimuli sent after
the link was cut have left the retransmit buffer — the test waits for that event, it does not sleep for a time.

Three hubs: "away" (with the room's `archive` endpoint) and "old" (without) are partitioned; "late" (with it)
joins only after the partition, when even the session's start has aged out. "away" and "late" must hold every
event the archive holds, exactly once by seq, the aged-out ones via "archive", no gap; "old" shows what the hub
did before the read-out — the aged-out events as a gap naming the retransmit buffer — which is what makes the
others' result depend on the read-out (the test fails on the old code).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import zmq
import zmq.auth

from amrwatch import security
from amrwatch.archive.session import open_session
from amrwatch.control import ControlClient
from amrwatch.services.hub.core import EVENT_TYPES

from ..conftest import free_port
from .polling import jsonl, wait_for

pytestmark = pytest.mark.slow

RETRANSMIT_S = 60  # the acquirer's validated minimum






def _tiles(port: int, token: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/rooms", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return {t["room"]: t for t in json.loads(r.read())["rooms"]}
    except OSError:
        return {}


def _hub(procs, tmp_path: Path, name: str, keys: Path, bus: str, control: str, archive: str | None,
         token_file: Path) -> tuple[int, Path]:
    port = free_port()
    cfg = tmp_path / f"rooms-{name}.toml"
    cfg.write_text(f'[hub]\nkey = "{keys / "reader-anna.key_secret"}"\nport = {port}\n'
                   f'token_file = "{token_file}"\ndata = "{tmp_path / ("hub-" + name)}"\n\n'
                   f'[[room]]\nname = "OR-1"\nbus = "{bus}"\ncontrol = "{control}"\n'
                   f'server_key = "{keys / "server.key"}"\n' + (f'archive = "{archive}"\n' if archive else ""))
    hub_env = {k: v for k, v in os.environ.items() if not k.startswith("AMRWATCH_")}
    log = open(tmp_path / f"hub-{name}.log", "wb")  # noqa: SIM115 - the process's lifetime
    p = subprocess.Popen([sys.executable, "-m", "amrwatch", "hub", "--config", str(cfg)], env=hub_env,
                         stdout=log, stderr=subprocess.STDOUT)
    procs.procs.append((f"hub-{name}", p))
    return port, tmp_path / f"hub-{name}" / "OR-1" / "events.jsonl"


def test_hubs_away_longer_than_the_retransmit_window_backfill_from_the_archive(tmp_path, stack_env, procs):
    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "reader-anna"))
    readout = f"tcp://127.0.0.1:{free_port()}"
    env = dict(stack_env, AMRWATCH_KEYS=str(keys), AMRWATCH_CLIENT_KEY="client", AMRWATCH_ARCHIVE_READ_BIND=readout)
    procs.env = env
    data = Path(env["AMRWATCH_DATA"])
    procs.start("bus")
    procs.start("recorder")
    procs.start("acquirer", "--speed", "1", "--retransmit-s", str(RETRANSMIT_S), "--wait-for", "recorder",
                "--wait-timeout", "120")
    port_of = {k: int(env[k].rsplit(":", 1)[1]) for k in ("AMRWATCH_BUS_OUT", "AMRWATCH_CONTROL")}
    port_of["readout"] = int(readout.rsplit(":", 1)[1])
    # The hubs reach the cart through a relay of the test's own (tests/hub/relay.py, no delay): SIGSTOP on it
    # is a partition — TCP stays open and goes quiet, as through a failed WAN link — and SIGCONT heals it.
    via = {k: free_port() for k in port_of}
    relay = subprocess.Popen([sys.executable, "-m", "tests.hub.relay", "127.0.0.1", "127.0.0.1", "0",
                              *(f"{via[k]}:{port_of[k]}" for k in port_of)], stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "relay.log", "wb"))  # noqa: SIM115
    procs.procs.append(("relay", relay))
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token)
    relayed = {k: f"tcp://127.0.0.1:{via[k]}" for k in via}
    hubs = {"away": _hub(procs, tmp_path, "away", keys, relayed["AMRWATCH_BUS_OUT"], relayed["AMRWATCH_CONTROL"],
                         relayed["readout"], tmp_path / "token"),
            "old": _hub(procs, tmp_path, "old", keys, relayed["AMRWATCH_BUS_OUT"], relayed["AMRWATCH_CONTROL"],
                        None, tmp_path / "token")}

    def hub_events(name: str) -> list[dict]:
        return jsonl(hubs[name][1])

    def stimuli(name: str) -> list[int]:
        return [e["seq"] for e in hub_events(name) if e["type"] == "stimulus"]

    wait_for("stimuli flowing live to both hubs", lambda: all(len(stimuli(n)) >= 3 for n in ("away", "old")), 180)
    ctx = zmq.Context()
    server, _ = zmq.auth.load_certificate(str(keys / "server.key"))
    public, secret = zmq.auth.load_certificate(str(keys / "client.key_secret"))
    control = ControlClient(ctx, env["AMRWATCH_CONTROL"], curve=(server, public, secret))  # the cart's side
    try:
        relay.send_signal(signal.SIGSTOP)  # the partition
        cut_at = time.monotonic()
        last_seen = max(max(stimuli("away")), max(stimuli("old")))

        def aged_out() -> dict | None:
            """The cart no longer holds, for retransmit, the stimuli sent after the hubs lost the link (nor the
            session's start): what they missed must come from the archive or be a gap."""
            r = control.request({"op": "streams"}, timeout_s=3)
            if r is None or not r.ok:
                return None
            held = {e["type"]: e for e in json.loads(r.frames[0]) if e["publisher"] == "acquirer"}
            st = held.get("stimulus")
            return held if st and (st["oldest_seq"] or 0) > last_seen + 8 else None

        held = wait_for("the stimuli sent during the partition to age out of the 60 s retransmit buffer", aged_out,
                     RETRANSMIT_S + 120, 1.0)
        away_s = time.monotonic() - cut_at
    finally:
        relay.send_signal(signal.SIGCONT)  # healed (and never left stopped)
        control.close()
        ctx.term()
    oldest = held["stimulus"]["oldest_seq"]
    print(f"partition {away_s:.1f} s; stimuli {last_seen + 1}..{oldest - 1} aged out meanwhile")
    # A third hub with the read-out joins only now (directly): the session's start is long gone from the buffer.
    hubs["late"] = _hub(procs, tmp_path, "late", keys, env["AMRWATCH_BUS_OUT"], env["AMRWATCH_CONTROL"], readout,
                        tmp_path / "token")

    sid = wait_for("the session id at the hub", lambda: _tiles(hubs["away"][0], token).get("OR-1", {}).get("session_id"),
                60)
    with open_session(data, sid) as s:  # the cart's archive: what the cart published, as the recorder kept it
        archived = {(e.instance, e.type, e.seq) for e in s.index.events
                    if e.type in EVENT_TYPES and e.session_id == sid}
    missed = {k for k in archived if k[1] == "stimulus" and last_seen < k[2] < oldest}
    assert missed and any(k[1] == "session_start" for k in archived)

    for name in ("away", "late"):
        def keys_at(name=name) -> list[tuple]:
            return [(e["instance"], e["type"], e["seq"]) for e in hub_events(name)]

        try:
            wait_for(f"every archived event at the hub '{name}'", lambda: archived <= set(keys_at()), 120)
        except AssertionError:
            raise AssertionError(f"{name}: missing {sorted(archived - set(keys_at()))[:20]}") from None
        got = keys_at()
        assert len(got) == len(set(got)), f"{name}: an event taken twice"
        how = {(e["instance"], e["type"], e["seq"]): e["via"] for e in hub_events(name)}
        assert all(how[k] == "archive" for k in missed), (name, {k: how[k] for k in missed})
        tile = wait_for("the tile", lambda name=name: _tiles(hubs[name][0], token).get("OR-1"), 30)
        n_archive = sum(1 for v in how.values() if v == "archive")
        assert tile["backfilled_by"]["archive"] == n_archive >= len(missed) and tile["gap_messages"] == 0, tile
        print(f"hub '{name}': {len(got)} events, {n_archive} from the archive, "
              f"{tile['backfilled_by']['retransmit']} by retransmit, gaps {tile['gap_messages']}")
        if name == "away":  # `amrwatch hub status` says the same, the archive's share in its own column
            st = subprocess.run([sys.executable, "-m", "amrwatch", "hub", "status", "--config",
                                 str(tmp_path / "rooms-away.toml")], check=False, capture_output=True, text=True,
                                env={k: v for k, v in os.environ.items() if not k.startswith("AMRWATCH_")},
                                timeout=30)
            row = next((ln for ln in st.stdout.splitlines() if ln.startswith("OR-1")), "")
            head = next((ln for ln in st.stdout.splitlines() if ln.startswith("room")), "")
            end = head.find("archive") + len("archive")  # right-aligned under its heading
            assert row[end - 7:end].strip() == str(tile["backfilled_by"]["archive"]), st.stdout
    late = {(e["type"], e["seq"]): e["via"] for e in hub_events("late")}
    assert late[("session_start", 0)] == "archive"

    # The hub without the read-out (the behaviour before it): the aged-out events are a gap, shown, never hidden.
    old = wait_for("the gap at the hub without the read-out", lambda: (
        t := _tiles(hubs["old"][0], token).get("OR-1")) and t["gap_messages"] >= len(missed) and t, 60)
    assert any("aged out of the cart's retransmit buffer" in g["reason"] for g in old["gaps"]), old["gaps"]
    assert not missed & {(e["instance"], e["type"], e["seq"]) for e in hub_events("old")}


def test_the_hub_reads_a_wide_aged_out_range_in_capped_chunks(tmp_path, stack_env):
    """The hub's service against a real recorder read-out holding 2,500 archived stimuli (a closed session: no
    acquirer needed): the range 0..2999 comes as a capped reply of 2,000, the hub asks the next chunk itself,
    and the 500 seqs the archive never held are one gap naming both sources. Real sockets and CURVE; only the
    aged-out range is planted in the core (as a retransmit reply's `unavailable_*` would)."""
    from amrwatch.services.hub.config import HubConfig, RoomConfig
    from amrwatch.services.hub.core import Request
    from amrwatch.services.hub.service import Hub

    from ..recorder.test_readout import INST, SID, write_session

    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "reader-anna"))
    data = Path(stack_env["AMRWATCH_DATA"])
    write_session(data, 2500)
    readout = f"tcp://127.0.0.1:{free_port()}"
    env = dict(stack_env, AMRWATCH_KEYS=str(keys), AMRWATCH_CLIENT_KEY="client")
    rec = subprocess.Popen([sys.executable, "-m", "amrwatch", "recorder", "--archive-read-bind", readout], env=env,
                           stdout=open(tmp_path / "recorder.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    server, _ = zmq.auth.load_certificate(str(keys / "server.key"))
    public, secret = zmq.auth.load_certificate(str(keys / "reader-anna.key_secret"))
    rc = RoomConfig("OR-1", f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", server,
                    archive=readout)
    hub = Hub(HubConfig(rooms=(rc,), key_public=public, key_secret=secret, key_name="reader-anna",
                        data=tmp_path / "hub"))
    room = hub.rooms["OR-1"]
    try:
        with hub.lock:
            room.session_id = SID
            ask = room.aged_out(Request("acquirer", INST, "stimulus", 0, 2999), 0, 2999,
                                "aged out of the cart's retransmit buffer")
            hub.links["OR-1"].archive_queue.append(ask)
        t0 = time.monotonic()
        hub.start()

        def done():
            with hub.lock:
                return room.backfilled_by["archive"] == 2500 and room.gap_total > 0 and \
                    hub.links["OR-1"].archive_pending is None and not hub.links["OR-1"].archive_queue

        wait_for("2,500 archived events at the hub and the rest a gap", done, 90, 0.1)
        took = time.monotonic() - t0
        with hub.lock:
            gaps = [(g.from_seq, g.to_seq, g.reason) for g in room.gaps]
            s = room.streams[(INST, "stimulus")]
            assert s.next_seq == 3000 and room.duplicates == 0 and room.events == 2500
        assert [(a, b) for a, b, _ in gaps] == [(2500, 2999)]
        assert "retransmit buffer" in gaps[0][2] and "archive does not hold them either" in gaps[0][2]
        log_text = (tmp_path / "recorder.log").read_text()
        print(f"hub: 2,500 events from the archive in two chunks, {took:.2f} s including the recorder's start")
        assert "archive read-out on" in log_text
    finally:
        hub.stop()
        rec.terminate()
        rec.wait(timeout=10)
