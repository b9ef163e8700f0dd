"""`amrwatch registry migrate` and the outcome commands against a server registry, as a clinic workstation runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from amrwatch.registry.schema import HEAD
from amrwatch.registry.store import Registry


def amrwatch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amrwatch", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_migrate_then_outcomes_from_a_workstation(registry_url: str, tmp_path: Path, backend: str):
    env = {"AMRWATCH_DATA": str(tmp_path / "no-data-dir-here")}
    if backend == "postgresql":
        out = amrwatch("outcome", "list", "S1", "--registry", registry_url, env=env)
        assert out.returncode != 0
        assert f"Run: amrwatch registry migrate --registry '{registry_url}'" in out.stderr, out.stderr
    out = amrwatch("registry", "migrate", "--registry", registry_url, env=env)
    assert out.returncode == 0, out.stderr
    assert f"to schema revision {HEAD}" in out.stdout
    out = amrwatch("registry", "migrate", env={**env, "AMRWATCH_REGISTRY": registry_url})
    assert out.returncode == 0 and "nothing to do" in out.stdout, out.stdout + out.stderr

    with Registry(registry_url) as reg:
        reg.create_session("S1", actor="recorder", started_at="2026-03-02T08:00:00Z", source="sim")
    out = amrwatch("outcome", "add", "S1", "--timepoint", "3m", "--cohen-grade", "1", "--class", "improved",
                   "--actor", "dr_lee", env={**env, "AMRWATCH_REGISTRY": registry_url})
    assert out.returncode == 0, out.stderr
    out = amrwatch("outcome", "add", "S1", "--timepoint", "3m", "--cohen-grade", "0", "--actor", "dr_kim",
                   "--registry", registry_url, env=env)
    assert out.returncode != 0 and "already has a 3m outcome" in out.stderr and "outcome edit" in out.stderr
    out = amrwatch("outcome", "list", "S1", "--json", "--registry", registry_url, env=env)
    assert out.returncode == 0 and '"cohen_grade": 1' in out.stdout and out.stdout.count("\n") == 1


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path):
    from tests.conftest import free_port

    url = f"postgresql://amrwatch:s3cret@127.0.0.1:{free_port()}/registry?connect_timeout=3"
    out = amrwatch("registry", "migrate", "--registry", url)
    assert out.returncode != 0
    assert "s3cret" not in out.stderr and "cannot migrate postgresql://amrwatch:***@127.0.0.1" in out.stderr, out.stderr
