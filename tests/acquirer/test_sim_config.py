"""SimConfig: docs/domain.md defaults, and every bad value rejected with field, range and value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from amrwatch.services.acquirer.sim.config import SimConfig
from amrwatch.services.acquirer.sim.scenario import scenario_names


def test_defaults_follow_domain_brief():
    c = SimConfig()
    assert c.sampling_rate_hz == 20000.0
    assert c.stim_rate_hz == 1.0
    assert c.directions == ["ZYG", "MAR"]
    assert 0.2 <= c.width_ms <= 0.3
    assert 5.0 <= c.intensity_ma <= 25.0
    assert c.amr_onset_ms == (9.0, 12.0)
    assert c.amr_duration_ms == (5.0, 15.0)
    assert c.scenario == "disappears-after-decompression"


@pytest.mark.parametrize(
    "field, value, fragments",
    [
        ("sampling_rate_hz", 999.0, ["sampling_rate_hz", "1000", "50000", "999"]),
        ("stim_rate_hz", 3.0, ["stim_rate_hz", "0.5", "2", "3.0"]),
        ("noise_uv", -1.0, ["noise_uv", "0", "200", "-1.0"]),
        ("time_scale", 0.0, ["time_scale", "0.01", "100", "0.0"]),
        ("intensity_ma", 40.0, ["intensity_ma", "5", "25", "40.0"]),
        ("amr_onset_ms", (12.0, 9.0), ["amr_onset_ms", "6", "20", "(12.0, 9.0)"]),
        ("amr_phases", (0, 4), ["amr_phases", "1", "8", "(0, 4)"]),
        ("calibration_absent_fraction", 1.5, ["calibration_absent_fraction", "0", "1", "1.5"]),
        ("end_tail_s", 0.5, ["end_tail_s", "1", "60", "0.5"]),
    ],
)
def test_out_of_range_names_field_range_and_value(field, value, fragments):
    with pytest.raises(ValidationError) as err:
        SimConfig(**{field: value})
    text = str(err.value)
    for frag in fragments:
        assert frag in text, f"{frag!r} missing from: {text}"


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ValidationError) as err:
        SimConfig(scenario="sometimes-disappears")
    text = str(err.value)
    assert "sometimes-disappears" in text
    for name in scenario_names():
        assert name in text


def test_contract_scenarios_exist():
    names = scenario_names()
    for name in (
        "disappears-after-decompression",
        "early-disappearance",
        "persists-expected",
        "persists-unexpected",
        "never-detected",
        "calibration",
    ):
        assert name in names
        assert SimConfig(scenario=name).scenario == name


def test_unknown_setting_is_rejected():
    with pytest.raises(ValidationError, match="noise_rms"):
        SimConfig(noise_rms=3.0)


def test_assignment_is_validated_too():
    c = SimConfig()
    with pytest.raises(ValidationError, match="stim_rate_hz"):
        c.stim_rate_hz = 10.0


@pytest.mark.parametrize("bad", [[], ["ZYG", "ZYG"], ["FRONTAL"]])
def test_directions_must_be_zyg_or_mar_once(bad):
    with pytest.raises(ValidationError, match="directions"):
        SimConfig(directions=bad)


def test_direct_response_must_end_before_analysis_window():
    with pytest.raises(ValidationError, match="5.5 ms"):
        SimConfig(direct_onset_ms=(2.0, 4.0), direct_duration_ms=2.0)


def test_amr_must_start_inside_analysis_window():
    with pytest.raises(ValidationError, match="6 ms"):
        SimConfig(amr_onset_ms=(6.1, 12.0), amr_latency_jitter_ms=0.3)


def test_mains_harmonic_below_nyquist():
    with pytest.raises(ValidationError, match="Nyquist"):
        SimConfig(sampling_rate_hz=1000.0, mains_hz=60.0, mains_harmonic=9)


def test_stage_duration_override_keys_and_values():
    with pytest.raises(ValidationError, match="stage_durations_s"):
        SimConfig(stage_durations_s={"lunch": 10.0})
    with pytest.raises(ValidationError, match="7200"):
        SimConfig(stage_durations_s={"baseline": -1.0})
