"""Montage: the label recogniser, the montage file, aux channels carried, and nothing silent.

Files here are written by pyedflib with a small waveform of their own (not the simulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyedflib
import pytest

from amrwatch.proto.montage import MontageFile
from amrwatch.services.acquirer.edf import EdfSource
from amrwatch.services.acquirer.labels import MontageError, load_montage_file, montage_from_labels, recognise
from amrwatch.services.acquirer.source import SourceError

FS = 10_000

#: label → (kind, muscle, direction, side) as a neurophysiologist reads it.
READINGS = {
    "Mentalis": ("emg", "mentalis", "ZYG", None),
    "L Mentalis": ("emg", "mentalis", "ZYG", "left"),
    "Ment.": ("emg", "mentalis", "ZYG", None),
    "MENT-ZYG": ("emg", "mentalis", "ZYG", None),
    "Mentalis R": ("emg", "mentalis", "ZYG", "right"),
    "OrbOris": ("emg", "orbicularis_oris", "ZYG", None),
    "R Orb Oris": ("emg", "orbicularis_oris", "ZYG", "right"),
    "O.Oris": ("emg", "orbicularis_oris", "ZYG", None),
    "OOr": ("emg", "orbicularis_oris", "ZYG", None),
    "OrbOculi": ("emg", "orbicularis_oculi", "MAR", None),
    "O.Oculi": ("emg", "orbicularis_oculi", "MAR", None),
    "OOc": ("emg", "orbicularis_oculi", "MAR", None),
    "Lt-OOc": ("emg", "orbicularis_oculi", "MAR", "left"),
    "Orbicularis oculi": ("emg", "orbicularis_oculi", "MAR", None),
    "OOCUL_MAR": ("emg", "orbicularis_oculi", "MAR", None),
    "EMG1 ZYG": ("emg", "unknown", "ZYG", None),
    # Not guessed:
    "OO": ("emg", "unknown", None, None),
    "Orb": ("emg", "unknown", None, None),
    "EMG1": ("emg", "unknown", None, None),
    # Carried, never analysed:
    "TRIG_ZYG": ("trigger", "none", None, None),
    "Status": ("aux", "none", None, None),
    "Counter": ("aux", "none", None, None),
}


@pytest.mark.parametrize("label", sorted(READINGS))
def test_recogniser_reads_common_spellings_and_does_not_guess(label):
    c = recognise(label)
    assert (c.kind, c.muscle, c.direction, c.side) == READINGS[label], c.taken_as
    assert c.taken_as, "every channel says what it was taken as"
    if c.kind == "emg" and c.direction is None:
        assert c.taken_as.startswith("ignored:") and "--montage" in c.taken_as


def test_a_channel_in_no_voltage_unit_is_auxiliary():
    c = recognise("Mentalis", unit="")
    assert c.kind == "aux" and c.direction is None and "not a voltage" in c.taken_as


# --------------------------------------------------------------------------------------------- files


def _sweeps(n_seconds: int, rng: np.random.Generator, amr_uv: dict[int, float]) -> tuple[np.ndarray, list]:
    """Channels x samples in µV with a stimulus every 0.5 s alternating ZYG/MAR: an artifact on every
    channel, and on the channels in `amr_uv` (index → µV) a gamma-windowed AMR at ~10 ms."""
    n = n_seconds * FS
    x = rng.normal(0.0, 3.0, size=(3, n))
    ann = []
    t = np.arange(int(0.030 * FS)) / FS * 1000.0  # ms after the stimulus
    env = (np.clip(t - 9.5, 0, None) / 3.0) ** 2 * np.exp(-np.clip(t - 9.5, 0, None) / 1.5)
    amr = env * np.sin(2 * np.pi * (t - 9.5) / 4.0)
    amr /= amr.max() - amr.min()
    for k, s in enumerate(range(FS // 2, n - FS // 2, FS // 2)):
        direction = "ZYG" if k % 2 == 0 else "MAR"
        ann.append((s / FS, f"stim {direction} 15mA 0.2ms"))
        x[:, s:s + 5] += 400.0 * np.array([1, 1, -1, -1, 0.5])  # artifact
        for ch, uv in amr_uv.items():
            if (ch < 2) == (direction == "ZYG"):
                x[ch, s:s + t.size] += uv * amr
    return x, ann


def _write(path, data, labels, dims, annotations, *, bdf=False, aux=None, fs=FS):
    ftype = pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS
    dmax = 8388607 if bdf else 32767
    rows = [np.ascontiguousarray(r, dtype=np.float64) for r in data]
    headers = [{"label": lbl, "dimension": dim, "sample_frequency": fs, "physical_max": 5000.0,
                "physical_min": -5000.0, "digital_max": dmax, "digital_min": -dmax - 1, "transducer": "",
                "prefilter": ""} for lbl, dim in zip(labels, dims)]
    for lbl, dim, values, lo, hi in aux or []:
        headers.append({"label": lbl, "dimension": dim, "sample_frequency": fs, "physical_max": hi,
                        "physical_min": lo, "digital_max": dmax, "digital_min": -dmax - 1, "transducer": "",
                        "prefilter": ""})
        rows.append(np.ascontiguousarray(values, dtype=np.float64))
    w = pyedflib.EdfWriter(str(path), len(headers), file_type=ftype)
    try:
        w.setSignalHeaders(headers)
        w.set_number_of_annotation_signals(8)
        for onset, text in annotations:
            w.writeAnnotation(onset, -1, text)
        w.writeSamples(rows)
    finally:
        w.close()
    return path


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amrwatch", "analyze", *args], capture_output=True, text=True,
                          timeout=120)


def test_every_recognised_channel_is_analysed_and_said(tmp_path):
    rng = np.random.default_rng(4)
    data, ann = _sweeps(6, rng, {0: 150.0, 1: 120.0, 2: 200.0})
    path = _write(tmp_path / "odd.edf", data, ["Mentalis", "OrbOris", "OrbOculi"], ["uV"] * 3, ann)
    r = _analyze(str(path), "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    channels = {row["channel"] for row in rows}
    assert channels == {"Mentalis", "OrbOris", "OrbOculi"}
    n_zyg = sum(1 for _, text in ann if "ZYG" in text)
    assert sum(1 for row in rows if row["channel"] == "OrbOris") == n_zyg  # no half-analysed file
    said = [line for line in r.stderr.splitlines() if line.startswith("# channel")]
    assert len(said) == 3 and "orbicularis oris: records ZYG" in said[1]


def test_unrecognisable_labels_stop_analyze_with_the_fix_and_a_montage_file_analyses_them(tmp_path):
    rng = np.random.default_rng(5)
    data, ann = _sweeps(6, rng, {0: 150.0, 2: 200.0})
    path = _write(tmp_path / "emg.edf", data, ["EMG1", "EMG2", "TRIG"], ["uV", "uV", "V"], ann)
    r = _analyze(str(path), "--json")
    assert r.returncode == 1
    assert "EMG1" in r.stderr and "EMG2" in r.stderr and "--montage" in r.stderr
    montage = tmp_path / "montage.yaml"
    montage.write_text("channels:\n"
                       "  - {label: EMG1, muscle: mentalis, side: left}\n"
                       "  - {label: EMG2, muscle: orbicularis_oculi, side: left, records: MAR}\n"
                       "  - {label: TRIG, kind: aux}\n")
    r = _analyze(str(path), "--json", "--montage", str(montage))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    by_channel = {ch: [row for row in rows if row["channel"] == ch] for ch in ("EMG1", "EMG2")}
    assert all(by_channel.values())
    assert {row["direction"] for row in by_channel["EMG1"]} == {"ZYG"}
    present = [row["present"] for row in by_channel["EMG1"]]
    assert sum(present) >= 0.9 * len(present), "the 150 µV AMR on EMG1 is found once the file names it"
    assert "montage file" in r.stderr


def test_montage_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"channels": [{"label": "EMG1", "muscle": "nose"}]}))
    with pytest.raises(MontageError, match=r"channels\.0\.muscle"):
        load_montage_file(bad)
    with pytest.raises(MontageError, match="does not have"):
        montage_from_labels(["EMG1"], FS, montage=MontageFile.model_validate(
            {"channels": [{"label": "EMG9", "muscle": "mentalis"}]}))


@pytest.mark.parametrize("bdf", [False, True])
def test_aux_channels_without_voltage_units_are_carried_and_exported_exactly(tmp_path, bdf):
    """A counter with no unit and a BioSemi-style Status word in 'Boolean' ride along untouched."""
    from amrwatch.services.acquirer.source import open_source

    rng = np.random.default_rng(6)
    data, ann = _sweeps(3, rng, {0: 150.0})
    n = data.shape[1]
    counter = np.arange(n, dtype=np.float64) % 30000
    status = np.where((np.arange(n) % FS) < 20, 255.0, 0.0) + (65280.0 if bdf else 0.0)
    aux = [("Counter", "", counter, 0.0, 65535.0 if not bdf else 16777215.0),
           ("Status", "Boolean", status, 0.0, 65535.0 if not bdf else 16777215.0)]
    path = _write(tmp_path / ("aux.bdf" if bdf else "aux.edf"), data, ["MENT", "OORIS", "OOCUL"], ["uV"] * 3, ann,
                  bdf=bdf, aux=aux)
    src = open_source(f"edf:{path}")
    kinds = {c.name: (c.kind, c.unit) for c in src.montage.channels}
    assert kinds["Counter"] == ("aux", "") and kinds["Status"] == ("aux", "Boolean")
    got = []
    while (c := src.read(997)) is not None:
        got.append(c.samples)
    got = np.concatenate(got, axis=1)
    assert np.array_equal(got[3], counter.astype(np.float32))
    assert np.array_equal(got[4], status.astype(np.float32))


def test_no_analysable_channel_is_a_source_error(tmp_path):
    rng = np.random.default_rng(7)
    data, ann = _sweeps(2, rng, {})
    path = _write(tmp_path / "x.edf", data, ["A", "B", "C"], ["uV"] * 3, ann)
    with pytest.raises(SourceError, match="no channel of this recording can be analysed"):
        EdfSource(str(path))


def test_aux_channels_survive_record_and_export_unchanged(tmp_path):
    """edf → acquirer → bus → recorder → `export edf OUT.bdf`: the counter and the Status word come back
    exactly, with their labels and units, beside the EMG."""
    from ..conftest import Procs
    from ..recorder.stack import cli, private_env, wait_closed

    rng = np.random.default_rng(8)
    data, ann = _sweeps(3, rng, {0: 150.0})
    n = data.shape[1]
    counter = np.arange(n, dtype=np.float64) % 100_000
    status = np.where((np.arange(n) % FS) < 20, 255.0, 0.0) + 65280.0
    src_path = _write(tmp_path / "aux.bdf", data, ["MENT", "OORIS", "OOCUL"], ["uV"] * 3, ann, bdf=True,
                      aux=[("Counter", "", counter, 0.0, 16777215.0), ("Status", "Boolean", status, 0.0, 16777215.0)])
    env = private_env(tmp_path)
    (tmp_path / "logs").mkdir()
    procs = Procs(env, tmp_path / "logs")
    try:
        procs.start("bus")
        procs.start("recorder")
        acq = procs.start("acquirer", "--source", f"edf:{src_path}", "--speed", "10", "--wait-for", "recorder")
        assert acq.wait(timeout=120) == 0, procs.log("acquirer")[-2000:]
        [row] = wait_closed(tmp_path / "data", 1, procs=procs)
        assert "channel Counter" in procs.log("acquirer") and "auxiliary" in procs.log("acquirer")
        out = tmp_path / "back.bdf"
        r = cli(env, "export", "edf", row.session_id, str(out))
        assert r.returncode == 0, r.stderr
    finally:
        procs.stop_all()
    back = pyedflib.EdfReader(str(out))
    try:
        labels = [lbl.strip() for lbl in back.getSignalLabels()]
        assert labels[:5] == ["MENT", "OORIS", "OOCUL", "Counter", "Status"]
        assert back.getPhysicalDimension(3).strip() == "" and back.getPhysicalDimension(4).strip() == "Boolean"
        assert np.array_equal(back.readSignal(3)[:n], counter)
        assert np.array_equal(back.readSignal(4)[:n], status)
    finally:
        back.close()
