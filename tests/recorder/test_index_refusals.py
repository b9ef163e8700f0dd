"""The archive index's emg_frame checker refuses exactly what the wire contract (proto.codec.decode) refuses.

The index checks 1.4 million frame headers of a 2-hour session with a
compiled checker built from EmgFrame's pydantic fields (archive/index.py),
so that readers can build frames without validating them again. It must not
let through anything the contract refuses, nor refuse what it accepts.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from amrwatch.archive.session import open_session
from amrwatch.archive.writer import ArchiveWriter
from amrwatch.proto.codec import DecodeError, decode, encode
from amrwatch.proto.messages import EmgFrame

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MISSING = object()

#: (field, value): the header with that field set to the value (MISSING: removed).
CASES = [
    ("seq", -1), ("seq", "5"), ("seq", 5.0), ("seq", 2**62 + 1), ("seq", True), ("seq", None),
    ("first_sample_index", -1), ("first_sample_index", 1e3),
    ("n_channels", 0), ("n_channels", 257), ("n_channels", False),
    ("n_samples", 0), ("n_samples", 65_537),
    ("sampling_rate_hz", 499.0), ("sampling_rate_hz", 100_001.0), ("sampling_rate_hz", "20000"),
    ("sampling_rate_hz", 20_000),
    ("dtype", "<f8"), ("layout", "row_major"), ("schema_version", 2), ("type", "stimulus"),
    ("session_id", "../etc"), ("session_id", ""), ("session_id", None), ("session_id", "x" * 65),
    ("publisher", "a b"), ("instance", "XYZWXYZW"), ("instance", "abc"),
    ("ts_utc", "2026-01-01T00:00:00+01:00"), ("ts_utc", "2026-01-01T00:00:00"), ("ts_utc", "yesterday"),
    ("ts_utc", "2026-01-01T00:00:00Z"), ("first_sample_utc", "2026-01-01T00:00:00.5"),
    ("first_sample_device_s", "0.5"), ("first_sample_device_s", MISSING), ("extra_field", 1),
]


def frame(n: int, **changes) -> list[bytes]:
    msg = EmgFrame(type="emg_frame", schema_version=1, session_id="S1", seq=n, publisher="acquirer",
                   instance="0123abcd", ts_utc=T0, first_sample_index=8 * n, n_channels=2, n_samples=8,
                   sampling_rate_hz=20_000.0, dtype="<f4", layout="channel_major", first_sample_device_s=0.0,
                   first_sample_utc=T0).with_samples(np.ones((2, 8), dtype="<f4"))
    topic, header, payload = (bytes(f) for f in encode(msg))
    h = json.loads(header)
    for k, v in changes.items():
        if v is MISSING:
            del h[k]
        else:
            h[k] = v
    return [topic, json.dumps(h).encode(), payload]


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """Every case archived as one record (the log keeps whatever it is given), plus a few not by field."""
    cases = [(f"{k}={v!r}" if v is not MISSING else f"{k} missing", frame(i, **{k: v}))
             for i, (k, v) in enumerate(CASES)]
    ok = frame(len(cases))
    short = ok[:2] + [ok[2][:-4]]
    nan = [ok[0], ok[1].replace(b'"first_sample_device_s": 0.0', b'"first_sample_device_s": NaN'), ok[2]]
    assert nan[1] != ok[1]
    cases += [("valid", ok), ("payload 4 bytes short", short), ("NaN in the header", nan),
              ("not JSON", [ok[0], b"{not json", ok[2]])]
    d = tmp_path_factory.mktemp("data") / "sessions" / "S1"
    w = ArchiveWriter(d)
    nos = [w.append_message(f) for _, f in cases]
    w.close()
    with open_session(d) as session:
        refused = dict(session.index.refused)
        unreadable = set(session.index.unreadable)
        indexed = set(session.index.frames.record_no)
    return [(name, f, no, refused.get(no), no in unreadable, no in indexed) for (name, f), no in zip(cases, nos)]


def test_the_index_refuses_exactly_what_the_contract_refuses(archived):
    wrong = []
    for name, frames, _no, why, unreadable, indexed in archived:
        try:
            decode(frames)
            contract_refuses = False
        except DecodeError:
            contract_refuses = True
        index_refuses = why is not None or unreadable
        assert index_refuses != indexed, name  # every frame record is either indexed or refused
        if index_refuses != contract_refuses:
            wrong.append(f"{name}: contract {'refuses' if contract_refuses else 'accepts'}, index "
                         f"{'refuses (' + str(why) + ')' if index_refuses else 'accepts'}")
    assert not wrong, "\n".join(wrong)
    assert sum(1 for *_, indexed in archived if indexed) >= 3  # the valid ones really are indexed


def test_a_refusal_names_the_field_and_the_value(archived):
    by_name = {name: why for name, _f, _no, why, _u, _i in archived}
    assert "n_channels" in by_name["n_channels=257"] and "256" in by_name["n_channels=257"]
    assert "instance" in by_name["instance='XYZWXYZW'"] and "XYZWXYZW" in by_name["instance='XYZWXYZW'"]
    assert "UTC" in by_name["ts_utc='2026-01-01T00:00:00+01:00'"]
    assert "n_channels=2 x n_samples=8 x 4 = 64 expected" in by_name["payload 4 bytes short"]
