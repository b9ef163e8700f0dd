"""The gate of every type besides the frames (`amr_measurement`, `stimulus`, ...) against pydantic, on decode.

tests/proto/test_hotpath.py holds the frames' gate to pydantic; this file does the same for each other type in
`FAST`: over edge values derived from each model (every bound and its nearest neighbours, every Literal choice
and near misses, strings at and past their length, patterns), the corpus's hostile values (None, wrong types,
NaN and infinities as raw JSON, duplicated and unknown and missing keys, corrupted bytes), `decode` (the gate)
and `decode_reference` (pydantic alone) must give the same outcome: the same refusal (reason and text) or
equal messages. And the gate must really be taken for valid headers and really refuse hostile ones, so that
the equality is not won by always falling back to pydantic.
"""

from __future__ import annotations

import json

import pytest
from amrwatch.proto.codec import FAST, decode, decode_reference, encode
from amrwatch.proto.messages import BY_TYPE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .edges import field_edges, mangle
from .examples import example
from .test_hotpath import EDGE_VALUES, RAW_NUMBERS, _dump, _sample, json_scalars, json_values, outcome

#: The types gated besides the frames (which tests/proto/test_hotpath.py covers with their payload).
TYPES = sorted(t for t in FAST if t != "emg_frame")
GOOD = {t: json.loads(encode(example(t))[1]) for t in TYPES}
#: JSON text no json.dumps writes: escapes pydantic and msgspec could read differently (a lone surrogate, an
#: astral character as a pair, NUL), besides the corpus's raw numbers.
RAW_TEXT = ['"\\ud800"', '"\\udc00x"', '"\\ud834\\udd1e"', '"\\u0000"', '"a\\nb"', '"\\u00e9"', '"\\/"']


def same(topic: str, header: bytes, payload: bytes = b"") -> tuple:
    frames = [topic.encode(), header, payload]
    fast, ref = outcome(decode, frames), outcome(decode_reference, frames)
    assert fast == ref, f"gate and pydantic disagree on {frames!r}:\n fast {fast}\n ref  {ref}"
    return ref


def edges(topic: str, field: str) -> list:
    return EDGE_VALUES + field_edges(BY_TYPE[topic], field)


def test_the_gated_types_are_those_expected():
    """A change to proto/messages.py that gives a type a gate or takes it away is seen here (and must then be
    covered by these tests, which iterate over FAST)."""
    assert set(FAST) == {"emg_frame", "session_end", "stimulus", "sim_truth", "stage", "amr_measurement",
                         "baseline", "alarm", "alarm_ack"}


@pytest.mark.parametrize("topic", TYPES)
def test_every_field_with_every_edge_value_agrees(topic):
    """Exhaustively: each field set to each edge value, written by json.dumps, as a second (duplicated) key,
    as raw JSON no json.dumps writes; each field missing; an unknown field; a payload where none belongs."""
    good = GOOD[topic]
    outcomes = {"accepted": 0, "refused": 0}

    def count(header: bytes, payload: bytes = b"") -> None:
        outcomes[same(topic, header, payload)[0]] += 1

    for field in good:
        for value in edges(topic, field):
            count(_dump({**good, field: value}))
            count(_dump(good)[:-1] + f', "{field}": {json.dumps(value)}}}'.encode())
        for raw in RAW_NUMBERS + RAW_TEXT:
            count(_dump({k: v for k, v in good.items() if k != field})[:-1] + f', "{field}": {raw}}}'.encode())
            count(_dump(good)[:-1] + f', "{field}": {raw}}}'.encode())
        count(_dump({k: v for k, v in good.items() if k != field}))
    for extra in ("extra", "Seq", "type ", "", "samples"):
        count(_dump({**good, extra: 1}))
    count(_dump(good), b"\x00" * 4)
    count(_dump(good))
    assert outcomes["accepted"] >= len(good) and outcomes["refused"] >= 10 * len(good), outcomes


@st.composite
def hostile_header(draw, topic: str) -> bytes:
    """One header from the corpus: a valid header of `topic` with one or more things wrong (or nothing)."""
    d = dict(GOOD[topic])
    fields = list(d)
    raw: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["edge", "edge", "any", "drop", "extra", "raw", "dup"]))
        field = draw(st.sampled_from(fields))
        if kind == "edge":
            d[field] = draw(st.sampled_from(edges(topic, field)))
        elif kind == "any":
            d[field] = draw(json_values)
        elif kind == "drop":
            d.pop(field, None)
        elif kind == "extra":
            d[draw(st.sampled_from(["extra", "samples", "Seq", "type ", ""]))] = draw(json_scalars)
        elif kind == "raw":
            d.pop(field, None)
            raw.append((field, draw(st.sampled_from(RAW_NUMBERS + RAW_TEXT))))
        else:
            raw.append((field, json.dumps(draw(st.sampled_from(edges(topic, field))))))
    body = _dump(d)
    for field, text in raw:
        body = body[:-1] + (b", " if len(body) > 2 else b"") + f'"{field}": {text}}}'.encode()
    return mangle(draw, body)


@st.composite
def topic_and_header(draw) -> tuple[str, bytes]:
    topic = draw(st.sampled_from(TYPES))
    return topic, draw(hostile_header(topic))


@given(topic_and_header())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gate_and_pydantic_agree_on_the_hostile_corpus(case):
    topic, header = case
    same(topic, header)


@given(topic_and_header())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_gate_never_accepts_what_pydantic_refuses(case):
    """Soundness, on the gate itself: what it lets through, pydantic validates to the same values, in the
    same order, of the same types."""
    topic, header = case
    values = FAST[topic].check(header)
    if values is None:
        return
    ref = BY_TYPE[topic].model_validate_json(header)  # raises if the gate was wrong
    assert values == dict(ref) and list(values) == list(ref.model_dump())
    assert [type(v) for v in values.values()] == [type(v) for v in dict(ref).values()]


@pytest.mark.parametrize("topic", TYPES)
def test_the_corpus_exercises_both_sides_of_the_gate(topic):
    """Not won by deferring everything: the gate itself accepts the valid headers and itself refuses most of
    what pydantic refuses."""
    gate = {"accepted": 0, "refused": 0}
    refused_by_both = 0
    for header in _sample(hostile_header(topic), 300):
        values = FAST[topic].check(header)
        gate["accepted" if values is not None else "refused"] += 1
        if values is None and outcome(decode_reference, [topic.encode(), header, b""])[0] == "refused":
            refused_by_both += 1
    assert refused_by_both >= 100, gate
    assert gate["accepted"] >= 5, gate


@pytest.mark.parametrize("topic", TYPES)
def test_valid_headers_take_the_gate_and_decode_equal(topic):
    frames = encode(example(topic, seq=7))
    assert FAST[topic].check(frames[1]) is not None, frames[1]
    assert decode(frames) == decode_reference(frames) == example(topic, seq=7)
