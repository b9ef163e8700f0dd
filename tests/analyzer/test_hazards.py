"""Issue 13, items 1-3: recordings no one on the team tuned the analyzer on (tests/analyzer/hazards.py,
an independent waveform model) that used to give the wrong advice, through the engine and through
`amrwatch analyze FILE --json`.

(a) noise 3 → 15 µV with an unchanged 80 µV AMR: not a disappearance (noise_too_high, recording_quality);
(b) a dead stimulator, markers still coming: not a disappearance (stimulus_unconfirmed,
    stimulation_failure raised, then cleared when the stimulator is back);
(c) current spread, a large response from 3.5 ms running into the window: not an AMR (direct_response);
(d) controls: a true disappearance at low noise is still `disappeared`; an AMR at 10 ms is present;
and the stimulus turned down below its baseline strength, and the 'direct' stimulus check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from amrwatch.services.acquirer.labels import montage_from_labels
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.analyzer.settings import AnalyzerSettings

from .hazards import FS, LABELS, Recording, Segment, render, write_edf
from .streams import pairs

BASELINE = Segment(20.0, "baseline")


def run_engine(rec: Recording, settings: AnalyzerSettings | None = None) -> list[tuple[str, dict]]:
    """The recording in 0.1 s frames, stages before the frame that holds them, stimuli (with their
    intensity and width) after it, as the acquirer publishes."""
    engine = AnalyzerEngine(montage_from_labels(list(LABELS), FS), settings)
    x = rec.samples.astype(np.float32)
    out: list[tuple[str, dict]] = []
    si = gi = 0
    step = int(FS / 10)
    for pos in range(0, x.shape[1], step):
        end = min(x.shape[1], pos + step)
        while gi < len(rec.stages) and rec.stages[gi][0] < end:
            out += engine.on_stage(rec.stages[gi][1], rec.stages[gi][0])
            gi += 1
        out += engine.on_frame(pos, x[:, pos:end], FS)
        while si < len(rec.stimuli) and rec.stimuli[si][0] < end:
            idx, d, ma = rec.stimuli[si]
            out += engine.on_stimulus(si, idx, idx / FS, d, ma, 0.2)
            si += 1
    return pairs(out + engine.on_end())


def measurements(out, ks=None, channel=None) -> list[dict]:
    return [f for t, f in out if t == "amr_measurement" and (ks is None or f["stimulus_index"] in ks)
            and (channel is None or f["channel"] == channel)]


def alarms(out, kind: str) -> list[dict]:
    return [f for t, f in out if t == "alarm" and f["kind"] == kind]


def states(out, state: str) -> list[dict]:
    return [f for t, f in out if t == "amr_state" and f["state"] == state]


def cli(path: Path, *extra: str) -> tuple[list[dict], str]:
    r = subprocess.run([sys.executable, "-m", "amrwatch", "analyze", str(path), "--json", *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr


# --------------------------------------------------------------------------- #
# (a) noise


NOISY = [BASELINE, Segment(30.0, "decompression", noise_uv=15.0), Segment(4.0, "closure", noise_uv=15.0)]


@pytest.fixture(scope="module")
def noisy() -> Recording:
    return render(NOISY, seed=1)


def check_noisy(rec: Recording, ms: list[dict]) -> None:
    later = set(rec.stimuli_in(1)) | set(rec.stimuli_in(2))
    after = [f for f in ms if f["stimulus_index"] in later]
    count = Counter((f["assessment"], f["assessment_reason"]) for f in after)
    print(f"\nnoise 15 µV, 80 µV AMR, after baseline: {dict(count)}")
    # Never counted as absent: each sweep either shows the AMR or cannot tell.
    assert count[("absent", None)] == 0, count
    assert count[("not_assessable", "noise_too_high")] >= 0.3 * len(after), count
    for f in after:
        if f["assessment"] == "not_assessable":
            assert f["present"] is False and f["pct_of_baseline"] is None
            assert f["detection_limit_uv"] > 0.5 * 70.0  # above half of any channel's ~70-90 µV baseline
    base = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(0))]
    assert all(f["assessment"] == "present" for f in base[4:]), "the baseline itself is clean"
    assert all(f["detection_limit_uv"] <= 0.5 * 70.0 for f in base)


def test_noise_rise_is_not_a_disappearance_engine(noisy):
    out = run_engine(noisy)
    check_noisy(noisy, measurements(out))
    assert not states(out, "disappeared")
    course = [f for t, f in out if t == "amr_course"][-1]
    assert course["course"] != "disappeared_after_decompression"
    raised = [a for a in alarms(out, "recording_quality") if a["state"] == "raised"]
    assert {a["alarm_key"] for a in raised} == {f"analyzer:recording_quality:{c}" for c in LABELS}
    ment = next(a for a in raised if a["alarm_key"].endswith(":MENT"))
    assert ment["priority"] == "medium"
    assert "MENT" in ment["message"] and "at baseline" in ment["message"]
    assert "electrode contact and impedance" in ment["message"] and "mains" in ment["message"]
    # noise now vs at baseline, detection limit vs baseline AMR, as numbers in the message
    nums = [float(x) for x in __import__("re").findall(r"([0-9]+(?:\.[0-9]+)?) µV", ment["message"])]
    now, base, limit, amr = nums[:4]
    assert now > 3 * base and limit > 0.5 * amr and 60 < amr < 100, ment["message"]
    # raised conditions are cleared with the same key (here when the session ends)
    cleared = {a["alarm_key"] for a in alarms(out, "recording_quality") if a["state"] == "cleared"}
    assert cleared == {a["alarm_key"] for a in raised}


def test_noise_rise_is_not_a_disappearance_cli(noisy, tmp_path):
    path = write_edf(tmp_path / "noisy.edf", noisy)
    ms, err = cli(path)
    check_noisy(noisy, ms)
    assert "→ disappeared" not in err
    assert "recording_quality [medium]: MENT: the recording cannot show whether the AMR has gone" in err


def test_quality_alarm_clears_when_the_noise_settles():
    rec = render([BASELINE, Segment(10.0, "decompression", noise_uv=15.0), Segment(16.0, noise_uv=3.0)], seed=2)
    out = run_engine(rec)
    q = [a for a in alarms(out, "recording_quality") if a["alarm_key"].endswith(":MENT")]
    assert [a["state"] for a in q] == ["raised", "cleared"]
    assert "good enough again" in q[1]["message"]
    assert not states(out, "disappeared")


# --------------------------------------------------------------------------- #
# (b) dead stimulator

DEAD = [BASELINE, Segment(16.0, "decompression", stimulator=False, amr_uv=0.0),
        Segment(12.0, "closure")]


@pytest.fixture(scope="module")
def dead() -> Recording:
    return render(DEAD, seed=3)


def check_dead(rec: Recording, ms: list[dict]) -> None:
    gone = set(rec.stimuli_in(1))
    assert gone
    for f in ms:
        if f["stimulus_index"] in gone:
            assert (f["assessment"], f["assessment_reason"], f["stimulus_confirmed"], f["present"]) == (
                "not_assessable", "stimulus_unconfirmed", False, False), f
        else:
            assert f["stimulus_confirmed"] is True, f
    back = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(2))]
    assert sum(f["assessment"] == "present" for f in back) >= 0.9 * len(back)


def test_dead_stimulator_is_not_a_disappearance_engine(dead):
    out = run_engine(dead)
    check_dead(dead, measurements(out))
    assert not states(out, "disappeared")
    fail = alarms(out, "stimulation_failure")
    for d in ("ZYG", "MAR"):
        mine = [a for a in fail if a["alarm_key"] == f"analyzer:stimulation_failure:{d}"]
        assert [a["state"] for a in mine] == ["raised", "cleared"], mine
        raised, cleared = mine
        assert raised["priority"] == "high"
        first = min(dead.stimuli_in(1, d))
        assert f"{d} stimulation not confirmed" in raised["message"]
        assert f"since stimulus #{first} " in raised["message"]
        assert "stimulator output" in raised["message"] and "needles" in raised["message"]
        assert "cable" in raised["message"] and "current setting (set to 15 mA)" in raised["message"]
        # raised after 3 unconfirmed stimuli of that direction, cleared at the first confirmed one
        k_raise = next(i for i, (t, f) in enumerate(out) if f is raised)
        seen = [f["stimulus_index"] for t, f in out[:k_raise] if t == "amr_measurement" and f["direction"] == d
                and f["stimulus_index"] in set(dead.stimuli_in(1))]
        assert len(set(seen)) == AnalyzerSettings().stimulation_failure_stimuli
        assert f"confirmed again at stimulus #{min(dead.stimuli_in(2, d))} " in cleared["message"]


def test_dead_stimulator_is_not_a_disappearance_cli(dead, tmp_path):
    ms, err = cli(write_edf(tmp_path / "dead.edf", dead))
    check_dead(dead, ms)
    assert "→ disappeared" not in err
    assert "stimulation_failure [high]: ZYG stimulation not confirmed" in err
    assert "stimulation_failure [high] cleared: ZYG stimulation confirmed again" in err


def test_artifact_alone_confirms_a_stimulus_that_evokes_nothing():
    """A working stimulator, AMR gone, no direct-response muscle active: the artifact is the proof."""
    rec = render([BASELINE, Segment(16.0, "decompression", amr_uv=0.0, direct_uv=0.0)], seed=4)
    out = run_engine(rec)
    later = measurements(out, set(rec.stimuli_in(1)))
    assert all(f["stimulus_confirmed"] and f["assessment"] == "absent" for f in later)
    assert len(states(out, "disappeared")) == 3
    assert not alarms(out, "stimulation_failure")


def test_blanked_artifact_direct_mode_uses_the_direct_response():
    """An amplifier that blanks the artifact: stimulus_check='direct' confirms by the stimulated
    branch's own muscle (OOCUL for ZYG, MENT/OORIS for MAR), so a true loss is still seen..."""
    settings = AnalyzerSettings(stimulus_check="direct")
    rec = render([Segment(20.0, "baseline", artifact_uv=0.0),
                  Segment(16.0, "decompression", artifact_uv=0.0, amr_uv=0.0)], seed=5)
    out = run_engine(rec, settings)
    later = measurements(out, set(rec.stimuli_in(1)))
    assert all(f["stimulus_confirmed"] and f["assessment"] == "absent" for f in later)
    assert len(states(out, "disappeared")) == 3
    # ... and without it, nothing confirms the stimulus: no disappearance, the failure is raised.
    rec = render([Segment(20.0, "baseline", artifact_uv=0.0),
                  Segment(16.0, "decompression", artifact_uv=0.0, amr_uv=0.0, direct_uv=0.0)], seed=5)
    out = run_engine(rec, settings)
    later = measurements(out, set(rec.stimuli_in(1)))
    assert all(f["assessment_reason"] == "stimulus_unconfirmed" for f in later)
    assert not states(out, "disappeared")
    assert {a["state"] for a in alarms(out, "stimulation_failure")} == {"raised", "cleared"}


