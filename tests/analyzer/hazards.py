"""Recordings that show the hazards of issue 13, from a waveform model of our own.

Deliberately independent of the project's simulator (services/acquirer/sim)
and of tests/analyzer/edfwrite.py, so the analyzer is not only checked
against the signal it was tuned on:

- AMR: Hermite functions — biphasic (first derivative of a Gaussian) on the
  ZYG channels, triphasic (second derivative, "Mexican hat") on OOCUL — that
  depart from zero at `amr_onset_ms` (3.5 sigma before their centre);
- stimulus artifact: a sharp biphasic Gaussian derivative (sigma 0.06 ms) at
  t = 0 on every channel, with a short exponential tail;
- direct (M-wave) response of the muscles the stimulated branch supplies
  (ZYG → orbicularis oculi, MAR → mentalis and orbicularis oris): biphasic,
  onset 2.5 ms;
- current spread: a large biphasic direct response on the *recording*
  channels of the stimulated direction, onset ~3.5 ms, running into the 6 ms
  analysis window;
- noise: low-passed white (4th-order Butterworth, 2.5 kHz) plus 1/f noise,
  scaled to the segment's RMS; 50 Hz hum with its 3rd harmonic; slow wander.

A recording is a list of `Segment`s, each with its own conditions and an
optional stage marker at its start. Stimuli alternate ZYG, MAR every 0.5 s
(from 0.75 s, off the segments' whole-second boundaries); EDF+ annotations read `stim ZYG 15mA 0.2ms` and `stage NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyedflib
from scipy import signal as sps

FS = 10_000.0
LABELS = ("MENT", "OORIS", "OOCUL")
RECORDS = {"ZYG": ("MENT", "OORIS"), "MAR": ("OOCUL",)}
"""Channels on which each direction's AMR appears (lateral spread to the other branch's muscles)."""
OWN_MUSCLES = {"ZYG": ("OOCUL",), "MAR": ("MENT", "OORIS")}
"""Channels of the muscles the stimulated branch itself supplies (its direct response)."""
AMR_GAIN = {"MENT": 1.0, "OORIS": 0.9, "OOCUL": 1.1}
ARTIFACT_GAIN = {"MENT": 1.0, "OORIS": 0.8, "OOCUL": 0.6}
STIM_PERIOD_S = 0.5


@dataclass(frozen=True)
class Segment:
    seconds: float
    stage: str | None = None
    amr_uv: float = 80.0
    """Peak-to-peak of the AMR on the recording channels (x AMR_GAIN); 0 = no AMR."""
    amr_onset_ms: float = 10.0
    noise_uv: float = 3.0
    """RMS of the background noise (white + 1/f, band-limited to 2.5 kHz)."""
    stimulator: bool = True
    """False: the markers keep coming but nothing is delivered (no artifact, no response of any kind)."""
    artifact_uv: float = 1500.0
    """Peak-to-peak of the stimulus artifact (0: the amplifier blanks it)."""
    direct_uv: float = 150.0
    """The stimulated branch's own muscle response, on OWN_MUSCLES channels."""
    spread_uv: float = 0.0
    """Current spread: a direct response of this size on the recording channels, onset ~3.5 ms."""
    intensity_ma: float = 15.0


@dataclass
class Recording:
    samples: np.ndarray
    """(3, n) µV, float64."""
    stimuli: list[tuple[int, str, float]]
    """(sample index, direction, intensity mA)."""
    stages: list[tuple[int, str]]
    segment_of: list[int] = field(default_factory=list)
    """Index of the segment each stimulus belongs to."""

    def stimuli_in(self, segment: int, direction: str | None = None) -> list[int]:
        """Stimulus indices (0-based, in order) of one segment."""
        return [k for k, (s, d, _) in enumerate(self.stimuli)
                if self.segment_of[k] == segment and (direction is None or d == direction)]


def _hermite1(t: np.ndarray, onset: float, sigma: float) -> np.ndarray:
    """Biphasic, unit peak-to-peak, departing from zero at `onset`."""
    c = onset + 3.5 * sigma
    u = (t - c) / sigma
    w = -u * np.exp(-0.5 * u * u)
    w[t < onset] = 0.0
    return w / (2.0 * np.exp(-0.5))


def _hermite2(t: np.ndarray, onset: float, sigma: float) -> np.ndarray:
    """Triphasic (Mexican hat), unit peak-to-peak, departing from zero at `onset`."""
    c = onset + 3.5 * sigma
    u = (t - c) / sigma
    w = (1.0 - u * u) * np.exp(-0.5 * u * u)
    w[t < onset] = 0.0
    return w / (1.0 + 2.0 * np.exp(-1.5))


