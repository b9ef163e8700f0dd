"""compose.hub.yaml, checked offline like compose.yaml (tests/deploy): valid against the compose spec, the
command parses, hardened like the cart's services, behind its profile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from amrwatch.cli import build_parser

from ..deploy.test_compose import tool

ROOT = Path(__file__).resolve().parents[2]


def test_hub_compose_is_valid_and_runs_the_hub_command():
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                        str(ROOT / "compose.hub.yaml")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    hub = yaml.safe_load((ROOT / "compose.hub.yaml").read_text())["services"]["hub"]
    assert hub["profiles"] == ["hub"]
    args = build_parser().parse_args(hub["command"])
    assert args.command == "hub" and args.config == "/etc/amrwatch-hub/rooms.toml"
    health = build_parser().parse_args(hub["healthcheck"]["test"][2:])
    assert health.action == "status" and health.page_only
    assert hub["read_only"] is True and hub["cap_drop"] == ["ALL"] and not str(hub["user"]).startswith("0")
    assert hub["deploy"]["resources"]["limits"]["memory"]
    assert all(p.startswith("${AMRWATCH_HUB_PUBLISH_ADDR:-127.0.0.1}:") for p in hub["ports"])
