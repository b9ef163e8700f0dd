"""The monitor against a live stack: bus, acquirer (simulator) and monitor processes."""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest
import zmq

from amrwatch.bus import Publisher, Subscriber
from amrwatch.proto.messages import Alarm, EVENT_TYPES

from .conftest import SSE, base_url, http, wait_for, wait_http

SPEED = 10
ACQ_FAST = ["--scenario", "persists-unexpected", "--speed", str(SPEED), "--time-scale", "0.15", "--wait-for", "monitor",
            "--sample-index-channel"]  # 20 kHz x 4 channels


def start_monitor(procs, env, *extra):
    p = procs.start("monitor", *extra)
    wait_http(base_url(env) + "/api/config", headers={"authorization": f"Bearer {env.get('AMRWATCH_MONITOR_TOKEN', '')}"})
    return p


def bus_subscriber(env, topics=("",)):
    ctx = zmq.Context()
    sub = Subscriber(ctx, env["AMRWATCH_BUS_OUT"], topics)
    return ctx, sub


def test_the_page_stream_carries_every_event_and_a_sweep_for_every_stimulus(procs, monitor_env, sse_clients):
    env = monitor_env
    procs.start("bus")
    start_monitor(procs, env)
    sse = SSE(env)
    sse_clients.append(sse)
    first = sse.items.get(timeout=10)
    assert first["kind"] == "snapshot"
    ctx, sub = bus_subscriber(env, (*EVENT_TYPES, "heartbeat"))
    # The subscription reaches the proxy before the session starts: a heartbeat of the monitor arrives.
    wait_for(lambda: (lambda m: m is not None and m.type == "heartbeat")(sub.recv(200)), 30,
             "a heartbeat on the test's own subscription", interval=0)
    acq = procs.start("acquirer", *ACQ_FAST)
    on_bus = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = sub.recv(200)
            if m is not None and m.type != "heartbeat" and m.session_id is not None:
                on_bus.append(m)
                if m.type == "session_end":
                    break
        else:
            pytest.fail("no session_end on the bus within 60 s")
    finally:
        sub.close()
        ctx.term()
    assert acq.wait(timeout=15) == 0
    items = sse.until(lambda i: i.get("kind") == "event" and i["event"]["type"] == "session_end", 20,
                      "session_end on the page stream")
    ns = [i["n"] for i in items]
    assert ns == list(range(first["n"] + 1, first["n"] + 1 + len(ns))), "the page stream skipped a number"
    sid = next(m.session_id for m in on_bus)
    page_events = {(i["event"]["publisher"], i["event"]["type"], i["event"]["seq"]) for i in items
                   if i["kind"] == "event" and i["event"].get("session_id") == sid}
    bus_events = {(m.publisher, m.type, m.seq) for m in on_bus if m.session_id == sid}
    assert bus_events and bus_events <= page_events, f"missing on the page: {sorted(bus_events - page_events)[:5]}"
    stimuli = [m for m in on_bus if m.type == "stimulus"]
    sweeps = [i["sweep"] for i in items if i["kind"] == "sweep"]
    expected = {(s.stimulus_index, ch) for s in stimuli
                for ch in (("MENT", "OORIS") if s.direction == "ZYG" else ("OOCUL",))}
    assert {(s["stimulus_index"], s["channel"]) for s in sweeps} == expected
    assert len(sweeps) == len(expected) and len(stimuli) > 40
    for s in sweeps:  # 2 kHz peak-detect bins over -5..+50 ms
        assert len(s["values"]) == 220 and s["dt_ms"] == 0.25
    # keeping up: each sweep reaches the page soon after its last sample was acquired
    start = next(m for m in on_bus if m.type == "session_start").started_at.timestamp()
    lags = sorted(i["_received"] - (start + (i["sweep"]["stim_time_s"] + 0.05) / SPEED) for i in items
                  if i["kind"] == "sweep")
    print(f"\nsweep latency at {SPEED}x real time, 20 kHz x 4 channels: median {statistics.median(lags) * 1000:.0f} ms, "
          f"max {lags[-1] * 1000:.0f} ms over {len(lags)} sweeps")
    assert statistics.median(lags) < 0.5 and lags[-1] < 2.0
    # the snapshot a newcomer gets holds the whole trend axis: every stage, the last 30 sweeps
    snap = http("GET", base_url(env) + "/api/snapshot").json()["snapshot"]
    assert [s["stage"] for s in snap["stages"]] == [m.stage for m in on_bus if m.type == "stage"]
    assert len(snap["sweeps"]["MENT"]) == 30 and snap["session"]["ended"]["reason"] == "scenario_end"
    assert snap["baseline_sweeps"]["MENT"]["values"]


