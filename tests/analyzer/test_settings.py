"""Analyzer settings: DOMAIN defaults, and refusals that name field, range and value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from amrwatch.services.analyzer.settings import AnalyzerSettings, parse_overrides


def test_defaults_are_the_domain_figures():
    s = AnalyzerSettings()
    assert s.sweep_ms == (-20.0, 50.0)  # 50 ms after each stimulus, with a pre-stimulus window
    assert s.blank_ms == (0.0, 3.0)  # artifact in the first ~1-3 ms
    assert s.analysis_ms == (6.0, 25.0)
    assert s.noise_ms[1] <= 0.0
    lo, hi = s.bandpass_hz
    assert 10.0 <= lo <= 30.0 and 1500.0 <= hi <= 3000.0
    assert s.present_floor_uv == 20.0
    assert s.disappear_k == 5
    assert s.mains_hz == 50.0


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("disappear_k", 0, "disappear_k must be between 1 and 1000; got 0"),
        ("present_floor_uv", -1.0, "present_floor_uv must be between 0 and 10000 µV; got -1.0"),
        ("mains_hz", 100.0, "mains_hz must be between 40 and 70 Hz; got 100.0"),
        ("analysis_ms", (25.0, 6.0), "analysis_ms must be a (start, end) pair with 0 <= start < end <= 1000 ms; "
                                     "got (25.0, 6.0)"),
    ],
)
def test_bad_values_name_field_range_and_value(field, value, expected):
    with pytest.raises(ValidationError) as err:
        AnalyzerSettings(**{field: value})
    assert expected in str(err.value)


def test_windows_must_fit_the_sweep_and_each_other():
    with pytest.raises(ValidationError, match=r"analysis_ms \(6.0, 60.0\) must lie inside sweep_ms"):
        AnalyzerSettings(analysis_ms=(6.0, 60.0))
    with pytest.raises(ValidationError, match="noise_ms must end before the artifact blank starts"):
        AnalyzerSettings(noise_ms=(-10.0, -1.0), blank_ms=(-2.0, 3.0))
    with pytest.raises(ValidationError, match="analysis_ms must start after the artifact blank ends"):
        AnalyzerSettings(analysis_ms=(2.0, 25.0))


def test_rate_checks_name_nyquist():
    with pytest.raises(ValueError, match=r"bandpass_hz high edge must be below the Nyquist frequency 1000 Hz"):
        AnalyzerSettings().check_rate(2000.0)
    AnalyzerSettings().check_rate(20000.0)


def test_unknown_setting_is_refused():
    with pytest.raises(ValidationError, match="extra"):
        AnalyzerSettings(blank=1)


def test_command_line_overrides():
    s = parse_overrides(["bandpass_hz=30,3000", "disappear-k=7", "mains_mode=notch"])
    assert s.bandpass_hz == (30.0, 3000.0) and s.disappear_k == 7 and s.mains_mode == "notch"
    with pytest.raises(ValueError, match="--set expects KEY=VALUE with KEY one of"):
        parse_overrides(["nonsense=1"])
    with pytest.raises(ValidationError, match="disappear_k must be between 1 and 1000; got 0"):
        parse_overrides(["disappear_k=0"])


def test_assessment_defaults_and_literature_figures():
    s = AnalyzerSettings()
    assert s.detectability_fraction == 0.5  # an AMR of half the baseline size must still be visible
    assert s.stimulus_check == "artifact_or_direct"
    assert 2.0 <= s.direct_window_ms[0] and s.direct_window_ms[1] <= 6.0  # direct response ~2-5 ms
    assert 6.0 < s.amr_onset_min_ms < 8.0  # AMR onset ~8-12 ms, direct response 2-5 ms
    assert s.stimulation_failure_stimuli < s.disappear_k  # the stimulator alarm comes before any disappearance
    assert s.quality_alarm_sweeps <= s.disappear_k


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        # each would let a sweep that cannot tell count, or hide the hazard
        ("detectability_fraction", 1.5, "detectability_fraction must be between 0.1 and 1; got 1.5"),
        ("artifact_factor", 2.0, "artifact_factor must be between 5 and 1000; got 2.0"),
        ("artifact_floor_uv", 1.0, "artifact_floor_uv must be between 10 and 100000 µV; got 1.0"),
        ("amr_onset_min_ms", 4.0, "amr_onset_min_ms must be between 5 and 10 ms; got 4.0"),
        ("underway_fraction", 0.95, "underway_fraction must be between 0.3 and 0.9; got 0.95"),
        ("stimulation_failure_stimuli", 50, "stimulation_failure_stimuli must be between 1 and 20; got 50"),
        ("quality_alarm_sweeps", 0, "quality_alarm_sweeps must be between 1 and 100; got 0"),
        ("direct_alarm_sweeps", 500, "direct_alarm_sweeps must be between 1 and 100; got 500"),
    ],
)
def test_unsafe_assessment_settings_are_refused_with_their_range(field, value, expected):
    with pytest.raises(ValidationError) as err:
        AnalyzerSettings(**{field: value})
    assert expected in str(err.value)


def test_the_stimulus_check_cannot_be_switched_off():
    with pytest.raises(ValidationError, match="stimulus_check") as err:
        AnalyzerSettings(stimulus_check="off")
    assert "artifact_or_direct" in str(err.value) and "'direct'" in str(err.value)
    with pytest.raises(ValidationError, match=r"direct_window_ms must end after the artifact blank ends \(3 ms\)"):
        AnalyzerSettings(direct_window_ms=(1.0, 2.5))


def test_unsafe_setting_is_refused_on_the_command_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "amrwatch", "analyze", str(tmp_path / "x.edf"), "--set",
                        "detectability_fraction=2"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "detectability_fraction must be between 0.1 and 1; got 2" in r.stderr
