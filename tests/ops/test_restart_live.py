"""Restarts do not rewrite history: kill -9 of the analyzer and the predictor mid-session, on a real stack.

The simulator plays `disappears-after-decompression` with a long
decompression stage; once the predictor has said `decompression_confirmed`,
the analyzer and the predictor are killed with SIGKILL and started again
while the session runs on (however long they take to start on a loaded
machine); once they have taken it up and measured on, the test marks `end`
and stops the acquirer, which ends the session. They take the
session up from the acquirer's state (`{"op": "state"}`): no 0 µV baseline,
no `never_detected`, no `amr_not_monitorable` from a lost state, decision ids
going on increasing in the same chains, and the session's course what an
uninterrupted analysis of the same simulation gives. Without the state
(`acquirer --no-state`) the restarted analyzer says the course is unknown
instead, and the predictor passes that on.
"""

from __future__ import annotations

import json
import time

import zmq

from amrwatch.bus import Subscriber
from amrwatch.proto.messages import (
    Alarm,
    AmrCourse,
    AmrCourseBody,
    AmrState,
    Baseline,
    Decision,
    Heartbeat,
    AmrMeasurement,
    Message,
    SessionEnd,
    SessionStart,
    StageMarker,
)
from amrwatch.services.acquirer.simsource import SimSource
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.analyzer.offline import feed_chunk

SCENARIO, SEED, TIME_SCALE, SPEED = "disappears-after-decompression", 4, 0.3, "16"
#: A decompression stage far longer than the test needs (15 min simulated): the test ends the session itself,
#: so the restarted services have all the time a loaded machine needs to start (it can take 30 s).
DECOMPRESSION_S = 3000.0
SIM = {"seed": SEED, "scenario": SCENARIO, "time_scale": TIME_SCALE, "stage_durations_s": {"decompression": DECOMPRESSION_S}}
#: Measurements the restarted analyzer publishes before the test ends the session.
MEASURED_AFTER_RESTART = 30
TOPICS = ("session_start", "session_end", "baseline", "amr_state", "amr_course", "decision", "alarm", "heartbeat",
          "amr_measurement", "stage")


class Watch:
    """Everything the test hears, and waiting on what it waits for."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.msgs: list[Message] = []

    def until(self, what: str, pred, timeout: float = 120.0) -> Message:
        deadline = time.monotonic() + timeout
        for m in self.msgs:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            m = self.sub.recv(200)
            if m is None:
                continue
            self.msgs.append(m)
            if pred(m):
                return m
        raise AssertionError(f"timed out waiting for {what}; last: {[(m.type, m.publisher) for m in self.msgs[-8:]]}")

    def of(self, cls, **match) -> list:
        return [m for m in self.msgs if isinstance(m, cls) and all(getattr(m, k) == v for k, v in match.items())]


def ready(watch: Watch, service: str, not_instance: str | None = None) -> Heartbeat:
    return watch.until(f"{service} ready", lambda m: isinstance(m, Heartbeat) and m.service == service
                       and m.status == "ok" and m.instance != not_instance)


def uninterrupted_course(end_sample: int, n_samples: int) -> dict:
    """The course an analyzer that never stopped gives the same session: the simulation up to the session's last
    sample, with the operator's `end` where it was marked (5 ms frames, as the acquirer sends them)."""
    src = SimSource(**SIM)
    engine = AnalyzerEngine(src.montage)
    out, k, marked = [], 0, False
    while (chunk := src.read(100)) is not None and chunk.first_sample_index < n_samples:
        if not marked and chunk.first_sample_index + chunk.n_samples > end_sample:
            out += engine.on_stage("end", end_sample)
            marked = True
        got, k = feed_chunk(engine, chunk, k)
        out += got
    out += engine.on_end()
    return [o.fields() for o in out if isinstance(o, AmrCourseBody)][-1]


def end_session(procs, env, watch: Watch) -> StageMarker:
    """The operator marks `end`; then the acquirer is stopped, which ends the session."""
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.connect(env["AMRWATCH_CONTROL"])
        req.send(json.dumps({"op": "mark", "stage": "end"}).encode())
        assert req.poll(30_000), "the acquirer did not answer 'mark'"
        assert json.loads(req.recv())["ok"]
    finally:
        ctx.destroy(linger=0)
    marker = watch.until("the end marker", lambda m: isinstance(m, StageMarker) and m.stage == "end")
    for n, p in procs.procs:
        if n == "acquirer" and p.poll() is None:
            p.terminate()
    watch.until("session_end", lambda m: isinstance(m, SessionEnd))
    return marker


