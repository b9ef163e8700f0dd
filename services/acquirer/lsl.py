"""`lsl:NAME` — an inlet from a Lab Streaming Layer stream (pylsl).

Most research amplifiers stream over LSL. Stimuli and stage markers come
from a companion string-marker stream named `NAME-markers` (or any stream of
type `Markers` whose name starts with NAME), e.g. `stim ZYG`, `stage
decompression`. Markers are pinned to the first sample whose LSL timestamp
is at or after theirs.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pylsl

from . import annotations
from .labels import montage_from_labels
from .source import Chunk, SourceError, StimulusEvent

FLAGS = pylsl.proc_clocksync | pylsl.proc_dejitter | pylsl.proc_monotonize


def _labels(info: pylsl.StreamInfo) -> list[str]:
    labels = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < info.channel_count():
        labels.append(ch.child_value("label") or f"CH{len(labels) + 1}")
        ch = ch.next_sibling()
    while len(labels) < info.channel_count():
        labels.append(f"CH{len(labels) + 1}")
    return labels


class LslSource:
    paced = False
    manual = True
    scenario = None
    ground_truth = False

    def __init__(self, name: str, resolve_timeout_s: float = 10.0) -> None:
        self.spec = f"lsl:{name}"
        self.name = name
        found = pylsl.resolve_byprop("name", name, 1, resolve_timeout_s)
        if not found:
            raise SourceError(
                f"lsl: no LSL stream named {name!r} found within {resolve_timeout_s:g} s; "
                "check the amplifier's LSL app is streaming on this network"
            )
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60, processing_flags=FLAGS)
        info = self.inlet.info(timeout=resolve_timeout_s)
        self.fs = float(info.nominal_srate())
        if self.fs <= 0:
            raise SourceError(f"lsl: stream {name!r} has an irregular rate; AMR needs a regular EMG stream")
        if info.channel_format() == pylsl.cf_string:
            raise SourceError(f"lsl: stream {name!r} carries strings; give the EMG stream's name")
        self.n_channels = info.channel_count()
        self.montage = montage_from_labels(_labels(info), self.fs)
        self.markers = self._marker_inlet(name)
        # Open the data connections now: an inlet otherwise connects on its
        # first pull, and whatever was pushed before that is never seen.
        self.inlet.open_stream(timeout=resolve_timeout_s)
        if self.markers is not None:
            self.markers.open_stream(timeout=resolve_timeout_s)
        self._pending: deque[tuple[float, str]] = deque()
        self._ts = np.empty(0)  # timestamps of recent samples
        self._ts_first = 0  # sample index of _ts[0]
        self.pos = 0
        self._buf = np.empty((int(self.fs), self.n_channels), dtype=np.float32)

    def _marker_inlet(self, name: str) -> pylsl.StreamInlet | None:
        streams = pylsl.resolve_byprop("type", "Markers", 0, 1.0)
        for info in streams:
            if info.name() in (f"{name}-markers", f"{name}_markers") or info.name().startswith(name):
                return pylsl.StreamInlet(info, processing_flags=FLAGS)
        return None

    def read(self, n_samples: int) -> Chunk | None:
        n_samples = min(n_samples, self._buf.shape[0])
        _, ts = self.inlet.pull_chunk(timeout=0.02, max_samples=n_samples, dest_obj=self._buf)
        n = len(ts)
        samples = np.ascontiguousarray(self._buf[:n].T, dtype="<f4")
        chunk = Chunk(first_sample_index=self.pos, samples=samples, device_time_s=ts[0] if n else None)
        if n:
            keep = int(self.fs * 30)
            self._ts = np.concatenate([self._ts, np.asarray(ts)])
            if self._ts.size > keep:
                drop = self._ts.size - keep
                self._ts = self._ts[drop:]
                self._ts_first += drop
        self.pos += n
        self._pull_markers()
        self._place_markers(chunk)
        return chunk

    def _pull_markers(self) -> None:
        if self.markers is None:
            return
        while True:
            sample, ts = self.markers.pull_sample(timeout=0.0)
            if sample is None:
                return
            self._pending.append((ts, str(sample[0])))

    def _place_markers(self, chunk: Chunk) -> None:
        if not self._ts.size:
            return
        while self._pending and self._pending[0][0] <= self._ts[-1]:
            ts, text = self._pending.popleft()
            idx = self._ts_first + int(np.searchsorted(self._ts, ts))
            parsed = annotations.parse(text)
            if parsed is None:
                continue
            if parsed[0] == "stimulus":
                chunk.stimuli.append(StimulusEvent(idx, **parsed[1]))
            else:
                chunk.stages.append((idx, parsed[1]["stage"]))

    def settings(self) -> dict[str, Any]:
        return {"stream": self.name[:256], "sampling_rate_hz": self.fs, "markers": self.markers is not None}

    def close(self) -> None:
        self.inlet.close_stream()
        if self.markers is not None:
            self.markers.close_stream()
