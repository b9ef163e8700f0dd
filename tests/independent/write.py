"""Write a rendered case to disk: EDF+ or BDF+ with pyedflib, or EDF through MNE's exporter (edfio).

Two writers on purpose: the project's reader must take files it did not
shape itself (MNE/edfio pick their own data-record length, digital range and
annotation layout). The truth is written beside the file as NAME.truth.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyedflib

from .cases import Recording

PHYS_UV = 3000.0
"""Physical range ± (µV) of the pyedflib writer: 0.09 µV steps in EDF, 0.0004 µV in BDF."""
WRITERS = ("pyedflib-edf", "pyedflib-bdf", "mne-edf")
#: Which writer each case uses by default (every writer is used; the tests can choose another).
DEFAULT_WRITER = {
    "control_disappearance": "pyedflib-edf",
    "noise_rise": "mne-edf",
    "dead_stimulator": "pyedflib-bdf",
    "current_spread": "mne-edf",
    "reappearance": "pyedflib-edf",
    "persists": "pyedflib-bdf",
}


def write_pyedflib(path: Path, rec: Recording, *, bdf: bool = False) -> Path:
    ftype = pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS
    dmax = 8388607 if bdf else 32767
    w = pyedflib.EdfWriter(str(path), len(rec.labels), file_type=ftype)
    try:
        w.setSignalHeaders([
            {"label": lbl, "dimension": "uV", "sample_frequency": int(rec.truth["sampling_rate_hz"]),
             "physical_max": PHYS_UV, "physical_min": -PHYS_UV, "digital_max": dmax, "digital_min": -dmax - 1,
             "transducer": "AgAgCl subdermal needle", "prefilter": "HP:20Hz LP:1500Hz"}
            for lbl in rec.labels
        ])
        w.set_number_of_annotation_signals(4)  # at most 4 annotations fall in one 1 s data record
        for onset, text in rec.annotations:
            w.writeAnnotation(onset, -1, text)
        w.writeSamples([np.ascontiguousarray(row, dtype=np.float64) for row in rec.data])
    finally:
        w.close()
    return path


def write_mne(path: Path, rec: Recording) -> Path:
    import mne

    info = mne.create_info(list(rec.labels), float(rec.truth["sampling_rate_hz"]), ch_types="emg")
    raw = mne.io.RawArray(rec.data * 1e-6, info, verbose="error")  # MNE keeps volts
    onsets = [a[0] for a in rec.annotations]
    raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), [a[1] for a in rec.annotations]))
    mne.export.export_raw(str(path), raw, fmt="edf", physical_range=(-PHYS_UV, PHYS_UV), overwrite=True,
                          verbose="error")
    return path


def write_case(rec: Recording, out_dir: Path, writer: str | None = None) -> Path:
    """The recording as a file in `out_dir` (suffix by format) with NAME.truth.json beside it."""
    writer = writer or DEFAULT_WRITER.get(rec.name, "pyedflib-edf")
    if writer not in WRITERS:
        raise ValueError(f"writer must be one of {WRITERS}; got {writer!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".bdf" if writer == "pyedflib-bdf" else ".edf"
    path = out_dir / f"{rec.name}{suffix}"
    if writer == "mne-edf":
        write_mne(path, rec)
    else:
        write_pyedflib(path, rec, bdf=writer == "pyedflib-bdf")
    truth = dict(rec.truth, writer=writer, file=path.name)
    (out_dir / f"{rec.name}.truth.json").write_text(json.dumps(truth, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.independent.write DIR [CASE ...]`: write the cases (all by default) to DIR."""
    import argparse

    from .cases import CASES, build

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("dir")
    p.add_argument("case", nargs="*", help=f"cases to write (default all): {', '.join(CASES)}")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--writer", choices=WRITERS)
    args = p.parse_args(argv)
    names = args.case or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    for name in names:
        path = write_case(build(name, args.seed), Path(args.dir), args.writer)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
