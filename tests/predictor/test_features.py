import numpy as np
import pytest

from amrwatch.services.predictor.features import (
    FEATURE_NAMES,
    FactorCollector,
    FactorError,
    check_value,
    row_dict,
    to_vector,
    validate,
)

GOOD = dict(duration_years=5.0, cohen_grade=3, carbamazepine=True, vessels=2,
            amr_amplitude_uv=250.0, retraction_mm=9.5, displacement=2)


def test_feature_order_is_the_documented_one():
    assert FEATURE_NAMES == ("duration_years", "cohen_grade", "carbamazepine", "vessels",
                             "amr_amplitude_uv", "retraction_mm", "displacement")


def test_vector_follows_feature_order_regardless_of_dict_order():
    shuffled = dict(reversed(list(GOOD.items())))
    v = to_vector(shuffled)
    assert v.dtype == np.float32 and v.shape == (1, 7)
    assert v[0].tolist() == [5.0, 3.0, 1.0, 2.0, 250.0, 9.5, 2.0]
    assert row_dict(v[0]) == GOOD


@pytest.mark.parametrize("name,value,expected", [
    ("cohen_grade", 7, "field cohen_grade must be in [1, 4] (Cohen grade); got 7"),
    ("duration_years", -1.0, "field duration_years must be in [0, 60] (years); got -1"),
    ("amr_amplitude_uv", 6000.0, "field amr_amplitude_uv must be in [0, 5000] (µV); got 6000"),
    ("retraction_mm", 40.5, "field retraction_mm must be in [0, 40] (mm); got 40.5"),
    ("displacement", 0, "field displacement must be in [1, 3] (grade); got 0"),
    ("vessels", 2.5, "field vessels must be a whole number in [1, 4] (count); got 2.5"),
    ("duration_years", float("nan"), "field duration_years must be in [0, 60] (years); got nan"),
    ("carbamazepine", 1, "field carbamazepine must be true or false (yes/no); got 1"),
    ("cohen_grade", True, "field cohen_grade must be a number in [1, 4] (Cohen grade); got True"),
    ("retraction_mm", "6", "field retraction_mm must be a number in [0, 40] (mm); got '6'"),
])
def test_bad_values_name_field_range_unit_and_value(name, value, expected):
    with pytest.raises(FactorError) as err:
        check_value(name, value)
    assert str(err.value) == expected


def test_all_problems_reported_at_once_including_missing():
    bad = dict(GOOD, cohen_grade=9, vessels=0)
    del bad["retraction_mm"]
    with pytest.raises(FactorError) as err:
        validate(bad)
    msgs = err.value.problems
    assert len(msgs) == 3
    assert any(m.startswith("field cohen_grade must be in [1, 4]") for m in msgs)
    assert any(m.startswith("field vessels must be in [1, 4]") for m in msgs)
    assert "field retraction_mm is missing (cerebellar retraction depth, mm)" in msgs


def test_unknown_factor_is_refused():
    with pytest.raises(FactorError, match="unknown factor 'age'"):
        validate(dict(GOOD, age=50))


def test_integral_floats_are_accepted_as_ints():
    assert validate(dict(GOOD, cohen_grade=2.0))["cohen_grade"] == 2


def test_collector_reports_missing_and_keeps_previous_value_on_refusal():
    c = FactorCollector()
    assert c.complete() is None and c.missing() == list(FEATURE_NAMES)
    assert c.update({"duration_years": 3.0, "cohen_grade": 2, "carbamazepine": False, "vessels": 1,
                     "amr_amplitude_uv": None})
    assert c.missing() == ["amr_amplitude_uv", "retraction_mm", "displacement"]
    with pytest.raises(FactorError, match="retraction_mm must be in"):
        c.update({"retraction_mm": 99.0, "displacement": 2})
    assert "displacement" in c.missing(), "a refused update must not apply its other fields"
    assert c.update({"retraction_mm": 8.0, "displacement": 2, "amr_amplitude_uv": 150.0})
    assert not c.update({"retraction_mm": 8.0}), "same value is not a change"
    assert c.update({"retraction_mm": 9.0})
    assert c.complete()["retraction_mm"] == 9.0