def test_operator_inputs_from_the_page_reach_the_bus_or_are_refused_with_the_reason(procs, monitor_env):
    env = monitor_env
    url = base_url(env)
    procs.start("bus")
    start_monitor(procs, env)
    ctx, sub = bus_subscriber(env, ("stage", "factors", "alarm_ack", "session_start"))
    acq = procs.start("acquirer", "--manual", "--wait-for", "monitor")
    try:
        wait_for(lambda: http("GET", url + "/api/snapshot").json()["snapshot"]["session"], 20, "a session")
        r = http("POST", url + "/api/mark", {"stage": "baseline"})
        assert r.status == 200 and r.json()["ok"] and r.json()["seq"] == 0
        bad = http("POST", url + "/api/mark", {"stage": "lunch"})
        assert bad.status == 422 and "stage: must be one of baseline" in bad.json()["error"]
        refused = http("POST", url + "/api/factors", {"cohen_grade": "9", "retraction_mm": "6"})
        assert refused.status == 422
        assert refused.json()["problems"] == ["Preoperative severity (cohen_grade): must be between 1 and 4 grade; got '9'"]
        ok = http("POST", url + "/api/factors", {"cohen_grade": "3", "carbamazepine": "yes", "retraction_mm": "6.5"})
        assert ok.status == 200, ok.body
        cross = http("POST", url + "/api/mark", {"stage": "incision"}, headers={"origin": "http://evil.example"})
        assert cross.status == 403 and "cross-site" in cross.json()["error"]
        # an alarm raised on the bus is acknowledged from the page
        pub = Publisher(ctx, env["AMRWATCH_BUS_IN"], "acquirer")
        pub.wait_ready(5.0)
        sid = http("GET", url + "/api/snapshot").json()["snapshot"]["session"]["session_id"]
        pub.publish(Alarm, sid, kind="signal_lost", priority="high", state="raised", message="no samples",
                    source="acquirer", alarm_key="signal_lost")
        wait_for(lambda: http("GET", url + "/api/snapshot").json()["snapshot"]["alarms"], 10, "the alarm on the page")
        ack = http("POST", url + "/api/ack", {"alarm_key": "signal_lost", "operator": "dr_lee", "note": "leads ok"})
        assert ack.status == 200 and ack.json()["ok"], ack.body
        seen = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {"stage", "factors", "alarm_ack"} <= set(seen):
            m = sub.recv(200)
            if m is not None and m.type != "session_start":
                seen[m.type] = m
        assert seen["stage"].stage == "baseline" and seen["stage"].source == "operator"
        assert seen["factors"].factors.given() == {"cohen_grade": 3, "carbamazepine": True, "retraction_mm": 6.5}
        a = seen["alarm_ack"]
        assert (a.alarm_key, a.operator, a.note, a.publisher, a.session_id) == ("signal_lost", "dr_lee", "leads ok",
                                                                               "monitor", sid)
        acked = wait_for(lambda: [x for x in http("GET", url + "/api/snapshot").json()["snapshot"]["alarms"]
                                  if x["ack"]], 10, "the acknowledgement on the page")
        assert acked[0]["ack"]["operator"] == "dr_lee"
        pub.close()
    finally:
        sub.close()
    acq.send_signal(signal.SIGTERM)
    acq.wait(timeout=15)
    gone = http("POST", url + "/api/mark", {"stage": "incision"})
    assert gone.status == 504 and "no acquirer answered" in gone.json()["error"]
    ctx.term()


def test_losing_the_bus_is_reported_and_recovery_is_noticed(procs, monitor_env, sse_clients):
    env = monitor_env
    url = base_url(env)
    bus = procs.start("bus")
    start_monitor(procs, env)
    wait_for(lambda: http("GET", url + "/api/status").json()["bus_ok"], 10, "bus_ok")
    sse = SSE(env)
    sse_clients.append(sse)
    t0 = time.monotonic()
    bus.send_signal(signal.SIGKILL)
    bus.wait()
    lost = sse.until(lambda i: i["kind"] == "status" and not i["status"]["bus_ok"], 10, "a bus-lost status")[-1]
    assert time.monotonic() - t0 < 5.5 and lost["status"]["bus_silent_s"] >= 3.0
    procs.start("bus")
    sse.until(lambda i: i["kind"] == "status" and i["status"]["bus_ok"], 15, "the bus back")


def test_a_page_that_cannot_keep_up_is_disconnected_with_the_reason_and_resyncs(procs, monitor_env):
    env = monitor_env
    procs.start("bus")
    start_monitor(procs, env, "--client-queue", "40", "--send-buffer", "8192")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a stalled browser: tiny window, never read
    s.connect(("127.0.0.1", int(env["AMRWATCH_MONITOR_PORT"])))
    s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    procs.start("acquirer", "--speed", "10", "--wait-for", "monitor")
    wait_for(lambda: http("GET", base_url(env) + "/api/status").json()["clients"] == 0, 40,
             "the stalled page to be disconnected")
    s.settimeout(5)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    text = data.decode(errors="replace")
    assert "event: resync" in text and "fell 40 messages behind" in text, text[-500:]
    fresh = SSE(env)
    try:
        first = fresh.items.get(timeout=10)
        assert first["kind"] == "snapshot" and first["snapshot"]["session"] is not None
    finally:
        fresh.close()


