"""JSON Schema for every message, generated from the models.

The files in proto/schemas/ are committed so that clients in other languages
can validate without Python; `python -m amrwatch.proto.schema` rewrites them
and a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .control import ArchiveReadRequest, ControlReply, ControlRequest
from .messages import BY_TYPE, EmgFrame

SCHEMA_DIR = Path(__file__).with_name("schemas")
#: Every schema declares the draft it is written in, so a validator does not guess.
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _standard(schema: dict, *, sent_whole: bool) -> dict:
    """Plain JSON Schema 2020-12: `$schema` declared, pydantic's OpenAPI `discriminator` dropped (the `const`
    on the tag already selects the branch; strict validators refuse unknown keywords), and with `sent_whole`
    every property of every object `required` — amrwatch always sends optional values as null, never
    omits them (the protocol page says so; a client may rely on it)."""

    def walk(node):
        if isinstance(node, dict):
            node.pop("discriminator", None)
            if sent_whole and node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node["required"] = sorted(node["properties"])
            for key, value in node.items():
                if key in ("properties", "$defs", "patternProperties"):
                    for sub in value.values():
                        walk(sub)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return {"$schema": DIALECT, **schema}


def generate() -> dict[str, str]:
    """file name → JSON text."""
    from pydantic import TypeAdapter

    out: dict[str, str] = {}
    for name, cls in BY_TYPE.items():
        schema = cls.model_json_schema()
        schema["$id"] = f"https://amrwatch.invalid/proto/schemas/{name}.json"
        comment = f"topic (first frame): {cls.TOPIC}"
        if cls is EmgFrame:
            comment += "; third frame: n_channels × n_samples little-endian float32 (µV), channel-major"
        schema["$comment"] = comment
        schema = _standard(schema, sent_whole=True)
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    req = _standard(TypeAdapter(ControlRequest).json_schema(), sent_whole=False)
    out["control_request.json"] = json.dumps(req, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    ar = ArchiveReadRequest.model_json_schema()
    ar["$id"] = "https://amrwatch.invalid/proto/schemas/archive_read_request.json"
    ar["$comment"] = "the request on the cart's archive read-out (the recorder's endpoint), not the control socket"
    out["archive_read_request.json"] = json.dumps(_standard(ar, sent_whole=False), indent=2, sort_keys=True,
                                                  ensure_ascii=False) + "\n"
    from .montage import MontageFile

    mf = MontageFile.model_json_schema()
    mf["$id"] = "https://amrwatch.invalid/proto/schemas/montage_file.json"
    mf["description"] = (MontageFile.__doc__ or "").strip() + (
        " The file given to --montage (YAML or JSON): see the README, 'Montage'.")
    mf = _standard(mf, sent_whole=False)
    out["montage_file.json"] = json.dumps(mf, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    out["control_reply.json"] = (
        json.dumps(_standard(ControlReply.model_json_schema(), sent_whole=True), indent=2, sort_keys=True,
                   ensure_ascii=False) + "\n"
    )
    return out


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files missing, different from the models, or no longer generated."""
    want = generate()
    problems = [n for n, text in want.items() if not (directory / n).is_file() or (directory / n).read_text() != text]
    problems += [p.name for p in directory.glob("*.json") if p.name not in want]
    return sorted(problems)


def write(directory: Path = SCHEMA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    want = generate()
    for p in directory.glob("*.json"):
        if p.name not in want:
            p.unlink()
    for name, text in want.items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    write()
    print(f"wrote {len(generate())} schemas to {SCHEMA_DIR}", file=sys.stderr)