def start_session(procs, env, *acquirer_args) -> tuple[Watch, zmq.Context]:
    procs.start("bus")
    ctx = zmq.Context()
    watch = Watch(Subscriber(ctx, env["AMRWATCH_BUS_OUT"], TOPICS))
    procs.start("analyzer", "--metrics-port", "0", name="analyzer")
    procs.start("predictor", "--metrics-port", "0", name="predictor")
    ready(watch, "analyzer")
    ready(watch, "predictor")
    procs.start("acquirer", "--source", "sim", "--scenario", SCENARIO, "--seed", str(SEED), "--speed", SPEED,
                "--time-scale", str(TIME_SCALE), "--stage-seconds", f"decompression={DECOMPRESSION_S:g}",
                "--wait-for", "analyzer,predictor", "--metrics-port", "0", *acquirer_args, name="acquirer")
    return watch, ctx


def measured_after(watch: Watch, old_analyzer: str) -> None:
    """Wait until the restarted analyzer has measured on for a while."""
    n = 0

    def enough(m: Message) -> bool:
        nonlocal n
        n += isinstance(m, AmrMeasurement) and m.instance != old_analyzer
        return n >= MEASURED_AFTER_RESTART

    watch.msgs = [m for m in watch.msgs if not isinstance(m, AmrMeasurement)]
    watch.until(f"{MEASURED_AFTER_RESTART} measurements from the restarted analyzer", enough, timeout=180)


def kill(procs, name: str) -> None:
    for n, p in procs.procs:
        if n == name and p.poll() is None:
            p.kill()  # SIGKILL: no teardown, nothing flushed
            p.wait()


def in_force(decisions: list[Decision]) -> dict[int, Decision]:
    superseded = {d.supersedes for d in decisions if d.supersedes}
    return {d.decision_id: d for d in decisions if d.decision_id not in superseded}


def test_kill_9_of_analyzer_and_predictor_after_the_verdict_changes_nothing(procs, stack_env):
    watch, ctx = start_session(procs, stack_env)
    try:
        start = watch.until("session_start", lambda m: isinstance(m, SessionStart))
        sid = start.session_id
        confirmed = watch.until("decompression_confirmed", lambda m: isinstance(m, Decision)
                                and m.kind == "decompression_confirmed")
        old_analyzer = watch.of(Baseline)[0].instance
        old_predictor = confirmed.instance
        kill(procs, "analyzer")
        kill(procs, "predictor")
        procs.start("analyzer", "--metrics-port", "0", name="analyzer")
        procs.start("predictor", "--metrics-port", "0", name="predictor")
        watch.until("the restarted predictor rebuilt", lambda m: isinstance(m, Heartbeat) and m.service == "predictor"
                    and m.instance != old_predictor and m.info.get("state") == "rebuilt", timeout=180)
        measured_after(watch, old_analyzer)
        end = end_session(procs, stack_env, watch)
        watch.until("the restarted analyzer's course", lambda m: isinstance(m, AmrCourse))
        watch.until("the restarted predictor's prognosis", lambda m: isinstance(m, Decision) and m.kind == "prognosis"
                    and any(isinstance(c, AmrCourse) for c in watch.msgs))
    finally:
        ctx.destroy(linger=0)

    assert "resumed session" in procs.log("analyzer") and "rebuilt session" in procs.log("predictor")
    # Baselines: the session's, never made again (and never 0 µV) by the restarted analyzer.
    before = {b.channel: b.baseline_uv for b in watch.of(Baseline, instance=old_analyzer)}
    assert before and all(v > 0 for v in before.values())
    again = [b for b in watch.of(Baseline) if b.instance != old_analyzer]
    assert again == [], [(b.channel, b.baseline_uv) for b in again]
    # The course: what an uninterrupted analysis of the same simulation says, never `never_detected`.
    courses = watch.of(AmrCourse, session_id=sid)
    assert courses and {c.course for c in courses} == {"disappeared_after_decompression"}
    course = courses[-1]
    assert {c.instance for c in courses} == {course.instance} != {old_analyzer}
    reference = uninterrupted_course(end.sample_index, watch.of(SessionEnd)[0].n_samples)
    assert course.course == reference["course"]
    assert course.baseline_uv == reference["baseline_uv"]
    assert course.disappeared_at_stage == reference["disappeared_at_stage"]
    for ch, pc in reference["per_channel"].items():
        got = course.per_channel[ch]
        assert (got["state"], got["ever_present"], got["baseline_uv"], got["disappeared_at_stage"]) == \
            (pc["state"], pc["ever_present"], pc["baseline_uv"], pc["disappeared_at_stage"]), ch
    # No course state restarted from nothing (a `present` with no previous state after the kill).
    assert not [s for s in watch.of(AmrState) if s.instance != old_analyzer and s.previous_state is None]
    # Decisions: numbering and chains go on; nothing said again; no "not monitorable" from a lost state.
    decisions = watch.of(Decision, session_id=sid)
    ids = [d.decision_id for d in decisions]
    assert ids == sorted(set(ids)), ids
    old = {d.decision_id for d in decisions if d.instance == old_predictor}
    new = [d for d in decisions if d.instance != old_predictor]
    assert new and min(d.decision_id for d in new) > max(old)
    assert not [d for d in new if d.kind in ("amr_not_monitorable", "decompression_confirmed", "indeterminate")], \
        [(d.decision_id, d.kind, d.rationale) for d in new]
    final = in_force(decisions)
    kinds = sorted(d.kind for d in final.values())
    assert "decompression_confirmed" in kinds and "prognosis" in kinds, kinds
    prognosis = next(d for d in final.values() if d.kind == "prognosis")
    assert prognosis.evidence["course"] == "disappeared_after_decompression"
    assert confirmed.decision_id in final, "the verdict given before the kill still stands"


