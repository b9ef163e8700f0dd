"""Start every registered service as a process, each with its own metrics port."""

from __future__ import annotations

import time
import urllib.request

from amrwatch.cli.commands import STACK_SERVICES

from ..conftest import free_port


def registered_services() -> list[str]:
    """The services `amrwatch up` starts (its explicit table)."""
    return list(STACK_SERVICES)


def start_stack(procs, env, *, acquirer_args=("--speed", "1", "--loop")) -> dict[str, int]:
    """bus + every registered service + acquirer; returns service → metrics port."""
    ports = {}
    for svc in ["bus", *registered_services(), "acquirer"]:
        ports[svc] = free_port()
        env[f"AMRWATCH_METRICS_PORT_{svc.upper()}"] = str(ports[svc])
    if "monitor" in ports:
        env["AMRWATCH_MONITOR_PORT"] = str(free_port())
    procs.start("bus")
    for svc in registered_services():
        procs.start(svc)
    procs.start("acquirer", *acquirer_args, "--wait-for", ",".join(registered_services()))
    for svc, port in ports.items():
        wait_metrics(port, svc)
    return ports


def wait_metrics(port: int, what: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: no /metrics on port {port}") from None
            time.sleep(0.2)


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
