"""Cross-check with an independent implementation: MNE-Python epochs the same EDF.

MNE reads the file, finds the stimuli in its annotations, band-passes the
continuous signal with its own zero-phase IIR filter and cuts epochs; the
peak-to-peak in the analysis window must agree with ours within 1 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from amrwatch.services.analyzer.offline import analyze_edf
from amrwatch.services.analyzer.settings import AnalyzerSettings

from .edfwrite import write_sim_edf
from .streams import of_type

mne = pytest.importorskip("mne", reason="mne is a test-only dependency (pip install -e .[dev])")


def test_peak_to_peak_agrees_with_mne_within_one_percent(tmp_path):
    path = tmp_path / "sweeps.edf"
    # Sweeps of AMRs only: no artifact, mains or drift for either side to treat differently.
    write_sim_edf(path, seed=11, scenario="calibration", calibration_stimuli=120, calibration_absent_fraction=0.0,
                  calibration_amplitude_uv=(80.0, 1500.0), noise_uv=2.0, artifact_uv_per_ma=0.0,
                  direct_response_uv=0.0, mains_uv=0.0, wander_uv=0.0)
    settings = AnalyzerSettings()
    ours = {(f["stimulus_index"], f["channel"]): f["p2p_uv"]
            for f in of_type(list(analyze_edf(str(path), settings)), "amr_measurement")}

    raw = mne.io.read_raw_edf(str(path), preload=True, verbose="error")
    lo, hi = settings.bandpass_hz
    raw.filter(lo, hi, method="iir", phase="zero", verbose="error",
               iir_params=dict(order=settings.filter_order, ftype="butter", output="sos"))
    events, ids = mne.events_from_annotations(raw, verbose="error")
    fs = raw.info["sfreq"]
    a0, a1 = settings.analysis_ms
    stim_ids = {v for k, v in ids.items() if k.startswith("stim")}
    events = events[np.isin(events[:, 2], list(stim_ids))]
    epochs = mne.Epochs(raw, events, tmin=settings.sweep_ms[0] / 1000, tmax=settings.sweep_ms[1] / 1000,
                        baseline=None, preload=True, verbose="error")
    # Our window is [6, 25) ms; MNE crops inclusively, so stop one sample short.
    data = epochs.get_data(tmin=a0 / 1000, tmax=a1 / 1000 - 1 / fs) * 1e6  # V → µV
    names = epochs.ch_names
    direction = {ids_k: ("ZYG" if "ZYG" in text else "MAR") for text, ids_k in ids.items()}

    rel = []
    for k, ev in enumerate(epochs.events):
        channels = ["MENT", "OORIS"] if direction[ev[2]] == "ZYG" else ["OOCUL"]
        for ch in channels:
            theirs = float(np.ptp(data[k, names.index(ch)]))
            rel.append(abs(ours[(k, ch)] - theirs) / theirs)
    rel = np.array(rel)
    print(f"\nMNE vs analyzer p2p on {len(rel)} sweeps: median {np.median(rel) * 100:.3f}%, "
          f"max {rel.max() * 100:.3f}%")
    assert len(rel) == len(ours) >= 150
    assert rel.max() <= 0.01
