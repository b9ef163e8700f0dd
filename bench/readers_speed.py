"""Offline analysis speed by file format: the same recording as EDF+ (pyedflib), BrainVision (MNE),
EEGLAB (MNE), FIF (MNE) and XDF (pyxdf), analysed with `analyze_edf(open_file(...))`.

The EDF+ figure, measured in the same run, is the baseline (issue 14's target: offline analysis at
least 300x real time on EDF+). Times include opening the file (XDF is read whole by pyxdf; the MNE
readers read lazily). `python -m bench.readers_speed` runs it alone; `BENCH_READERS_MIN` sets the
recording's length in minutes (default 10).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FS = 20_000
LABELS = ["MENT", "OORIS", "OOCUL"]
SUMMARY: dict = {}


def recording(minutes: float) -> tuple[np.ndarray, list[tuple[float, str]]]:
    rng = np.random.default_rng(3)
    n = int(minutes * 60 * FS)
    x = rng.normal(0.0, 3.0, size=(3, n)).astype(np.float64)
    t = np.arange(int(0.03 * FS)) / FS * 1000.0
    env = (np.clip(t - 9.5, 0, None) / 3.0) ** 2 * np.exp(-np.clip(t - 9.5, 0, None) / 1.5)
    amr = env * np.sin(2 * np.pi * (t - 9.5) / 4.0)
    amr *= 150.0 / (amr.max() - amr.min())
    ann = [(0.1, "stage baseline")]
    for k, s in enumerate(range(FS // 2, n - FS // 2, FS // 2)):
        d = "ZYG" if k % 2 == 0 else "MAR"
        ann.append((s / FS, f"stim {d} 15mA 0.2ms"))
        x[:, s:s + 5] += 400.0
        rows = (0, 1) if d == "ZYG" else (2,)
        for r in rows:
            x[r, s:s + t.size] += amr
    return x, ann


def write_all(tmp: Path, data: np.ndarray, ann: list[tuple[float, str]]) -> dict[str, Path]:
    import mne
    import pybv

    from tests.acquirer.test_montage import _write
    from tests.acquirer.xdfwrite import write_xdf

    out = {"EDF+ (pyedflib)": _write(tmp / "r.edf", data, LABELS, ["uV"] * 3, ann, fs=FS)}
    pybv.write_brainvision(data=data * 1e-6, sfreq=FS, ch_names=LABELS, fname_base="r", folder_out=str(tmp),
                           events=[{"onset": int(round(t * FS)), "description": d, "type": "Comment"}
                                   for t, d in ann], unit="µV", fmt="binary_float32")
    out["BrainVision (MNE)"] = tmp / "r.vhdr"
    raw = mne.io.RawArray(data * 1e-6, mne.create_info(LABELS, FS, ch_types="emg"), verbose="error")
    raw.set_annotations(mne.Annotations([t for t, _ in ann], [0.0] * len(ann), [d for _, d in ann]))
    mne.export.export_raw(tmp / "r.set", raw, fmt="eeglab", verbose="error")
    out["EEGLAB .set (MNE)"] = tmp / "r.set"
    raw.save(tmp / "r_raw.fif", verbose="error")
    out["FIF (MNE)"] = tmp / "r_raw.fif"
    out["XDF (pyxdf)"] = write_xdf(tmp / "r.xdf", data, LABELS, FS, ann, chunk=1000)
    return out


def run() -> str:
    from amrwatch.proto.messages import AmrMeasurementBody
    from amrwatch.services.acquirer.files import open_file
    from amrwatch.services.analyzer.offline import analyze_edf

    minutes = float(os.environ.get("BENCH_READERS_MIN", "10"))
    data, ann = recording(minutes)
    duration = data.shape[1] / FS
    rows = []
    with tempfile.TemporaryDirectory() as d:
        files = write_all(Path(d), data, ann)
        del data
        for name, path in files.items():
            size = sum(f.stat().st_size for f in path.parent.glob(path.stem.split("_raw")[0] + "*")) / 1e6
            t0 = time.perf_counter()
            n = sum(1 for o in analyze_edf(open_file(str(path))) if isinstance(o, AmrMeasurementBody))
            dt = time.perf_counter() - t0
            rows.append((name, size, n, dt, duration / dt))
        import pyxdf

        t0 = time.perf_counter()
        pyxdf.load_xdf(str(files["XDF (pyxdf)"]), verbose=False)
        dt = time.perf_counter() - t0
        rows.append(("pyxdf.load_xdf alone (no analysis)", size, 0, dt, duration / dt))
    base = rows[0][4]
    SUMMARY["readers"] = {name: round(x, 0) for name, *_, x in rows}
    lines = [f"Offline analysis of the same {minutes:g}-minute 3-channel 20 kHz recording ({len(ann) - 1} stimuli) "
             "by format, in process (open + analyse), EDF+ as the baseline:", "",
             "| format (reader) | file MB | measurements | seconds | x real time | vs EDF+ |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {mb:.0f} | {n} | {dt:.2f} | {x:,.0f} | {x / base:.2f} |" for name, mb, n, dt, x in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
