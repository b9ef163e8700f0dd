"""The synthetic cohort: documented marginals, stated effects, and tuned to the study's figures."""

import os

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from amrwatch.study.cohort import DEFAULT, CohortGenerator, describe, synthetic_cohort
from amrwatch.services.predictor.features import FEATURE_NAMES, validate, row_dict
from amrwatch.study.training import fit_pipeline, predict_proba

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}
SEEDS = 100 if os.environ.get("AMRWATCH_FULL") else 20


def test_seeded_and_shaped():
    x1, y1 = synthetic_cohort(157, 7)
    x2, y2 = synthetic_cohort(157, 7)
    x3, _ = synthetic_cohort(157, 8)
    assert x1.shape == (157, 7) and y1.shape == (157,)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert set(np.unique(y1)) <= {0, 1}


def test_every_row_passes_the_feature_validator():
    x, _ = synthetic_cohort(5000, 1)
    for row in x:
        validate(row_dict(row))


def test_marginals_match_the_docstring():
    x, _ = synthetic_cohort(40_000, 2)
    freq = lambda j, k: np.mean(x[:, COL[j]] == k)  # noqa: E731
    for k, p in zip(range(1, 5), (0.05, 0.25, 0.45, 0.25)):
        assert freq("cohen_grade", k) == pytest.approx(p, abs=0.01)
    for k, p in zip(range(1, 5), (0.62, 0.28, 0.08, 0.02)):
        assert freq("vessels", k) == pytest.approx(p, abs=0.01)
    for k, p in zip(range(1, 4), (0.25, 0.40, 0.35)):
        assert freq("displacement", k) == pytest.approx(p, abs=0.01)
    assert np.mean(x[:, COL["carbamazepine"]]) == pytest.approx(0.45, abs=0.01)
    assert np.median(x[:, COL["duration_years"]]) == pytest.approx(4.0, rel=0.05)
    assert np.median(x[:, COL["amr_amplitude_uv"]]) == pytest.approx(200.0, rel=0.05)
    assert np.mean(x[:, COL["retraction_mm"]]) == pytest.approx(9.0, abs=0.1)
    rho = lambda a, b: stats.spearmanr(x[:, COL[a]], x[:, COL[b]])[0]  # noqa: E731
    assert rho("duration_years", "cohen_grade") > 0.2
    assert rho("cohen_grade", "carbamazepine") > 0.2
    assert rho("vessels", "retraction_mm") > 0.15
    assert rho("vessels", "displacement") < -0.1
    assert abs(rho("duration_years", "retraction_mm")) < 0.03


def test_a_large_cohort_recovers_the_stated_effects_and_directions():
    x, y = synthetic_cohort(40_000, 3)
    pipe = fit_pipeline(x, y)
    est = pipe.named_steps["logreg"].coef_[0] / pipe.named_steps["scaler"].scale_
    truth = describe()["effects_log_odds_per_unit"]
    for name, b in zip(FEATURE_NAMES, est):
        assert b == pytest.approx(truth[name], rel=0.15), name
    up = ["duration_years", "cohen_grade", "carbamazepine", "vessels", "amr_amplitude_uv", "retraction_mm"]
    assert all(truth[n] > 0 for n in up) and truth["displacement"] < 0


def test_tuned_to_the_published_figures_at_n157():
    prevalence, aucs = [], []
    for seed in range(SEEDS):
        x, y = synthetic_cohort(157, 1000 + seed)
        prevalence.append(y.mean())
        aucs.append(roc_auc_score(y, predict_proba(fit_pipeline(x, y), x)))
    print(f"\nn=157 over {SEEDS} seeds: persistence {np.mean(prevalence):.3f}, apparent AUC {np.mean(aucs):.3f}")
    assert np.mean(prevalence) == pytest.approx(0.217, abs=0.02)
    assert np.mean(aucs) == pytest.approx(0.93, abs=0.015)


def test_outcomes_can_be_redrawn_for_given_patients():
    x, _ = synthetic_cohort(2000, 4)
    rng = np.random.default_rng(0)
    y_again = DEFAULT.outcomes(x, rng)
    assert abs(y_again.mean() - DEFAULT.probability(x).mean()) < 0.03
    stronger = CohortGenerator(effect_scale=2.0)
    assert roc_auc_score(stronger.outcomes(x, rng), stronger.probability(x)) > roc_auc_score(y_again, DEFAULT.probability(x))


def test_bad_n_is_refused():
    with pytest.raises(ValueError, match="n must be at least 1; got 0"):
        synthetic_cohort(0, 1)
