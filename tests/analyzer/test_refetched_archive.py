"""An archive whose refetched frames sit later in the log: `analyze DIR` and `verify` read it the same way.

The recorder archives what it receives in arrival order; frames it lost and
refetched from the acquirer (gapfill) land later in the log than their
neighbours, after the stimuli whose sweeps they complete. The live analyzer
received every frame in order. Read in log order, those frames look like a
hole (sweeps rejected as `gap`) followed by late frames (dropped); both
readers must take the archive in signal order (archive.open_session) and
give exactly what the live analyzer gave.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amrwatch.archive.session import open_session
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.audit.verify import verify_session
from amrwatch.proto.codec import encode
from amrwatch.proto.messages import BY_TYPE, SCHEMA_VERSION, EmgFrame, Message, Stimulus
from amrwatch.services.analyzer.dispatcher import MessageDispatcher
from amrwatch.services.predictor.core import INPUT_TYPES, PredictorCore
from amrwatch.services.predictor.service import load_or_explain

from .streams import simulate
from .test_offline import SID, T0, amrwatch, messages

ANALYZER_OUT = ("amr_measurement", "amr_state", "baseline", "amr_course")
#: How many messages later the recorder archived a refetched frame (its refetch round trip).
LATE_BY = 40


class _Stamper:
    """Envelopes as a service's Publisher stamps them (seq per type)."""

    def __init__(self, publisher: str, instance: str) -> None:
        self.publisher, self.instance, self.seq = publisher, instance, {}

    def __call__(self, type_: str, body: dict) -> Message:
        seq = self.seq.get(type_, 0)
        self.seq[type_] = seq + 1
        return BY_TYPE[type_](type=type_, schema_version=SCHEMA_VERSION, session_id=SID, seq=seq,
                              publisher=self.publisher, instance=self.instance, ts_utc=T0, **body)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, list[dict], int]:
    """(data dir, the live analyzer's measurements, how many frames were archived late)."""
    s = simulate(seed=9, scenario="persists-unexpected", time_scale=0.2)
    acquirer = messages(s)
    # Live: the analyzer and predictor got every message in order and published their results.
    analyzer = MessageDispatcher(source="analyzer")
    core = PredictorCore(load_or_explain(None))
    ana, pre = _Stamper("analyzer", "b1b1b1b1"), _Stamper("predictor", "c2c2c2c2")
    live: list[Message] = []
    measurements: list[dict] = []

    def to_predictor(msg: Message) -> None:
        if msg.type in INPUT_TYPES:
            for body in core.on_message(msg):
                if getattr(body, "TOPIC", None) in ("prediction", "decision"):
                    live.append(pre(body.TOPIC, body.fields()))

    for msg in acquirer:
        live.append(msg)
        to_predictor(msg)
        for body in analyzer.dispatch(msg):
            if body.TOPIC in ANALYZER_OUT:
                out = ana(body.TOPIC, body.fields())
                live.append(out)
                to_predictor(out)
                if body.TOPIC == "amr_measurement":
                    measurements.append(body.model_dump(mode="json"))
    # The recorder lost the frames just after every fifth stimulus and archived them LATE_BY messages later.
    stimuli = [i for i, m in enumerate(live) if isinstance(m, Stimulus)]
    lost: set[int] = set()
    for i in stimuli[::5]:
        lost.update(j for j in range(i + 1, len(live)) if isinstance(live[j], EmgFrame)
                    and j - i <= 12)
    log: list[Message] = []
    late: dict[int, list[Message]] = {}
    for i, msg in enumerate(live):
        if i in lost:
            late.setdefault(i + LATE_BY, []).append(msg)
        else:
            log.append(msg)
        log += late.pop(i, [])
    log += [m for k in sorted(late) for m in late[k]]
    data = tmp_path_factory.mktemp("data")
    w = ArchiveWriter(session_path(data, SID))
    for msg in log:
        w.append_message(encode(msg))
    w.close()
    return data, measurements, len(lost)


def test_the_archive_holds_frames_out_of_order(archive):
    data, _, n_late = archive
    assert n_late > 20
    with open_session(data, SID) as session:
        logged = [m.first_sample_index for m in session.messages("log") if isinstance(m, EmgFrame)]
        signal = [m.first_sample_index for m in session.messages("signal") if isinstance(m, EmgFrame)]
        bus = [m.first_sample_index for m in session.messages("bus") if isinstance(m, EmgFrame)]
    backwards = sum(1 for a, b in zip(logged, logged[1:]) if b < a)
    assert backwards >= 5, "the fixture must put refetched frames after later ones in the log"
    assert signal == sorted(signal) == sorted(logged) and bus == signal


def test_analyze_and_verify_give_the_live_measurements(archive):
    data, live, _ = archive
    r = amrwatch("analyze", str(session_path(data, SID)), "--json")
    assert r.returncode == 0, r.stderr
    analyzed = [json.loads(line) for line in r.stdout.splitlines()]
    assert analyzed == live
    assert not [m for m in analyzed if m["reject_reason"] == "gap"]
    assert "rejected" in r.stderr  # the summary line counts them; none may be a spurious gap

    report = verify_session(data, SID, parallel=False)
    assert report.differences == [], "\n".join(map(str, report.differences))
    assert report.compared["amr_measurement"] == len(live) > 50
    assert report.ok, "\n".join(report.lines())
