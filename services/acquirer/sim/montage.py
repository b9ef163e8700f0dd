"""The simulated recording montage: which muscle each channel records and
whose lateral spread it sees (docs/domain.md, "The abnormal muscle response (AMR)")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimChannel:
    name: str
    muscle: str
    direction: str | None
    """The stimulation direction whose AMR this channel records; None for SAMPLE_INDEX and extra channels."""
    kind: str = "emg"
    """'emg' or 'sample_index' (proto ChannelInfo.kind)."""


#: ZYG stimulation (zygomatic branch) is recorded at mentalis and orbicularis oris;
#: MAR stimulation (marginal mandibular branch) at orbicularis oculi.
DEFAULT_CHANNELS: tuple[SimChannel, ...] = (
    SimChannel("MENT", "mentalis", "ZYG"),
    SimChannel("OORIS", "orbicularis_oris", "ZYG"),
    SimChannel("OOCUL", "orbicularis_oculi", "MAR"),
)

#: The branch each direction stimulates.
STIMULATED_BRANCH: dict[str, str] = {"ZYG": "zygomatic", "MAR": "marginal_mandibular"}

#: Auxiliary channel carrying the absolute sample index, so a receiver can check
#: that no sample was lost or reordered.
SAMPLE_INDEX_CHANNEL = SimChannel("SAMPLE_INDEX", "none", None, "sample_index")

#: float32 represents every integer below 2**24 exactly.
SAMPLE_INDEX_MODULUS = 2**24


def extra_channel(i: int) -> SimChannel:
    """Extra recording channel i (1-based): EMG electrodes on no AMR pathway, e.g. for a 16-channel montage."""
    return SimChannel(f"EXTRA{i:02d}", "unassigned", None)


def sim_channels(sample_index_channel: bool, extra_channels: int = 0) -> list[SimChannel]:
    """The EMG channels, the extra channels, then SAMPLE_INDEX when asked for."""
    channels = list(DEFAULT_CHANNELS)
    channels += [extra_channel(i + 1) for i in range(extra_channels)]
    if sample_index_channel:
        channels.append(SAMPLE_INDEX_CHANNEL)
    return channels
