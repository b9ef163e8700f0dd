"""SimConfig.extra_channels: a wider montage (e.g. 16 channels) without changing the default channels."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from amrwatch.services.acquirer.sim.config import SimConfig
from amrwatch.services.acquirer.sim.stream import Simulator
from amrwatch.services.acquirer.simsource import SimSource


def test_extra_channels_widen_the_montage_and_leave_the_default_signal_alone():
    base = Simulator(SimConfig(time_scale=0.05, sample_index_channel=True), seed=3)
    wide = Simulator(SimConfig(time_scale=0.05, sample_index_channel=True, extra_channels=12), seed=3)
    assert [c.name for c in wide.channels] == ["MENT", "OORIS", "OOCUL"] + [f"EXTRA{i:02d}" for i in range(1, 13)] \
        + ["SAMPLE_INDEX"]
    a, b = base.read(30_000), wide.read(30_000)
    assert b.samples.shape == (16, 30_000)
    assert np.array_equal(a.samples[:3], b.samples[:3])  # the AMR channels are the same signal
    assert np.array_equal(b.samples[-1], np.arange(30_000, dtype=np.float32))
    extra = b.samples[3:15]
    assert abs(float(extra.std()) - 3.0) < 0.1  # background noise at noise_uv, no evoked response
    assert np.corrcoef(extra[0], extra[1])[0, 1] < 0.05  # independent channels
    assert [t.channel for t in a.truths] == [t.channel for t in b.truths]


def test_extra_channels_in_the_source_montage_are_emg_on_no_pathway():
    src = SimSource(time_scale=0.05, extra_channels=2)
    chans = {c.name: c for c in src.montage.channels}
    assert chans["EXTRA02"].kind == "emg" and chans["EXTRA02"].direction is None
    assert src.montage.recording_channels("ZYG") == ["MENT", "OORIS"]


def test_extra_channels_out_of_range_names_field_range_and_value():
    with pytest.raises(ValidationError, match=r"extra_channels must be between 0 and 240 channels; got 241"):
        SimConfig(extra_channels=241)
