"""The frames' compiled gate (proto/hotpath.py) against pydantic, property-based.

`decode` takes the gate for `emg_frame`; `decode_reference` is pydantic alone.
Over the hostile-input corpus (the malformed kinds tests/ops/test_hostile.py
fires at a live stack, every field set to values just outside its rules,
duplicated keys, corrupted bytes) the two must give the same outcome: the same
refusal (reason and text) or equal messages. The gate must really be taken for
what our publishers write, and really refuse hostile headers itself, so that
the equality is not won by always falling back to pydantic.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from amrwatch.proto.codec import (
    FAST,
    MAX_HEADER_BYTES,
    DecodeError,
    decode,
    decode_reference,
    encode,
)
from amrwatch.proto.messages import EmgFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .edges import mangle
from .examples import example

GATE = FAST["emg_frame"]
GOOD = json.loads(encode(example("emg_frame"))[1])
PAYLOAD = encode(example("emg_frame"))[2]  # 2 channels x 4 samples


def outcome(fn, frames):
    try:
        msg = fn(frames)
    except DecodeError as err:
        return ("refused", err.reason, str(err))
    samples = msg.samples.tobytes() if isinstance(msg, EmgFrame) else None
    return ("accepted", type(msg).__name__, msg.model_dump_json(), msg.model_dump(), samples,
            sorted(msg.model_fields_set))


def same(frames) -> tuple:
    fast, ref = outcome(decode, frames), outcome(decode_reference, frames)
    assert fast == ref, f"gate and pydantic disagree on {frames!r}:\n fast {fast}\n ref  {ref}"
    return ref


# --------------------------------------------------------------------------- #
# The corpus

#: Values just inside and outside the rules of every field of the header.
EDGE_VALUES = [
    None, True, False, 0, -1, 1, 255, 256, 257, 65536, 65537, 2**62, 2**62 + 1, 2**63, 2**64, 1.0, 1.5, -0.0,
    499.99, 500, 500.0, 100000.0, 100000.5, 1e308, "", "a", "x" * 64, "x" * 65, "abc\n", "ab c", "ABC",
    "0123abcd", "0123ABCD", "0123abc", "é", "emg_frame", "stage", "<f4", "<f8", ">f4", "channel_major",
    "sample_major", [], {}, [1], {"a": 1},
    "2026-11-24T08:00:00Z", "2026-11-24T08:00:00.123456Z", "2026-11-24T08:00:00+00:00",
    "2026-11-24T08:00:00-00:00", "2026-11-24T08:00:00+01:00", "2026-11-24T08:00:00", "2026-11-24 08:00:00Z",
    "2026-11-24t08:00:00z", "2026-W48-2T08:00:00Z", "2026-11-24T08:00:00.1234567Z", "2026-11-24T24:00:00Z",
    "2026-02-30T08:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-11-24T08:00:60Z",
    "２０２６-11-24T08:00:00Z", "2026-11-24T08:00:00.12345Z", "20261124T080000Z", "2026-11-24T08:00Z",
    "2026-11-24T08:00:00.000000Z", 1764000000, 1764000000.5,
]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E2", "1.0e0", "-0", "0.0", "01", "1_0",
               "1e-400", "100000.00000000001", "4611686018427387904", "4611686018427387905"]
FIELDS = list(GOOD)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=3)), max_leaves=6)


def _dump(d: dict) -> bytes:
    return json.dumps(d, ensure_ascii=False).encode()


@st.composite
def hostile_header(draw) -> bytes:
    """One header from the corpus: a valid frame header with one or more things wrong (or nothing)."""
    d = dict(GOOD)
    raw: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["edge", "any", "drop", "extra", "raw", "dup"]))
        field = draw(st.sampled_from(FIELDS))
        if kind == "edge":
            d[field] = draw(st.sampled_from(EDGE_VALUES))
        elif kind == "any":
            d[field] = draw(json_values)
        elif kind == "drop":
            d.pop(field, None)
        elif kind == "extra":
            d[draw(st.sampled_from(["extra", "samples", "Seq", "type ", ""]))] = draw(json_scalars)
        elif kind == "raw":
            raw.append((field, draw(st.sampled_from(RAW_NUMBERS))))
        else:
            raw.append((field, json.dumps(draw(st.sampled_from(EDGE_VALUES)))))
    body = _dump(d)
    for field, text in raw:  # a value no json.dumps writes, or the key once more (duplicated)
        body = body[:-1] + f', "{field}": {text}}}'.encode()
    return mangle(draw, body)


def ops_malformed(i: int) -> list[bytes]:
    """tests/ops/test_hostile.py's kinds, aimed at frames."""
    kind = i % 8
    if kind == 0:
        return [b"emg_frame", b"{not json" + bytes(range(i % 200, i % 200 + 20)), PAYLOAD]
    if kind == 1:
        return [b"emg_frame", _dump({**GOOD, "first_sample_device_s": "NaN"}).replace(b'"NaN"', b"NaN"), PAYLOAD]
    if kind == 2:
        return [b"emg_frame", _dump({**GOOD, "extra": 1}), PAYLOAD]
    if kind == 3:
        return [b"emg_frame", b" " * (MAX_HEADER_BYTES + 1), PAYLOAD]
    if kind == 4:
        return [b"emg_frame"]
    if kind == 5:
        return [b"emg_frame", _dump(GOOD), b"\x00" * 4096]
    if kind == 6:
        return [b"emg_frame", _dump({**GOOD, "seq": -5}), PAYLOAD]
    return [b"emg_frame", _dump({**GOOD, "schema_version": 99}), PAYLOAD]


