"""The hazard recordings of issue 13, one function per case, each with the truth it encodes.

A case is a `Plan` — what the patient's nerve, the stimulator and the
electrodes do over time — rendered by `render` into samples (µV, `FS`) and
EDF+ annotations (`stim ZYG 15mA 0.2ms`, `stage decompression`, ...). The
truth (stage times, what changes when, per-stimulus amplitudes, noise and
delivery) is a JSON-ready dict written beside the file (write.py).

Stimuli alternate ZYG and MAR at 1 Hz from 0.5 s. A stimulus that is
*delivered* puts an artifact on every channel and a direct response on the
stimulated branch's own muscle (ZYG → orbicularis oculi, MAR → mentalis and
orbicularis oris, onset ~3.5 ms), and the AMR (if any) on the other branch's
muscles. The stages, common to all cases unless a case says otherwise:
baseline 0 s, dural_opening 40 s, decompression 90 s, decompression_complete
140 s, closure 185 s, end 205 s; the recording runs to 207 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import waveforms as W

STAGES: tuple[tuple[float, str], ...] = (
    (0.0, "baseline"),
    (40.0, "dural_opening"),
    (90.0, "decompression"),
    (140.0, "decompression_complete"),
    (185.0, "closure"),
    (205.0, "end"),
)
FIRST_STIMULUS_S = 0.5
STIM_PERIOD_S = 1.0
STIM_TEXT = "stim {direction} 15mA 0.2ms"

#: Stimulus artifact amplitude (µV) on each channel, per stimulated branch (sign = polarity).
ARTIFACT_UV: dict[str, dict[str, float]] = {
    "ZYG": {"MENT": 420.0, "OORIS": 610.0, "OOCUL": -350.0},
    "MAR": {"MENT": -520.0, "OORIS": 380.0, "OOCUL": 300.0},
}
#: Own-muscle direct response (µV p2p) on each channel it appears on.
DIRECT_UV: dict[str, float] = {"MENT": 900.0, "OORIS": 650.0, "OOCUL": 1100.0}
DIRECT_ONSET_MS = 3.5
SPREAD_ONSET_MS = 3.5

Schedule = Callable[[float], float]


def constant(v: float) -> Schedule:
    return lambda t: v


def step(t0: float, before: float, after: float, ramp_s: float = 0.0) -> Schedule:
    """`before` until t0, then a linear ramp of `ramp_s` seconds to `after`."""

    def f(t: float) -> float:
        if t < t0:
            return before
        if ramp_s <= 0 or t >= t0 + ramp_s:
            return after
        return before + (after - before) * (t - t0) / ramp_s

    return f


def steps(*changes: tuple[float, float], start: float = 1.0, ramp_s: float = 0.0) -> Schedule:
    """Piecewise: `start`, then each (t, value) in turn, each reached over `ramp_s`."""
    fs = []
    prev = start
    for t0, v in changes:
        fs.append(step(t0, prev, v, ramp_s))
        prev = v

    def f(t: float) -> float:
        value = start
        for (t0, _), g in zip(changes, fs):
            if t >= t0:
                value = g(t)
        return value

    return f


@dataclass(frozen=True)
class Plan:
    name: str
    story: str
    amr_uv: dict[str, float]
    """Baseline AMR peak-to-peak per channel."""
    amr_fraction: Schedule = constant(1.0)
    """Fraction of the baseline AMR at time t (s)."""
    noise_uv: Schedule = constant(3.0)
    """Background noise RMS in the amplifier band at time t."""
    delivered: Callable[[float], bool] = lambda t: True
    """Does the stimulator deliver the pulse the annotation announces?"""
    spread_uv: Schedule = constant(0.0)
    """Current spread: p2p of a direct response on the AMR channels (0 = none)."""
    stages: tuple[tuple[float, str], ...] = STAGES
    duration_s: float = 207.0
    mains_uv: float = 6.0
    wander_uv: float = 25.0
    events: dict[str, float] = field(default_factory=dict)
    """When the case's changes happen (s), for the truth file."""
    expected: tuple[str, ...] = ()
    """What issue 13 says the stack must do with this recording (prose; the tests assert it)."""


@dataclass
class Recording:
    name: str
    data: np.ndarray
    """(channels, samples) float64, µV."""
    labels: tuple[str, ...]
    annotations: list[tuple[float, str]]
    truth: dict[str, Any]


def stage_at(stages, t: float) -> str:
    current = stages[0][1]
    for t0, name in stages:
        if t0 <= t:
            current = name
    return current


