"""Write small EDF+/BDF+ files with pyedflib for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyedflib


def write_edf(path: Path, data: np.ndarray, labels: list[str], fs: int, annotations=(), *, bdf: bool = False,
              dims: list[str] | None = None, phys: float = 5000.0) -> Path:
    ftype = pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS
    w = pyedflib.EdfWriter(str(path), len(labels), file_type=ftype)
    try:
        dmax = 8388607 if bdf else 32767
        headers = []
        for i, lbl in enumerate(labels):
            headers.append({
                "label": lbl, "dimension": (dims[i] if dims else "uV"), "sample_frequency": fs,
                "physical_max": phys, "physical_min": -phys, "digital_max": dmax, "digital_min": -dmax - 1,
                "transducer": "", "prefilter": "",
            })
        w.setSignalHeaders(headers)
        w.set_number_of_annotation_signals(8)  # EDFlib keeps only this many annotations per data record
        for onset_s, text in annotations:
            w.writeAnnotation(onset_s, -1, text)
        w.writeSamples([np.ascontiguousarray(row, dtype=np.float64) for row in data])
    finally:
        w.close()
    return path


def quantum(phys: float = 5000.0, bdf: bool = False) -> float:
    """One digital step in physical units."""
    steps = (2**24 - 1) if bdf else 65535
    return 2 * phys / steps