def test_direct_mode_ignores_the_artifact():
    """With stimulus_check='direct' an artifact (or a blanking step) proves nothing."""
    rec = render([BASELINE, Segment(16.0, "decompression", amr_uv=0.0, direct_uv=0.0)], seed=6)
    out = run_engine(rec, AnalyzerSettings(stimulus_check="direct"))
    later = measurements(out, set(rec.stimuli_in(1)))
    assert all(f["assessment_reason"] == "stimulus_unconfirmed" for f in later)
    out = run_engine(rec)
    assert all(f["assessment"] == "absent" for f in measurements(out, set(rec.stimuli_in(1))))


# --------------------------------------------------------------------------- #
# (c) current spread

SPREAD = [BASELINE, Segment(20.0, "decompression", amr_uv=0.0, spread_uv=600.0),
          Segment(4.0, "closure", amr_uv=0.0, spread_uv=600.0)]


@pytest.fixture(scope="module")
def spread() -> Recording:
    return render(SPREAD, seed=7)


def check_spread(rec: Recording, ms: list[dict]) -> None:
    later = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(1)) | set(rec.stimuli_in(2))]
    for f in later:
        assert f["present"] is False, f
        assert (f["assessment"], f["assessment_reason"]) == ("not_assessable", "direct_response"), f
        assert f["onset_latency_ms"] is not None and f["onset_latency_ms"] < 7.0, f
        assert f["p2p_uv"] > 200.0
    base = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(0))]
    assert all(f["assessment"] == "present" for f in base[6:])


