"""compose.yaml and the Dockerfile, checked offline (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amrwatch import config
from amrwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} is not installed"))


def test_compose_matches_the_compose_spec_schema():
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                        str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_passes_hadolint():
    r = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


#: The cart's microservices (always on); the optional profiles' jobs are checked on their own below.
AMR_SERVICES = {n: s for n, s in SERVICES.items() if s.get("image", "").startswith("amrwatch") and not s.get("profiles")}


def test_every_microservice_has_a_compose_service_running_its_command():
    assert set(AMR_SERVICES) >= set(config.SERVICES)
    parser = build_parser()
    for name, svc in AMR_SERVICES.items():
        cmd = [os.path.expandvars(c.replace("${AMRWATCH_SOURCE:-sim}", "sim")
                                  .replace("${AMRWATCH_SCENARIO:-disappears-after-decompression}",
                                           "disappears-after-decompression")) for c in svc["command"]]
        assert cmd[0] == name, f"compose service {name} runs {cmd[0]}"
        args = parser.parse_args(cmd)  # exits (fails the test) if the code has no such command/flag
        assert args.command == name


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_endpoints_match_the_code_defaults():
    env = SERVICES["bus"]["environment"]
    assert _port(env["AMRWATCH_BUS_BIND_IN"]) == _port(config.DEFAULTS["bus_bind_in"][1])
    assert _port(env["AMRWATCH_BUS_BIND_OUT"]) == _port(config.DEFAULTS["bus_bind_out"][1])
    for name, svc in AMR_SERVICES.items():
        e = svc["environment"]
        assert _port(e["AMRWATCH_BUS_IN"]) == _port(config.DEFAULTS["bus_in"][1]), name
        assert _port(e["AMRWATCH_BUS_OUT"]) == _port(config.DEFAULTS["bus_out"][1]), name
        assert _port(e["AMRWATCH_CONTROL"]) == _port(config.DEFAULTS["control"][1]), name
    acq = SERVICES["acquirer"]["environment"]
    assert _port(acq["AMRWATCH_CONTROL_BIND"]) == _port(config.DEFAULTS["control_bind"][1])
    published = {p.rsplit(":", 1)[1] for s in AMR_SERVICES.values() for p in s.get("ports", [])}
    assert published >= {"5551", "5552"}
    assert all(p.startswith("${AMRWATCH_PUBLISH_ADDR:-127.0.0.1}:") for s in SERVICES.values()
               for p in s.get("ports", [])), "ports are published on loopback unless told otherwise"


def test_hardening_and_health():
    for name, svc in AMR_SERVICES.items():
        assert svc["read_only"] is True, name
        assert not str(svc["user"]).startswith("0"), name
        assert svc["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert svc["healthcheck"]["test"][1:4] == ["amrwatch", "health", name], name
    assert any(v.endswith(":/var/lib/amrwatch") for v in SERVICES["recorder"]["volumes"])
    assert "archive" in COMPOSE["volumes"]
    wait = SERVICES["acquirer"]["command"][SERVICES["acquirer"]["command"].index("--wait-for") + 1]
    assert set(wait.split(",")) == set(config.SERVICES) - {"bus", "acquirer", "monitor"}  # the page never holds up acquisition
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and 'ENTRYPOINT ["amrwatch"]' in dockerfile
    # The analyzer's kernels need a writable cache on the read-only root: the tmpfs.
    cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", dockerfile)
    assert cache, "the Dockerfile must point NUMBA_CACHE_DIR at a writable place"
    for name in ("analyzer", "recorder"):  # the recorder's verify re-runs the analyzer
        assert any(cache.group(1).startswith(t.split(":")[0]) for t in SERVICES[name]["tmpfs"]), name


def test_health_command_follows_the_heartbeat(procs, stack_env):
    procs.start("bus")
    ok = subprocess.run([sys.executable, "-m", "amrwatch", "health", "bus", "--timeout", "10"], env=stack_env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "bus: ok" in ok.stdout, ok.stderr
    missing = subprocess.run([sys.executable, "-m", "amrwatch", "health", "analyzer", "--timeout", "2"],
                             env=stack_env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr


CURVE = yaml.safe_load((ROOT / "compose.curve.yaml").read_text())
PROM = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())


def test_curve_override_is_valid_and_covers_every_socket_owner():
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                        str(ROOT / "compose.curve.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    amr = set(AMR_SERVICES)  # the registry and sync jobs (postgres profile) own no socket and export no metrics
    assert set(CURVE["services"]) == amr
    for name, svc in CURVE["services"].items():
        assert svc["secrets"] == ["amrwatch_keys"], name
        assert svc["environment"]["AMRWATCH_KEYS"] == "/run/secrets/amrwatch_keys"


def test_prometheus_profile_scrapes_every_metrics_port():
    prom = SERVICES["prometheus"]
    assert prom["profiles"] == ["metrics"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in PROM["scrape_configs"]}
    amr = set(AMR_SERVICES)  # the registry and sync jobs (postgres profile) own no socket and export no metrics
    assert set(targets) == amr
    for name, target in targets.items():
        host, port = target.split(":")
        assert host == name and int(port) == config.METRICS_PORTS[name]


def test_every_service_has_resource_limits():
    for name, svc in SERVICES.items():
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"], name


def test_postgres_profile_migrates_then_syncs_into_the_server():
    pg, reg, sync = SERVICES["postgres"], SERVICES["registry"], SERVICES["sync"]
    assert pg["profiles"] == reg["profiles"] == sync["profiles"] == ["postgres"]
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert reg["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert sync["depends_on"]["registry"]["condition"] == "service_completed_successfully"
    assert reg["restart"] == "no"
    url = reg["environment"]["AMRWATCH_REGISTRY"]
    assert url == sync["environment"]["AMRWATCH_CENTRAL_REGISTRY"] and url.startswith("postgresql://")
    assert "@postgres:5432/" + pg["environment"]["POSTGRES_DB"] in url
    assert "AMRWATCH_REGISTRY" not in sync["environment"]  # the cart keeps its own SQLite registry
    parser = build_parser()
    for svc in (reg, sync):  # the commands exist, with these flags
        assert parser.parse_args(svc["command"]).func is not None
    assert any(v.endswith(":/var/lib/amrwatch") for v in sync["volumes"])
    assert sync["environment"]["AMRWATCH_CENTRAL_ARCHIVE"] in {v.split(":")[1] for v in sync["volumes"]}
    # no password in the file: the server refuses to initialise until AMRWATCH_PG_PASSWORD is set
    assert pg["environment"]["POSTGRES_PASSWORD"] == "${AMRWATCH_PG_PASSWORD:-}"
