"""Publishing frames on the compiled path: the same bytes' meaning as pydantic's, the same refusals.

The publisher checks a frame from its Python values with the gate derived
from the pydantic model (proto/hotpath.py) and encodes it with msgspec; a
value the gate is not sure of is built by pydantic, whose error is the one
raised. What leaves the socket must decode, by pydantic alone, to the very
message the publisher returned."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from amrwatch.proto.codec import decode_reference
from amrwatch.proto.messages import EmgFrame
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError


from .wire import publisher_and_sink, receive

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def wire():
    yield from publisher_and_sink("acquirer")


def body(**over):
    b = {"first_sample_index": 0, "n_channels": 2, "n_samples": 3, "sampling_rate_hz": 20000.0, "dtype": "<f4",
         "layout": "channel_major", "first_sample_device_s": 0.0, "first_sample_utc": T0}
    b.update(over)
    return b


@given(first=st.integers(0, 2**62), ch=st.integers(1, 4), ns=st.integers(1, 16), rate=st.floats(500.0, 100000.0),
       device=st.floats(allow_nan=False, allow_infinity=False),
       first_utc=st.datetimes(min_value=dt.datetime(1971, 1, 1), timezones=st.just(dt.UTC)),
       session=st.from_regex(r"\A[A-Za-z0-9_\-]{1,64}\Z"))
@settings(max_examples=200, deadline=None)
def test_what_is_sent_decodes_by_pydantic_to_the_message_returned(wire, first, ch, ns, rate, device, first_utc,
                                                                  session):
    pub, sink = wire
    samples = np.random.default_rng(first % 97).normal(size=(ch, ns))
    msg = pub.publish(EmgFrame, session, samples=samples, **body(first_sample_index=first, n_channels=ch,
                                                                  n_samples=ns, sampling_rate_hz=rate,
                                                                  first_sample_device_s=device,
                                                                  first_sample_utc=first_utc))
    got = decode_reference(receive(sink))
    assert got == msg and got.samples.tobytes() == samples.astype("<f4").tobytes()
    assert msg.model_dump_json() == got.model_dump_json()


def test_the_fast_path_is_taken(wire):
    """`build` leaves the frames it made for `send`: no pydantic model construction, no model_dump_json."""
    pub, sink = wire
    msg = pub.build(EmgFrame, "S1", samples=np.zeros((2, 3)), **body())
    assert pub._built is not None and pub._built[0] is msg
    pub.send(msg)
    assert decode_reference(receive(sink)) == msg


@pytest.mark.parametrize("over, field", [
    ({"n_channels": 300}, "n_channels"), ({"sampling_rate_hz": 499.0}, "sampling_rate_hz"),
    ({"first_sample_device_s": float("nan")}, "first_sample_device_s"), ({"first_sample_index": -1}, None),
    ({"first_sample_index": True}, None), ({"n_samples": 3.0}, None), ({"dtype": "<f8"}, "dtype"),
    ({"first_sample_utc": dt.datetime(2026, 11, 24, 8, 0)}, "first_sample_utc"), ({"unknown": 1}, "unknown"),
    # msgspec.convert reads a datetime from a str, and took a lone surrogate: strict pydantic refuses both
    ({"first_sample_utc": "2026-11-24T08:00:00Z"}, "first_sample_utc"), ({"dtype": "<f4\ud800"}, "dtype"),
])
def test_refusals_are_pydantics(wire, over, field):
    pub, _ = wire
    shape = (over.get("n_channels", 2) if isinstance(over.get("n_channels"), int) else 2, 3)
    with pytest.raises(ValidationError) as fast:
        pub.build(EmgFrame, "S1", samples=np.zeros(shape), **body(**over))
    with pytest.raises(ValidationError) as ref:
        EmgFrame(type="emg_frame", schema_version=1, session_id="S1", seq=0, publisher="acquirer",
                 instance=pub.instance, ts_utc=T0, **body(**over))
    assert [e["loc"] for e in fast.value.errors()] == [e["loc"] for e in ref.value.errors()]
    if field:
        assert field in str(fast.value)


def test_wrong_shape_refused_with_the_numbers(wire):
    pub, _ = wire
    with pytest.raises(ValueError, match=r"n_channels=2.*got \(3, 3\)"):
        pub.build(EmgFrame, "S1", samples=np.zeros((3, 3)), **body())


def test_bad_session_id_refused(wire):
    pub, _ = wire
    with pytest.raises(ValidationError, match="session_id"):
        pub.build(EmgFrame, "no spaces\n", samples=np.zeros((2, 3)), **body())
