"""The committed JSON Schemas are current and describe what the codec sends."""

import json

import jsonschema
import pytest

from amrwatch.proto import schema
from amrwatch.proto.codec import encode

from .examples import BODIES, example


def test_schemas_are_not_stale():
    stale = schema.stale()
    assert not stale, f"regenerate with `python -m amrwatch.proto.schema`: {stale}"


def test_stale_detection_works(tmp_path):
    schema.write(tmp_path)
    assert schema.stale(tmp_path) == []
    p = tmp_path / "stage.json"
    p.write_text(p.read_text().replace('"decompression"', '"decompresion"'))
    assert schema.stale(tmp_path) == ["stage.json"]


@pytest.mark.parametrize("type_", sorted(BODIES))
def test_wire_header_validates_against_committed_schema(type_):
    sch = json.loads((schema.SCHEMA_DIR / f"{type_}.json").read_text())
    header = json.loads(encode(example(type_))[1])
    jsonschema.validate(header, sch)
    header["unexpected"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(header, sch)
