"""`amrwatch replay`: an archived session back on the bus, as the acquirer published it.

The analyzer and predictor run on it again and the recorder records it as a
new session. It is tagged as a replay everywhere it could be mistaken for a
live case: the publisher is `replay` (never `acquirer`), the new
session_start has `source = "replay:<ID>"`, `replay_of = <ID>` and
`settings.replay = true`, and replayed stage markers and factors carry
`source = "replay"`.

`replay_plan` is the pure part (what to publish, at which signal time);
`replay_session` paces it onto the bus.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amrwatch.proto.messages import (
    EmgFrame,
    Factors,
    Message,
    SessionEnd,
    SessionStart,
    SimTruth,
    StageMarker,
    Stimulus,
    utc_now,
)
from amrwatch.archive.session import ArchivedSession, NoSuchSession, open_session

PUBLISHER = "replay"
SPEED_RANGE = (0.01, 1000.0)
_CLASSES = {"stage": StageMarker, "factors": Factors, "stimulus": Stimulus, "sim_truth": SimTruth}


class ReplayError(Exception):
    """The session cannot be replayed as asked; the text says why and what to do."""


@dataclass
class ReplayResult:
    session_id: str
    n_frames: int = 0
    n_stimuli: int = 0
    n_messages: int = 0
    n_samples: int = 0
    seconds: float = 0.0


def session_start_body(start: dict[str, Any], source_id: str, started_at: dt.datetime,
                       speed: float) -> dict[str, Any]:
    """The replay's session_start: the original montage and settings, tagged as a replay of `source_id`."""
    settings = {"replay": True, "replay_of": source_id, "replay_speed": float(speed)}
    for k, v in start["settings"].items():
        if len(settings) >= 64:
            break
        settings.setdefault(k, v)
    return {"started_at": started_at, "source": f"replay:{source_id}"[:256], "scenario": start["scenario"],
            "replay_of": source_id, "manual": start["manual"], "montage": start["montage"], "settings": settings,
            "ground_truth": start["ground_truth"]}


def replay_plan(session: ArchivedSession, started_at: dt.datetime) -> Iterator[tuple[float, type[Message], dict[str, Any]]]:
    """(signal time in s at which to publish, message class, body) in the order the acquirer published them
    (the archive's signal order, as `analyze` and `verify` read it)."""
    start = session.start()
    if start is None:
        raise ReplayError(f"session {session.session_id} has no session_start in its archive; it cannot be replayed")
    t = 0.0
    for msg in session.messages("signal"):
        if isinstance(msg, (SessionStart, SessionEnd)):
            continue
        if isinstance(msg, EmgFrame):
            lo, n, fs = msg.first_sample_index, msg.n_samples, msg.sampling_rate_hz
            t = (lo + n) / fs
            yield t, EmgFrame, {
                "first_sample_index": lo, "n_channels": msg.n_channels, "n_samples": n,
                "sampling_rate_hz": fs, "dtype": "<f4", "layout": "channel_major",
                "first_sample_device_s": lo / fs,
                "first_sample_utc": started_at + dt.timedelta(seconds=lo / fs),
                "samples": msg.samples,
            }
            continue
        cls = _CLASSES.get(msg.type)
        if cls is None:
            continue
        body = {k: getattr(msg, k) for k in cls.body_fields()}
        if msg.type in ("stage", "factors"):
            body["source"] = "replay"
        yield t, cls, body


def _wait_for_services(ctx, bus_out: str, wanted: tuple[str, ...], timeout_s: float) -> set[str]:
    """Services whose heartbeat says messages reach them (the acquirer's slow-joiner rule)."""
    from amrwatch.bus import Subscriber
    from amrwatch.proto.messages import Heartbeat

    ready: set[str] = set()
    if not wanted:
        return ready
    sub = Subscriber(ctx, bus_out, ("heartbeat",))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not set(wanted) <= ready:
            msg = sub.recv(100)
            if isinstance(msg, Heartbeat) and msg.info.get("receiving") and msg.service in wanted:
                ready.add(msg.service)
    finally:
        sub.close()
    return ready


