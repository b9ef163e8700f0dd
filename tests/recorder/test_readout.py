"""The recorder's archive read-out (services/recorder/readout.py): what a hub gets back of a cart's archive.

In-process tests drive `ArchiveReadout` on archives written by the real `ArchiveWriter` (a live one included);
the process tests start a real `amrwatch recorder --archive-read-bind` with CURVE keys (no bus, no acquirer:
the read-out needs only the data directory, so this cart is as light as it gets) and talk to it with the
platform's one control client.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from amrwatch import security
from amrwatch.archive.settings import ArchiveSettings
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.control import ControlClient
from amrwatch.proto.codec import encode
from amrwatch.proto.control import MAX_ARCHIVE_READ, MAX_REPLY_BYTES
from amrwatch.proto.messages import AlarmBody, StimulusBody, message_of
from amrwatch.services.recorder.readout import ArchiveReadout

from ..conftest import free_port

T0 = dt.datetime(2026, 12, 3, 8, 0, 0, tzinfo=dt.UTC)
INST = "00aa11bb22cc33dd"
SID = "readout-test"


def stimulus(seq: int, sid: str = SID) -> list[bytes]:
    body = StimulusBody(stimulus_index=seq, sample_index=seq * 2000, stim_time_s=seq * 0.1, direction="ZYG",
                        intensity_ma=10.0, width_ms=0.2)
    return encode(message_of(body, session_id=sid, seq=seq, publisher="acquirer", instance=INST,
                             ts_utc=T0 + dt.timedelta(seconds=seq * 0.1)))


def alarm(seq: int, sid: str = SID) -> list[bytes]:
    body = AlarmBody(kind="sequence_gap", priority="low", state="raised", message="x" * 1000, source="analyzer",
                     alarm_key=f"test:{seq}")
    return encode(message_of(body, session_id=sid, seq=seq, publisher="analyzer", instance="99887766",
                             ts_utc=T0 + dt.timedelta(seconds=seq)))


def write_session(data: Path, n: int, *, sid: str = SID, skip: tuple[int, ...] = (), make=stimulus,
                  close: bool = True) -> tuple[ArchiveWriter, dict[int, list[bytes]]]:
    w = ArchiveWriter(session_path(data, sid), ArchiveSettings(), meta={"test": "readout"})
    wrote = {}
    for i in range(n):
        if i in skip:
            continue
        f = make(i, sid)
        w.append_message(f)
        wrote[i] = f
    if skip:
        w.append_gap("acquirer", INST, min(skip), max(skip), "lost on the bus and not refetched", "stimulus")
    w.commit()
    if close:
        w.close()
    return w, wrote


def ask(readout: ArchiveReadout, **kw) -> tuple[dict, list[list[bytes]]]:
    import json

    body = {"op": "archive_read", "session_id": SID, "instance": INST, "type": "stimulus", "from_seq": 0,
            "to_seq": 10**12} | kw
    reply, frames = readout.handle(json.dumps(body).encode())
    return reply.model_dump(), [frames[i:i + 3] for i in range(0, len(frames), 3)]


# -- in process --------------------------------------------------------------------------------------------------

def test_a_huge_range_is_cut_at_max_messages_and_resumes_exactly_as_archived(tmp_path):
    _, wrote = write_session(tmp_path, 2500)
    ro = ArchiveReadout(tmp_path, lambda sid: None)
    head, msgs = ask(ro)
    assert head["ok"] and head["n_messages"] == MAX_ARCHIVE_READ == len(msgs)
    assert head["detail"]["truncated_by"] == "max_messages" and head["detail"]["resume_from_seq"] == 2000
    assert msgs == [wrote[i] for i in range(2000)]  # byte for byte as archived
    head2, rest = ask(ro, from_seq=2000)
    assert head2["ok"] and head2["n_messages"] == 500 and "truncated_by" not in head2["detail"]
    assert rest == [wrote[i] for i in range(2000, 2500)]
    assert head2["detail"]["last_archived_seq"] == 2499 and head2["detail"]["live"] is False
    assert ro.rebuilds == 1  # the second chunk came from the kept index


def test_a_reply_is_cut_at_max_bytes(tmp_path):
    _, wrote = write_session(tmp_path, 1500, make=alarm)
    ro = ArchiveReadout(tmp_path, lambda sid: None)
    head, msgs = ask(ro, instance="99887766", type="alarm")
    size = sum(len(f) for m in msgs for f in m)
    assert head["ok"] and head["detail"]["truncated_by"] == "max_bytes", head["detail"]
    assert size <= MAX_REPLY_BYTES and len(msgs) < 1500
    assert head["detail"]["resume_from_seq"] == len(msgs) and msgs == [wrote[i] for i in range(len(msgs))]


def test_what_the_archive_lost_too_is_named(tmp_path):
    write_session(tmp_path, 20, skip=(5, 6, 7))
    head, msgs = ask(ArchiveReadout(tmp_path, lambda sid: None), from_seq=0, to_seq=9)
    assert [int(m[1].split(b'"seq":')[1].split(b",")[0]) for m in msgs] == [0, 1, 2, 3, 4, 8, 9]
    assert head["detail"]["recorded_lost"] == 3
    assert "not refetched" in head["detail"]["recorded_lost_reason"]


def test_the_live_session_is_served_up_to_what_is_durable(tmp_path):
    w, wrote = write_session(tmp_path, 10, close=False)
    ro = ArchiveReadout(tmp_path, lambda sid: w.durable_record_no, refresh_s=0.0)
    head, msgs = ask(ro)
    assert head["detail"]["live"] is True and head["detail"]["durable_up_to"] == w.durable_record_no
    assert len(msgs) == 10
    for i in range(10, 15):
        w.append_message(stimulus(i))  # appended, not yet committed: not served
    head, msgs = ask(ro)
    assert len(msgs) == 10 and head["detail"]["last_archived_seq"] == 9
    w.commit()
    head, msgs = ask(ro)
    assert len(msgs) == 15 and head["detail"]["durable_up_to"] == w.durable_record_no
    w.close()


def test_a_live_session_is_reindexed_only_for_seqs_past_what_the_kept_index_holds(tmp_path):
    w, _ = write_session(tmp_path, 10, close=False)
    now = [0.0]
    ro = ArchiveReadout(tmp_path, lambda sid: w.durable_record_no, refresh_s=1.0, clock=lambda: now[0])
    assert len(ask(ro)[1]) == 10 and ro.rebuilds == 1
    w.append_message(stimulus(10))
    w.commit()
    now[0] = 5.0
    assert len(ask(ro, to_seq=9)[1]) == 10 and ro.rebuilds == 1  # old seqs: the kept index serves them
    now[0] = 5.5
    assert len(ask(ro, to_seq=10)[1]) == 11 and ro.rebuilds == 2  # a newer seq, the session grew: reindexed
    w.append_message(stimulus(11))
    w.commit()
    now[0] = 5.9
    assert len(ask(ro, to_seq=11)[1]) == 11 and ro.rebuilds == 2  # not within refresh_s of the last rebuild
    w.close()


@pytest.mark.parametrize("change, field, words", [
    ({"type": "emg_frame"}, "type", ["'stimulus'", "'decision'", "got 'emg_frame'"]),
    ({"from_seq": -1}, "from_seq", ["0 to", "got -1"]),
    ({"instance": "NOT-HEX"}, "instance", ["[0-9a-f]{8,32}", "got 'NOT-HEX'"]),
    ({"session_id": "../etc"}, "session_id", ["got '../etc'"]),
])
def test_a_bad_request_is_refused_naming_field_allowed_values_and_value(tmp_path, change, field, words):
    write_session(tmp_path, 3)
    ro = ArchiveReadout(tmp_path, lambda sid: None)
    head, msgs = ask(ro, **change)
    assert not head["ok"] and not msgs
    assert head["error"].startswith(f"request refused: {field}:"), head["error"]
    for w in words:
        assert w in head["error"], (w, head["error"])
    assert ask(ro)[0]["ok"]  # and the next good request is answered
    key, text = ro.rejections.popleft()  # for the recorder's loop to raise as an input_rejected alarm
    assert key == "rejected:archive_read_invalid" and field in text


def test_an_unexpected_failure_answers_the_request_raises_the_alarm_and_serving_goes_on(tmp_path):
    """The recorder's durable-record callback failing (a fault of the recorder's side, here injected through the
    real constructor argument) is this request's error and an alarm for the recorder's loop, not a dead thread."""
    write_session(tmp_path, 3, close=False)
    fail = {"on": True}

    def durable(sid: str) -> int | None:
        if fail["on"]:
            raise RuntimeError("the writer went away")
        return None

    ro = ArchiveReadout(tmp_path, durable)
    head, msgs = ask(ro)
    assert not head["ok"] and not msgs and head["detail"]["reason"] == "failed"
    assert "RuntimeError: the writer went away" in head["error"]
    assert ro.rejections.popleft() == ("archive_read_failed", head["error"])
    fail["on"] = False
    assert ask(ro)[0]["ok"]


def test_reversed_range_and_unknown_session_are_refused_with_reasons(tmp_path):
    write_session(tmp_path, 3)
    ro = ArchiveReadout(tmp_path, lambda sid: None)
    head, _ = ask(ro, from_seq=5, to_seq=2)
    assert head["detail"]["reason"] == "reversed_range" and "to_seq 2 is before from_seq 5" in head["error"]
    head, _ = ask(ro, session_id="nope")
    assert head["detail"]["reason"] == "no_such_session" and "'nope'" in head["error"]


# -- a real recorder process, CURVE ------------------------------------------------------------------------------

def _keys(keys: Path, name: str) -> tuple[bytes, bytes, bytes]:
    server, _ = zmq.auth.load_certificate(str(keys / "server.key"))
    public, secret = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))
    return server, public, secret


def _first_reply(client: ControlClient, body: dict, timeout_s: float):
    """Ask until answered (the recorder is starting) or the deadline passes; None if never answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.request(body, timeout_s=2.0)
        if r is not None:
            return r
    return None


