"""The synthetic registry: what it draws matches the published figures it claims to follow,
its rows are internally consistent, and it is never mixed into a real registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from amrwatch.cli import main
from amrwatch.study.cohortcsv import read_cohort
from amrwatch.services.predictor.features import FEATURE_NAMES
from amrwatch.services.predictor.model import LoadedModel
from amrwatch.study.cohort_table import build_cohort, csv_text
from amrwatch.registry.store import TIMEPOINTS, Registry
from amrwatch.study.synthetic_registry import (
    SyntheticRegistrySettings,
    _follow_up,
    generate,
)

from .conftest import N_STUDY, T0


def test_follow_up_draws_reproduce_the_meta_analysis_at_every_point():
    """20,000 patients per group: each point's share with spasm within 4 standard errors of the published one."""
    s = SyntheticRegistrySettings(lost_by={tp: 0.0 for tp in TIMEPOINTS})
    rng = np.random.default_rng(5)
    days = s.follow_up.timepoint_days
    n = 20_000
    for group, curve in s.persistent_spasm.items():
        visits = [_follow_up(rng, s, group, 3, dt.date(2020, 1, 6), days) for _ in range(n)]
        for k, tp in enumerate(TIMEPOINTS):
            share = np.mean([v[k]["cohen_grade"] > 0 for v in visits])
            se = np.sqrt(curve[tp] * (1 - curve[tp]) / n)
            assert abs(share - curve[tp]) < 4 * se, (group, tp, share, curve[tp])
        # Cured stays cured, the class follows the grade, and the relief date lies before the first cured visit.
        for v in visits[:2000]:
            grades = [x["cohen_grade"] for x in v]
            assert all(b == 0 for a, b in zip(grades, grades[1:]) if a == 0)
            assert all((x["cohen_grade"] == 0) == (x["outcome_class"] == "cured") for x in v)
            dated = [x for x in v if "relief_date" in x]
            if dated:
                first_cured = next(x for x in v if x["cohen_grade"] == 0)
                assert dated == [first_cured]
                assert (dt.date.fromisoformat(dated[0]["relief_date"]) - dt.date(2020, 1, 6)).days \
                    <= days[first_cured["timepoint"]]


def test_the_study_sized_registry_is_consistent_and_marked_synthetic(study):
    with Registry.in_data_dir(study.data) as reg:
        sessions = reg.list()
        cohort = build_cohort(reg, study.data)
    assert len(sessions) == N_STUDY and all(s.source == "synthetic" and s.status == "closed" for s in sessions)
    assert all(s.settings["synthetic_registry"]["never_detected"] == 0.15 for s in sessions)
    assert cohort.synthetic and len(cohort.rows) == N_STUDY and cohort.excluded == []
    model = LoadedModel.load()
    for r in cohort.rows:
        if r.course == "never_detected":
            assert r.label is None and r.factors["amr_amplitude_uv"] is None
            assert r.predicted_probability is None and r.final_pct_of_baseline is None
            continue
        assert r.complete
        if r.label == 1:
            assert 14.0 <= r.final_pct_of_baseline <= 150.0
        else:
            assert 0.0 <= r.final_pct_of_baseline <= 13.5
        p, band = model.predict(r.factors)
        assert (r.predicted_probability, r.predicted_band) == (pytest.approx(p, abs=1e-6), band)
        assert r.prediction_model_sha256 == model.sha256 and r.prediction_synthetic is True
    # Courses: never detected ~15%, early disappearance ~26/75 of disappearances (binomial, 0.1% two-sided).
    n_never = sum(r.course == "never_detected" for r in cohort.rows)
    assert stats.binomtest(n_never, N_STUDY, 0.15).pvalue > 0.001
    gone = [r for r in cohort.rows if r.label == 0]
    early = sum(r.course == "disappeared_before_decompression" for r in gone)
    assert stats.binomtest(early, len(gone), 26 / 75).pvalue > 0.001


