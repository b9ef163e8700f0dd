"""Write simulator output (or any sweep set) to EDF+ for the offline and MNE checks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyedflib

from amrwatch.services.acquirer.annotations import stage_text, stim_text
from amrwatch.services.acquirer.simsource import SimSource


class EdfStream:
    """EDF+ written record by record, so hours of signal never sit in memory."""

    def __init__(self, path: Path, labels: list[str], fs: float, *, phys: float = 5000.0,
                 annotation_signals: int = 24) -> None:
        self.fs = fs
        self.n_rec = int(round(fs))  # one-second data records
        self.w = pyedflib.EdfWriter(str(path), len(labels), file_type=pyedflib.FILETYPE_EDFPLUS)
        self.w.setSignalHeaders([
            {"label": lbl, "dimension": "uV", "sample_frequency": fs, "physical_max": phys,
             "physical_min": -phys, "digital_max": 32767, "digital_min": -32768, "transducer": "",
             "prefilter": ""}
            for lbl in labels
        ])
        # EDFlib keeps at most this many annotations per data record (up to 11 stimuli per second here).
        self.w.set_number_of_annotation_signals(annotation_signals)
        self.pending = np.zeros((len(labels), 0))

    def annotate(self, sample_index: int, text: str) -> None:
        self.w.writeAnnotation(sample_index / self.fs, -1, text)

    def write(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, samples.astype(np.float64)], axis=1)
        n_full = self.pending.shape[1] // self.n_rec * self.n_rec
        if n_full:
            self.w.writeSamples([np.ascontiguousarray(r) for r in self.pending[:, :n_full]])
            self.pending = self.pending[:, n_full:]

    def close(self) -> None:
        if self.pending.shape[1]:
            pad = self.n_rec - self.pending.shape[1]
            self.write(np.zeros((self.pending.shape[0], pad)))
        self.w.close()


def write_sim_edf(path: Path, *, seed: int = 0, chunk: int = 20000, extra_channels: Iterable[str] = (),
                  **sim: object) -> dict:
    """A simulated session as EDF+ with `stim DIR` and `stage NAME` annotations.

    `extra_channels`: 'LABEL=SOURCE' specs, each adding an EMG channel that copies
    SOURCE's signal (e.g. 'NASAL-MAR=OOCUL' for a fourth channel).
    Returns the ground truth {(stimulus_index, channel): Truth}, the sample count and labels."""
    src = SimSource(seed=seed, **sim)
    names = [c.name for c in src.montage.channels]
    copies = [spec.split("=") for spec in extra_channels]
    labels = names + [label for label, _ in copies]
    out = EdfStream(path, labels, src.montage.sampling_rate_hz)
    truths = {}
    n = 0
    try:
        while True:
            c = src.read(chunk)
            if c is None:
                break
            for s in c.stimuli:
                out.annotate(s.sample_index, stim_text(s.direction))
            for idx, stage in c.stages:
                out.annotate(idx, stage_text(stage))
            data = c.samples
            if copies:
                data = np.concatenate([data] + [data[names.index(srcname)][None] for _, srcname in copies])
            out.write(data)
            for t in c.truths:
                truths[(t.stimulus_index, t.channel)] = t
            n += c.n_samples
    finally:
        out.close()
    return {"truths": truths, "n_samples": n, "labels": labels}
