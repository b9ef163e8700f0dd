"""The card against fresh patients: fit on a study-sized synthetic cohort, score ≥ 10,000 new ones.

Short form: three training seeds with a shorter bootstrap (the procedure is the shipped one, only the
resample counts are smaller). Long form: AMRWATCH_SIMULATION_SEEDS="0 1 2 … 9" with the full bootstrap
(the README's table is `python -m amrwatch.study.simulation`). The fresh AUC and calibration slope are
recomputed here with sklearn and statsmodels, not taken from the module under test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score

from amrwatch.study.simulation import fresh_patients, simulate
from amrwatch.study.training import TrainingSettings

SEEDS = [int(s) for s in os.environ.get("AMRWATCH_SIMULATION_SEEDS", "1 2 3").split()]
LONG = "AMRWATCH_SIMULATION_SEEDS" in os.environ
SETTINGS = TrainingSettings() if LONG else TrainingSettings(bootstrap_resamples=60, shrinkage_resamples=100,
                                                            nested_shrinkage_resamples=10)


@pytest.fixture(scope="module")
def fresh():
    x, y = fresh_patients(10_000, 0)
    assert len(y) == 10_000
    return x, y


@pytest.mark.parametrize("seed", SEEDS)
def test_the_card_predicts_performance_on_fresh_patients(seed, fresh):
    xf, yf = fresh
    r = simulate(seed, settings=SETTINGS, fresh_x=xf, fresh_y=yf)
    print(f"\nseed {seed}: corrected AUC {r['corrected_auc']:.3f} vs fresh {r['fresh_auc']:.3f}; "
          f"fresh slope {r['fresh_slope']:.2f}; shrinkage {r['shrinkage']:.2f}; "
          f"sens at low corrected {r['corrected_sens_low']:.2f} vs fresh {r['fresh_sens_low']:.2f}")
    assert abs(r["corrected_auc"] - r["fresh_auc"]) <= 0.03
    assert 0.8 <= r["fresh_slope"] <= 1.2
    assert r["fresh_n"] >= 10_000


def test_simulation_figures_match_sklearn_and_statsmodels(fresh, tmp_path):
    from amrwatch.study.training import train
    from amrwatch.services.predictor.model import LoadedModel

    xf, yf = fresh
    train(tmp_path, synthetic_n=157, seed=SEEDS[0], settings=SETTINGS, echo=None)
    model = LoadedModel.load(tmp_path / "model.onnx", tmp_path / "model_card.json")
    p = np.asarray(model.probabilities(xf), dtype=float)  # the runtime's own ONNX scoring
    r = simulate(SEEDS[0], settings=SETTINGS, fresh_x=xf, fresh_y=yf)
    assert r["fresh_auc"] == pytest.approx(roc_auc_score(yf, p), abs=1e-4)  # float32 graph vs float64 card
    lp = np.log(p / (1 - p))
    slope = sm.GLM(yf, sm.add_constant(lp), family=sm.families.Binomial()).fit().params[1]
    assert r["fresh_slope"] == pytest.approx(slope, abs=1e-3)
