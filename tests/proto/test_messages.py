"""Each message: a good example validates, and each kind of bad input is refused by name."""

import datetime as dt
import json
import math

import pytest
from pydantic import ValidationError

from amrwatch.proto.codec import describe
from amrwatch.proto.messages import BY_TYPE, FactorValues, Factors, Montage

from .examples import BODIES, MONTAGE, envelope, example


def test_every_type_has_an_example():
    assert sorted(BODIES) == sorted(BY_TYPE)


@pytest.mark.parametrize("type_", sorted(BODIES))
def test_good_example_validates_from_json(type_):
    msg = example(type_)
    again = BY_TYPE[type_].model_validate_json(msg.model_dump_json())
    assert again.model_dump() == msg.model_dump()


@pytest.mark.parametrize("type_", sorted(BODIES))
def test_extra_field_refused(type_):
    data = json.loads(example(type_).model_dump_json())
    data["patient_name"] = "Jane Doe"
    with pytest.raises(ValidationError) as err:
        BY_TYPE[type_].model_validate_json(json.dumps(data))
    assert "patient_name" in describe(err.value)


@pytest.mark.parametrize("type_", sorted(BODIES))
@pytest.mark.parametrize("field", ["seq", "session_id", "ts_utc", "schema_version"])
def test_envelope_field_required(type_, field):
    data = json.loads(example(type_).model_dump_json())
    del data[field]
    if field == "session_id" and type_ in ("alarm", "heartbeat"):
        pass  # still required as a key (null allowed), so deleting it must fail too
    with pytest.raises(ValidationError) as err:
        BY_TYPE[type_].model_validate_json(json.dumps(data))
    assert field in describe(err.value)


def _first_float_field(type_):
    data = json.loads(example(type_).model_dump_json())
    for k, v in data.items():
        if isinstance(v, float):
            return data, k
    return data, None


WITH_FLOATS = [t for t in sorted(BODIES) if _first_float_field(t)[1] is not None]


def test_nan_refused_inside_nested_and_free_form_fields():
    for type_, path in (("factors", ("factors", "duration_years")), ("decision", ("evidence", "probability")),
                        ("session_start", ("montage", "sampling_rate_hz"))):
        data = json.loads(example(type_).model_dump_json())
        data[path[0]][path[1]] = "__NAN__"
        text = json.dumps(data).replace('"__NAN__"', "NaN")
        with pytest.raises(ValidationError):
            BY_TYPE[type_].model_validate_json(text)


@pytest.mark.parametrize("type_", WITH_FLOATS)
def test_nan_and_infinity_refused(type_):
    data, key = _first_float_field(type_)
    for bad in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(data).replace(json.dumps({key: data[key]})[1:-1], f'"{key}": {bad}')
        assert bad in text
        with pytest.raises(ValidationError):
            BY_TYPE[type_].model_validate_json(text)


def test_negative_seq_and_wrong_version_refused():
    data = json.loads(example("stage").model_dump_json())
    for key, bad in (("seq", -1), ("schema_version", 2), ("type", "stimulus")):
        d = dict(data, **{key: bad})
        with pytest.raises(ValidationError) as err:
            BY_TYPE["stage"].model_validate_json(json.dumps(d))
        assert key in describe(err.value)


def test_timestamp_must_be_utc():
    data = json.loads(example("stage").model_dump_json())
    data["ts_utc"] = "2026-11-24T09:00:00+01:00"
    with pytest.raises(ValidationError) as err:
        BY_TYPE["stage"].model_validate_json(json.dumps(data))
    assert "UTC" in describe(err.value)
    data["ts_utc"] = "2026-11-24T09:00:00"
    with pytest.raises(ValidationError):
        BY_TYPE["stage"].model_validate_json(json.dumps(data))


def test_unknown_stage_refused_naming_value():
    data = json.loads(example("stage").model_dump_json())
    data["stage"] = "coffee_break"
    with pytest.raises(ValidationError) as err:
        BY_TYPE["stage"].model_validate_json(json.dumps(data))
    text = describe(err.value)
    assert "stage" in text and "coffee_break" in text and "decompression" in text


@pytest.mark.parametrize(
    "field,bad,bounds",
    [("cohen_grade", 5, "1 to 4"), ("vessels", 0, "1 to 4"), ("displacement", 4, "1 to 3"),
     ("duration_years", -1.0, "0.0 to 60.0"), ("retraction_mm", 41.0, "0.0 to 40.0"),
     ("amr_amplitude_uv", 9000.0, "0.0 to 5000.0")],
)
def test_factor_out_of_range_names_field_range_and_value(field, bad, bounds):
    with pytest.raises(ValidationError) as err:
        FactorValues(**{field: bad})
    text = describe(err.value, FactorValues)
    assert field in text and bounds in text and repr(bad) in text


def test_factors_message_needs_at_least_one_factor():
    with pytest.raises(ValidationError) as err:
        Factors(**envelope("factors"), factors={}, source="operator")
    assert "at least one" in str(err.value)


def test_strings_are_not_coerced():
    with pytest.raises(ValidationError):
        FactorValues.model_validate_json('{"cohen_grade": "3"}')
    with pytest.raises(ValidationError):
        FactorValues.model_validate_json('{"carbamazepine": "yes"}')


def test_sizes_are_bounded():
    too_many = dict(MONTAGE, channels=[{"name": f"C{i}", "muscle": "mentalis", "direction": "ZYG"} for i in range(257)])
    with pytest.raises(ValidationError):
        Montage(**too_many)
    with pytest.raises(ValidationError):
        BY_TYPE["decision"](**envelope("decision"), **dict(BODIES["decision"], rationale="x" * 1001))
    with pytest.raises(ValidationError):
        BY_TYPE["decision"](**envelope("decision"),
                            **dict(BODIES["decision"], evidence={f"k{i}": i for i in range(65)}))


def test_duplicate_channel_names_refused():
    dup = dict(MONTAGE, channels=[MONTAGE["channels"][0], MONTAGE["channels"][0]])
    with pytest.raises(ValidationError) as err:
        Montage(**dup)
    assert "MENT" in str(err.value)


def test_recording_channels_follow_direction():
    m = Montage(**MONTAGE)
    assert m.recording_channels("ZYG") == ["MENT"]
    assert m.recording_channels("MAR") == ["OOCUL"]
    assert not math.isnan(m.sampling_rate_hz)
    assert isinstance(example("stage").ts_utc, dt.datetime)


def test_service_settings_hash_must_match_the_settings():
    data = json.loads(example("service_settings").model_dump_json())
    data["settings"]["disappear_k"] = 3  # edited after hashing
    with pytest.raises(ValidationError) as e:
        BY_TYPE["service_settings"].model_validate_json(json.dumps(data))
    text = describe(e.value, BY_TYPE["service_settings"])
    assert "settings_sha256" in text and "is not the SHA-256 of the settings" in text, text