def test_a_monitor_started_mid_session_fetches_the_session_and_draws_sweeps(procs, monitor_env):
    env = monitor_env
    url = base_url(env)
    procs.start("bus")
    ctx, sub = bus_subscriber(env, ("stimulus",))
    try:
        procs.start("acquirer", "--speed", "5", "--wait-timeout", "0")
        # The session is well under way (some stimuli gone by) before the monitor starts.
        wait_for(lambda: (lambda m: m is not None and m.stimulus_index >= 10)(sub.recv(200)), 60,
                 "the session's 10th stimulus", interval=0)
    finally:
        sub.close()
        ctx.term()
    start_monitor(procs, env)
    snap = wait_for(lambda: (lambda s: s if s["session"] and s["session"].get("channels")
                             and s["sweeps"].get("MENT") else None)(http("GET", url + "/api/snapshot").json()["snapshot"]),
                    20, "sweeps after a late join")
    assert snap["session"]["joined_late"] is True and snap["session"]["source"] == "sim"


def test_token_protects_every_request_and_the_page_is_reachable_on_the_network(procs, monitor_env, tmp_path):
    env = monitor_env
    token = "tok-" + "a1b2c3d4e5f6g7h8i9"
    (tmp_path / "token").write_text(token + "\n")
    procs.start("bus")
    procs.start("monitor", "--bind", "0.0.0.0", "--token-file", str(tmp_path / "token"))
    url = base_url(env)
    wait_http(url + "/api/config")
    page = http("GET", url + "/", headers={"accept": "text/html"})
    assert page.status == 401 and b"needs its access token" in page.body and b"?token=" in page.body
    api = http("GET", url + "/api/snapshot")
    assert api.status == 401 and "Bearer" in api.json()["error"]
    assert http("GET", url + "/events").status == 401
    assert http("POST", url + "/api/mark", {"stage": "baseline"}).status == 401
    login = http("GET", url + f"/replay?session=x&token={token}")
    assert login.status == 303 and login.headers["location"] == "/replay?session=x"
    cookie = login.headers["set-cookie"].split(";")[0]
    assert token not in cookie and "HttpOnly" in login.headers["set-cookie"]
    assert http("GET", url + "/", headers={"cookie": cookie}).status == 200
    assert http("GET", url + "/api/snapshot", headers={"authorization": f"Bearer {token}"}).status == 200
    assert http("GET", url + "/static/app.js", headers={"cookie": cookie}).status == 200
    csp = http("GET", url + "/", headers={"cookie": cookie}).headers["content-security-policy"]
    assert "default-src 'self'" in csp
    # bound to every interface: reachable on this machine's network address, not only loopback
    addrs = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    ipv4 = [a for a in addrs if "." in a and not a.startswith("127.")]
    if not ipv4:
        print("no non-loopback IPv4 address on this machine: the network reachability part was not run")
        return
    remote = f"http://{ipv4[0]}:{env['AMRWATCH_MONITOR_PORT']}"
    assert http("GET", remote + "/api/snapshot").status == 401
    assert http("GET", remote + "/api/snapshot", headers={"authorization": f"Bearer {token}"}).status == 200


def test_a_taken_port_is_an_alarm_and_the_page_comes_up_once_it_is_free(procs, monitor_env):
    env = monitor_env
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", int(env["AMRWATCH_MONITOR_PORT"])))
    blocker.listen(1)
    procs.start("bus")
    ctx, sub = bus_subscriber(env, ("alarm", "heartbeat"))
    procs.start("monitor")
    try:
        alarm = None
        deadline = time.monotonic() + 20
        while alarm is None and time.monotonic() < deadline:
            m = sub.recv(200)
            if m is not None and m.type == "alarm" and m.source == "monitor":
                alarm = m
        assert alarm is not None, "no alarm for the taken port"
        assert alarm.kind == "service_down" and "cannot listen on 127.0.0.1:" in alarm.message
        assert "address already in use" in alarm.message.lower()
        blocker.close()
        wait_http(base_url(env) + "/api/config", timeout=15)
        cleared = None
        while cleared is None and time.monotonic() < deadline + 15:
            m = sub.recv(200)
            if m is not None and m.type == "alarm" and m.alarm_key == "monitor:web" and m.state == "cleared":
                cleared = m
        assert cleared is not None
    finally:
        sub.close()
        ctx.term()
        blocker.close()


def test_the_monitor_command_refuses_bad_settings_with_the_reason(monitor_env, tmp_path):
    env = dict(monitor_env, AMRWATCH_MONITOR_TOKEN="short")
    r = subprocess.run([sys.executable, "-m", "amrwatch", "monitor"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "token must be at least 16 characters; got 5" in r.stderr
    r = subprocess.run([sys.executable, "-m", "amrwatch", "monitor", "--token-file", str(tmp_path / "none")],
                       env=monitor_env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot read it" in r.stderr
