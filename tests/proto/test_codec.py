"""The wire codec: round trips, and every malformed input refused with a reason."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amrwatch.proto.codec import MAX_HEADER_BYTES, DecodeError, decode, encode
from amrwatch.proto.messages import EmgFrame

from .examples import BODIES, example


@pytest.mark.parametrize("type_", sorted(BODIES))
def test_round_trip(type_):
    msg = example(type_, seq=7)
    frames = encode(msg)
    assert frames[0] == type_.encode()
    back = decode(frames)
    assert back == msg
    if type_ == "emg_frame":
        assert np.array_equal(back.samples, msg.samples)
    else:
        assert frames[2] == b""


def test_frame_payload_is_raw_little_endian_channel_major():
    msg = example("emg_frame")
    topic, header, payload = encode(msg)
    assert "samples" not in json.loads(header)
    decoded = np.frombuffer(payload, dtype="<f4").reshape(2, 4)
    assert decoded[1, 0] == 4.0  # second channel's first sample: channel-major
    assert len(payload) == 2 * 4 * 4


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=6, max_size=6))
@settings(max_examples=50, deadline=None)
def test_samples_survive_bit_exact(values):
    base = example("emg_frame")
    msg = EmgFrame(**dict(base.model_dump(), n_channels=3, n_samples=2))
    msg.with_samples(np.array(values, dtype=np.float32).reshape(3, 2))
    back = decode(encode(msg))
    assert back.samples.tobytes() == msg.samples.tobytes()


def _expect(frames, reason):
    with pytest.raises(DecodeError) as err:
        decode(frames)
    assert err.value.reason == reason, str(err.value)
    return str(err.value)


def test_wrong_frame_count():
    assert "3 frames" in _expect([b"stage", b"{}"], "frame_count")


def test_unknown_topic():
    assert "weather" in _expect([b"weather", b"{}", b""], "unknown_topic")


def test_header_not_json_or_invalid():
    _expect([b"stage", b"\x80\x81not json", b""], "invalid")
    text = _expect([b"stage", json.dumps({"type": "stage"}).encode(), b""], "invalid")
    assert "seq" in text


def test_oversize_header():
    _expect([b"stage", b"{" + b" " * MAX_HEADER_BYTES + b"}", b""], "oversize")


def test_payload_size_mismatch():
    topic, header, payload = encode(example("emg_frame"))
    text = _expect([topic, header, payload[:-4]], "payload_size")
    assert "n_channels=2" in text
    _expect([b"stage", encode(example("stage"))[1], b"junk"], "payload_size")


def test_topic_header_mismatch():
    _, header, _ = encode(example("stage"))
    _expect([b"stimulus", header, b""], "invalid")


@given(st.lists(st.binary(max_size=200), min_size=0, max_size=5))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash(frames):
    try:
        decode(frames)
    except DecodeError:
        pass
