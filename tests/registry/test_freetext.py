"""Free text refuses digit runs that look like hospital record numbers (six or more digits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from amrwatch.services.monitor.forms import FormError, parse_ack
from amrwatch.registry.store import Registry, RegistryError


def test_alarm_ack_note_and_operator_refuse_identifier_like_digit_runs():
    with pytest.raises(FormError) as e:
        parse_ack({"alarm_key": "signal_lost", "operator": "dr_k", "note": "pt 00123456 moved"})
    assert "note: holds a run of 8 digits" in str(e.value) and "hospital record number" in str(e.value)
    with pytest.raises(FormError) as e:
        parse_ack({"alarm_key": "signal_lost", "operator": "op123456", "note": ""})
    assert "operator: holds a run of 6 digits" in str(e.value)
    ok = parse_ack({"alarm_key": "signal_lost", "operator": "op12345", "note": "electrode 3 re-seated at 10:42"})
    assert ok["operator"] == "op12345"


def test_outcome_actor_refuses_identifier_like_digit_runs(tmp_path: Path):
    data = tmp_path / "data"
    with Registry.in_data_dir(data) as reg:
        reg.create_session("0123456789abcdef", actor="test", started_at="2026-11-24T08:00:00Z", source="sim")
        with pytest.raises(RegistryError, match="run of 7 digits"):
            reg.update_session("0123456789abcdef", actor="nurse1234567", scenario="x")
    out = subprocess.run([sys.executable, "-m", "amrwatch", "outcome", "add", "0123456789abcdef", "--timepoint",
                          "3m", "--cohen-grade", "0", "--actor", "u9876543", "--data", str(data)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "actor: holds a run of 7 digits" in out.stderr, out.stderr
    assert "nothing written" in out.stderr
