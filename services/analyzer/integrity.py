"""Was the stimulus delivered? Each sweep's stimulus confirmed from the recording itself.

A missing AMR means something only if the stimulus that should have evoked it
reached the nerve: a dead stimulator, a needle out of the skin or a broken
cable leave the stimulus markers coming and the AMR "gone". Before believing
an absence a neurophysiologist looks for the proof of delivery, and so does
the analyzer, cheapest proof first, stopping at the first that holds:

1. a response on a recording channel of the sweep: an AMR, or a direct
   response from current spread (either shows current reached a nerve);
2. (`stimulus_check` 'artifact_or_direct') the stimulus artifact: on the raw
   sweep, offset removed (mean of the pre-stimulus window), the peak in
   `artifact_window_ms` reaches `artifact_factor` x the raw pre-stimulus RMS
   and `artifact_floor_uv` — on the sweep's own usable channels, then on every
   other EMG channel of the montage;
3. the direct (M-wave) response of a muscle the stimulated branch supplies
   (ZYG, the zygomatic branch: orbicularis oculi; MAR, the marginal
   mandibular branch: mentalis, orbicularis oris), conditioned, in
   `direct_window_ms` after the artifact blank, meeting the `present` rule.

'direct' mode skips the artifact: an amplifier that blanks the artifact does
so on the stimulator's trigger, and its blanking step is there whether or not
current flowed. Steps 2 and 3 read rows the sweep's own measurement does not
need, so they run only when step 1 fails (an AMR present is the common case).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...proto.messages import Montage
from .condition import Conditioner, SweepGeometry

#: Muscles each stimulated branch supplies, whose direct response proves the stimulus arrived.
BRANCH_MUSCLES: dict[str, tuple[str, ...]] = {
    "ZYG": ("orbicularis_oculi",),
    "MAR": ("mentalis", "orbicularis_oris"),
}


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    by: str | None
    """'response', 'artifact' or 'direct_response'; None when unconfirmed."""


#: The stimulus is confirmed by a response on the sweep's own channels.
RESPONDED = Confirmation(True, "response")

#: Reads channel rows [lo, hi) of the sweep from the ring buffer; None when they cannot be read.
RowReader = Callable[[np.ndarray], "np.ndarray | None"]


class StimulusCheck:
    """Per-montage row sets and windows, computed once; `__call__` per sweep."""

    def __init__(self, montage: Montage, geometry: SweepGeometry, conditioner: Conditioner,
                 own_rows: dict[str, list[int]]) -> None:
        s = self.settings = geometry.settings
        self.g = geometry
        self.conditioner = conditioner
        self.use_artifact = s.stimulus_check == "artifact_or_direct"
        emg = [i for i, c in enumerate(montage.channels) if c.kind == "emg"]
        self.other_rows = {d: np.array([i for i in emg if i not in rows], dtype=np.intp)
                           for d, rows in own_rows.items()}
        self.direct_rows = {
            d: np.array([i for i in emg if montage.channels[i].muscle in BRANCH_MUSCLES[d]], dtype=np.intp)
            for d in own_rows
        }
        self.direct_names = {d: [montage.channels[i].name for i in rows] for d, rows in self.direct_rows.items()}
        self.noise = geometry.noise
        self.artifact = geometry.window(s.artifact_window_ms)
        self.direct = geometry.window((max(s.direct_window_ms[0], s.blank_ms[1]), s.direct_window_ms[1]))
        n0, n1 = geometry.noise
        t = np.linspace(-1.0, 1.0, n1 - n0)
        self._t = t
        self._tt = float(t @ t)

    def __call__(self, direction: str, own_raw: np.ndarray, responded: bool, read: RowReader) -> Confirmation:
        """`own_raw`: the raw sweep of the direction's usable channels; `responded`: one of them shows a
        response (an AMR or a direct response); `read`: the ring buffer, for other rows."""
        if responded:
            return RESPONDED
        if self.use_artifact:
            if own_raw.shape[0] and self.has_artifact(own_raw):
                return Confirmation(True, "artifact")
            rows = self.other_rows[direction]
            if rows.size:
                raw = read(rows)
                if raw is not None and self.has_artifact(raw):
                    return Confirmation(True, "artifact")
        rows = self.direct_rows[direction]
        if rows.size:
            raw = read(rows)
            if raw is not None and self.has_direct_response(raw):
                return Confirmation(True, "direct_response")
        return Confirmation(False, None)

    def has_artifact(self, raw: np.ndarray) -> bool:
        """Some row's raw, offset-removed peak in the artifact window stands out from its pre-stimulus signal."""
        x = np.asarray(raw, dtype=np.float64)
        n0, n1 = self.noise
        s0, s1 = self.artifact
        pre = x[:, n0:n1]
        offset = pre.mean(axis=1, keepdims=True)
        rms = np.sqrt(np.mean(np.square(pre - offset), axis=1))
        peak = np.abs(x[:, s0:s1] - offset).max(axis=1)
        s = self.settings
        ok = (peak >= s.artifact_factor * rms) & (peak >= s.artifact_floor_uv)
        return bool(ok.any())

    def has_direct_response(self, raw: np.ndarray) -> bool:
        """Some row shows a response in the direct window that meets the `present` rule against its own noise."""
        x = np.where(np.isfinite(raw), raw, np.float32(0.0))
        y = self.conditioner(x).astype(np.float64)
        d0, d1 = self.direct
        p2p = y[:, d0:d1].max(axis=1) - y[:, d0:d1].min(axis=1)
        n0, n1 = self.noise
        w = y[:, n0:n1]
        s0 = w.sum(axis=1)
        s1 = w @ self._t
        resid = np.einsum("ij,ij->i", w, w) - s0 * s0 / w.shape[1] - s1 * s1 / self._tt
        noise = np.sqrt(np.maximum(resid, 0.0) / w.shape[1])
        s = self.settings
        ok = (p2p >= s.present_noise_factor * noise) & (p2p >= s.present_floor_uv)
        return bool(ok.any())
