"""proto holds every range and vocabulary once: bodies, the factor table, stage subsets, the unchecked constructor."""

from __future__ import annotations

import datetime as dt
import typing

import pytest
from amrwatch.proto import factors as F
from amrwatch.proto.codec import describe, encode
from amrwatch.proto.messages import (
    BODY_BY_TYPE,
    BY_TYPE,
    PERIOD_STAGES,
    STAGE_ORDER,
    SURGICAL_STAGES,
    AmrState,
    AmrStateBody,
    FactorValues,
    SimTruthBody,
    message_of,
    unchecked,
    validate_body,
)
from pydantic import ValidationError

ENVELOPE = dict(session_id="S1", seq=3, publisher="analyzer", instance="0123abcd",
                ts_utc=dt.datetime(2026, 12, 3, 8, tzinfo=dt.UTC))
STATE = dict(channel="MENT", direction="ZYG", state="disappeared", previous_state="present", stage="decompression",
             stimulus_index=41, pct_of_baseline=3.5)


def test_each_message_is_its_body_plus_the_envelope():
    assert set(BODY_BY_TYPE) == set(BY_TYPE)
    for t, cls in BY_TYPE.items():
        body = BODY_BY_TYPE[t]
        assert issubclass(cls, body) and body.TOPIC == t
        assert set(body.model_fields) == cls.body_fields(), t


def test_validate_body_checks_a_body_without_an_envelope_and_names_the_field_and_range():
    ok = validate_body("factors", {"factors": {"cohen_grade": 3}, "source": "operator"})
    assert ok.factors.given() == {"cohen_grade": 3}
    with pytest.raises(ValidationError) as err:
        validate_body("factors", {"factors": {"cohen_grade": 7}, "source": "operator"})
    text = describe(err.value, BODY_BY_TYPE["factors"])
    assert "factors.cohen_grade" in text and "1 to 4" in text and "got 7" in text
    with pytest.raises(ValidationError, match="at least one of the seven factors"):
        validate_body("factors", {"factors": {}, "source": "operator"})
    with pytest.raises(KeyError):
        validate_body("no_such_type", {})


def test_message_of_gives_the_bytes_the_message_built_whole_gives():
    whole = AmrState(type="amr_state", schema_version=1, **ENVELOPE, **STATE)
    wrapped = message_of(validate_body("amr_state", STATE), **ENVELOPE)
    assert encode(wrapped) == encode(whole)


def test_unchecked_bodies_equal_validated_ones_defaults_and_field_order_included():
    make = unchecked(AmrStateBody)
    fast = make(**STATE)  # since_* left out: filled with their defaults, in the model's order
    slow = AmrStateBody(**STATE)
    assert fast == slow and fast.model_dump_json() == slow.model_dump_json()
    assert list(fast.fields()) == list(AmrStateBody.model_fields)
    again = make(**dict(reversed(list(slow.fields().items()))))  # every field, another order
    assert again == slow
    with pytest.raises(TypeError, match="required field 'channel' is missing"):
        make(**{k: v for k, v in STATE.items() if k != "channel"})
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['chanel'\]"):
        make(**STATE, chanel="x")
    assert validate_body("amr_state", fast.fields()) == fast


def test_the_factor_table_is_what_the_message_and_its_schema_allow():
    assert tuple(FactorValues.model_fields) == F.FACTOR_NAMES
    schema = FactorValues.model_json_schema()["properties"]
    kinds = {"float": float, "int": int, "bool": bool}
    for f in F.FACTORS:
        inner = [a for a in typing.get_args(FactorValues.model_fields[f.name].annotation) if a is not type(None)]
        assert typing.get_origin(inner[0]) in (None, typing.Annotated) and \
            (typing.get_args(inner[0]) or (inner[0],))[0] is kinds[f.kind], f.name
        if f.kind == "bool":
            continue
        number = next(b for b in schema[f.name]["anyOf"] if b["type"] != "null")
        assert (number["minimum"], number["maximum"]) == (f.min, f.max), f.name
        assert f.range_text() in schema[f.name]["description"]
        with pytest.raises(ValidationError):
            FactorValues(**{f.name: f.max + 1})


def test_stage_subsets_are_slices_of_the_stage_order():
    assert PERIOD_STAGES == tuple(s for s in STAGE_ORDER if s not in ("decompression_complete", "end"))
    assert SURGICAL_STAGES[0] == "incision" and SURGICAL_STAGES[-1] == "closure"
    assert "baseline" not in SURGICAL_STAGES and "end" not in SURGICAL_STAGES
    from amrwatch.services.acquirer.sim.config import TIMED_STAGES
    from amrwatch.services.acquirer.sim.scenario import STAGE_DURATIONS_S

    assert TIMED_STAGES == PERIOD_STAGES and tuple(STAGE_DURATIONS_S) == PERIOD_STAGES


def test_the_ground_truth_record_is_defined_once():
    from amrwatch.services.acquirer import source
    from amrwatch.services.acquirer.sim import stream

    assert source.Truth is SimTruthBody
    assert not hasattr(stream, "SimTruth"), "the simulator builds proto's SimTruthBody"
