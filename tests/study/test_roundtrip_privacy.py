"""The whole loop through the real command line — outcome edit, export cohort, train --csv,
report — on a registry where one patient's hospital number is planted in the pseudonym map;
afterwards no output, log or file in the data directory contains it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amrwatch.study.cohort_table import build_cohort
from amrwatch.registry.pseudonyms import PseudonymMap, default_identities_path
from amrwatch.registry.store import Registry

HOSPITAL_NUMBER = "MRN-4471-2209-QZ"


@dataclass
class Loop:
    root: Path
    data: Path
    out: Path
    logs: Path
    token: str
    session_id: str
    export_sha: str = ""
    report_seconds: float = 0.0
    stdout: dict[str, str] = field(default_factory=dict)


def _run(loop: Loop, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMRWATCH_DATA": str(loop.data), "AMRWATCH_ACTOR": "dr_test", "PYTHONUNBUFFERED": "1"}
    env.pop("AMRWATCH_MODEL_DIR", None)
    p = subprocess.run([sys.executable, "-m", "amrwatch", *args], env=env, capture_output=True, text=True,
                       timeout=120)
    (loop.logs / f"{name}.log").write_text(p.stdout + p.stderr)
    loop.stdout[name] = p.stdout
    assert p.returncode == 0, f"amrwatch {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def loop(study, tmp_path_factory) -> Loop:
    root = tmp_path_factory.mktemp("loop")
    data = root / "data"
    shutil.copytree(study.data, data)
    out, logs = root / "out", root / "logs"
    out.mkdir()
    logs.mkdir()
    with PseudonymMap.beside(data) as pmap:
        token = pmap.token_for(HOSPITAL_NUMBER, actor="clerk")
    with Registry.in_data_dir(data) as reg:
        sid = next(r.session_id for r in build_cohort(reg).rows if r.label == 1)
        reg.update_session(sid, actor="clerk", patient_token=token)
    lp = Loop(root, data, out, logs, token, sid)
    _run(lp, "edit", "outcome", "edit", sid, "--timepoint", "1w", "--complication", "hearing_loss")
    _run(lp, "list", "outcome", "list", sid, "--all")
    _run(lp, "list-json", "outcome", "list", sid, "--json")
    p = _run(lp, "export", "export", "cohort", str(out / "cohort.csv"))
    lp.export_sha = p.stdout.split("sha256 ")[1].split()[0]
    _run(lp, "train", "train", "--csv", str(out / "cohort.csv"), "--out", str(out / "model"))
    t = time.perf_counter()
    _run(lp, "report", "report", "--out", str(out / "report"), "--model", str(out / "model"))
    lp.report_seconds = time.perf_counter() - t
    _run(lp, "report-default-dir", "report")
    return lp


def _every_output(loop: Loop) -> list[Path]:
    return [p for base in (loop.out, loop.logs, loop.data) for p in sorted(base.rglob("*")) if p.is_file()]


def test_the_hospital_number_appears_in_no_output_log_or_data_file(loop: Loop):
    identities = default_identities_path(loop.data)
    assert HOSPITAL_NUMBER.encode() in identities.read_bytes()  # planted where it belongs: outside DATA_DIR
    assert loop.data.resolve() not in identities.resolve().parents
    files = _every_output(loop)
    kinds = {p.suffix for p in files}
    assert {".csv", ".html", ".json", ".png", ".onnx", ".log", ".sqlite"} <= kinds, kinds
    needles = [HOSPITAL_NUMBER.encode(), HOSPITAL_NUMBER.encode("utf-16-le"), HOSPITAL_NUMBER.lower().encode()]
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle not in blob, f"{path} contains the hospital number"


def test_the_patient_token_stays_in_the_registry(loop: Loop):
    for path in _every_output(loop):
        if path.name.startswith("registry.sqlite"):
            continue
        assert loop.token.encode() not in path.read_bytes(), f"{path} contains the patient token"


def test_export_train_report_closes_the_loop(loop: Loop):
    card = json.loads((loop.out / "model" / "model_card.json").read_text())
    assert card["synthetic"] is False and card["training_data"]["source"] == "csv"
    assert card["training_data"]["sha256"] == loop.export_sha
    report = json.loads((loop.out / "report" / "report.json").read_text())["results"]
    v = report["validation"]
    assert v["model_sha256"] == card["model_sha256"] and v["trained_on_this_export"] is True
    assert v["n"] == card["n"] == card["training_data"]["rows_used"]
    # The report's own model and the retrained card are the same logistic fit.
    for mine, theirs in zip(report["multivariable"]["odds_ratios"], card["odds_ratios"]):
        assert mine["odds_ratio"] == pytest.approx(theirs["odds_ratio"], rel=1e-5)
    page = (loop.out / "report" / "report.html").read_text(encoding="utf-8")
    assert "trained on exactly this registry" in page
    assert "hearing_loss" in (loop.out / "cohort.csv").read_text().split(loop.session_id)[1].splitlines()[0]
    default = list((loop.data / "reports").glob("report-*/report.html"))
    assert len(default) == 1 and "SYNTHETIC REGISTRY" in default[0].read_text(encoding="utf-8")
    meta = json.loads((loop.out / "report" / "report.json").read_text())["meta"]
    print(f"amrwatch report (CLI, {meta['sessions_in_registry']} sessions, incl. start-up): "
          f"{loop.report_seconds:.1f} s")  # speed is measured by bench/report_speed.py, not asserted here
