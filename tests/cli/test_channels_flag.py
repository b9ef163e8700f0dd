"""`--channels N`: the simulator's montage widened for load tests (bench/ runs 3..64 channels)."""

from __future__ import annotations

import pytest

from amrwatch.cli import build_parser
from amrwatch.cli.stack import source_argv, source_factory


def _source(*argv: str):
    args = build_parser().parse_args(["acquirer", *argv])
    return args, source_factory(args)()


def test_wider_montage_keeps_the_amr_channels_and_adds_extras() -> None:
    _, src = _source("--channels", "16", "--sample-index-channel")
    names = src.montage.channel_names()
    assert len(names) == 17
    assert names[:3] == ["MENT", "OORIS", "OOCUL"]
    assert names[3:16] == [f"EXTRA{i:02d}" for i in range(1, 14)]
    assert names[-1] == "SAMPLE_INDEX"
    # The AMR pathways are unchanged: only the three default channels record a direction.
    assert src.montage.recording_channels("ZYG") == ["MENT", "OORIS"]
    assert src.montage.recording_channels("MAR") == ["OOCUL"]
    chunk = src.read(400)
    assert chunk.samples.shape == (17, 400)
    assert chunk.samples[3:16].std() > 0  # background EMG, not zeros


def test_default_is_the_three_channel_montage_and_passes_nothing_on() -> None:
    args, src = _source()
    assert len(src.montage.channels) == 3
    assert "--channels" not in source_argv(args)


def test_amrwatch_up_passes_the_width_to_its_acquirer() -> None:
    up = build_parser().parse_args(["up", "--channels", "64", "--sample-index-channel"])
    argv = source_argv(up)
    assert argv[argv.index("--channels") + 1] == "64"
    _, src = _source(*argv)
    assert len(src.montage.channels) == 65


@pytest.mark.parametrize("bad", ["2", "244", "many", "-1"])
def test_out_of_range_width_is_a_usage_error_naming_flag_range_and_value(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["acquirer", "--channels", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--channels" in err and "3 to 243" in err and repr(bad) in err
