"""A real Prometheus scrapes the running stack and sees every service's metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from amrwatch.proto.messages import BY_TYPE

from ..conftest import cannot_run_here, free_port
from .stack import start_stack, wait_metrics

PROMETHEUS = shutil.which("prometheus")


def query(port: int, q: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None:
        cannot_run_here("Debian's prometheus is not installed (scripts/install-test-servers, run by `make test`, "
                        "installs it as root)")
    procs = []

    def start(targets: dict[str, int]) -> int:
        port = free_port()
        jobs = "\n".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['127.0.0.1:{p}']" for name, p in targets.items()
        )
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}\n")
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log))
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_prometheus_sees_every_service(procs, stack_env, prometheus):
    ports = start_stack(procs, stack_env)
    prom = prometheus(ports)
    deadline = time.monotonic() + 60
    while True:
        ups = {r["metric"]["job"]: r["value"][1] for r in query(prom, "up")} if _ready(prom) else {}
        published = {r["metric"]["job"] for r in query(prom, "amrwatch_messages_published_total > 0")} \
            if ups else set()
        frames = query(prom, 'amrwatch_messages_published_total{job="acquirer",type="emg_frame"} > 0') if ups else []
        if set(ups) == set(ports) and all(v == "1" for v in ups.values()) and published >= set(ports) - {"bus"} \
                and frames:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"targets up: {ups}; publishing: {published}")
        time.sleep(1)
    info = query(prom, "amrwatch_service_info")
    assert {r["metric"]["job"] for r in info} >= set(ports) - {"bus"}
    if "predictor" in ports:
        model = query(prom, "amrwatch_model_info")
        assert model and model[0]["metric"]["synthetic"] == "true" and len(model[0]["metric"]["sha256"]) == 64


def _ready(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
        return True
    except OSError:
        return False


def test_metric_names_follow_prometheus_conventions(procs, stack_env):
    ports = start_stack(procs, stack_env)
    for svc, port in ports.items():
        text = wait_metrics(port, svc)
        kinds = {}
        for line in text.splitlines():
            if line.startswith("# TYPE amrwatch_"):
                _, _, name, kind = line.split()
                kinds[name.removesuffix("_total")] = kind
                if kind == "histogram":
                    assert name.endswith("_seconds"), f"{svc}: histogram {name} must be in seconds"
        assert kinds, f"{svc} exposes no amrwatch_ metrics"
        for line in text.splitlines():
            if not line.startswith("amrwatch_"):
                continue
            sample = re.split(r"[{ ]", line, maxsplit=1)[0]
            for base, kind in kinds.items():
                if kind == "counter" and sample.startswith(base + "_"):
                    assert sample in (base + "_total", base + "_created"), f"{svc}: counter sample {sample}"
            if "{" in line:
                labels = line[line.index("{"):line.index("}")]
                # a message type's name ("session_start") is a label value, not an identifier
                labels = re.sub(r'type="({})"'.format("|".join(BY_TYPE)), 'type=""', labels)
                assert not re.search(r"session|patient|token", labels), f"{svc}: identifying label in {line}"
