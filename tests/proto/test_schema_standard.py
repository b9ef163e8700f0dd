"""The schemas are plain JSON Schema 2020-12, as a strict validator reads them: the dialect declared,
no keyword outside the standard vocabularies (pydantic's OpenAPI `discriminator`, `x-` extensions),
and `required` as the protocol page says (every field of a bus message is sent, null when empty)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from amrwatch.proto import schema
from amrwatch.proto.codec import encode

from .examples import BODIES, example

#: The keywords of the JSON Schema 2020-12 core, applicator, unevaluated, validation, format-annotation,
#: content and meta-data vocabularies.
KEYWORDS = {
    "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment", "$defs",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "prefixItems", "items", "contains",
    "properties", "patternProperties", "additionalProperties", "propertyNames", "unevaluatedItems",
    "unevaluatedProperties", "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains",
    "minContains", "maxProperties", "minProperties", "required", "dependentRequired", "format",
    "contentEncoding", "contentMediaType", "contentSchema", "title", "description", "default", "deprecated",
    "readOnly", "writeOnly", "examples",
}
_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
_DATA = ("const", "enum", "default", "examples")


def keywords(node, path="#"):
    """(path, keyword) of every key used where a schema is expected."""
    if isinstance(node, bool):
        return
    assert isinstance(node, dict), path
    for key, value in node.items():
        yield path, key
        if key in _MAPS:
            for name, sub in value.items():
                yield from keywords(sub, f"{path}/{key}/{name}")
        elif key in _DATA or key in ("required", "type", "dependentRequired"):
            continue
        elif isinstance(value, dict) and key not in ("$vocabulary",):
            yield from keywords(value, f"{path}/{key}")
        elif isinstance(value, list) and key in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for i, sub in enumerate(value):
                yield from keywords(sub, f"{path}/{key}/{i}")


FILES = sorted(p.name for p in schema.SCHEMA_DIR.glob("*.json"))


@pytest.mark.parametrize("name", FILES)
def test_schema_is_standard_2020_12(name):
    sch = json.loads((schema.SCHEMA_DIR / name).read_text())
    assert sch["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(sch)
    unknown = sorted({f"{p}: {k}" for p, k in keywords(sch) if k not in KEYWORDS})
    assert not unknown, unknown


@pytest.mark.parametrize("type_", sorted(BODIES))
def test_every_field_of_a_bus_message_is_required_and_sent(type_):
    sch = json.loads((schema.SCHEMA_DIR / f"{type_}.json").read_text())
    assert sorted(sch["required"]) == sorted(sch["properties"])
    header = json.loads(encode(example(type_))[1])
    Draft202012Validator(sch, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(header)
    field = next(k for k in sch["properties"] if k not in ("type", "seq"))
    del header[field]
    with pytest.raises(jsonschema.ValidationError, match="required"):
        Draft202012Validator(sch).validate(header)


def test_a_control_request_is_told_apart_without_discriminator():
    sch = json.loads((schema.SCHEMA_DIR / "control_request.json").read_text())
    v = Draft202012Validator(sch)
    v.validate({"op": "mark", "stage": "decompression"})
    v.validate({"op": "session"})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"op": "mark", "stage": "nonsense"})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"op": "launch"})