def test_same_seed_same_registry_other_seed_other_registry(tmp_path: Path):
    texts = []
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        generate(tmp_path / name, 12, seed=seed)
        with Registry.in_data_dir(tmp_path / name) as reg:
            texts.append(csv_text(build_cohort(reg)))
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_cli_writes_a_synthetic_registry_but_never_into_a_real_one(tmp_path: Path, capsys):
    assert main(["registry", "synthetic", "20", "--data", str(tmp_path / "syn"), "--seed", "2"]) == 0
    assert "wrote 20 SYNTHETIC sessions" in capsys.readouterr().out
    real = tmp_path / "real"
    with Registry.in_data_dir(real) as reg:
        reg.create_session("OR1", actor="recorder", started_at=T0, source="sim")
    assert main(["registry", "synthetic", "20", "--data", str(real)]) == 1
    assert "never mixed into a real registry" in capsys.readouterr().err
    with Registry.in_data_dir(real) as reg:
        assert [s.session_id for s in reg.list()] == ["OR1"]


def test_the_exported_table_reads_back_as_training_data(study):
    table = read_cohort(study.csv)
    with Registry.in_data_dir(study.data) as reg:
        rows = {r.session_id: r for r in build_cohort(reg).rows}
    labelled = [r for r in rows.values() if r.label is not None and r.eligible]
    assert table.session_ids == [r.session_id for r in labelled]
    never = sum(r.course == "never_detected" for r in rows.values())
    early = sum(r.course == "disappeared_before_decompression" for r in rows.values())
    assert table.never_detected == never > 0 and table.ineligible == early > 0
    assert len(table.skipped) == never + early
    assert all("never_detected (no persistence label)" in s.reason or "outside the model's population" in s.reason
               for s in table.skipped)
    expected = np.array([[float(r.factors[n]) for n in FEATURE_NAMES] for r in labelled])
    assert np.array_equal(table.X, expected)
    assert table.y.tolist() == [r.label for r in labelled]


def test_per_channel_figures_keep_the_course_and_are_stated_as_synthetic(study):
    """Every channel of a vanished AMR is gone (≤ 13.5 %), a persisting AMR keeps at least one channel above
    it, the session figure is the largest channel's; mentalis and orbicularis oris show an AMR about as often
    as Pan et al. reported (binomial, 0.1 % two-sided); the report's assumptions say the figures are invented."""
    from amrwatch.study.synthetic_registry import describe

    with Registry.in_data_dir(study.data) as reg:
        cohort = build_cohort(reg, study.data)
    detected = [r for r in cohort.rows if r.course != "never_detected"]
    sites = ("ZYG_mentalis", "ZYG_orbicularis_oris", "MAR_orbicularis_oculi")
    for r in cohort.rows:
        pcts = [r.final_pct[s] for s in sites if r.final_pct[s] is not None]
        if r.course == "never_detected":
            assert pcts == [] and all(v is None for v in r.baseline_uv.values())
            continue
        assert pcts and max(pcts) == r.final_pct_of_baseline
        assert (max(pcts) > 13.5) == (r.label == 1) and (r.label == 1 or all(p <= 13.5 for p in pcts))
        bases = [r.baseline_uv[s] for s in sites if r.baseline_uv[s] is not None]
        assert max(bases) == r.factors["amr_amplitude_uv"]  # the session's baseline is its largest channel's
    for site, share in (("ZYG_mentalis", 0.962), ("ZYG_orbicularis_oris", 0.923)):
        k = sum(r.final_pct[site] is not None for r in detected)
        assert stats.binomtest(k, len(detected), share).pvalue > 0.001, site
    text = " ".join(describe())
    assert "invented" in text and "Pan et al. 2025" in text
    old = {k: v for k, v in SyntheticRegistrySettings().as_json().items() if not k.startswith("channel_")}
    assert "generated before they were written" in " ".join(describe(old))
