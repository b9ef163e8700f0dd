"""`edf:PATH` — replays an EDF, EDF+ or BDF(+) recording (pyedflib).

Stimuli come from EDF+ annotations (`stim ZYG`, `MAR 15mA`) or, when there
are none, from trigger channels (`TRIG`, `TRIG_ZYG`, `TRIG_MAR`: rising edges
through half the channel's maximum). Stage markers from `stage <name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyedflib

from . import annotations
from .labels import VOLTAGE_UNITS as UNIT_TO_UV
from .labels import MontageError, montage_from_labels
from .source import Chunk, SourceError, StimulusEvent


class EdfSource:
    paced = True
    manual = True
    scenario = None
    ground_truth = False

    def __init__(self, path: str, speed_hint: float | None = None, montage: Any = None) -> None:
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
        units = [r.getPhysicalDimension(i).strip() for i in range(r.signals_in_file)]
        try:
            self.montage = montage_from_labels(labels, self.fs, units=units, montage=montage,
                                               require_analysed=True)
        except MontageError as err:
            raise SourceError(f"edf: {p.name}: {err}") from None
        # Channels the analyzer measures are converted to µV; every other channel (trigger, counter,
        # status, temperature...) travels in its own unit, untouched, so that it can be exported back.
        self.scale = [UNIT_TO_UV[u.lower()] if ch.kind == "emg" and u.lower() in UNIT_TO_UV else 1.0
                      for ch, u in zip(self.montage.channels, units)]
        self.n_total = int(r.getNSamples()[0])
        self.stimuli, self.stages = self._events(labels)
        self.pos = 0
        self._si = 0
        self._gi = 0

    def _events(self, labels: list[str]) -> tuple[list[StimulusEvent], list[tuple[int, str]]]:
        onsets, _durations, texts = self.reader.readAnnotations()
        stimuli: list[StimulusEvent] = []
        stages: list[tuple[int, str]] = []
        unknown: dict[str, int] = {}
        for onset, text in zip(onsets, texts):
            parsed = annotations.parse(str(text))
            if parsed is None:
                key = str(text).strip()[:60]
                unknown[key] = unknown.get(key, 0) + 1
                continue
            idx = int(round(float(onset) * self.fs))
            if parsed[0] == "stimulus":
                stimuli.append(StimulusEvent(idx, **parsed[1]))
            else:
                stages.append((idx, parsed[1]["stage"]))
        self.notes = [f"read with pyedflib: {len(stimuli)} stimuli from annotations, {len(stages)} stage markers"]
        if unknown:  # listed once each, never dropped silently
            listed = ", ".join(f"{t!r}" + (f" x{n}" if n > 1 else "") for t, n in
                               sorted(unknown.items(), key=lambda kv: -kv[1])[:20])
            self.notes.append(f"annotations not understood (listed once, not used): {listed}")
        if not stimuli:
            stimuli = self._from_triggers()
        stimuli.sort(key=lambda s: s.sample_index)
        stages.sort()
        return stimuli, stages

    def _from_triggers(self) -> list[StimulusEvent]:
        found: list[StimulusEvent] = []
        dirs = [s.direction for s in self.montage.stimulation]
        for i, ch in enumerate(self.montage.channels):
            if ch.kind != "trigger":
                continue
            x = self.reader.readSignal(i)
            if x.size == 0 or np.max(x) <= np.min(x):
                continue
            thr = np.min(x) + 0.5 * (np.max(x) - np.min(x))
            above = x >= thr
            edges = np.flatnonzero(above[1:] & ~above[:-1]) + 1
            upper = ch.name.upper()
            fixed = "ZYG" if upper.endswith("ZYG") else "MAR" if upper.endswith("MAR") else None
            for k, e in enumerate(edges):
                found.append(StimulusEvent(int(e), fixed or dirs[k % len(dirs)]))
        return found

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) of every signal, converted exactly as `read` does (offline: sweeps only)."""
        n = hi - lo
        out = np.empty((self.reader.signals_in_file, n), dtype="<f4")
        for i in range(self.reader.signals_in_file):
            out[i] = self.reader.readSignal(i, start=lo, n=n) * self.scale[i]
        return out

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