def render(plan: Plan, seed: int = 0) -> Recording:
    """Samples, annotations and truth of `plan`; the same seed gives the same recording."""
    rng = np.random.default_rng(seed)
    n = int(round(plan.duration_s * W.FS))
    t = np.arange(n) / W.FS
    chans = W.CHANNELS
    data = np.zeros((len(chans), n))
    # Noise RMS envelope on a 10 ms grid (a rise is seen within a sweep's length of when it happens).
    grid = np.arange(0.0, plan.duration_s + 0.01, 0.01)
    envelope = np.interp(t, grid, [plan.noise_uv(float(g)) for g in grid])
    for i, _ in enumerate(chans):
        data[i] = (W.band_noise(n, rng) * envelope + W.mains(n, rng, plan.mains_uv)
                   + W.wander(n, rng, plan.wander_uv))
    morph = W.amr_morphologies(rng)
    dr_template, dr_lead_ms = W.direct_response()
    spread_template = W.spread_response()

    end_s = next(t0 for t0, s in plan.stages if s == "end")
    annotations: list[tuple[float, str]] = [(t0, f"stage {s}") for t0, s in plan.stages]
    stimuli: list[dict[str, Any]] = []
    k = 0
    while (ts := FIRST_STIMULUS_S + k * STIM_PERIOD_S) < end_s - 0.06:
        direction = ("ZYG", "MAR")[k % 2]
        s0 = int(round(ts * W.FS))
        annotations.append((ts, STIM_TEXT.format(direction=direction)))
        delivered = bool(plan.delivered(ts))
        row: dict[str, Any] = {
            "index": k, "t_s": ts, "sample": s0, "direction": direction, "stage": stage_at(plan.stages, ts),
            "delivered": delivered, "noise_uv": round(plan.noise_uv(ts), 3), "amr_uv": {}, "spread_uv": 0.0,
        }
        if delivered:
            for i, ch in enumerate(chans):
                a = ARTIFACT_UV[direction][ch] * rng.lognormal(0, 0.05)
                W.add_at(data[i], s0, W.stimulus_artifact(a))
            for ch in W.OWN_MUSCLE[direction]:
                amp = DIRECT_UV[ch] * rng.lognormal(0, 0.1)
                onset = DIRECT_ONSET_MS + rng.normal(0, 0.1)
                start = (onset - dr_lead_ms) * W.FS / 1000.0
                W.add_at(data[chans.index(ch)], s0 + int(np.floor(start)),
                         W.shift(dr_template * amp, start - np.floor(start)))
            spread = plan.spread_uv(ts)
            row["spread_uv"] = round(spread, 3)
            for ch in W.AMR_CHANNELS[direction]:
                frac = plan.amr_fraction(ts)
                p2p = plan.amr_uv[ch] * frac * (rng.lognormal(0, 0.08) if frac > 0 else 0.0)
                m = morph[ch]
                onset = m.onset_ms + rng.normal(0, 0.15)
                start = onset * W.FS / 1000.0
                if p2p > 0:
                    W.add_at(data[chans.index(ch)], s0 + int(np.floor(start)),
                             W.shift(m.template * p2p, start - np.floor(start)))
                row["amr_uv"][ch] = round(p2p, 3)
                if spread > 0:
                    sp = spread * rng.lognormal(0, 0.05)
                    st = (SPREAD_ONSET_MS + rng.normal(0, 0.1)) * W.FS / 1000.0
                    W.add_at(data[chans.index(ch)], s0 + int(np.floor(st)),
                             W.shift(spread_template * sp, st - np.floor(st)))
        else:
            row["amr_uv"] = {ch: 0.0 for ch in W.AMR_CHANNELS[direction]}
        stimuli.append(row)
        k += 1
    annotations.sort(key=lambda a: a[0])
    truth = {
        "case": plan.name,
        "story": plan.story,
        "seed": seed,
        "sampling_rate_hz": W.FS,
        "duration_s": plan.duration_s,
        "channels": list(chans),
        "amr_channels": {d: list(c) for d, c in W.AMR_CHANNELS.items()},
        "own_muscle": {d: list(c) for d, c in W.OWN_MUSCLE.items()},
        "stages": [{"t_s": t0, "stage": s} for t0, s in plan.stages],
        "baseline_amr_uv": dict(plan.amr_uv),
        "amr_onset_ms": {ch: round(m.onset_ms, 3) for ch, m in morph.items()},
        "amr_duration_ms": {ch: round(m.duration_ms, 3) for ch, m in morph.items()},
        "direct_response_onset_ms": DIRECT_ONSET_MS,
        "events": dict(plan.events),
        "expected": list(plan.expected),
        "stimuli": stimuli,
    }
    return Recording(plan.name, data, chans, annotations, truth)


