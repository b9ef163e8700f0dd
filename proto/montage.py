"""The montage file: what each channel of a recording is, stated by the person who made it.

Recordings name their channels in a thousand ways (`L Mentalis`, `EMG1`,
`O.Oculi`). Without a montage file amrwatch recognises common spellings and
says for every channel what it took it as and why; with one (`--montage
FILE`, YAML or JSON, schema in proto/schemas/montage_file.json), the file
decides. A channel the file does not list is carried but not analysed, unless
`unlisted: recognise` asks for the label rules to apply to it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .messages import ChannelKind, Direction, Strict

Muscle = Literal["mentalis", "orbicularis_oris", "orbicularis_oculi", "other"]
Side = Literal["left", "right"]

#: The muscle whose lateral spread each direction is recorded at (docs/domain.md).
LATERAL_SPREAD_MUSCLES: dict[str, tuple[str, ...]] = {
    "ZYG": ("mentalis", "orbicularis_oris"),
    "MAR": ("orbicularis_oculi",),
}


class MontageChannel(Strict):
    label: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The channel's label exactly as the recording writes it (surrounding spaces ignored)."
    )
    kind: ChannelKind = Field(
        default="emg",
        description="emg: a muscle recording; trigger: stimulus pulses; aux: carried and archived, never "
        "analysed; sample_index: a counter proving no sample was lost.",
    )
    muscle: Muscle | None = Field(default=None, description="For emg channels: the recorded muscle.")
    side: Side | None = Field(default=None, description="For emg channels: the side of the face.")
    records: Direction | Literal["none"] | None = Field(
        default=None,
        description="For emg channels: the stimulated branch whose lateral spread this channel records "
        "(ZYG: zygomatic → mentalis/orbicularis oris; MAR: marginal mandibular → orbicularis oculi), or "
        "'none'. Defaults to the usual pairing for the muscle.",
    )
    direction: Direction | None = Field(
        default=None, description="For trigger channels: the direction its pulses stimulate (null: alternate)."
    )

    @model_validator(mode="after")
    def _fits_kind(self) -> MontageChannel:
        if self.kind != "emg" and (self.muscle or self.side or self.records):
            raise ValueError(f"channel {self.label!r}: muscle, side and records are for emg channels; "
                             f"this one is kind {self.kind!r}")
        if self.kind != "trigger" and self.direction:
            raise ValueError(f"channel {self.label!r}: direction is for trigger channels (use records for emg)")
        if self.kind == "emg" and self.muscle is None and self.records in (None,):
            raise ValueError(f"channel {self.label!r}: an emg channel needs its muscle or what it records "
                             "(records: ZYG | MAR | none)")
        return self

    def recorded_direction(self) -> str | None:
        """The direction whose lateral spread this channel records, or None."""
        if self.kind != "emg" or self.records == "none":
            return None
        if self.records is not None:
            return self.records
        for d, muscles in LATERAL_SPREAD_MUSCLES.items():
            if self.muscle in muscles:
                return d
        return None


class MontageFile(Strict):
    """A recording's montage, as its owner states it."""

    channels: Annotated[list[MontageChannel], Field(min_length=1, max_length=256)]
    unlisted: Literal["ignore", "recognise"] = Field(
        default="ignore",
        description="Channels of the recording the file does not list: carried but not analysed (ignore), "
        "or taken by the label rules (recognise).",
    )

    @model_validator(mode="after")
    def _unique(self) -> MontageFile:
        labels = [c.label.strip() for c in self.channels]
        dup = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
        if dup:
            raise ValueError(f"each label may be listed once; repeated: {dup}")
        return self

    def find(self, label: str) -> MontageChannel | None:
        want = label.strip()
        return next((c for c in self.channels if c.label.strip() == want), None)
