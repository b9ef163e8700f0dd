"""The independent recordings are what their truth says, read back by pyedflib AND by MNE.

These check the generator, not amrwatch: the hazard tests (tests/hazards/) are
only worth something if the noise really rises, the artifact really stops and
the direct response really runs into the AMR window in the files on disk.
The measurements here are deliberately simple and separate from the
analyzer's (scipy/MNE filters, plain windows on the raw samples).
"""

from __future__ import annotations

import numpy as np
import pyedflib
import pytest
from scipy import signal

from amrwatch.services.acquirer.labels import montage_from_labels

from . import waveforms as W
from .cases import build
from .files import truth
from .write import PHYS_UV, write_case

mne = pytest.importorskip("mne", reason="mne is a test-only dependency (pip install -e .[dev])")

READERS = ("pyedflib", "mne")


def read(path, reader: str) -> tuple[list[str], np.ndarray, list[tuple[float, str]]]:
    """(labels, data µV, annotations) as the reader sees the file."""
    if reader == "pyedflib":
        with pyedflib.EdfReader(str(path)) as r:
            labels = [x.strip() for x in r.getSignalLabels()]
            data = np.vstack([r.readSignal(i) for i in range(r.signals_in_file)])
            on, _, text = r.readAnnotations()
            return labels, data, [(float(o), str(t)) for o, t in zip(on, text)]
    raw = (mne.io.read_raw_bdf if path.suffix == ".bdf" else mne.io.read_raw_edf)(str(path), preload=True,
                                                                                   verbose="error")
    return list(raw.ch_names), raw.get_data() * 1e6, [(float(a["onset"]), a["description"])
                                                     for a in raw.annotations]


PAD_MS = (-60.0, 80.0)


def clean(x: np.ndarray) -> np.ndarray:
    """High-pass 100 Hz (drops wander and most of the 50 Hz) and notch the 150/250 Hz harmonics."""
    y = signal.sosfiltfilt(signal.butter(2, 100.0, "highpass", fs=W.FS, output="sos"), x, axis=-1)
    for f0 in (150.0, 250.0):
        b, a = signal.iirnotch(f0, 10.0, fs=W.FS)
        y = signal.filtfilt(b, a, y, axis=-1)
    return y


def epochs(data: np.ndarray, rows: list[dict], *, blank: bool = False) -> np.ndarray:
    """(stimuli, channels, samples) from -60 to +80 ms around each stimulus, cleaned. `blank` bridges
    0-3 ms with a straight line first, so the zero-phase filter cannot smear the artifact backwards."""
    a, b = W.ms(PAD_MS[0]), W.ms(PAD_MS[1])
    ep = np.stack([data[:, r["sample"] + a: r["sample"] + b] for r in rows]).astype(np.float64)
    if blank:
        z0, z1 = -a - 1, -a + W.ms(3.0)
        frac = np.linspace(0.0, 1.0, z1 - z0 + 1)
        ep[:, :, z0: z1 + 1] = ep[:, :, z0: z0 + 1] + (ep[:, :, z1: z1 + 1] - ep[:, :, z0: z0 + 1]) * frac
    return clean(ep)


def window(ep: np.ndarray, a_ms: float, b_ms: float) -> np.ndarray:
    """The samples from a_ms to b_ms after the stimulus of epochs (or of raw data at `s0`, see raw_window)."""
    z = -W.ms(PAD_MS[0])
    return ep[..., z + W.ms(a_ms): z + W.ms(b_ms)]


def raw_window(x: np.ndarray, s0: int, a_ms: float, b_ms: float) -> np.ndarray:
    return x[..., s0 + W.ms(a_ms): s0 + W.ms(b_ms)]


def noise_rms(seg: np.ndarray) -> float:
    """RMS of a raw window after a least-squares fit of a line and the 50/150/250 Hz mains removed
    (filters would ring into the window from the artifact and the direct responses around it)."""
    t = np.arange(seg.size) / W.FS
    cols = [np.ones_like(t), t - t.mean()]
    for f0 in (50.0, 150.0, 250.0):
        cols += [np.sin(2 * np.pi * f0 * t), np.cos(2 * np.pi * f0 * t)]
    a = np.column_stack(cols)
    resid = seg - a @ np.linalg.lstsq(a, seg, rcond=None)[0]
    return float(np.sqrt(np.mean(resid**2)))


@pytest.fixture(scope="module")
def loaded(case_file):
    cache = {}

    def get(name: str, reader: str):
        if (name, reader) not in cache:
            path = case_file(name)
            cache[(name, reader)] = (path, truth(path), *read(path, reader))
        return cache[(name, reader)]

    return get


# --------------------------------------------------------------------------- #
# The files as files


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["control_disappearance", "noise_rise", "dead_stimulator", "current_spread",
                                  "reappearance", "persists"])
