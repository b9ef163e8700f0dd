"""The platform archived with a session's settings, and how a re-run elsewhere is told apart."""

from __future__ import annotations

import importlib.metadata
import platform as _platform

from amrwatch import provenance
from amrwatch.proto.messages import ServiceSettings
from amrwatch.audit.compare import normalise


def test_platform_names_the_libraries_that_compute_the_numbers():
    here = provenance.platform()
    assert here["numpy"] == importlib.metadata.version("numpy")
    assert here["numba"] == importlib.metadata.version("numba")
    assert here["python"] == _platform.python_version() and here["machine"] == _platform.machine()
    assert here["cpu"]
    # It fits the message it travels in.
    body = normalise("service_settings", ServiceSettings.body_for("analyzer", {"k": 1}, here))
    assert body["platform"] == here


def test_differences_name_what_moved_and_nothing_else():
    here = {"numpy": "2.4.6", "cpu": "AMD EPYC", "python": "3.11.7"}
    assert provenance.differences(dict(here), here) == []
    moved = provenance.differences({"numpy": "2.3.0", "cpu": "Intel Xeon", "python": "3.11.7"}, here)
    assert moved == ["cpu Intel Xeon → AMD EPYC", "numpy 2.3.0 → 2.4.6"]
    assert provenance.differences({}, {"numba": "0.68.1"}) == ["numba ? → 0.68.1"]