# --------------------------------------------------------------------------- #
# The cases

GONE_S = 105.0  # 15 s into decompression


def control_disappearance() -> Plan:
    return Plan(
        name="control_disappearance",
        story="AMR 80-200 µV from baseline, gone 15 s into decompression (before decompression_complete), "
              "stays gone; low noise.",
        amr_uv={"MENT": 150.0, "OORIS": 200.0, "OOCUL": 80.0},
        amr_fraction=steps((GONE_S - 5.0, 0.0), ramp_s=5.0),
        events={"amr_gone_s": GONE_S},
        expected=("decompression_confirmed, given only after decompression_complete",
                  "before decompression_complete only provisional 'evaluating' decisions",
                  "never termination_acceptable", "course disappeared_after_decompression"),
    )


def noise_rise() -> Plan:
    return Plan(
        name="noise_rise",
        story="An unchanged 80 µV AMR; the noise RMS rises 3 → 15 µV from the decompression mark on "
              "(an electrode losing contact).",
        amr_uv={"MENT": 80.0, "OORIS": 80.0, "OOCUL": 80.0},
        noise_uv=step(90.0, 3.0, 15.0, ramp_s=2.0),
        events={"noise_rise_s": 90.0, "noise_high_s": 92.0},
        expected=("never decompression_confirmed", "a recording_quality alarm",
                  "sweeps after the rise not_assessable (noise_too_high)"),
    )


def dead_stimulator() -> Plan:
    return Plan(
        name="dead_stimulator",
        story="The stimulator stops delivering 10 s after decompression starts: no artifact, no direct "
              "response, no AMR, while the stimulus annotations keep coming.",
        amr_uv={"MENT": 150.0, "OORIS": 200.0, "OOCUL": 80.0},
        delivered=lambda t: t < 100.0,
        events={"stimulator_dead_s": 100.0},
        expected=("never decompression_confirmed", "a high-priority stimulation_failure alarm",
                  "sweeps after it not_assessable (stimulus_unconfirmed)"),
    )


def current_spread() -> Plan:
    return Plan(
        name="current_spread",
        story="From 10 s into decompression the stimulating current spreads: a large direct response on "
              "the AMR channels from ~3.5 ms running through the 6-25 ms window; the AMR itself is gone "
              "underneath from 20 s into decompression.",
        amr_uv={"MENT": 150.0, "OORIS": 200.0, "OOCUL": 80.0},
        spread_uv=step(100.0, 0.0, 700.0),
        amr_fraction=step(110.0, 1.0, 0.0),
        events={"spread_s": 100.0, "amr_gone_s": 110.0},
        expected=("sweeps from the spread on not_assessable (direct_response), none counted present",
                  "a direct_response alarm", "no termination_acceptable or explore_further based on them"),
    )


def reappearance() -> Plan:
    stages = ((0.0, "baseline"), (40.0, "dural_opening"), (90.0, "decompression"),
              (135.0, "decompression_complete"), (195.0, "closure"), (210.0, "end"))
    return Plan(
        name="reappearance",
        story="Gone 15 s into decompression; decompression_complete at 135 s and confirmed; at 175 s the "
              "AMR comes back at full size (the prosthesis slipped) before closure.",
        amr_uv={"MENT": 150.0, "OORIS": 200.0, "OOCUL": 80.0},
        amr_fraction=steps((GONE_S - 5.0, 0.0), (175.0, 1.0), ramp_s=5.0),
        stages=stages,
        duration_s=212.0,
        events={"amr_gone_s": GONE_S, "amr_back_s": 180.0},
        expected=("decompression_confirmed after decompression_complete",
                  "then a high-priority amr_reappeared decision superseding it",
                  "never termination_acceptable after the reappearance"),
    )


def persists() -> Plan:
    return Plan(
        name="persists",
        story="AMR unchanged (0.9 of baseline from decompression on) to the end.",
        amr_uv={"MENT": 150.0, "OORIS": 200.0, "OOCUL": 80.0},
        amr_fraction=step(90.0, 1.0, 0.9, ramp_s=5.0),
        expected=("never decompression_confirmed", "course persisted",
                  "a verdict from the prediction band, after decompression_complete"),
    )


CASES: dict[str, Callable[[], Plan]] = {
    f.__name__: f for f in (control_disappearance, noise_rise, dead_stimulator, current_spread, reappearance,
                            persists)
}


def build(name: str, seed: int = 13, **overrides: Any) -> Recording:
    """The named case rendered with `seed` (plan fields may be overridden, e.g. duration_s)."""
    plan = CASES[name]()
    if overrides:
        plan = replace(plan, **overrides)
    return render(plan, seed)