# --------------------------------------------------------------------------- #
# Same refusals, same reasons; same messages


@pytest.mark.parametrize("i", range(8))
def test_the_ops_corpus_is_refused_alike(i):
    ref = same(ops_malformed(i))
    assert ref[0] == "refused"


def test_every_field_with_every_edge_value_agrees():
    """The corpus's edge values, exhaustively: each field set to each value, written by json.dumps, as a raw
    number json.dumps never writes, and as a second (duplicated) key."""
    outcomes = {"accepted": 0, "refused": 0}
    for field in FIELDS:
        for value in EDGE_VALUES:
            for header in (_dump({**GOOD, field: value}),
                           _dump(GOOD)[:-1] + f', "{field}": {json.dumps(value)}}}'.encode()):
                outcomes[same([b"emg_frame", header, PAYLOAD])[0]] += 1
        for raw in RAW_NUMBERS:
            header = _dump(GOOD)[:-1] + f', "{field}": {raw}}}'.encode()
            outcomes[same([b"emg_frame", header, PAYLOAD])[0]] += 1
            outcomes[same([b"emg_frame", _dump({**GOOD, field: 0}).replace(b'"%s": 0' % field.encode(),
                                                                            b'"%s": %s' % (field.encode(),
                                                                                           raw.encode())),
                           PAYLOAD])[0]] += 1
    assert outcomes["accepted"] > 50 and outcomes["refused"] > 1000, outcomes


@given(hostile_header(), st.sampled_from(["exact", "short", "long", "empty"]))
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gate_and_pydantic_agree_on_the_hostile_corpus(header, payload):
    n = {"exact": len(PAYLOAD), "short": len(PAYLOAD) - 4, "long": len(PAYLOAD) + 4, "empty": 0}[payload]
    same([b"emg_frame", header, (PAYLOAD * 2)[:n]])


@given(hostile_header())
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_gate_never_accepts_what_pydantic_refuses(header):
    """Soundness, on the gate itself: what it lets through, pydantic validates to the same values."""
    values = GATE.check(header)
    if values is None:
        return
    ref = EmgFrame.model_validate_json(header)  # raises if the gate was wrong
    assert values == dict(ref) and list(values) == list(ref.model_dump())