def integrity_check(d: Path, session_id: str, *, force: bool, log: Callable[[str], None]) -> None:
    """A damaged archive is not replayed as if whole: a flipped byte or a cut tail would be analysed again
    and recorded as a new session that looks complete. Refused unless `force`, which says what it skips."""
    from amrwatch.archive.integrity import analyse

    a = analyse(d)
    problems = [p for p in a.problems if p.what != "torn_tail" or a.closed]
    if not problems:
        return
    listed = "; ".join(str(p) for p in problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    if not force:
        raise ReplayError(f"session {session_id}'s archive fails its integrity check ({len(problems)} problem(s): "
                          f"{listed}); run `amrwatch verify {session_id}` for the full report, or give --force to "
                          "replay what can still be read")
    with open_session(d) as session:
        idx = session.index
        stopped = f"everything from {idx.stopped_at[0]} byte {idx.stopped_at[1]} on" if idx.stopped_at else None
        # A frame whose header the contract refuses (a flipped byte in it) is as unreadable as one cut short.
        unreadable = sorted(idx.unreadable + [no for no, _why in idx.refused])
        skipped = [x for x in (stopped, f"{len(unreadable)} unreadable record(s) {unreadable[:10]}"
                               if unreadable else None) if x]
    log(f"--force: replaying {session_id} despite {len(problems)} integrity problem(s) ({listed}); skipped: "
        f"{', '.join(skipped) or 'no record (the damage is in the checkpoint or chain, not in a body)'}; "
        "what is replayed may not be the whole session, and records after the damage are not vouched for")


def replay_session(data_dir: Path, session_id: str, *, speed: float = 1.0, bus_in: str, bus_out: str,
                   wait_for: tuple[str, ...] = ("recorder", "analyzer", "predictor"), wait_timeout_s: float = 20.0,
                   log: Callable[[str], None] = lambda s: None, force: bool = False) -> ReplayResult:
    import zmq

    from amrwatch import security
    from amrwatch.bus import Publisher
    from amrwatch.services.acquirer.service import new_session_id

    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise ValueError(f"--speed must be between {SPEED_RANGE[0]:g} and {SPEED_RANGE[1]:g}; got {speed:g}")
    try:
        d = open_session(Path(data_dir), session_id).dir
    except NoSuchSession as err:
        raise ReplayError(str(err)) from None
    integrity_check(d, session_id, force=force, log=log)
    ctx = zmq.Context()
    try:
        with open_session(d) as session:
            start = session.start()
            if start is None:
                raise ReplayError(f"session {session_id} has no session_start in its archive; it cannot be replayed")
            ready = _wait_for_services(ctx, bus_out, wait_for, wait_timeout_s)
            missing = sorted(set(wait_for) - ready)
            if missing:
                raise ReplayError(f"no heartbeat from {', '.join(missing)} on {bus_out} within {wait_timeout_s:g} s: "
                                  "start the stack (amrwatch up) so the replay is analysed and recorded, or give "
                                  "--wait-for with the services you expect")
            # Closing waits (up to a minute) until the queue is delivered: a replay must not end short.
            pub = Publisher(ctx, bus_in, PUBLISHER, configure=lambda sock: sock.setsockopt(zmq.LINGER, 60_000))
            if not pub.wait_ready(wait_timeout_s, ("session_start", "emg_frame")):
                pub.close()
                raise ReplayError(f"nobody subscribes on {bus_in}; is the bus running?")
            now = utc_now()
            sid = new_session_id()
            res = ReplayResult(sid)
            pub.publish(SessionStart, sid, **session_start_body(start.header, session_id, now, speed))
            log(f"replaying {session_id} as {sid} at {speed:g}x")
            t0 = time.monotonic()
            for t, cls, body in replay_plan(session, now):
                if cls is EmgFrame:
                    wait = t0 + t / speed - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    res.n_frames += 1
                    res.n_samples = body["first_sample_index"] + body["n_samples"]
                elif cls is Stimulus:
                    res.n_stimuli += 1
                pub.publish(cls, sid, **body)
                res.n_messages += 1
            pub.publish(SessionEnd, sid, ended_at=utc_now(), reason="source_exhausted", n_frames=res.n_frames,
                        n_stimuli=res.n_stimuli, n_samples=res.n_samples)
            res.n_messages += 2
            res.seconds = time.monotonic() - t0
            pub.close()
            return res
    finally:
        security.stop(ctx)
        ctx.term()
