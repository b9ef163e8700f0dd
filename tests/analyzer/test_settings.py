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
