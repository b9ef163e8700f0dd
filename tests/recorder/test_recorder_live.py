"""The recorder as a process in a real stack: a simulated operation archived whole, listed, shown,
replayed (a new session linked to its source, analysed again to the same numbers), verified and
exported to EDF+ that pyedflib and MNE-Python read back."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pyedflib
import pytest

from amrwatch.services.acquirer.annotations import parse as parse_annotation
from amrwatch.archive.writer import ArchiveReader, session_path
from amrwatch.archive.index import ArchiveIndex
from amrwatch.archive.order import SignalOrder

from ..conftest import Procs
from .stack import cli, json_lines, private_env, wait_closed

EVERY_TYPE = {"session_start", "session_end", "emg_frame", "stimulus", "sim_truth", "stage", "factors",
              "amr_measurement", "amr_state", "baseline", "amr_course", "prediction", "decision"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One live session (persists-unexpected, 20x) and its replay, recorded by a real stack."""
    tmp = tmp_path_factory.mktemp("live")
    env = private_env(tmp)
    (tmp / "logs").mkdir()
    procs = Procs(env, tmp / "logs")
    data = Path(env["AMRWATCH_DATA"])
    try:
        for svc in ("bus", "recorder", "analyzer", "predictor"):
            procs.start(svc)
        acq = procs.start("acquirer", "--speed", "20", "--time-scale", "0.1", "--scenario", "persists-unexpected",
                          "--sample-index-channel", "--seed", "3", "--wait-for", "recorder,analyzer,predictor")
        assert acq.wait(timeout=120) == 0, procs.log("acquirer")[-2000:]
        [live] = wait_closed(data, 1, procs=procs)
        replay = cli(env, "replay", live.session_id, "--speed", "20")
        assert replay.returncode == 0, replay.stderr
        rows = wait_closed(data, 2, procs=procs)
        yield env, data, rows[0], rows[1], replay
    finally:
        procs.stop_all()


def test_every_message_type_is_archived_gap_free_and_the_signal_whole(recorded):
    _env, data, live, _, _ = recorded
    d = session_path(data, live.session_id)
    assert ArchiveReader(d).verify() == []
    with ArchiveIndex.build(d) as idx:
        types = {e.type for e in idx.events} | {"emg_frame"}
        assert EVERY_TYPE <= types, EVERY_TYPE - types
        assert idx.gaps == [] and idx.close is not None
        streams = idx.seqs()
        for (pub, _inst, t), seqs in streams.items():
            if t in EVERY_TYPE:
                assert len(seqs.ranges()) == 1, (pub, t, seqs)  # one unbroken run of seqs per stream
        sig = SignalOrder(idx)
        end = idx.session_end().header
        assert len(sig.rows) == end["n_frames"] and sig.missing_samples() == [] and sig.duplicates == 0
        k = [c["name"] for c in idx.session_start().header["montage"]["channels"]].index("SAMPLE_INDEX")
        whole = np.concatenate([idx.samples(int(r))[k] for r in sig.rows])
        assert whole.size == end["n_samples"]
        assert np.array_equal(whole, (np.arange(whole.size) % 2**24).astype(np.float32))
    assert live.model_sha256 and live.model_synthetic is True and live.patient_token.startswith("pt_")
    assert live.montage["sampling_rate_hz"] == 20000.0 and live.scenario == "persists-unexpected"


def test_sessions_lists_newest_last_and_show_describes_one(recorded):
    env, data, live, replay, _ = recorded
    r = cli(env, "sessions", "--json")
    assert r.returncode == 0, r.stderr
    rows = json_lines(r.stdout)
    assert [x["session_id"] for x in rows] == [live.session_id, replay.session_id]
    assert {"session_id", "started_at", "source", "scenario", "replay_of"} <= set(rows[0])
    assert rows[0]["replay_of"] is None and rows[1]["replay_of"] == live.session_id
    text = cli(env, "sessions").stdout.splitlines()
    assert text[-1].startswith(replay.session_id) and text[-2].startswith(live.session_id)
    show = cli(env, "session", "show", live.session_id, "--json")
    info = json_lines(show.stdout)[0]
    assert info["replays"] == [replay.session_id] and info["course"] == "persisted"
    assert info["missing_samples"] == 0 and info["stages"][0] == "baseline" and info["stages"][-1] == "end"
    with ArchiveIndex.build(session_path(data, live.session_id)) as idx:
        end = idx.session_end().header
    assert info["messages"]["stimulus"] == end["n_stimuli"] and info["messages"]["emg_frame"] == end["n_frames"]
    assert info["samples"] == end["n_samples"] and info["duration_s"] == end["n_samples"] / 20000
    human = cli(env, "session", "show", live.session_id)
    assert human.returncode == 0 and "persisted" in human.stdout and "pt_" in human.stdout
    missing = cli(env, "session", "show", "nope")
    assert missing.returncode == 1 and "no session 'nope'" in missing.stderr


