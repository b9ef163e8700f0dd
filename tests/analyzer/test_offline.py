"""Offline analysis: EDF files and recorded message streams, through the live code path."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amrwatch.proto.codec import encode
from amrwatch.proto.messages import (
    AmrMeasurement,
    EmgFrame,
    Message,
    SessionEnd,
    SessionStart,
    StageMarker,
    Stimulus,
)
from amrwatch.services.acquirer.edf import EdfSource
from amrwatch.services.analyzer.offline import analyze_edf, analyze_messages, analyze_source

from .edfwrite import write_sim_edf
from .streams import Session, by_key, of_type, simulate

SID = "20260101T000000Z-0a1b2c"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def edf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edf") / "case.edf"
    write_sim_edf(path, seed=7, scenario="disappears-after-decompression", time_scale=0.2)
    return path


def expected_count(edf: Path) -> int:
    """One measurement per stimulus and recording channel of its direction."""
    src = EdfSource(str(edf))
    return sum(len(src.montage.recording_channels(s.direction)) for s in src.stimuli)


def dumps(outputs) -> list[str]:
    return [json.dumps(f) for f in sorted(of_type(outputs, "amr_measurement"),
                                          key=lambda f: (f["stimulus_index"], f["channel"]))]


def test_sweeps_only_equals_frame_by_frame_byte_for_byte(edf):
    """The fast path reads only the sweeps; the live path sees every 5 ms frame. Same bytes out."""
    fast = list(analyze_edf(str(edf)))
    live = list(analyze_source(EdfSource(str(edf)), frame_ms=5.0))
    a, b = dumps(fast), dumps(live)
    assert len(a) == expected_count(edf)
    assert a == b
    assert of_type(fast, "amr_course") == of_type(live, "amr_course")
    assert of_type(fast, "amr_course")[0]["course"] == "disappeared_after_decompression"
    assert not of_type(fast, "alarm")  # the holes between sweeps are intentional, not gaps


def amrwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amrwatch", *args], capture_output=True, text=True, timeout=120)


def test_cli_json_is_one_measurement_body_per_line(edf):
    r = amrwatch("analyze", str(edf), "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [json.dumps(x) for x in sorted(lines, key=lambda f: (f["stimulus_index"], f["channel"]))] == \
        dumps(list(analyze_edf(str(edf))))
    assert all(set(x) == AmrMeasurement.body_fields() for x in lines)
    assert "course disappeared_after_decompression" in r.stderr


def test_cli_table_and_settings(edf):
    r = amrwatch("analyze", str(edf), "--set", "disappear_k=50")
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stdout.splitlines() if line.startswith("# channel")]
    assert len(said) == 3 and all("records" in line for line in said)  # what each channel was taken as
    rows = [line for line in r.stdout.splitlines() if not line.startswith("#")]
    assert rows[0].split()[:4] == ["stim", "time_s", "dir", "channel"]
    assert len(rows) - 1 == expected_count(edf)
    assert "course persisted" in r.stderr  # 50 absent sweeps in a row never happen in this short case


def test_cli_refusals(tmp_path, edf):
    r = amrwatch("analyze", str(tmp_path / "missing.edf"))
    assert r.returncode == 2 and "no such file" in r.stderr
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    r = amrwatch("analyze", str(other))
    assert r.returncode == 2 and "no reader for '.txt'" in r.stderr and ".vhdr" in r.stderr
    broken = tmp_path / "broken.edf"
    broken.write_bytes(b"0" * 300)
    r = amrwatch("analyze", str(broken))
    assert r.returncode == 1 and "cannot be read as EDF" in r.stderr
    r = amrwatch("analyze", str(edf), "--set", "bandpass_hz=10,50000")
    assert r.returncode == 2 and "bandpass_hz" in r.stderr


# --------------------------------------------------------------------------- #
# Recorded message streams (what the archive holds)


def messages(s: Session, frame: int = 100) -> list[Message]:
    env = dict(schema_version=1, session_id=SID, publisher="acquirer", instance="0123abcd", ts_utc=T0)
    seq: dict[str, int] = {}

    def make(cls, **body) -> Message:
        samples = body.pop("samples", None)
        n = seq.get(cls.TOPIC, 0)
        seq[cls.TOPIC] = n + 1
        msg = cls(type=cls.TOPIC, seq=n, **env, **body)
        return msg.with_samples(samples) if samples is not None else msg

    out = [make(SessionStart, started_at=T0, source="sim", scenario=None, replay_of=None, manual=False,
                montage=s.montage, settings={}, ground_truth=False)]
    si = gi = 0
    n = s.samples.shape[1]
    for pos in range(0, n, frame):
        end = min(n, pos + frame)
        while gi < len(s.stages) and s.stages[gi][0] < end:
            out.append(make(StageMarker, stage=s.stages[gi][1], source="scenario", sample_index=s.stages[gi][0]))
            gi += 1
        out.append(make(EmgFrame, first_sample_index=pos, n_channels=s.samples.shape[0], n_samples=end - pos,
                        sampling_rate_hz=s.fs, dtype="<f4", layout="channel_major",
                        first_sample_device_s=pos / s.fs, first_sample_utc=T0, samples=s.samples[:, pos:end]))
        while si < len(s.stimuli) and s.stimuli[si][1] < end:
            k, idx, d = s.stimuli[si]
            out.append(make(Stimulus, stimulus_index=k, sample_index=idx, stim_time_s=idx / s.fs, direction=d,
                            intensity_ma=None, width_ms=None))
            si += 1
    out.append(make(SessionEnd, ended_at=T0, reason="scenario_end", n_frames=0, n_stimuli=len(s.stimuli),
                    n_samples=n))
    return out


@pytest.fixture(scope="module")
def recorded() -> tuple[Session, list[Message]]:
    s = simulate(seed=9, scenario="persists-unexpected", time_scale=0.2)
    return s, messages(s)


def test_message_stream_equals_the_engine_fed_directly(recorded):
    from amrwatch.services.analyzer.engine import AnalyzerEngine

    from .streams import feed

    s, msgs = recorded
    direct = feed(AnalyzerEngine(s.montage), s, [100])
    replay = list(analyze_messages(msgs))
    assert by_key(replay) == by_key(direct)
    assert of_type(replay, "amr_course")[-1]["course"] == "persisted"
    # Messages of another session, or before any session_start, are ignored.
    stray = msgs[5].model_copy(update={"session_id": "someone-else"})
    assert list(analyze_messages([stray])) == []


def test_archived_session_directory(tmp_path, recorded):
    from amrwatch.archive.writer import ArchiveWriter

    _, msgs = recorded
    session_dir = tmp_path / "sessions" / SID
    w = ArchiveWriter(session_dir)
    for m in msgs:
        w.append_message(encode(m))
    w.close()
    r = amrwatch("analyze", str(session_dir), "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    want = of_type(list(analyze_messages(msgs)), "amr_measurement")
    assert got == [json.loads(json.dumps(f)) for f in want]
    assert np.isfinite([g["p2p_uv"] for g in got]).all()
