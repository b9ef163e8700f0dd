"""A refused control request names the field once (no doubled path) and both bounds of its range."""

import pytest
from pydantic import ValidationError

from amrwatch.proto.control import CONTROL_REQUEST, describe_request


def refusal(raw: str) -> str:
    with pytest.raises(ValidationError) as e:
        CONTROL_REQUEST.validate_json(raw)
    return describe_request(e.value)


def test_the_path_is_not_doubled_and_both_bounds_are_named():
    text = refusal('{"op": "factors", "factors": {"cohen_grade": 9}}')
    assert text.startswith("factors.cohen_grade:") and "factors.factors" not in text
    assert "allowed 1 to 4" in text and "got 9" in text
    text = refusal('{"op": "factors", "factors": {"retraction_mm": -2}}')
    assert "allowed 0.0 to 40.0" in text and "got -2" in text


def test_an_unknown_op_names_the_known_ones():
    assert "'mark', 'factors', 'session', 'retransmit'" in refusal('{"op": "launch"}')