def test_replay_is_a_new_tagged_session_whose_analysis_gives_the_same_numbers(recorded):
    _env, data, live, replay, result = recorded
    assert replay.replay_of == live.session_id and replay.source == f"replay:{live.session_id}"
    assert replay.patient_token == live.patient_token  # the same patient's operation, replayed
    assert f"as session {replay.session_id}" in result.stdout

    def measurements(sid):
        with ArchiveIndex.build(session_path(data, sid)) as idx:
            start = idx.session_start()
            out = {(e.header["stimulus_index"], e.header["channel"]): e.body
                   for e in idx.events_of("amr_measurement") if e.session_id == sid}
            return start, out, [e.body for e in idx.events_of("decision") if e.session_id == sid]

    start, original, decisions = measurements(live.session_id)
    rstart, replayed, rdecisions = measurements(replay.session_id)
    assert start.publisher == "acquirer" and rstart.publisher == "replay"
    assert rstart.header["settings"]["replay"] is True and rstart.header["replay_of"] == live.session_id
    assert len(original) > 50 and replayed == original
    assert [d["kind"] for d in rdecisions] == [d["kind"] for d in decisions]


def test_verify_finds_both_sessions_identical(recorded):
    env, _data, live, replay, _ = recorded
    for sid in (live.session_id, replay.session_id):
        r = cli(env, "verify", sid)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "IDENTICAL" in r.stdout and "amr_measurement" in r.stdout
        rep = json_lines(cli(env, "verify", sid, "--json").stdout)[0]
        assert rep["ok"] and rep["compared"]["amr_measurement"] > 50 and rep["compared"]["decision"] >= 2
        assert rep["compared"]["prediction"] >= 1 and rep["differences"] == []


def test_export_edf_reads_back_with_pyedflib_and_mne(recorded, tmp_path):
    env, data, live, _, _ = recorded
    out = tmp_path / "session.edf"
    r = cli(env, "export", "edf", live.session_id, str(out))
    assert r.returncode == 0, r.stderr
    with ArchiveIndex.build(session_path(data, live.session_id)) as idx:
        sig = SignalOrder(idx)
        names = [c["name"] for c in idx.session_start().header["montage"]["channels"]]
        signal = np.concatenate([idx.samples(int(i)) for i in sig.rows], axis=1)
        stims = [e.header for e in sig.events if e.type == "stimulus"]
        stages = [e.header for e in sig.events if e.type == "stage"]
        states = [e.header for e in idx.events_of("amr_state")]
        decisions = [e.header for e in idx.events_of("decision")]
    reader = pyedflib.EdfReader(str(out))
    try:
        assert reader.getSignalLabels() == names
        assert list(reader.getSampleFrequencies()) == [20000.0] * len(names)
        assert reader.getPhysicalDimension(0) == "uV"
        for i in range(3):  # the EMG channels, in µV, within one 16-bit step of the archive
            x = reader.readSignal(i)
            step = (reader.getPhysicalMaximum(i) - reader.getPhysicalMinimum(i)) / 65535
            assert x.size == signal.shape[1] and np.max(np.abs(x - signal[i])) <= step
        onsets, _, texts = reader.readAnnotations()
    finally:
        reader.close()
    texts = list(texts)
    assert len(texts) == len(stims) + len(stages) + len(states) + len(decisions)  # none dropped
    parsed = [parse_annotation(t) for t in texts]
    got_stims = [(o * 20000, p[1]["direction"]) for o, p in zip(onsets, parsed) if p and p[0] == "stimulus"]
    assert [d for _, d in got_stims] == [s["direction"] for s in stims]
    # EDF+ (EDFlib) keeps onsets to 100 µs, two samples at 20 kHz: exact on even samples, else one sample off
    for (o, _), s in zip(got_stims, stims):
        assert abs(o - s["sample_index"]) <= (1e-6 if s["sample_index"] % 2 == 0 else 1.0 + 1e-6), (o, s)
    assert [p[1]["stage"] for p in parsed if p and p[0] == "stage"] == [s["stage"] for s in stages]
    assert sorted(t for t in texts if t.startswith("AMR ")) == sorted(f"AMR {s['channel']} {s['state']}"
                                                                      for s in states)
    assert sorted(t for t in texts if t.startswith("decision ")) == sorted(f"decision {d['kind']}"
                                                                           for d in decisions)
    raw = mne.io.read_raw_edf(out, preload=True, verbose="error")
    assert raw.ch_names == names and raw.info["sfreq"] == 20000.0
    assert len(raw.annotations) == len(texts)
    assert sorted(raw.annotations.description) == sorted(texts)
    mne_uv = raw.get_data(picks=[0])[0] * 1e6  # MNE gives volts
    step = (np.ceil(signal[0].max()) - np.floor(signal[0].min())) / 65535
    assert np.max(np.abs(mne_uv - signal[0])) <= step * 1.001
