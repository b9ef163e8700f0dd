"""The predictor as a process: predictions and decisions on the bus; a bad model stops it loudly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import zmq

from amrwatch.bus import Publisher, Subscriber
from amrwatch.proto.messages import Alarm, Baseline, Factors, Heartbeat, Prediction, StageMarker
from amrwatch.services.predictor.model import DEFAULT_CARD, DEFAULT_MODEL

SID = "20261124T090000Z-test01"
LOW_RISK = {"duration_years": 1.5, "cohen_grade": 2, "carbamazepine": False, "vessels": 1, "retraction_mm": 6.0,
            "displacement": 3}


def _wait_for(sub, cls, timeout=30, pred=lambda m: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if isinstance(msg, cls) and pred(msg):
            return msg
    raise AssertionError(f"no {cls.__name__} within {timeout} s")


def test_prediction_when_all_inputs_known_and_synthetic_notice(procs, stack_env):
    procs.start("bus")
    procs.start("predictor")
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("prediction", "decision", "heartbeat", "alarm"))
        _wait_for(sub, Heartbeat, pred=lambda m: m.service == "predictor")
        pub = Publisher(ctx, stack_env["AMRWATCH_BUS_IN"], "tester")
        assert pub.wait_ready(10, ("factors",))
        pub.publish(StageMarker, SID, stage="baseline", source="operator", sample_index=0)
        pub.publish(Factors, SID, factors=LOW_RISK, source="operator")
        pub.publish(Baseline, SID, channel="MENT", direction="ZYG", baseline_uv=150.0, n_sweeps=20,
                    amr_amplitude_uv=150.0)
        pred = _wait_for(sub, Prediction)
        assert pred.session_id == SID and pred.band == "low" and pred.synthetic
        assert pred.notice == "synthetic — not for clinical use"
        assert pred.inputs["amr_amplitude_uv"] == 150.0
        # A changed input gives a new prediction.
        pub.publish(Factors, SID, factors={"vessels": 4, "displacement": 1, "duration_years": 20.0}, source="operator")
        again = _wait_for(sub, Prediction)
        assert again.probability > pred.probability and again.seq == pred.seq + 1
    finally:
        ctx.destroy(linger=0)


def _run_predictor(env, model_dir):
    return subprocess.run([sys.executable, "-m", "amrwatch", "predictor", "--model", str(model_dir)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_corrupted_model_refuses_to_start_with_an_alarm(procs, stack_env, tmp_path):
    procs.start("bus")
    bad = tmp_path / "model"
    bad.mkdir()
    shutil.copy(DEFAULT_CARD, bad / "model_card.json")
    blob = bytearray(DEFAULT_MODEL.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (bad / "model.onnx").write_bytes(bytes(blob))
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, stack_env["AMRWATCH_BUS_OUT"], ("alarm",))
        r = _run_predictor(stack_env, bad)
        assert r.returncode == 3
        assert "SHA-256" in r.stderr and "refused to start" in r.stderr
        alarm = _wait_for(sub, Alarm, timeout=10)
        assert alarm.kind == "model_invalid" and alarm.priority == "high"
    finally:
        ctx.destroy(linger=0)


def test_missing_model_file_is_a_clear_error(stack_env, tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    r = _run_predictor(stack_env, empty)
    assert r.returncode == 3 and "model card" in r.stderr.lower()
