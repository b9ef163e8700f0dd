"""The report over a multi-site registry: per site, pooled, and with site as a stratum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amrwatch.study.sites import site_calibration, stratified_auc


def test_within_site_auc_ignores_between_site_differences():
    # Site A: low risk scores, site B: high; within each site the scores carry no information (all tied).
    # Pooled, the model looks excellent because B has more persistence; within sites it is a coin toss.
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    strata = np.array(["A"] * 4 + ["B"] * 4)
    auc, pairs = stratified_auc(y, p, strata)
    assert pairs == 1 * 3 + 3 * 1
    assert auc == pytest.approx(0.5)
    # pooled concordance, by hand: 4 events x 4 non-events = 16 pairs; A's event ties A's 3 non-events (1.5),
    # each of B's 3 events beats A's 3 non-events and ties B's one (3.5 each): (1.5 + 10.5) / 16
    pos, neg = p[y == 1], p[y == 0]
    pooled = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / 16
    assert pooled == pytest.approx(0.75) and pooled > auc


@pytest.mark.parametrize("shift, significant", [(0.0, False), (1.5, True)])
def test_site_calibration_detects_a_site_whose_outcomes_the_model_underestimates(shift, significant):
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.6, 1200)
    strata = np.array(["north", "south", "east"] * 400)
    lp = np.log(p / (1 - p)) + np.where(strata == "east", shift, 0.0)
    y = (rng.uniform(size=p.size) < 1 / (1 + np.exp(-lp))).astype(int)
    res = site_calibration(y, p, strata)
    assert res["available"] and res["df"] == 2
    assert (res["p_value"] < 0.001) if significant else (res["p_value"] > 0.01), res
    assert res["reference_site"] == "east"  # sorted first; the others' intercepts are relative to it
    for other in ("north", "south"):
        assert res["site_intercept_shift"][other] == pytest.approx(-shift, abs=0.5)


def test_report_over_a_three_site_registry(migrated_url: str, tmp_path: Path):
    from amrwatch.registry.store import Registry
    from amrwatch.study.report import make_report
    from amrwatch.study.synthetic_registry import generate

    sizes = {"north": 90, "south": 60, "east": 40}
    for seed, (site, n) in enumerate(sizes.items()):
        generate(tmp_path / "unused", n, seed=seed + 1, registry=migrated_url, site=site)
    with Registry(migrated_url) as reg:
        assert {s.site for s in reg.list()} == set(sizes)
    res = make_report(tmp_path / "archive-root", tmp_path / "out", registry=migrated_url)
    doc = json.loads(res.json.read_text())
    sites = doc["results"]["sites"]
    assert sites["n_sites"] == 3
    assert sum(e["patients"] for e in sites["sites"].values()) == res.patients == doc["meta"]["patients"]
    for site, n in sizes.items():  # never-detected AMRs and nothing else leave the table: patients <= sessions
        e = sites["sites"][site]
        assert 0 < e["patients"] <= n and e["labelled"] <= e["patients"]
        v = e["validation"]
        assert v["available"] and v["n"] <= e["labelled"] and 0 <= v["auc"]["value"] <= 1
    assert sites["pooled"]["n"] == sum(e["validation"]["n"] for e in sites["sites"].values())
    assert sites["stratified"]["auc_within_site"]["available"]
    cal = sites["stratified"]["calibration_by_site"]
    assert cal["available"] and cal["df"] == 2
    page = res.html.read_text()
    assert "<h2>By site</h2>" in page and "SYNTHETIC" in page and "north" in page and "pooled" in page
