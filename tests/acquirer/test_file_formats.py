"""`file:PATH`: one recording written by the field's own writers (pyedflib, pybv, MNE, an XDF file read
by pyxdf) gives the same stimuli, stages and measurements whatever the format."""

from __future__ import annotations

import subprocess
import sys

import mne
import numpy as np
import pybv
import pytest

from amrwatch.proto.messages import AmrMeasurementBody
from amrwatch.services.acquirer.files import open_file
from amrwatch.services.acquirer.source import SourceError, open_source
from amrwatch.services.analyzer.offline import analyze_edf

from .test_montage import FS, _sweeps, _write
from .xdfwrite import write_xdf

LABELS = ["L Mentalis", "L Orb Oris", "L O.Oculi"]
STAGES = [(0.2, "stage baseline"), (3.0, "stage decompression"), (5.0, "Decompression complete")]


@pytest.fixture(scope="module")
def recording():
    rng = np.random.default_rng(11)
    data, ann = _sweeps(7, rng, {0: 160.0, 1: 110.0, 2: 210.0})
    return data, sorted(ann + STAGES)


def _mne_raw(data, ann):
    info = mne.create_info(LABELS, FS, ch_types="emg")
    raw = mne.io.RawArray(data * 1e-6, info, verbose="error")  # MNE holds volts
    raw.set_annotations(mne.Annotations([t for t, _ in ann], [0.0] * len(ann), [d for _, d in ann]))
    return raw


def write(fmt: str, tmp_path, data, ann):
    if fmt == "edf":
        return _write(tmp_path / "r.edf", data, LABELS, ["uV"] * 3, ann)
    if fmt == "vhdr":
        events = [{"onset": int(round(t * FS)), "description": d, "type": "Comment"} for t, d in ann]
        # pybv takes volts
        pybv.write_brainvision(data=data * 1e-6, sfreq=FS, ch_names=LABELS, fname_base="r", folder_out=str(tmp_path),
                               events=events, unit="µV", fmt="binary_float32")
        return tmp_path / "r.vhdr"
    if fmt == "set":
        path = tmp_path / "r.set"
        mne.export.export_raw(path, _mne_raw(data, ann), fmt="eeglab", verbose="error")
        return path
    if fmt == "fif":
        path = tmp_path / "r_raw.fif"
        _mne_raw(data, ann).save(path, verbose="error")
        return path
    if fmt == "xdf":
        return write_xdf(tmp_path / "r.xdf", data, LABELS, FS, [(t, d) for t, d in ann])
    raise AssertionError(fmt)


def measurements(source):
    return {(f.stimulus_index, f.channel): f.fields() for f in analyze_edf(source) if isinstance(f, AmrMeasurementBody)}


@pytest.mark.parametrize("fmt", ["vhdr", "set", "fif", "xdf"])
def test_each_format_gives_the_measurements_of_the_edf(fmt, recording, tmp_path):
    data, ann = recording
    ref_src = open_file(str(write("edf", tmp_path, data, ann)))
    src = open_file(str(write(fmt, tmp_path, data, ann)))
    assert src.spec.startswith("file:") and fmt != "edf"
    assert any(("mne" if fmt != "xdf" else "pyxdf") in note for note in src.notes), src.notes
    assert [c.direction for c in src.montage.channels] == ["ZYG", "ZYG", "MAR"]
    assert [(s.sample_index, s.direction, s.intensity_ma) for s in src.stimuli] == \
        [(s.sample_index, s.direction, s.intensity_ma) for s in ref_src.stimuli]
    assert src.stages == ref_src.stages and [st for _, st in src.stages] == \
        ["baseline", "decompression", "decompression_complete"]
    ref, got = measurements(ref_src), measurements(src)
    assert ref.keys() == got.keys() and len(got) >= 15
    for key, f in got.items():
        r = ref[key]
        assert f["present"] == r["present"], key
        assert f["p2p_uv"] == pytest.approx(r["p2p_uv"], abs=1.0), key  # EDF's 16-bit step is 0.15 µV
        if f["onset_latency_ms"] is not None:
            assert f["onset_latency_ms"] == pytest.approx(r["onset_latency_ms"], abs=0.05), key


def test_unknown_annotations_are_listed_once_and_the_reader_named(recording, tmp_path):
    data, ann = recording
    noisy = ann + [(1.1, "impedance check"), (2.1, "impedance check"), (4.4, "Patient moved")]
    src = open_file(str(write("fif", tmp_path, data, sorted(noisy))))
    [listed] = [n for n in src.notes if "not understood" in n]
    assert "'impedance check' x2" in listed and "'Patient moved'" in listed


def test_file_spec_through_the_cli_and_refusals(recording, tmp_path):
    data, ann = recording
    path = write("vhdr", tmp_path, data, ann)
    r = subprocess.run([sys.executable, "-m", "amrwatch", "analyze", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# read with mne")
    with pytest.raises(SourceError, match="no reader for '.txt'"):
        (tmp_path / "x.txt").write_text("hello")
        open_source(f"file:{tmp_path / 'x.txt'}")
    with pytest.raises(SourceError, match="cannot be read by MNE"):
        (tmp_path / "broken.vhdr").write_text("not a header")
        open_source(f"file:{tmp_path / 'broken.vhdr'}")


def test_a_trigger_channel_times_the_stimuli_when_the_file_has_no_markers(recording, tmp_path):
    """FIF with a 5 V TRIG_ZYG pulse channel and no stimulus annotation: the shared detector finds them."""
    data, ann = recording
    n = data.shape[1]
    trig = np.zeros(n)
    onsets = [int(round(t * FS)) for t, d in ann if "ZYG" in d]
    for s in onsets:
        trig[s:s + 20] = 5.0
    info = mne.create_info([*LABELS, "TRIG_ZYG"], FS, ch_types=["emg"] * 3 + ["misc"])
    raw = mne.io.RawArray(np.vstack([data * 1e-6, trig]), info, verbose="error")
    raw.set_annotations(mne.Annotations([t for t, d in STAGES], [0.0] * len(STAGES), [d for _, d in STAGES]))
    path = tmp_path / "trig_raw.fif"
    raw.save(path, verbose="error")
    src = open_file(str(path))
    assert [(s.sample_index, s.direction) for s in src.stimuli] == [(i, "ZYG") for i in onsets]
    assert any("trigger channels" in note for note in src.notes)