def _artifact(t: np.ndarray) -> np.ndarray:
    """Sharp biphasic pulse feed-through at t = 0 with a short tail; unit peak-to-peak."""
    s = 0.06
    u = (t - 0.12) / s
    w = -u * np.exp(-0.5 * u * u) / (2.0 * np.exp(-0.5))
    tail = np.where(t > 0.25, -0.08 * np.exp(-(t - 0.25) / 0.4), 0.0)
    w = w + tail
    w[t < 0.0] = 0.0
    return w


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS background: 70% of the power low-passed white, 30% 1/f, both below 2.5 kHz."""
    b, a = sps.butter(4, 2500.0, fs=FS)
    white = sps.lfilter(b, a, rng.standard_normal(n))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / FS)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    spec[f > 2500.0] = 0.0
    pink = np.fft.irfft(spec, n)
    white /= white.std()
    pink /= pink.std()
    return np.sqrt(0.7) * white + np.sqrt(0.3) * pink


def render(segments: list[Segment], seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    total_s = sum(s.seconds for s in segments) + 1.0
    n = int(round(total_s * FS))
    t_s = np.arange(n) / FS
    sigma = np.zeros(n)
    bounds = []
    start = 0.0
    for seg in segments:
        a, b = int(round(start * FS)), int(round((start + seg.seconds) * FS))
        sigma[a:b] = seg.noise_uv
        bounds.append((a, b))
        start += seg.seconds
    sigma[bounds[-1][1]:] = segments[-1].noise_uv
    x = np.empty((len(LABELS), n))
    for i in range(len(LABELS)):
        hum = 5.0 * np.sin(2 * np.pi * 50.0 * t_s + i) + 1.5 * np.sin(2 * np.pi * 150.0 * t_s + 2 * i)
        wander = 20.0 * np.sin(2 * np.pi * 0.3 * t_s + 0.7 * i)
        x[i] = _noise(rng, n) * sigma + hum + wander

    stimuli: list[tuple[int, str, float]] = []
    stages: list[tuple[int, str]] = []
    segment_of: list[int] = []
    ev_ms = np.arange(-20.0, 60.0, 1000.0 / FS)  # the stretch each stimulus writes into
    for seg, (a, _) in zip(segments, bounds):
        if seg.stage is not None:
            stages.append((a, seg.stage))
    period = int(round(STIM_PERIOD_S * FS))
    end = bounds[-1][1]
    # Stimuli at 0.75 s, 1.25 s, ...: never on a segment boundary (whole seconds), so no sweep straddles one.
    for k, when in enumerate(range(period + period // 2, end - int(0.06 * FS), period)):
        j = next(i for i, (a, b) in enumerate(bounds) if a <= when < b)
        seg = segments[j]
        d = "ZYG" if k % 2 == 0 else "MAR"
        stimuli.append((when, d, seg.intensity_ma))
        segment_of.append(j)
        if not seg.stimulator:
            continue
        lo = when + int(round(ev_ms[0] * FS / 1000.0))
        sl = slice(lo, lo + ev_ms.size)
        for i, ch in enumerate(LABELS):
            w = seg.artifact_uv * ARTIFACT_GAIN[ch] * _artifact(ev_ms)
            if ch in OWN_MUSCLES[d] and seg.direct_uv:
                w += seg.direct_uv * _hermite1(ev_ms, 2.5 + rng.uniform(-0.2, 0.2), 0.4)
            if ch in RECORDS[d]:
                if seg.amr_uv:
                    amp = seg.amr_uv * AMR_GAIN[ch] * rng.uniform(0.92, 1.08)
                    onset = seg.amr_onset_ms + rng.uniform(-0.2, 0.2)
                    shape = _hermite1 if d == "ZYG" else _hermite2
                    w += amp * shape(ev_ms, onset, 1.0)
                if seg.spread_uv:
                    w += seg.spread_uv * _hermite1(ev_ms, 3.5 + rng.uniform(-0.3, 0.3), 0.8)
            x[i, sl] += w
    return Recording(x, stimuli, stages, segment_of)


def write_edf(path: Path, rec: Recording, *, physical_uv: float = 6000.0) -> Path:
    """EDF+ with one-second records, `stim DIR NmA 0.2ms` and `stage NAME` annotations."""
    n = rec.samples.shape[1]
    n_rec = int(FS)
    pad = (-n) % n_rec
    data = np.concatenate([rec.samples, np.zeros((rec.samples.shape[0], pad))], axis=1)
    data = np.clip(data, -physical_uv, physical_uv)
    w = pyedflib.EdfWriter(str(path), len(LABELS), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        w.setSignalHeaders([
            {"label": lbl, "dimension": "uV", "sample_frequency": FS, "physical_max": physical_uv,
             "physical_min": -physical_uv, "digital_max": 32767, "digital_min": -32768, "transducer": "",
             "prefilter": ""}
            for lbl in LABELS
        ])
        w.set_number_of_annotation_signals(4)
        for idx, d, ma in rec.stimuli:
            w.writeAnnotation(idx / FS, -1, f"stim {d} {ma:g}mA 0.2ms")
        for idx, stage in rec.stages:
            w.writeAnnotation(idx / FS, -1, f"stage {stage}")
        w.writeSamples([np.ascontiguousarray(r) for r in data])
    finally:
        w.close()
    return path


def with_(seg: Segment, **kw) -> Segment:
    return replace(seg, **kw)
