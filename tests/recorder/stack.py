"""Helpers for the recorder's live tests: a private stack, the registry polled, the CLI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from amrwatch.registry.store import REGISTRY_FILE, Registry, SessionRow

from ..conftest import ROOT, Procs, free_port


def private_env(tmp: Path) -> dict[str, str]:
    """As the `stack_env` fixture, for module-scoped stacks."""
    p_in, p_out, p_ctl = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        AMRWATCH_BUS_IN=f"tcp://127.0.0.1:{p_in}", AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{p_in}",
        AMRWATCH_BUS_OUT=f"tcp://127.0.0.1:{p_out}", AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{p_out}",
        AMRWATCH_CONTROL=f"tcp://127.0.0.1:{p_ctl}", AMRWATCH_CONTROL_BIND=f"tcp://127.0.0.1:{p_ctl}",
        AMRWATCH_DATA=str(tmp / "data"), PYTHONUNBUFFERED="1",
    )
    for svc in ("bus", "acquirer", "analyzer", "predictor", "recorder", "monitor"):
        env[f"AMRWATCH_METRICS_PORT_{svc.upper()}"] = "0"
    return env


def sessions(data: Path) -> list[SessionRow]:
    if not (data / REGISTRY_FILE).exists():
        return []
    with Registry.in_data_dir(data) as reg:
        return reg.list()


def wait_closed(data: Path, n: int, timeout: float = 60.0, procs: Procs | None = None,
                skip_corrupt: bool = False) -> list[SessionRow]:
    """The first `n` sessions (not counting corrupt ones, with `skip_corrupt`), once all are closed."""
    deadline = time.monotonic() + timeout
    rows: list[SessionRow] = []
    while time.monotonic() < deadline:
        rows = [r for r in sessions(data) if not (skip_corrupt and r.status == "corrupt")]
        if len(rows) >= n and all(r.status == "closed" for r in rows[:n]):
            return rows[:n]
        time.sleep(0.3)
    logs = procs.log("recorder")[-3000:] if procs else ""
    raise AssertionError(f"not {n} closed sessions within {timeout} s: {[(r.session_id, r.status) for r in rows]}"
                         f"\n{logs}")


def cli(env: dict[str, str], *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amrwatch", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def start_python_module(procs: Procs, module: str, *args: str, name: str) -> subprocess.Popen:
    """A `python -m tests...` helper process, stopped with the others."""
    log = open(procs.log_dir / f"{name}-{len(procs.procs)}.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", module, *args], env=procs.env, stdout=log,
                         stderr=subprocess.STDOUT, cwd=ROOT)
    procs.procs.append((name, p))
    return p
