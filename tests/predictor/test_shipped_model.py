"""The model in the repository: current, loadable, synthetic-marked, and right for the scenarios."""

import json

from amrwatch.services.predictor.model import DEFAULT_CARD, DEFAULT_DIR, DEFAULT_MODEL, LoadedModel
from amrwatch.study.training import SCENARIO_PATIENTS, train


def test_shipped_files_are_what_training_produces_today(tmp_path):
    """Stale files fail here: retrain with `amrwatch train --synthetic 157 --out services/predictor/model`."""
    card = train(tmp_path, synthetic_n=157, seed=0, echo=None)  # full bootstrap, as shipped
    assert card["settings"]["bootstrap_resamples"] >= 200
    for name in ("model.onnx", "model_card.json"):
        assert (tmp_path / name).read_bytes() == (DEFAULT_DIR / name).read_bytes(), f"{name} is stale"


def test_shipped_model_loads_and_is_marked_synthetic():
    m = LoadedModel.load()
    card = json.loads(DEFAULT_CARD.read_text(encoding="utf-8"))
    assert m.model_path == DEFAULT_MODEL
    assert m.synthetic and card["notice"] == "synthetic — not for clinical use"
    assert card["training_data"]["n"] == 157 and card["training_data"]["seed"] == 0
    assert "synthetic — not for clinical use" in m.describe()


def test_scenario_patients_land_in_their_bands():
    m = LoadedModel.load()
    low = dict(SCENARIO_PATIENTS["low_risk"], amr_amplitude_uv=150.0)
    high = dict(SCENARIO_PATIENTS["high_risk"], amr_amplitude_uv=600.0)
    assert m.predict(low)[1] == "low"
    assert m.predict(high)[1] == "high"
    # the analyzer measures the amplitude itself; the bands must not hinge on the exact figure
    assert all(m.predict(dict(low, amr_amplitude_uv=a))[1] == "low" for a in (50.0, 300.0, 500.0))
    assert all(m.predict(dict(high, amr_amplitude_uv=a))[1] == "high" for a in (200.0, 400.0, 1000.0))


def test_scenario_patients_match_the_simulator():
    from amrwatch.services.acquirer.sim.scenario import HIGH_RISK, LOW_RISK

    for name, p in (("low_risk", LOW_RISK), ("high_risk", HIGH_RISK)):
        ours = {k: v for k, v in SCENARIO_PATIENTS[name].items() if k != "amr_amplitude_uv"}
        assert ours == {**p.preoperative(), "retraction_mm": p.retraction_mm, "displacement": p.displacement}
