"""The terminal line of a decision shows the model's notice and whether it is provisional."""

from __future__ import annotations

import datetime as dt

from amrwatch.printer import line
from amrwatch.proto.messages import Decision


def _decision(**over):
    body = {"type": "decision", "schema_version": 1, "session_id": "s1", "seq": 1, "publisher": "predictor",
            "instance": "0123abcd", "ts_utc": dt.datetime(2026, 12, 2, 18, tzinfo=dt.UTC),
            "decision_id": 3, "kind": "evaluating", "priority": "info",
            "rationale": "Evaluating: decompression under way.", "evidence": {}, "supersedes": None,
            "provisional": True, "synthetic": True, "notice": "synthetic — not for clinical use"}
    body.update(over)
    return Decision.model_validate(body)


def test_notice_and_provisional_are_shown():
    text = line(_decision())
    assert "evaluating (provisional):" in text and text.endswith("[synthetic — not for clinical use]")


def test_a_verdict_from_a_real_model_shows_neither():
    text = line(_decision(kind="termination_acceptable", priority="medium", provisional=False, synthetic=False,
                          notice=None, rationale="The AMR persists."))
    assert "(provisional)" not in text and "synthetic" not in text and text.endswith("The AMR persists.")
