"""Publishing the gated types besides frames (`amr_measurement`, `stimulus`, ...): pydantic's message or refusal.

The analyzer builds its bodies unchecked, so the publisher's check is their one contract check. For a type with
a gate (proto/hotpath.py) `Publisher.build` checks the Python values with the gate and encodes with msgspec; a
value the gate is not sure of goes to pydantic. Held here to pydantic's constructor over edge values of every
field — including Python values JSON cannot carry (numpy scalars, str subclasses, lone surrogates, naive or
non-UTC datetimes, Decimal, IntEnum): the same message (equal, same stored types, same JSON) or the same
ValidationError text. What leaves the (real) socket decodes, by pydantic alone, to the message returned. And
the gate is really taken for what the analyzer writes, so the equality is not won by falling back."""

from __future__ import annotations

import datetime as dt
import decimal
import enum

import numpy as np
import pytest
from amrwatch.proto.codec import FAST, decode_reference
from amrwatch.proto.messages import BY_TYPE, Message
from amrwatch.services.analyzer.engine import AnalyzerEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from amrwatch.bus import Publisher

from .wire import publisher_and_sink, receive

from ..analyzer.streams import feed, simulate
from ..proto.edges import field_edges
from ..proto.examples import BODIES, SID
from ..proto.test_hotpath import EDGE_VALUES

TYPES = sorted(t for t in FAST if t != "emg_frame")


class Text(str):
    pass


class Number(enum.IntEnum):
    ONE = 1


#: Python values no JSON header holds, where msgspec and pydantic could part.
PYTHON_VALUES = [np.float64(1.5), np.float32(2.5), np.int64(3), np.bool_(True), Text("MENT"), Text("ZYG"),
                 Number.ONE, decimal.Decimal("1.5"), float("nan"), float("inf"), float("-inf"), "\ud800",
                 "a\ud800b", "é\udc00", b"MENT", 2**70, -(2**70), 10**400, 1e-320, [1.0], (1.0,), {"a": 1},
                 dt.datetime(2026, 11, 24, 8, 0), dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC),
                 dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), dt.date(2026, 1, 1)]


@pytest.fixture(scope="module")
def wire():
    yield from publisher_and_sink("analyzer")


def reference(pub: Publisher, cls: type[Message], session_id, ts_utc, body: dict):
    return cls(type=cls.TOPIC, schema_version=1, session_id=session_id, seq=pub.next_seq(cls.TOPIC),
               publisher=pub.name, instance=pub.instance, ts_utc=ts_utc, **body)


def outcome(fn):
    try:
        msg = fn()
    except ValidationError as err:
        return ("refused", str(err))
    except TypeError as err:
        return ("type error", str(err))
    return ("accepted", msg)


def same(pub: Publisher, topic: str, body: dict, session_id=SID) -> tuple[str, bool]:
    """`Publisher.build` against pydantic's constructor; returns the outcome and whether the gate built it."""
    cls = BY_TYPE[topic]
    pub._built = None
    got = outcome(lambda: pub.build(cls, session_id, **body))
    gated = pub._built is not None
    ts = got[1].ts_utc if got[0] == "accepted" else dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ref = outcome(lambda: reference(pub, cls, session_id, ts, body))
    assert got[0] == ref[0], f"{topic} {body!r}:\n build {got}\n ref   {ref}"
    if got[0] != "accepted":
        assert got[1] == ref[1], f"{topic} {body!r}: refusals differ"
        assert not gated
        return got[0], gated
    msg, want = got[1], ref[1]
    assert msg == want and msg.model_dump_json() == want.model_dump_json()
    assert [type(v) for v in msg.__dict__.values()] == [type(v) for v in want.__dict__.values()]
    assert list(msg.__dict__) == list(want.__dict__) and msg.model_fields_set == want.model_fields_set
    assert msg.__pydantic_private__ == want.__pydantic_private__
    return got[0], gated


def values_for(topic: str, field: str) -> list:
    return EDGE_VALUES + field_edges(BY_TYPE[topic], field) + PYTHON_VALUES


@pytest.mark.parametrize("topic", TYPES)
def test_every_field_with_every_edge_value_builds_as_pydantic_does(wire, topic):
    pub, _ = wire
    good = BODIES[topic]
    seen = {"gate": 0, "pydantic": 0, "refused": 0}
    for field in good:
        for value in values_for(topic, field):
            result, gated = same(pub, topic, {**good, field: value})
            seen["refused" if result != "accepted" else "gate" if gated else "pydantic"] += 1
        same(pub, topic, {k: v for k, v in good.items() if k != field})  # missing
    for extra in ("extra", "samples_", "seq", "type", "publisher", "instance", "ts_utc", "schema_version"):
        same(pub, topic, {**good, extra: 1})  # unknown, or an envelope field given twice
    for sid in (None, "", "a b", "x" * 65, Text(SID), "\ud800"):
        same(pub, topic, good, session_id=sid)
    assert seen["gate"] >= len(good) and seen["refused"] >= 10 * len(good), seen


@st.composite
def hostile_body(draw) -> tuple[str, dict]:
    topic = draw(st.sampled_from(TYPES))
    body = dict(BODIES[topic])
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(list(BODIES[topic])))
        if draw(st.booleans()):
            body[field] = draw(st.sampled_from(values_for(topic, field)))
        else:
            body[field] = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)))
    return topic, body


@given(hostile_body())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
def test_hostile_bodies_build_as_pydantic_does(wire, case):
    pub, _ = wire
    topic, body = case
    same(pub, topic, body)


@pytest.mark.parametrize("topic", TYPES)
def test_what_is_sent_decodes_by_pydantic_to_the_message_returned(wire, topic):
    pub, sink = wire
    pub._built = None
    msg = pub.publish(BY_TYPE[topic], SID, **BODIES[topic])
    got = decode_reference(receive(sink))
    assert got == msg and got.model_dump_json() == msg.model_dump_json()
    assert pub.next_seq(topic) == msg.seq + 1


def test_a_refusal_names_field_range_and_value(wire):
    pub, _ = wire
    with pytest.raises(ValidationError, match=r"p2p_uv[\s\S]*greater than or equal to 0[\s\S]*-1\.5"):
        pub.publish(BY_TYPE["amr_measurement"], SID, **{**BODIES["amr_measurement"], "p2p_uv": -1.5})


@pytest.fixture(scope="module")
def analyzer_output():
    s = simulate(seed=4, scenario="disappears-after-decompression", time_scale=0.2)
    return feed(AnalyzerEngine(s.montage), s, [100])


def test_what_the_analyzer_writes_takes_the_gate(wire, analyzer_output):
    """Every measurement and baseline the engine writes (unchecked) is built by the gate — not by pydantic —
    and what leaves the socket is pydantic's message."""
    pub, sink = wire
    taken: dict[str, int] = {}
    for body in analyzer_output:
        if body.TOPIC not in FAST:
            continue
        pub._built = None
        msg = pub.build(BY_TYPE[body.TOPIC], SID, **body.fields())
        assert pub._built is not None and pub._built[0] is msg, body
        pub.send(msg)
        assert decode_reference(receive(sink)) == msg
        assert msg == reference(pub, BY_TYPE[body.TOPIC], SID, msg.ts_utc, body.fields()).model_copy(
            update={"seq": msg.seq})
        taken[body.TOPIC] = taken.get(body.TOPIC, 0) + 1
    assert taken.get("amr_measurement", 0) >= 100 and taken.get("baseline", 0) >= 1, taken
