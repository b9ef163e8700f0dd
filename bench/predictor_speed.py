"""Predictor: inference latency per prediction (target p99 ≤ 100 µs).

Baseline in the same run: onnxruntime's `run` on a preallocated float32 row,
i.e. the model alone; ours adds validation of the seven factors, the feature
vector and the prediction body the service publishes.
"""

from __future__ import annotations

import time

import numpy as np

from amrwatch.services.predictor.features import FEATURE_NAMES
from amrwatch.services.predictor.model import LoadedModel

N = 10_000


def _inputs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{
        "duration_years": float(rng.uniform(0.2, 30)), "cohen_grade": int(rng.integers(1, 5)),
        "carbamazepine": bool(rng.integers(0, 2)), "vessels": int(rng.integers(1, 5)),
        "amr_amplitude_uv": float(rng.uniform(20, 1500)), "retraction_mm": float(rng.uniform(2, 25)),
        "displacement": int(rng.integers(1, 4)),
    } for _ in range(n)]


def _pct(a: list[float]) -> tuple[float, float, float]:
    x = np.asarray(a) * 1e6
    return float(np.percentile(x, 50)), float(np.percentile(x, 99)), float(x.max())


def run() -> str:
    model = LoadedModel.load()
    rows = _inputs(N)
    for r in rows[:200]:  # warm up
        model.prediction_body(r)
    ours = []
    for r in rows:
        t = time.perf_counter()
        model.prediction_body(r)
        ours.append(time.perf_counter() - t)
    x = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
    sess, name, out = model._session, model._input_name, model._output_name
    bare = []
    for r in rows:
        x[0] = [float(r[k]) for k in FEATURE_NAMES]
        t = time.perf_counter()
        sess.run([out], {name: x})
        bare.append(time.perf_counter() - t)
    o, b = _pct(ours), _pct(bare)
    verdict = "met" if o[1] <= 100 else f"missed by {o[1] - 100:.0f} µs"
    return "\n".join([
        "## Predictor inference",
        "",
        f"{N:,} predictions of random valid patients with the shipped model (sha256 {model.sha256[:12]}…).",
        "",
        "| path | p50 µs | p99 µs | max µs | p99 / bare |",
        "|---|---:|---:|---:|---:|",
        f"| onnxruntime `run` alone (baseline) | {b[0]:.1f} | {b[1]:.1f} | {b[2]:.0f} | 1.0 |",
        f"| `prediction_body`: validate factors + vector + run + body | {o[0]:.1f} | {o[1]:.1f} | {o[2]:.0f} | "
        f"{o[1] / b[1]:.1f}× |",
        "",
        f"Target p99 ≤ 100 µs per prediction: {verdict}. Decision latency (a sweep's frame → the decision it "
        "triggers, on the bus) is in the end-to-end section.",
        "",
    ])


if __name__ == "__main__":
    print(run())