def test_without_the_state_the_restarted_analyzer_says_the_course_is_unknown(procs, stack_env):
    watch, ctx = start_session(procs, stack_env, "--no-state")
    try:
        watch.until("decompression_confirmed", lambda m: isinstance(m, Decision) and m.kind == "decompression_confirmed")
        old_analyzer = watch.of(Baseline)[0].instance
        kill(procs, "analyzer")
        assert not watch.of(SessionEnd), "the session ended before the kill: the test proves nothing (too fast)"
        procs.start("analyzer", "--metrics-port", "0", name="analyzer")
        alarm = watch.until("the state_unknown alarm", lambda m: isinstance(m, Alarm) and m.kind == "state_unknown",
                            timeout=180)
        unknown = watch.until("the predictor's 'course unknown'", lambda m: isinstance(m, Decision)
                              and m.evidence.get("trigger") == "state_unknown")
        measured_after(watch, old_analyzer)
        end_session(procs, stack_env, watch)
        # The restarted analyzer has finished the session when it says it is no longer analysing.
        watch.until("the restarted analyzer idle", lambda m: isinstance(m, Heartbeat) and m.service == "analyzer"
                    and m.instance != old_analyzer and m.info.get("analysing") is False
                    and any(isinstance(e, SessionEnd) for e in watch.msgs))
        watch.until("the prognosis", lambda m: isinstance(m, Decision) and m.kind == "prognosis")
    finally:
        ctx.destroy(linger=0)

    assert alarm.state == "raised" and alarm.priority == "high" and "AMR course unknown" in alarm.message
    assert "--no-state" in alarm.message
    assert [b for b in watch.of(Baseline) if b.instance != old_analyzer] == []  # no baseline, let alone 0 µV
    assert [c for c in watch.of(AmrCourse) if c.instance != old_analyzer] == []  # no course, not never_detected
    assert unknown.kind == "indeterminate" and "unknown" in unknown.rationale
    decisions = watch.of(Decision)
    final = in_force(decisions)
    assert unknown.decision_id in final, "the confirmation no longer stands once the course is unknown"
    assert "amr_not_monitorable" not in [d.kind for d in decisions]
    prognosis = next(d for d in final.values() if d.kind == "prognosis")
    assert prognosis.evidence["course"] == "unknown", prognosis.rationale
