"""The batched fitter, the shrinkage procedure and the bootstrap, recomputed independently (statsmodels, scipy,
sklearn) to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize
from sklearn.metrics import roc_auc_score

from amrwatch.study import logistic as lg
from amrwatch.study.cohort import DEFAULT
from amrwatch.study.training import TrainingSettings, _cutoff_values, _design, fit_procedure, ml_or_firth


@pytest.fixture(scope="module")
def data():
    x, y = DEFAULT.eligible_cohort(157, 21)
    z = _design(x, x.mean(axis=0), x.std(axis=0))
    w = np.random.default_rng(4).multinomial(len(y), np.full(len(y), 1 / len(y)), size=3).astype(float)
    return z, y, w


def test_weighted_ml_fits_match_statsmodels(data):
    z, y, w = data
    beta = lg.fit(z, y, w, firth=False)
    for b in range(len(w)):
        ref = sm.GLM(y, z, family=sm.families.Binomial(), freq_weights=w[b]).fit(tol=1e-12).params
        np.testing.assert_allclose(beta[b], ref, atol=1e-6)


def test_firth_maximises_the_penalised_likelihood_and_weights_equal_copies(data):
    z, y, w = data

    def neg_penalised(beta, zz, yy):
        eta = zz @ beta
        ll = np.sum(yy * eta - np.logaddexp(0, eta))
        p = 1 / (1 + np.exp(-eta))
        _, logdet = np.linalg.slogdet(zz.T @ (zz * (p * (1 - p))[:, None]))
        return -(ll + 0.5 * logdet)

    zz, yy = np.repeat(z, w[0].astype(int), axis=0), np.repeat(y, w[0].astype(int))
    ref = optimize.minimize(neg_penalised, np.zeros(z.shape[1]), args=(zz, yy), method="BFGS",
                            options={"gtol": 1e-10, "maxiter": 5000}).x
    ours = lg.fit(z, y, w[:1], firth=True)[0]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(lg.fit(zz, yy, firth=True)[0], ours, atol=1e-8)


def test_firth_is_finite_where_maximum_likelihood_does_not_exist():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = (x[:, 0] > 0).astype(int)  # perfectly separated
    z = np.c_[np.ones(40), x]
    beta, separated = ml_or_firth(z, y, np.ones((1, 40)))
    assert separated[0] and np.all(np.isfinite(beta)) and np.abs(beta).max() < 15


def test_calibration_auc_and_intercept_match_the_libraries(data):
    z, y, w = data
    lp = lg.predict_lp(z, lg.fit(z, y, w, firth=False)) * 0.7 + 0.2
    ci, cs = lg.calibration(y, lp, w)
    for b in range(len(w)):
        slope = sm.GLM(y, sm.add_constant(lp[b]), family=sm.families.Binomial(), freq_weights=w[b]).fit(tol=1e-12)
        citl = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp[b],
                      freq_weights=w[b]).fit(tol=1e-12)
        assert cs[b] == pytest.approx(slope.params[1], abs=1e-6)
        assert ci[b] == pytest.approx(citl.params[0], abs=1e-6)
        assert lg.auc(y, lp[b], w[b])[0] == pytest.approx(roc_auc_score(y, lp[b], sample_weight=w[b]), abs=1e-9)
    tied = np.round(lp[0], 0)  # ties count half, as sklearn does
    assert lg.auc(y, tied)[0] == pytest.approx(roc_auc_score(y, tied), abs=1e-12)


def test_the_procedure_shrinks_the_ml_slopes_and_refits_the_intercept(data):
    z, y, _ = data
    fits = fit_procedure(z, y, np.ones((1, len(y))), 30, np.random.default_rng(0))
    s = fits["shrinkage"][0]
    ml = sm.Logit(y, z).fit(disp=0, tol=1e-12).params
    assert 0 < s < 1
    np.testing.assert_allclose(fits["coef"][0, 1:], s * ml[1:], atol=1e-6)
    offset = z[:, 1:] @ (s * ml[1:])
    a = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=offset).fit(tol=1e-12).params[0]
    assert fits["coef"][0, 0] == pytest.approx(a, abs=1e-6)
    p = lg.expit(fits["coef"][0, 0] + offset)
    assert p.mean() == pytest.approx(y.mean(), abs=1e-9), "mean prediction equals the event rate"


def test_weighted_cutoffs_equal_the_cutoffs_of_the_expanded_data(data):
    z, y, w = data
    p = lg.expit(lg.predict_lp(z, lg.fit(z, y, w[:1], firth=False))[0])
    s = TrainingSettings()
    k = w[0].astype(int)
    low, high = _cutoff_values(np.repeat(y, k), np.repeat(p, k), s)
    assert _cutoff_values(y, p, s, w[0]) == (low, high)
    yy, pp = np.repeat(y, k), np.repeat(p, k)
    assert np.mean(pp[yy == 1] >= low) >= 0.95 and np.mean(pp[yy == 0] < high) >= 0.90


def test_riley_sample_size_from_the_likelihood_ratio(data):
    import math

    from amrwatch.study.training import riley_sample_size

    z, y, _ = data
    res = sm.Logit(y, z).fit(disp=0, tol=1e-12)
    n = len(y)
    r2 = 1 - math.exp(-2 * (res.llf - res.llnull) / n)
    r2_max = 1 - math.exp(2 * res.llnull / n)
    got = riley_sample_size(z, y, res.params)
    assert got["cox_snell_r2_apparent"] == pytest.approx(r2, rel=1e-3)
    assert got["cox_snell_r2_conservative"] == pytest.approx(0.15 * r2_max, rel=1e-3)
    want = math.ceil(7 / ((0.9 - 1) * math.log(1 - 0.15 * r2_max / 0.9)))
    assert got["patients_needed"] == want


def test_the_comparison_model_is_validated_on_the_same_resamples_and_not_shipped(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from amrwatch.study.training import GBM_PARAMS, train

    s = TrainingSettings(bootstrap_resamples=12, shrinkage_resamples=20, nested_shrinkage_resamples=5,
                         comparison_model=True)
    card = train(tmp_path, synthetic_n=157, seed=4, settings=s, echo=None)
    cmp_ = card["performance"]["comparison_model"]
    assert cmp_["shipped"] is False and cmp_["resamples"] == 12
    x, y = DEFAULT.eligible_cohort(157, 4)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    p = HistGradientBoostingClassifier(**GBM_PARAMS).fit(z, y).predict_proba(z)[:, 1]
    assert cmp_["auc"]["apparent"] == pytest.approx(roc_auc_score(y, p), rel=1e-5)
    assert cmp_["auc"]["estimate"] < cmp_["auc"]["apparent"], "trees overfit: the optimism is positive"
    assert "comparison_model" not in card["coefficients"]