@pytest.fixture
def recorder(tmp_path, stack_env):
    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "hub-reader"))
    zmq.auth.create_certificates(str(keys), "stranger")  # a keypair the cart does not authorize
    data = Path(stack_env["AMRWATCH_DATA"])
    _, wrote = write_session(data, 2500)
    port = free_port()
    env = dict(stack_env, AMRWATCH_KEYS=str(keys), AMRWATCH_CLIENT_KEY="client")
    log = open(tmp_path / "recorder.log", "wb")  # noqa: SIM115 - the process's lifetime
    p = subprocess.Popen([sys.executable, "-m", "amrwatch", "recorder", "--archive-read-bind",
                          f"tcp://127.0.0.1:{port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    ctx = zmq.Context()
    try:
        yield f"tcp://127.0.0.1:{port}", keys, ctx, wrote, p
    finally:
        ctx.destroy(linger=0)
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()


BODY = {"op": "archive_read", "session_id": SID, "instance": INST, "type": "stimulus", "from_seq": 0,
        "to_seq": 10**12}


def test_the_recorder_serves_an_authorized_reader_in_bounded_chunks(recorder):
    endpoint, keys, ctx, wrote, _p = recorder
    client = ControlClient(ctx, endpoint, curve=_keys(keys, "hub-reader"))
    r = _first_reply(client, BODY, 60)
    assert r is not None and r.ok, r
    t = time.perf_counter()
    r = client.request(BODY, timeout_s=10)  # timed once the index is kept
    took = time.perf_counter() - t
    assert r is not None and r.reply.n_messages == MAX_ARCHIVE_READ and r.reply.detail["resume_from_seq"] == 2000
    assert r.triples == [wrote[i] for i in range(2000)]
    size = sum(len(f) for f in r.frames)
    print(f"archive_read of {MAX_ARCHIVE_READ} stimulus messages: {size} bytes in {took * 1000:.1f} ms")
    rest = client.request(BODY | {"from_seq": 2000}, timeout_s=10)
    assert rest is not None and rest.triples == [wrote[i] for i in range(2000, 2500)]
    bad = client.request(BODY | {"type": "emg_frame"}, timeout_s=10)
    assert bad is not None and not bad.ok and "type:" in (bad.reply.error or "") and "got 'emg_frame'" in bad.reply.error
    again = client.request(BODY | {"to_seq": 0}, timeout_s=10)  # the recorder kept running
    assert again is not None and again.reply.n_messages == 1
    client.close()


def test_an_unauthorized_key_gets_nothing(recorder):
    endpoint, keys, ctx, _wrote, p = recorder
    good = ControlClient(ctx, endpoint, curve=_keys(keys, "hub-reader"))
    assert _first_reply(good, BODY | {"to_seq": 0}, 60) is not None  # the read-out is up
    stranger = ControlClient(ctx, endpoint, curve=_keys(keys, "stranger"))
    assert stranger.request(BODY, timeout_s=3) is None
    plain = ctx.socket(zmq.DEALER)  # no CURVE at all
    plain.connect(endpoint)
    plain.send_multipart([b"", b'{"op": "archive_read"}'])
    assert not plain.poll(2000)
    plain.close(linger=0)
    assert good.request(BODY | {"to_seq": 0}, timeout_s=10) is not None and p.poll() is None
    good.close()
    stranger.close()
    assert os.path.exists(keys / "authorized" / "hub-reader.key")