def test_current_spread_is_not_an_amr_engine(spread):
    out = run_engine(spread)
    check_spread(spread, measurements(out))
    raised = [a for a in alarms(out, "direct_response") if a["state"] == "raised"]
    assert {a["alarm_key"] for a in raised} == {f"analyzer:direct_response:{c}" for c in LABELS}
    assert all(a["priority"] == "low" for a in raised)
    assert "Lower the stimulus intensity" in raised[0]["message"]
    assert "stimulating electrode" in raised[0]["message"]
    # the AMR is gone and the direct response cannot stand in for it: nothing is confirmed either way
    assert not states(out, "disappeared")


def test_current_spread_is_not_an_amr_cli(spread, tmp_path):
    ms, err = cli(write_edf(tmp_path / "spread.edf", spread))
    check_spread(spread, ms)
    assert "direct_response [low]: MENT: a direct response from current spread" in err


def test_direct_response_alarm_clears_when_it_stops():
    rec = render([BASELINE, Segment(10.0, "decompression", spread_uv=600.0), Segment(10.0)], seed=8)
    out = run_engine(rec)
    mine = [a["state"] for a in alarms(out, "direct_response") if a["alarm_key"].endswith(":MENT")]
    assert mine == ["raised", "cleared"]


# --------------------------------------------------------------------------- #
# (d) controls

