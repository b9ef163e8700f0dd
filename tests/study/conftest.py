"""Shared fixtures: one synthetic registry of the study's size, its export and its report,
built once per test session with the real generator, exporter and report."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from amrwatch.proto.messages import AmrCourse, Baseline, Factors, FactorValues, Message, Prediction
from amrwatch.study.cohort_table import build_cohort, write_csv
from amrwatch.registry.store import Registry
from amrwatch.study.report import make_report
from amrwatch.study.synthetic_registry import generate

#: The study's cohort size (its speed is measured by bench/report_speed.py).
N_STUDY = 157
SEED = 11
T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


@dataclass
class Built:
    data: Path
    csv: Path
    csv_sha: str
    report_dir: Path
    report_seconds: float


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("study")
    data = root / "data"
    generate(data, N_STUDY, seed=SEED)
    with Registry.in_data_dir(data) as reg:
        cohort = build_cohort(reg, data)
    csv = root / "cohort.csv"
    sha = write_csv(cohort, csv)
    t = time.perf_counter()
    make_report(data, root / "report")
    return Built(data, csv, sha, root / "report", time.perf_counter() - t)


_seq = iter(range(10**9))


def msg(cls: type[Message], session_id: str = "S1", **body) -> Message:
    """A real, validated proto message with a fresh envelope."""
    return cls.model_validate({"type": cls.TOPIC, "schema_version": 1, "session_id": session_id, "seq": next(_seq),
                               "publisher": "test", "instance": "0123abcd", "ts_utc": T0, **body})


def factors(source: str = "operator", session_id: str = "S1", **values) -> Message:
    return msg(Factors, session_id, factors=FactorValues(**values).model_dump(), source=source)


def baseline(amplitude: float, session_id: str = "S1") -> Message:
    return msg(Baseline, session_id, channel="mentalis", direction="ZYG", baseline_uv=amplitude, n_sweeps=20,
               amr_amplitude_uv=amplitude)


def course(kind: str, session_id: str = "S1", baseline_uv: float | None = 210.0, final: float | None = 5.0,
           stage: str | None = "decompression") -> Message:
    return msg(AmrCourse, session_id, course=kind, baseline_uv=baseline_uv, final_pct_of_baseline=final,
               disappeared_at_stage=stage, per_channel={})


def prediction(p: float, session_id: str = "S1", sha: str = "a" * 64) -> Message:
    return msg(Prediction, session_id, probability=p, band="low" if p < 0.1 else "high", cutoff_low=0.1,
               cutoff_high=0.3, model_sha256=sha, synthetic=True, notice="synthetic — not for clinical use",
               inputs={}, extrapolated=[])


SEVEN = dict(duration_years=3.5, cohen_grade=3, carbamazepine=True, vessels=2, amr_amplitude_uv=180.0,
             retraction_mm=9.5, displacement=2)


def copy_registry(src: Path, dst: Path, *, source: str = "sim", keep=lambda row: True, limit: int | None = None,
                  outcomes: bool = True) -> list[str]:
    """Copy sessions (summary and current outcomes) of one registry into a new one as if recorded live.

    `keep(cohort_row)` chooses which; the copies are not marked synthetic unless source == 'synthetic'.
    """
    copied: list[str] = []
    with Registry.in_data_dir(src) as a, Registry.in_data_dir(dst) as b, b.batch():
        rows = {r.session_id: r for r in build_cohort(a).rows}
        for s in a.list():
            if (limit is not None and len(copied) >= limit) or not keep(rows[s.session_id]):
                continue
            b.create_session(s.session_id, actor="recorder", started_at=s.started_at, source=source,
                             model_sha256=s.model_sha256, model_synthetic=s.model_synthetic)
            b.close_session(s.session_id, actor="recorder", ended_at=s.ended_at)
            b.set_summary(s.session_id, {**a.summary(s.session_id).summary, "derived_from": "messages"},
                          actor="recorder")
            for o in a.outcomes(s.session_id) if outcomes else []:
                b.add_outcome(s.session_id, actor="dr_lee", timepoint=o.timepoint, cohen_grade=o.cohen_grade,
                              outcome_class=o.outcome_class, relief_date=o.relief_date, complications=o.complications)
            copied.append(s.session_id)
    return copied


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