def test_the_corpus_exercises_both_sides_of_the_gate():
    """Not won by deferring everything: over a fixed sample of the corpus the gate itself refuses
    hundreds of headers pydantic refuses, and itself accepts the valid ones."""
    gate = {"accepted": 0, "refused": 0}
    refused_by_both = 0
    for header in _sample(hostile_header(), 600):
        values = GATE.check(header)
        gate["accepted" if values is not None else "refused"] += 1
        if values is None and outcome(decode_reference, [b"emg_frame", header, PAYLOAD])[0] == "refused":
            refused_by_both += 1
    assert refused_by_both >= 200, gate
    assert gate["accepted"] >= 10, gate


def _sample(strategy, n: int) -> list:
    out: list = []

    @given(strategy)
    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def collect(x):
        out.append(x)

    collect()
    return out


# --------------------------------------------------------------------------- #
# What our publishers write takes the gate, and decodes equal


aware = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9998, 1, 1),
                     timezones=st.just(dt.UTC))


@given(seq=st.integers(0, 2**62), first=st.integers(0, 2**62), ch=st.integers(1, 8), ns=st.integers(1, 64),
       rate=st.floats(500.0, 100_000.0), device=st.floats(allow_nan=False, allow_infinity=False),
       ts=aware, first_utc=aware, session=st.from_regex(r"\A[A-Za-z0-9_\-]{1,64}\Z"),
       publisher=st.from_regex(r"\A[A-Za-z0-9_.:\-]{1,64}\Z"), instance=st.from_regex(r"\A[0-9a-f]{8,32}\Z"))
@settings(max_examples=400, deadline=None)
def test_valid_frames_take_the_gate_and_decode_equal(seq, first, ch, ns, rate, device, ts, first_utc, session,
                                                     publisher, instance):
    msg = EmgFrame(type="emg_frame", schema_version=1, session_id=session, seq=seq, publisher=publisher,
                   instance=instance, ts_utc=ts, first_sample_index=first, n_channels=ch, n_samples=ns,
                   sampling_rate_hz=rate, dtype="<f4", layout="channel_major", first_sample_device_s=device,
                   first_sample_utc=first_utc)
    msg.with_samples(np.random.default_rng(seq % 1000).normal(size=(ch, ns)))
    frames = encode(msg)
    assert GATE.check(frames[1]) is not None, frames[1]
    ref = same(frames)
    assert ref[0] == "accepted"
    back = decode(frames)
    assert back == msg and back.samples.tobytes() == msg.samples.tobytes()
    assert not back.samples.flags.writeable


@pytest.mark.parametrize("ts", ["2026-11-24T08:00:00+00:00", "2026-11-24T09:00:00+01:00", "2026-11-24 08:00:00Z",
                                "2026-11-24T08:00:00.1234567Z", "2026-11-24T08:00:00z", "2026-11-24t08:00:00Z"])
def test_other_timestamp_forms_agree(ts):
    """Where the two parsers could read a timestamp differently: the same outcome, the same instant."""
    for field in ("first_sample_utc", "ts_utc"):
        same([b"emg_frame", _dump({**GOOD, field: ts}), PAYLOAD])


def test_refusal_names_field_range_and_value_on_the_fast_path():
    text = outcome(decode, [b"emg_frame", _dump({**GOOD, "n_channels": 300}), PAYLOAD])[2]
    assert "n_channels" in text and "1 to 256" in text and "300" in text


def test_only_strict_closed_models_get_a_gate():
    from amrwatch.proto.hotpath import fast_types
    from amrwatch.proto.messages import MESSAGE_TYPES, Factors, SessionStart

    gates = fast_types(MESSAGE_TYPES)
    assert {"emg_frame", "session_end", "baseline"} <= set(gates)
    # a model validator (Factors) or nested models (SessionStart): pydantic only, never a half-check
    assert Factors.TOPIC not in gates and SessionStart.TOPIC not in gates
