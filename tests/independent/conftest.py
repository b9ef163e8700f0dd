from __future__ import annotations

import pytest

from .files import recording


@pytest.fixture(scope="session")
def case_file(tmp_path_factory):
    """case_file(name, writer=None) → path of the written recording (once per session)."""
    return lambda name, writer=None: recording(tmp_path_factory, name, writer=writer)