def test_labels_annotations_and_length_match_the_truth(loaded, name, reader):
    path, tr, labels, data, notes = loaded(name, reader)
    assert labels == tr["channels"] == ["MENT", "OORIS", "OOCUL"]
    assert data.shape == (3, int(round(tr["duration_s"] * tr["sampling_rate_hz"])))
    stages = [(t, s.removeprefix("stage ")) for t, s in notes if s.startswith("stage ")]
    assert [s for _, s in stages] == [s["stage"] for s in tr["stages"]]
    assert np.allclose([t for t, _ in stages], [s["t_s"] for s in tr["stages"]], atol=1e-4)
    stims = [(t, s) for t, s in notes if s.startswith("stim ")]
    assert len(stims) == len(tr["stimuli"]) > 150
    for (t, text), row in zip(stims, tr["stimuli"]):
        assert text == f"stim {row['direction']} 15mA 0.2ms"
        assert abs(t - row["t_s"]) < 0.5 / W.FS
    # The project's reader takes these labels as the montage the cases assume.
    montage = montage_from_labels(labels, W.FS)
    assert [(c.name, c.muscle, c.direction) for c in montage.channels] == [
        ("MENT", "mentalis", "ZYG"), ("OORIS", "orbicularis_oris", "ZYG"), ("OOCUL", "orbicularis_oculi", "MAR")]


def test_the_writers_agree_sample_for_sample(tmp_path):
    """pyedflib EDF+, pyedflib BDF+ and MNE's EDF hold the same signal within one EDF quantum."""
    rec = build("control_disappearance", 5, duration_s=6.0, stages=((0.0, "baseline"), (5.0, "end")))
    q = 2 * PHYS_UV / 65535
    got = {}
    for writer in ("pyedflib-edf", "pyedflib-bdf", "mne-edf"):
        path = write_case(rec, tmp_path / writer, writer)
        got[writer] = read(path, "pyedflib")[1]
        assert np.abs(got[writer] - rec.data).max() <= q, writer
    assert np.abs(got["mne-edf"] - read(tmp_path / "mne-edf" / "control_disappearance.edf", "mne")[1]).max() < 1e-6


def test_a_seed_gives_one_recording_and_another_seed_another():
    short = dict(duration_s=4.0, stages=((0.0, "baseline"), (3.0, "end")))
    a, b, c = build("noise_rise", 1, **short), build("noise_rise", 1, **short), build("noise_rise", 2, **short)
    assert np.array_equal(a.data, b.data) and a.truth == b.truth
    assert not np.allclose(a.data, c.data)


# --------------------------------------------------------------------------- #
# The physiology in the files


def sweeps(tr: dict, direction: str | None, t_from: float, t_to: float) -> list[dict]:
    return [r for r in tr["stimuli"] if direction in (None, r["direction"]) and t_from <= r["t_s"] < t_to]


def p2p(ep: np.ndarray, a_ms: float, b_ms: float) -> np.ndarray:
    return np.ptp(window(ep, a_ms, b_ms), axis=-1)


def artifact_jump(data: np.ndarray, s0: int) -> np.ndarray:
    """Largest raw step from the sample before the stimulus within 0-1 ms, per channel."""
    return np.abs(raw_window(data, s0, 0, 1) - data[:, s0 - 1: s0]).max(axis=1)


@pytest.mark.parametrize("reader", READERS)
def test_every_delivered_stimulus_has_an_artifact_and_a_direct_response_on_its_own_muscle(loaded, reader):
    _, tr, labels, data, _ = loaded("control_disappearance", reader)
    for direction in ("ZYG", "MAR"):
        rows = sweeps(tr, direction, 0, 205)
        ep = epochs(data, rows, blank=True)
        own = [labels.index(c) for c in tr["own_muscle"][direction]]
        amr = [labels.index(c) for c in tr["amr_channels"][direction]]
        for k, row in enumerate(rows):
            jump = artifact_jump(data, row["sample"])
            assert (jump > 200).all(), (row["index"], jump)  # hundreds of µV on every channel ...
            tail = np.abs(raw_window(data, row["sample"], 1.5, 3) - data[:, row["sample"] - 1][:, None]).max()
            assert tail < 0.1 * jump.max() + 60, (row["index"], tail)  # ... and essentially over by 1.5 ms
            for i in own:
                assert p2p(ep[k, i], 3, 6) > 300, (row["index"], labels[i])
            for i in amr:  # no direct response on the other branch's muscles
                assert p2p(ep[k, i], 3.2, 5.5) < 40, (row["index"], labels[i])


@pytest.mark.parametrize("reader", READERS)
def test_control_amr_is_there_until_decompression_and_gone_15_s_into_it(loaded, reader):
    _, tr, labels, data, _ = loaded("control_disappearance", reader)
    for direction, chans in tr["amr_channels"].items():
        before = epochs(data, sweeps(tr, direction, 0, 90), blank=True)
        after = epochs(data, sweeps(tr, direction, 106, 205), blank=True)
        for ch in chans:
            i = labels.index(ch)
            base = tr["baseline_amr_uv"][ch]
            assert 0.6 * base < np.median(p2p(before[:, i], 6, 25)) < 1.4 * base, ch
            assert p2p(after[:, i], 6, 25).max() < 0.25 * base, ch
        gone = sweeps(tr, direction, tr["events"]["amr_gone_s"], 1e9)
        assert gone and all(v == 0.0 for r in gone for v in r["amr_uv"].values())


