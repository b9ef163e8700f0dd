"""A predictor that loses a factors message on the bus fetches it from the session's state.

The test plays the acquirer (as the other live tests do): it publishes a
session's factors with one seq left out, as if the bus had dropped it, and
answers the control socket's `state` request from the acquirer's real
snapshot cache. The real predictor process must notice the gap, ask, and
predict with the lost factor — without it the prediction never comes.
"""

from __future__ import annotations

import json
import time

import zmq

from amrwatch.bus import Publisher, Subscriber
from amrwatch.proto.control import ControlReply
from amrwatch.proto.messages import Baseline, Factors, Heartbeat, Prediction, SessionStart, StageMarker, utc_now
from amrwatch.services.acquirer.simsource import SimSource
from amrwatch.services.acquirer.snapshot import SessionSnapshot

SID = "5e551011fe7c4e70"


def test_a_factors_message_lost_on_the_bus_is_fetched_from_the_state(procs, stack_env):
    procs.start("bus")
    procs.start("predictor", "--metrics-port", "0")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("prediction", "heartbeat"))
        deadline = time.monotonic() + 60
        while not (isinstance(m := sub.recv(200), Heartbeat) and m.service == "predictor"):
            assert time.monotonic() < deadline, "the predictor never started"
        control = ctx.socket(zmq.ROUTER)
        control.bind(stack_env["AMRWATCH_CONTROL_BIND"])
        acq = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "acquirer")
        ana = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "analyzer")
        assert acq.wait_ready(20, ("factors",)) and ana.wait_ready(20, ("baseline",))
        snap = SessionSnapshot(SID)
        acq.on_sent.append(snap.add)
        ana.on_sent.append(snap.add)
        montage = SimSource(seed=1, time_scale=0.1).montage
        acq.publish(SessionStart, SID, started_at=utc_now(), source="sim", scenario=None, replay_of=None,
                    manual=True, montage=montage, settings={}, ground_truth=False)
        acq.publish(StageMarker, SID, stage="baseline", source="operator", sample_index=0)
        ana.publish(Baseline, SID, channel="MENT", direction="ZYG", baseline_uv=150.0, n_sweeps=20,
                    amr_amplitude_uv=150.0)
        acq.publish(Factors, SID, factors={"duration_years": 1.5, "cohen_grade": 2, "carbamazepine": False,
                                           "vessels": 1}, source="operator")
        lost = acq.build(Factors, SID, factors={"retraction_mm": 6.0}, source="operator")
        acq._seq["factors"] = lost.seq + 1  # "sent", but the bus dropped it: only the snapshot has it
        snap.add(lost, [b"factors", lost.model_dump_json().encode(), b""])
        acq.publish(Factors, SID, factors={"displacement": 3}, source="operator")

        # The acquirer's part: answer `state` from the snapshot, as Acquirer._state does.
        assert control.poll(30_000), "the predictor never asked for the session's state after the gap"
        ident, tag, empty, raw = control.recv_multipart()
        assert (tag, empty) == (b"state", b"") and json.loads(raw) == {"op": "state", "session_id": SID}
        kept = snap.messages()
        reply = ControlReply(ok=True, session_id=SID, n_messages=len(kept))
        control.send_multipart([ident, tag, empty, reply.model_dump_json().encode(),
                                *[f for k in kept for f in k.frames]])

        deadline = time.monotonic() + 30
        while not isinstance(pred := sub.recv(200), Prediction):
            assert time.monotonic() < deadline, "no prediction: the lost factor was not recovered"
    finally:
        ctx.destroy(linger=0)
    assert pred.session_id == SID and pred.inputs["retraction_mm"] == 6.0 and pred.inputs["displacement"] == 3
    assert "taken from the session's state" in procs.log("predictor")