TRUE_LOSS = [BASELINE, Segment(20.0, "decompression", amr_uv=0.0), Segment(4.0, "closure", amr_uv=0.0)]


def check_true_loss(rec: Recording, ms: list[dict]) -> None:
    base = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(0))]
    for f in base[6:]:
        assert f["assessment"] == "present" and f["stimulus_confirmed"] is True
        # departs from zero at 10 ± 0.2 ms; the extrapolated onset of a Hermite rise lands within ~1 ms of it
        assert 9.0 <= f["onset_latency_ms"] <= 11.5, f
    later = [f for f in ms if f["stimulus_index"] in set(rec.stimuli_in(1))]
    assert all(f["assessment"] == "absent" and f["stimulus_confirmed"] for f in later)


def test_true_disappearance_is_still_reported_engine():
    rec = render(TRUE_LOSS, seed=9)
    out = run_engine(rec)
    check_true_loss(rec, measurements(out))
    gone = states(out, "disappeared")
    assert {f["channel"] for f in gone} == set(LABELS)
    assert all(f["stage"] == "decompression" for f in gone)
    assert [f for t, f in out if t == "amr_course"][-1]["course"] == "disappeared_after_decompression"
    assert not [f for t, f in out if t == "alarm"]


def test_true_disappearance_is_still_reported_cli(tmp_path):
    rec = render(TRUE_LOSS, seed=9)
    ms, err = cli(write_edf(tmp_path / "true.edf", rec))
    check_true_loss(rec, ms)
    assert err.count("→ disappeared") == 3
    assert "course disappeared_after_decompression" in err