@pytest.mark.parametrize("reader", READERS)
def test_noise_really_rises_3_to_15_uv_at_the_decompression_mark(loaded, reader):
    _, tr, labels, data, _ = loaded("noise_rise", reader)
    pre = {}
    for name, (a, b) in {"before": (5, 89), "after": (93, 205)}.items():
        pre[name] = np.median([[noise_rms(x) for x in raw_window(data, r["sample"], -20, -1)]
                               for r in sweeps(tr, None, a, b)], axis=0)
    print(f"\nnoise_rise, pre-stimulus RMS ({reader}): before {pre['before'].round(2)}, after "
          f"{pre['after'].round(2)} µV")
    # The fit takes some of the 1/f part and the mains harmonics' bands: a little below the stated RMS.
    assert ((2.0 < pre["before"]) & (pre["before"] < 3.3)).all(), pre
    assert ((10.0 < pre["after"]) & (pre["after"] < 16.5)).all(), pre
    assert ((4.0 < pre["after"] / pre["before"]) & (pre["after"] / pre["before"] < 6.0)).all(), pre
    # The AMR underneath is unchanged: the truth says so sweep by sweep, and the stated noise rises.
    assert all(60 < v < 105 for r in tr["stimuli"] for v in r["amr_uv"].values())
    assert {r["noise_uv"] for r in sweeps(tr, None, 0, 90)} == {3.0}
    assert {r["noise_uv"] for r in sweeps(tr, None, 92, 1e9)} == {15.0}


@pytest.mark.parametrize("reader", READERS)
def test_dead_stimulator_artifact_and_direct_response_stop_while_the_markers_go_on(loaded, reader):
    _, tr, labels, data, notes = loaded("dead_stimulator", reader)
    dead = tr["events"]["stimulator_dead_s"]
    assert sum(1 for t, s in notes if s.startswith("stim ") and t > dead) >= 100
    for direction in ("ZYG", "MAR"):
        rows = sweeps(tr, direction, 0, 1e9)
        ep = epochs(data, rows)  # not blanked: a missing artifact must show too
        own = [labels.index(c) for c in tr["own_muscle"][direction]]
        amr = [labels.index(c) for c in tr["amr_channels"][direction]]
        for k, r in enumerate(rows):
            jump = artifact_jump(data, r["sample"])
            dr = max(p2p(ep[k, i], 3, 6) for i in own)
            resp = max(p2p(ep[k, i], 6, 25) for i in amr)
            if r["t_s"] < dead:
                assert r["delivered"] and (jump > 200).all() and dr > 300 and resp > 50, (r["index"], jump, dr, resp)
            else:
                assert not r["delivered"], r
                assert jump.max() < 25 and dr < 30 and resp < 30, (r["index"], jump, dr, resp)


@pytest.mark.parametrize("reader", READERS)
def test_current_spread_puts_a_large_early_response_into_the_amr_window(loaded, reader):
    _, tr, labels, data, _ = loaded("current_spread", reader)
    for direction, chans in tr["amr_channels"].items():
        rows = sweeps(tr, direction, 0, 205)
        ep = epochs(data, rows, blank=True)
        for ch in chans:
            i = labels.index(ch)
            for k, r in enumerate(rows):
                early, late = p2p(ep[k, i], 3.4, 5.8), p2p(ep[k, i], 15, 25)
                if r["t_s"] < tr["events"]["spread_s"]:
                    assert early < 40 and r["spread_uv"] == 0, (ch, r["index"], early)
                else:
                    # Starts where no AMR can (~3.5 ms) and still runs late in the 6-25 ms window.
                    assert r["spread_uv"] == 700.0 and early > 150 and late > 30, (ch, r["index"], early, late)
                    onset_ms = np.argmax(np.abs(window(ep[k, i], 3, 25)) > 50) * 1000 / W.FS + 3
                    assert onset_ms < 5.5, (ch, r["index"], onset_ms)


@pytest.mark.parametrize("reader", READERS)
def test_reappearance_comes_back_at_full_size_before_closure(loaded, reader):
    _, tr, labels, data, _ = loaded("reappearance", reader)
    closure = next(s["t_s"] for s in tr["stages"] if s["stage"] == "closure")
    complete = next(s["t_s"] for s in tr["stages"] if s["stage"] == "decompression_complete")
    assert tr["events"]["amr_gone_s"] < complete < tr["events"]["amr_back_s"] < closure
    for direction, chans in tr["amr_channels"].items():
        gone = epochs(data, sweeps(tr, direction, 106, 175), blank=True)
        back = epochs(data, sweeps(tr, direction, 180, 210), blank=True)
        for ch in chans:
            i = labels.index(ch)
            base = tr["baseline_amr_uv"][ch]
            assert p2p(gone[:, i], 6, 25).max() < 0.25 * base, ch
            assert 0.6 * base < np.median(p2p(back[:, i], 6, 25)) < 1.4 * base, ch
