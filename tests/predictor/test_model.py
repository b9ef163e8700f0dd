"""Loading the model at run time: every inconsistency refuses to start, with a clear message."""

import json
import shutil

import numpy as np
import pytest

from amrwatch.services.predictor.features import FactorError
from amrwatch.services.predictor.model import LoadedModel, ModelInvalid, band_for
from amrwatch.study.training import train


@pytest.fixture
def model_dir(trained, tmp_path):
    src, _ = trained
    d = tmp_path / "m"
    shutil.copytree(src, d)
    return d


def load(d):
    return LoadedModel.load(d / "model.onnx", d / "model_card.json")


def edit_card(d, change):
    card = json.loads((d / "model_card.json").read_text(encoding="utf-8"))
    change(card)
    (d / "model_card.json").write_text(json.dumps(card), encoding="utf-8")


def test_a_good_model_loads_and_predicts(model_dir, trained):
    m = load(model_dir)
    card = trained[1]
    assert m.sha256 == card["model_sha256"] and m.synthetic and m.notice == "synthetic — not for clinical use"
    assert m.cutoffs == (card["cutoffs"]["low"], card["cutoffs"]["high"])
    g = card["golden_vectors"][3]
    p, band = m.predict(g["inputs"])
    assert abs(p - g["probability"]) <= 1e-5 and band == g["band"]
    assert "synthetic — not for clinical use" in m.describe()


def test_prediction_refuses_bad_or_missing_factors(model_dir, trained):
    m = load(model_dir)
    inputs = dict(trained[1]["golden_vectors"][0]["inputs"])
    with pytest.raises(FactorError, match=r"field vessels must be in \[1, 4\] \(count\); got 9"):
        m.predict(dict(inputs, vessels=9))
    del inputs["displacement"]
    with pytest.raises(FactorError, match="field displacement is missing"):
        m.predict(inputs)


def test_corrupted_model_bytes(model_dir):
    blob = bytearray((model_dir / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (model_dir / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(ModelInvalid, match="has SHA-256 .* but the card .* expects .*corrupted"):
        load(model_dir)


def test_garbage_that_matches_its_card_is_still_refused(model_dir):
    import hashlib

    garbage = b"\x08\x07" + b"not an onnx model" * 10
    (model_dir / "model.onnx").write_bytes(garbage)
    edit_card(model_dir, lambda c: c.update(model_sha256=hashlib.sha256(garbage).hexdigest()))
    with pytest.raises(ModelInvalid, match="is not a valid ONNX model"):
        load(model_dir)


def test_wrong_sha_in_card(model_dir):
    edit_card(model_dir, lambda c: c.update(model_sha256="0" * 64))
    with pytest.raises(ModelInvalid, match="expects 0000000000"):
        load(model_dir)


def test_card_of_another_model_fails_the_golden_vectors(model_dir, tmp_path, quick):
    other = tmp_path / "other"
    train(other, synthetic_n=157, seed=4, settings=quick, echo=None)
    shutil.copy(other / "model.onnx", model_dir / "model.onnx")
    sha = json.loads((other / "model_card.json").read_text())["model_sha256"]
    edit_card(model_dir, lambda c: c.update(model_sha256=sha))  # someone "fixed" the hash by hand
    with pytest.raises(ModelInvalid, match="golden vector .* the card and the model do not belong together"):
        load(model_dir)


def test_card_io_mismatch(model_dir):
    edit_card(model_dir, lambda c: c["onnx"]["outputs"][1].update(name="probability"))
    with pytest.raises(ModelInvalid, match="has outputs .*its card says"):
        load(model_dir)


def test_card_feature_order_mismatch(model_dir):
    def swap(c):
        c["features"][0], c["features"][1] = c["features"][1], c["features"][0]
    edit_card(model_dir, swap)
    with pytest.raises(ModelInvalid, match="lists features .*cohen_grade', 'duration_years.* in that order"):
        load(model_dir)


def test_card_range_mismatch(model_dir):
    edit_card(model_dir, lambda c: c["features"][5].update(max=80.0))
    with pytest.raises(ModelInvalid, match=r"feature retraction_mm is float in \[0, 80\] mm"):
        load(model_dir)


def test_synthetic_flag_must_agree_with_the_model(model_dir):
    edit_card(model_dir, lambda c: c.update(synthetic=False, notice=None))
    with pytest.raises(ModelInvalid, match="says synthetic=true but its card says False"):
        load(model_dir)


def test_missing_and_malformed_files(model_dir):
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ModelInvalid, match="model file .*model.onnx does not exist; train one"):
        load(model_dir)
    (model_dir / "model_card.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelInvalid, match="is not valid JSON"):
        load(model_dir)
    (model_dir / "model_card.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelInvalid, match="incomplete or malformed: card_version: Field required"):
        load(model_dir)


def test_bands_are_half_open():
    assert band_for(0.1, 0.1, 0.3) == "intermediate"
    assert band_for(np.nextafter(0.1, 0), 0.1, 0.3) == "low"
    assert band_for(0.3, 0.1, 0.3) == "high"


def test_prediction_body_is_a_valid_prediction_message(model_dir, trained):
    import datetime as dt

    from amrwatch.proto.messages import Prediction

    m = load(model_dir)
    g = trained[1]["golden_vectors"][1]
    body = m.prediction_body(g["inputs"])
    msg = Prediction.model_validate({
        "type": "prediction", "schema_version": 1, "session_id": "s1", "seq": 0, "publisher": "predictor",
        "instance": "0123abcd", "ts_utc": dt.datetime.now(dt.UTC), **body,
    })
    assert msg.band == g["band"] and abs(msg.probability - g["probability"]) <= 1e-5
    assert msg.model_sha256 == m.sha256 and msg.notice == "synthetic — not for clinical use"
    assert list(msg.inputs) == list(g["inputs"]) and msg.inputs["carbamazepine"] is g["inputs"]["carbamazepine"]
