"""Shared fixtures: one small trained model per test session (bootstrap kept short)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amrwatch.study.training import TrainingSettings, train

#: Tests use a short bootstrap; the shipped card uses the full default count.
QUICK = TrainingSettings(bootstrap_resamples=20)


@pytest.fixture(scope="session")
def quick() -> TrainingSettings:
    return QUICK


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("model")
    card = train(out, synthetic_n=157, seed=3, settings=QUICK, echo=None)
    return out, card
