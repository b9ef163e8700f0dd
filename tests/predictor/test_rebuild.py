"""A predictor restarted mid-session rebuilds its core from the acquirer's snapshot (PredictorCore.rebuild).

A simulated session is put through the real analyzer engine and a first
predictor core; every state-bearing message (and every decision it made) goes
through the acquirer's real snapshot and its wire encoding. The first core
is "killed" after its verdict, some messages are lost while it restarts, and a
new core rebuilt from the snapshot is fed the rest. Its decisions must
continue the session's numbering and chains, must not say again what was
said, and the session must end with the decisions in force an uninterrupted
run ends with.
"""

from __future__ import annotations

import pytest

from amrwatch import sessionstate
from amrwatch.proto.codec import encode
from amrwatch.proto.control import ControlReply
from amrwatch.proto.messages import BY_TYPE, DecisionBody, Factors, FactorValues, Message, StageMarker, utc_now
from amrwatch.services.acquirer.simsource import SimSource
from amrwatch.services.acquirer.snapshot import SessionSnapshot
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.predictor.core import PredictorCore, Refused
from amrwatch.services.predictor.model import LoadedModel

SID = "c0ffee00c0ffee00"
ANALYZER_TYPES = ("amr_measurement", "amr_state", "baseline", "amr_course")


class Wire:
    """Stamps envelopes as each publisher would."""

    def __init__(self) -> None:
        self.seq: dict[tuple[str, str], int] = {}

    def __call__(self, cls, publisher: str, **body) -> Message:
        key = (publisher, cls.TOPIC)
        seq = self.seq.get(key, 0)
        self.seq[key] = seq + 1
        inst = {"acquirer": "aaaa0001", "analyzer": "bbbb0001"}.get(publisher, "cccc0001")
        return cls(type=cls.TOPIC, schema_version=1, session_id=SID, seq=seq, publisher=publisher, instance=inst,
                   ts_utc=utc_now(), **body)


def inputs(scenario: str, seed: int = 3) -> list[Message]:
    """The predictor's inputs of a simulated session in bus order (acquirer, then the analyzer's outputs)."""
    wire = Wire()
    src = SimSource(seed=seed, scenario=scenario, time_scale=0.5)
    engine = AnalyzerEngine(src.montage)
    out: list[Message] = []
    k = 0

    def analyzer(outputs) -> None:
        out.extend(wire(BY_TYPE[o.TOPIC], "analyzer", **o.fields()) for o in outputs if o.TOPIC in ANALYZER_TYPES)

    while (chunk := src.read(2000)) is not None:
        for idx, stage in chunk.stages:
            out.append(wire(StageMarker, "acquirer", stage=stage, source="scenario", sample_index=idx))
            analyzer(engine.on_stage(stage, idx))
        for _idx, values in chunk.factors:
            out.append(wire(Factors, "acquirer", factors=FactorValues(**values), source="scenario"))
        if chunk.n_samples:
            analyzer(engine.on_frame(chunk.first_sample_index, chunk.samples))
        for s in chunk.stimuli:
            analyzer(engine.on_stimulus(k, s.sample_index, s.sample_index / engine.fs, s.direction))
            k += 1
    analyzer(engine.on_end())
    return out


def run(core: PredictorCore, msgs: list[Message], wire: Wire, stream: list[Message] | None = None) -> list[dict]:
    """Feed `msgs`; the decisions made, also appended (as the predictor's messages) to `stream`."""
    decisions = []
    for m in msgs:
        if stream is not None:
            stream.append(m)
        for o in core.on_message(m):
            if isinstance(o, Refused):
                continue
            body = o.fields()
            out = wire(BY_TYPE[o.TOPIC], "predictor", **body)
            if isinstance(o, DecisionBody):
                decisions.append(body)
            if stream is not None:
                stream.append(out)
    return decisions


def snapshot_of(stream: list[Message]) -> list[Message]:
    """What the acquirer's `state` reply gives back, through the real cache and wire encoding."""
    snap = SessionSnapshot(SID)
    for m in stream:
        snap.add(m, encode(m))
    kept = snap.messages()
    reply = ControlReply(ok=True, session_id=SID, n_messages=len(kept))
    got = sessionstate.parse([sessionstate.TAG, b"", reply.model_dump_json().encode(),
                              *[f for k in kept for f in k.frames]])
    assert got.unknown is None
    return got.messages


def in_force(decisions: list[dict]) -> dict[str, str]:
    """kind of each chain's last decision, chains followed by `supersedes`."""
    root: dict[int, int] = {}
    for d in decisions:
        root[d["decision_id"]] = root.get(d["supersedes"], d["decision_id"]) if d["supersedes"] else d["decision_id"]
    last: dict[int, dict] = {}
    for d in decisions:
        last[root[d["decision_id"]]] = d
    return sorted(d["kind"] for d in last.values())


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    from amrwatch.services.predictor.service import load_or_explain

    return load_or_explain(None)


@pytest.mark.parametrize("scenario,verdict", [("disappears-after-decompression", "decompression_confirmed"),
                                              ("persists-unexpected", "explore_further")])
def test_restart_after_the_verdict_continues_the_session(model, scenario, verdict):
    msgs = inputs(scenario)
    reference = run(PredictorCore(model), msgs, Wire())
    assert verdict in [d["kind"] for d in reference]

    wire, stream = Wire(), []
    first = PredictorCore(model)
    before: list[dict] = []
    cut = None
    for i, m in enumerate(msgs):
        before += run(first, [m], wire, stream)
        if cut is None and before and before[-1]["kind"] == verdict:
            cut = i + 15  # it goes on a little after the verdict, then is killed
        if i == cut:
            break
    cut += 1
    lost = 9  # messages on the bus while it restarts
    second = PredictorCore(model)
    adopted = second.rebuild(snapshot_of(stream))
    assert adopted == len({d["decision_id"] for d in before})  # every one (few enough to be kept)
    after = run(second, msgs[cut + lost:], wire)

    ids = [d["decision_id"] for d in before + after]
    assert ids == sorted(set(ids)), "decision ids must keep increasing across the restart"
    assert after, "the session goes on to its prognosis"
    published = {d["decision_id"] for d in before}
    # No chain started afresh: only the prognosis (new at the end) may supersede nothing.
    assert all(d["supersedes"] in published | {x["decision_id"] for x in after}
               for d in after if d["kind"] != "prognosis")
    # Nothing said again: the verdict stands without being repeated, and no "not monitorable" from a lost state.
    assert verdict not in [d["kind"] for d in after]
    assert "amr_not_monitorable" not in [d["kind"] for d in after]
    assert in_force(before + after) == in_force(reference)


def test_without_the_state_it_says_unknown_rather_than_a_verdict(model):
    msgs = inputs("disappears-after-decompression")
    core = PredictorCore(model)
    (o,) = core.state_unknown("the acquirer refused 'state'", first_id=1_700_000_000)
    assert isinstance(o, DecisionBody)
    d = o.fields()
    assert d["kind"] == "indeterminate" and d["decision_id"] == 1_700_000_000
    assert "state" in d["rationale"] and d["synthetic"]
    # Then it hears only the end of the session (its stages, a few states): the AMR's disappearance was before.
    tail = msgs[len(msgs) * 3 // 4:]
    after = run(core, tail, Wire())
    assert all(x["decision_id"] > d["decision_id"] for x in after)
    assert "decompression_confirmed" not in [x["kind"] for x in after]
    assert "amr_not_monitorable" not in [x["kind"] for x in after]