def test_normal_amr_at_10_ms_is_present_at_every_onset_from_8_ms():
    """The latency gate leaves real AMRs alone: onsets 8-12 ms (literature ~8-12 ms) are present."""
    for onset in (8.0, 10.0, 12.0):
        rec = render([Segment(12.0, "baseline", amr_onset_ms=onset, amr_uv=300.0)], seed=10)
        ms = measurements(run_engine(rec))
        assert all(f["assessment"] == "present" for f in ms), (onset, Counter(f["assessment"] for f in ms))
        assert all(-1.0 < f["onset_latency_ms"] - onset < 1.5 for f in ms), (onset, [f["onset_latency_ms"] for f in ms])


def test_a_weaker_stimulus_cannot_make_the_amr_disappear(tmp_path):
    rec = render([BASELINE, Segment(16.0, "decompression", amr_uv=0.0, intensity_ma=8.0),
                  Segment(10.0, "closure", amr_uv=0.0)], seed=11)
    out = run_engine(rec)
    weak = measurements(out, set(rec.stimuli_in(1)))
    assert all((f["assessment"], f["assessment_reason"]) == ("not_assessable", "intensity_below_baseline")
               for f in weak)
    gone = states(out, "disappeared")
    assert gone and all(f["stage"] == "closure" for f in gone), "only once the current is back to 15 mA"
    low = alarms(out, "stimulation_failure")
    assert {(a["alarm_key"], a["priority"], a["state"]) for a in low} == {
        (f"analyzer:intensity_below_baseline:{d}", "low", s) for d in ("ZYG", "MAR") for s in ("raised", "cleared")}
    assert "8 mA against 15 mA at baseline" in low[0]["message"]
    assert "no longer comparable" in low[0]["message"]
    # the EDF+ annotations carry the current (`stim ZYG 8mA 0.2ms`): the offline path sees it too
    ms, err = cli(write_edf(tmp_path / "weak.edf", rec))
    assert [f["assessment_reason"] for f in ms if f["stimulus_index"] in set(rec.stimuli_in(1))] == [
        f["assessment_reason"] for f in weak]
    assert "weaker than at baseline (8 mA against 15 mA at baseline)" in err


def test_no_amr_at_baseline_has_nothing_to_disappear():
    """A channel without an AMR at baseline (baseline 0): its absent sweeps are `absent` (there is no
    reference they must be able to show), it never becomes `disappeared`, and no quality alarm."""
    rec = render([Segment(20.0, "baseline", amr_uv=0.0), Segment(16.0, "decompression", amr_uv=0.0,
                                                                  noise_uv=8.0)], seed=12)
    out = run_engine(rec)
    base = [f for t, f in out if t == "baseline"]
    assert base and all(f["baseline_uv"] == 0.0 for f in base)
    assert all(f["assessment"] == "absent" for f in measurements(out))
    assert not states(out, "disappeared") and not alarms(out, "recording_quality")
    assert [f for t, f in out if t == "amr_course"][-1]["course"] == "never_detected"


def test_a_stimulator_dead_to_the_end_is_no_verdict():
    """Dead until the end: nothing disappears, and the course says for how many sweeps each channel
    could not tell at the end (the persistence it reports was last seen that long before)."""
    rec = render([BASELINE, Segment(12.0, "decompression", stimulator=False, amr_uv=0.0)], seed=13)
    out = run_engine(rec)
    assert not states(out, "disappeared")
    course = [f for t, f in out if t == "amr_course"][-1]
    for ch in LABELS:
        dead = [f for f in measurements(out, set(rec.stimuli_in(1)), ch)]
        assert dead and course["per_channel"][ch]["not_assessable_at_end"] == len(dead)
        assert course["per_channel"][ch]["n_not_assessable"] == len(dead)
    assert [a["state"] for a in alarms(out, "stimulation_failure")] == ["raised"] * 2 + ["cleared"] * 2
    assert all(a["message"] == "the session ended" for a in alarms(out, "stimulation_failure")
               if a["state"] == "cleared")
