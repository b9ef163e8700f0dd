"""One whole-stack replay per case per test session, shared by every test that asks about it."""

from __future__ import annotations

import pytest

from tests.independent.files import recording, truth

from .stack import Run, run_case


@pytest.fixture(scope="session")
def stack_run(tmp_path_factory):
    """stack_run(case) → the `Run` of that independent recording through `amrwatch up` (replayed once)."""
    cache: dict[str, Run | BaseException] = {}

    def get(name: str) -> Run:
        if name not in cache:
            path = recording(tmp_path_factory, name)
            try:
                run = run_case(name, path, tmp_path_factory.mktemp(f"stack-{name}"))
                run.truth = truth(path)
                print(f"\n[{name}] whole stack: {run.wall_s:.1f} s wall ({path.name}, {len(run.events)} events)")
                cache[name] = run
            except BaseException as err:  # noqa: BLE001 — every test of this case reports the same failure
                cache[name] = err
        got = cache[name]
        if isinstance(got, BaseException):
            raise got
        return got

    return get
