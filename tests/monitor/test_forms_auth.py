"""Operator input validation and the page's token, as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from amrwatch.proto.messages import STAGE_ORDER, FactorValues
from amrwatch.services.monitor.auth import COOKIE, check, cookie_header, cookie_value
from amrwatch.services.monitor.forms import FormError, form_spec, parse_ack, parse_factors, parse_stage
from amrwatch.services.monitor.settings import ServerSettings, TokenError, read_token_file, resolve_token

TOKEN = "s3cret-token-0123456789"


def test_the_form_offers_every_factor_with_the_contracts_range_and_a_unit():
    spec = {f["name"]: f for f in form_spec()}
    assert list(spec) == list(FactorValues.model_fields)
    schema = FactorValues.model_json_schema()["properties"]  # the contract as a client reads it
    for name, prop in schema.items():
        number = next((b for b in prop["anyOf"] if b["type"] in ("number", "integer")), None)
        if number is None:
            assert spec[name]["kind"] == "bool" and spec[name]["min"] is None
        else:
            assert (spec[name]["min"], spec[name]["max"]) == (number["minimum"], number["maximum"])
    assert spec["retraction_mm"]["unit"] == "mm" and spec["amr_amplitude_uv"]["unit"] == "µV"
    assert spec["duration_years"]["unit"] == "years" and spec["carbamazepine"]["kind"] == "bool"


def test_typed_factors_become_proto_values_and_empty_fields_are_not_given():
    v = parse_factors({"duration_years": "2,5", "cohen_grade": "3", "carbamazepine": "no", "vessels": "",
                       "retraction_mm": " 6.5 ", "displacement": "2"})
    assert v == FactorValues(duration_years=2.5, cohen_grade=3, carbamazepine=False, retraction_mm=6.5,
                             displacement=2)
    assert parse_factors({"vessels": 2}).given() == {"vessels": 2}


@pytest.mark.parametrize(
    "form, expected",
    [
        ({"cohen_grade": "5"}, "Preoperative severity (cohen_grade): must be between 1 and 4 grade; got '5'"),
        ({"cohen_grade": "2.5"}, "cohen_grade): must be a whole number between 1 and 4 grade; got '2.5'"),
        ({"retraction_mm": "deep"}, "Cerebellar retraction depth (retraction_mm): must be a number between 0 and 40 mm; "
                                    "got 'deep'"),
        ({"retraction_mm": "-1"}, "retraction_mm): must be between 0 and 40 mm; got '-1'"),
        ({"duration_years": "nan"}, "duration_years): must be a finite number between 0 and 60 years; got 'nan'"),
        ({"carbamazepine": "maybe"}, "Carbamazepine use (carbamazepine): must be yes or no; got 'maybe'"),
        ({"amr_amplitude_uv": "9000"}, "amr_amplitude_uv): must be between 0 and 5000 µV; got '9000'"),
        ({"displacement": "0"}, "Vessel displacement (displacement): must be between 1 and 3 grade; got '0'"),
        ({"weight": "70"}, "unknown field(s) ['weight']"),
        ({}, "enter at least one of the seven factors"),
        ({"vessels": "  "}, "enter at least one of the seven factors"),
    ],
)
def test_bad_factors_are_refused_naming_the_field_range_and_value(form, expected):
    with pytest.raises(FormError) as err:
        parse_factors(form)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(FormError) as err:
        parse_factors({"cohen_grade": "7", "vessels": "x", "displacement": "2"})
    assert len(err.value.problems) == 2


def test_stages_and_acknowledgements_are_checked():
    assert [parse_stage(s) for s in STAGE_ORDER] == list(STAGE_ORDER)
    with pytest.raises(FormError, match=r"stage: must be one of baseline, .*, end; got 'lunch'"):
        parse_stage("lunch")
    assert parse_ack({"alarm_key": "signal_lost", "operator": " dr_lee ", "note": ""}) == {
        "alarm_key": "signal_lost", "operator": "dr_lee", "note": None}
    with pytest.raises(FormError, match="alarm_key: must be the key of a raised alarm"):
        parse_ack({"operator": "x"})
    with pytest.raises(FormError, match="operator"):
        parse_ack({"alarm_key": "k", "operator": "Dr Lee; drop table"})


# --------------------------------------------------------------------------- auth


def test_without_a_token_everything_is_allowed():
    assert check(None, "/", "", {}).allowed


def test_bearer_header_cookie_and_login_link_are_accepted_only_with_the_right_token():
    assert check(TOKEN, "/api/snapshot", "", {"authorization": f"Bearer {TOKEN}"}).allowed
    assert not check(TOKEN, "/api/snapshot", "", {"authorization": "Bearer nope"}).allowed
    assert check(TOKEN, "/", "", {"cookie": f"other=1; {COOKIE}={cookie_value(TOKEN)}"}).allowed
    raw = check(TOKEN, "/", "", {"cookie": f"{COOKIE}={TOKEN}"})  # the token itself is not a valid cookie
    assert not raw.allowed and "no longer valid" in raw.reason
    login = check(TOKEN, "/replay", f"session=abc&token={TOKEN}", {})
    assert login.allowed and login.redirect == "/replay?session=abc"
    assert check(TOKEN, "/", f"token={TOKEN}", {}).redirect == "/"
    wrong = check(TOKEN, "/", "token=guess", {"cookie": f"{COOKIE}={cookie_value(TOKEN)}"})
    assert not wrong.allowed and "not this monitor's token" in wrong.reason
    bare = check(TOKEN, "/events", "", {})
    assert not bare.allowed and "needs its access token" in bare.reason


def test_the_cookie_carries_a_digest_not_the_token():
    header = cookie_header(TOKEN, secure=False)
    assert TOKEN not in header and "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header
    assert "Secure" in cookie_header(TOKEN, secure=True)
    assert cookie_value(TOKEN) != cookie_value(TOKEN + "x")


def test_token_comes_from_the_file_then_the_environment(tmp_path: Path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert resolve_token(f, {"AMRWATCH_MONITOR_TOKEN": "ignored-because-file-wins"}) == TOKEN
    assert resolve_token(None, {"AMRWATCH_MONITOR_TOKEN_FILE": str(f)}) == TOKEN
    assert resolve_token(None, {"AMRWATCH_MONITOR_TOKEN": " from-env-0123456789 "}) == "from-env-0123456789"
    assert resolve_token(None, {}) is None


@pytest.mark.parametrize("content, words", [("", "is empty"), ("two words\n", "one word"), (None, "cannot read")])
def test_unusable_token_files_are_refused_with_what_to_do(tmp_path: Path, content, words):
    f = tmp_path / "token"
    if content is not None:
        f.write_text(content)
    with pytest.raises(TokenError, match=words) as err:
        read_token_file(f)
    assert str(f) in str(err.value)


def test_a_short_token_is_refused_with_the_minimum_and_how_to_make_one():
    with pytest.raises(ValidationError) as err:
        ServerSettings(token="short")
    assert "at least 16 characters; got 5" in str(err.value) and "token_urlsafe" in str(err.value)
    with pytest.raises(ValidationError, match="port must be between 1 and 65535; got 70000"):
        ServerSettings(port=70000)
