"""`edf:PATH` — replays an EDF, EDF+ or BDF(+) recording (pyedflib).

Stimuli come from EDF+ annotations (`stim ZYG`, `MAR 15mA`) or, when there
are none, from trigger channels (`TRIG`, `TRIG_ZYG`, `TRIG_MAR`) by the
detector every source shares (triggers.py). Stage markers from `stage <name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyedflib

from . import annotations
from .labels import montage_from_labels
from .source import Chunk, SourceError, StimulusEvent
from .triggers import trigger_detectors

UNIT_TO_UV = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}


class EdfSource:
    paced = True
    manual = True
    scenario = None
    ground_truth = False

    def __init__(self, path: str, speed_hint: float | None = None) -> None:
        p = Path(path)
        if not p.is_file():
            raise SourceError(f"edf: no such file {str(p)!r}; give the path of an .edf/.bdf recording")
        try:
            self.reader = pyedflib.EdfReader(str(p))
        except OSError as err:
            raise SourceError(f"edf: {p} cannot be read as EDF/EDF+/BDF ({err})") from None
        self.spec = f"edf:{p}"
        self.path = p
        r = self.reader
        labels = [lbl.strip() for lbl in r.getSignalLabels()]
        rates = [float(r.getSampleFrequency(i)) for i in range(r.signals_in_file)]
        if len(set(rates)) != 1:
            detail = ", ".join(f"{lbl}={fs:g} Hz" for lbl, fs in zip(labels, rates))
            raise SourceError(
                f"edf: all signals must share one sampling rate to be analysed together; got {detail}"
            )
        self.fs = rates[0]
        self.montage = montage_from_labels(labels, self.fs)
        self.scale = []
        for i in range(r.signals_in_file):
            dim = r.getPhysicalDimension(i).strip().lower()
            kind = self.montage.channels[i].kind
            if kind != "emg":
                self.scale.append(1.0)
            elif dim not in UNIT_TO_UV:
                raise SourceError(
                    f"edf: signal {labels[i]!r} has physical dimension {dim!r}; expected uV, mV or V"
                )
            else:
                self.scale.append(UNIT_TO_UV[dim])
        self.n_total = int(r.getNSamples()[0])
        self.stimuli, self.stages = self._events(labels)
        self.pos = 0
        self._si = 0
        self._gi = 0

    def _events(self, labels: list[str]) -> tuple[list[StimulusEvent], list[tuple[int, str]]]:
        onsets, _durations, texts = self.reader.readAnnotations()
        stimuli: list[StimulusEvent] = []
        stages: list[tuple[int, str]] = []
        for onset, text in zip(onsets, texts):
            parsed = annotations.parse(str(text))
            if parsed is None:
                continue
            idx = int(round(float(onset) * self.fs))
            if parsed[0] == "stimulus":
                stimuli.append(StimulusEvent(idx, **parsed[1]))
            else:
                stages.append((idx, parsed[1]["stage"]))
        if not stimuli:
            stimuli = self._from_triggers()
        stimuli.sort(key=lambda s: s.sample_index)
        stages.sort()
        return stimuli, stages

    def _from_triggers(self) -> list[StimulusEvent]:
        """The shared trigger detector (triggers.py) over each trigger channel, read whole."""
        found: list[StimulusEvent] = []
        for i, det in trigger_detectors(self.montage).items():
            found.extend(det.feed(self.reader.readSignal(i), 0))
        return found

    def read(self, n_samples: int) -> Chunk | None:
        if self.pos >= self.n_total:
            return None
        n = min(n_samples, self.n_total - self.pos)
        out = np.empty((self.reader.signals_in_file, n), dtype="<f4")
        for i in range(self.reader.signals_in_file):
            out[i] = self.reader.readSignal(i, start=self.pos, n=n) * self.scale[i]
        end = self.pos + n
        chunk = Chunk(first_sample_index=self.pos, samples=out, device_time_s=self.pos / self.fs)
        while self._si < len(self.stimuli) and self.stimuli[self._si].sample_index < end:
            chunk.stimuli.append(self.stimuli[self._si])
            self._si += 1
        while self._gi < len(self.stages) and self.stages[self._gi][0] < end:
            chunk.stages.append(self.stages[self._gi])
            self._gi += 1
        self.pos = end
        return chunk

    def settings(self) -> dict[str, Any]:
        return {
            "file": self.path.name[:256],
            "n_samples": self.n_total,
            "n_stimuli": len(self.stimuli),
            "sampling_rate_hz": self.fs,
        }

    def close(self) -> None:
        self.reader.close()
