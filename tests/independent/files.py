"""The recordings written once per test session and shared by every module that needs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cases import build
from .write import write_case

_CACHE: dict[tuple[str, str | None, int], Path] = {}


def recording(tmp_path_factory, name: str, *, writer: str | None = None, seed: int = 13) -> Path:
    """The file of case `name` (written by `writer`, the case's default if None), written on first use."""
    key = (name, writer, seed)
    if key not in _CACHE:
        out = tmp_path_factory.mktemp(f"{name}-{writer or 'default'}-{seed}")
        _CACHE[key] = write_case(build(name, seed), out, writer)
    return _CACHE[key]


def truth(path: Path) -> dict[str, Any]:
    """The truth written beside a recording."""
    return json.loads(path.with_name(path.stem + ".truth.json").read_text())
