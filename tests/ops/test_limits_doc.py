"""The README's size limits are the ones the sockets enforce."""

from __future__ import annotations

import re

from amrwatch.proto.codec import MAX_HEADER_BYTES, MAX_PART_BYTES
from amrwatch.control_server import ControlLimits

from ..conftest import ROOT


def test_the_readme_states_the_part_limits_as_enforced():
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"refuses message parts over (\d+) MiB \+ 1 KiB", text)
    assert m, "the README no longer states the part limit"
    assert int(m.group(1)) * 2**20 == MAX_PART_BYTES
    m = re.search(r"control socket parts over (\d+) KiB", text)
    assert m and int(m.group(1)) * 1024 == ControlLimits().max_request_bytes
    m = re.search(r"headers over (\d+) KiB", text)
    assert m and int(m.group(1)) * 1024 == MAX_HEADER_BYTES
