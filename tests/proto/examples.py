"""One valid example body per message type, built by hand from proto/README.md."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np

T0 = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.UTC)
SID = "20261124T080000Z-abc123"
MONTAGE = {
    "sampling_rate_hz": 20000.0,
    "channels": [
        {"name": "MENT", "muscle": "mentalis", "direction": "ZYG"},
        {"name": "OOCUL", "muscle": "orbicularis_oculi", "direction": "MAR"},
    ],
    "stimulation": [
        {"direction": "ZYG", "stimulated_branch": "zygomatic"},
        {"direction": "MAR", "stimulated_branch": "marginal_mandibular"},
    ],
}

SETTINGS = {"sweep_ms": [-20.0, 50.0], "disappear_k": 5, "mains_mode": "fit", "present_floor_uv": 20.0}
BODIES: dict[str, dict] = {
    "session_start": dict(started_at=T0, source="sim", scenario="persists-unexpected", replay_of=None,
                          manual=False, montage=MONTAGE, settings={"speed": 1.0, "seed": 3}, ground_truth=True),
    "session_end": dict(ended_at=T0, reason="scenario_end", n_frames=10, n_stimuli=2, n_samples=1000),
    "emg_frame": dict(first_sample_index=100, n_channels=2, n_samples=4, sampling_rate_hz=20000.0, dtype="<f4",
                      layout="channel_major", first_sample_device_s=0.005, first_sample_utc=T0),
    "stimulus": dict(stimulus_index=0, sample_index=20000, stim_time_s=1.0, direction="ZYG", intensity_ma=15.0,
                     width_ms=0.2),
    "sim_truth": dict(stimulus_index=0, channel="MENT", amplitude_uv=200.0, onset_latency_ms=10.1,
                      peak_latency_ms=12.0, n_phases=2, noise_rms_uv=3.0, diathermy=False),
    "stage": dict(stage="decompression", source="operator", sample_index=123),
    "factors": dict(factors={"cohen_grade": 3, "carbamazepine": True}, source="operator"),
    "amr_measurement": dict(stimulus_index=4, stim_time_s=4.0, channel="MENT", direction="ZYG", p2p_uv=210.5,
                            onset_latency_ms=10.2, peak_latency_ms=12.1, area_uv_ms=800.0, n_phases=2,
                            noise_uv=3.1, snr=24.0, present=True, pct_of_baseline=None, rejected=False,
                            reject_reason=None, stage="baseline", assessment="present",
                            assessment_reason=None, detection_limit_uv=31.0, stimulus_confirmed=True),
    "amr_state": dict(channel="MENT", direction="ZYG", state="disappeared", previous_state="present",
                      stage="decompression", stimulus_index=400, pct_of_baseline=2.0),
    "amr_course": dict(course="disappeared_after_decompression", baseline_uv=210.0, final_pct_of_baseline=3.0,
                       disappeared_at_stage="decompression", per_channel={"MENT": {"baseline_uv": 210.0}}),
    "baseline": dict(channel="MENT", direction="ZYG", baseline_uv=210.0, n_sweeps=30, amr_amplitude_uv=210.0),
    "prediction": dict(probability=0.12, band="low", cutoff_low=0.15, cutoff_high=0.5, model_sha256="a" * 64,
                       synthetic=True, notice="synthetic — not for clinical use", inputs={"cohen_grade": 2},
                       extrapolated=[]),
    "decision": dict(decision_id=1, kind="explore_further", priority="high",
                     rationale="The AMR persists although persistence was unlikely; look for another vessel.",
                     evidence={"probability": 0.12}, supersedes=None, provisional=False, synthetic=True,
                     notice="synthetic — not for clinical use"),
    "alarm": dict(kind="sequence_gap", priority="medium", state="raised", message="3 messages lost",
                  source="analyzer", alarm_key="gap:acquirer:emg_frame"),
    "alarm_ack": dict(alarm_key="gap:acquirer:emg_frame", operator="dr_lee", note=None),
    "reader_note": dict(reader="reader-anna", direction="to_room", kind="note", text="Looks fine from here."),
    "sweep_display": dict(stimulus_index=3, channel="MENT", direction="ZYG", t0_ms=-5.0, dt_ms=0.25, values=[0.0, 1.5, None, -2.1], resolution_uv=0.1),
    # The hash as proto/README.md defines it: SHA-256 of the JSON with sorted keys and no spaces.
    "service_settings": dict(service="analyzer", settings=SETTINGS, settings_sha256=hashlib.sha256(
        json.dumps(SETTINGS, sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
        platform={"python": "3.11.7", "numpy": "2.4.6", "machine": "x86_64", "cpu": "AMD EPYC"}),
    "heartbeat": dict(service="analyzer", version="0.1.0", status="ok", uptime_s=3.0, interval_s=1.0,
                      active_alarms=[], info={"receiving": True}),
}


def envelope(type_: str, seq: int = 0, session_id: str | None = SID) -> dict:
    return dict(type=type_, schema_version=1, session_id=session_id, seq=seq, publisher="test",
                instance="0123abcd", ts_utc=T0)


def example(type_: str, seq: int = 0):
    from amrwatch.proto.messages import BY_TYPE

    cls = BY_TYPE[type_]
    msg = cls(**envelope(type_, seq), **BODIES[type_])
    if type_ == "emg_frame":
        msg.with_samples(np.arange(8, dtype=np.float32).reshape(2, 4))
    return msg
