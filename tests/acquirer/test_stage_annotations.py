"""Stage annotations as people write them parse to the stage names of proto (EDF+ / LSL markers)."""

from __future__ import annotations

import pytest

from amrwatch.proto.messages import STAGE_ORDER
from amrwatch.services.acquirer.annotations import parse, stage_text


@pytest.mark.parametrize("text,stage", [
    ("stage decompression_complete", "decompression_complete"),
    ("Decompression complete", "decompression_complete"),
    ("Stage: Decompression-Complete", "decompression_complete"),
    ("stage_closure", "closure"),
    ("CSF release", "csf_release"),
    ("decompression completed", "decompression_complete"),
    ("Comment/Decompression done", "decompression_complete"),
])
def test_spellings_of_a_stage(text, stage):
    assert parse(text) == ("stage", {"stage": stage})


@pytest.mark.parametrize("text", ["stage", "stagedecompression", "lunch break", "stage tea", ""])
def test_other_text_is_not_a_stage(text):
    assert parse(text) is None


def test_what_export_writes_reads_back_for_every_stage():
    for stage in STAGE_ORDER:
        assert parse(stage_text(stage)) == ("stage", {"stage": stage})
