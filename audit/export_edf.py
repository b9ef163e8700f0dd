"""`amrwatch export edf`: a session as EDF+ (signals in µV, events as annotations).

Readable by any EDF+ reader (pyedflib, MNE-Python, EDFbrowser), and back
through `--source edf:` — stimuli and stages use the same annotation
vocabulary the EDF source reads (acquirer/annotations.py). Other
annotations: `AMR <channel> <state>` at the stimulus that changed the
course, `decision <kind>` when the predictor said it, `data gap <n>
samples` where the archive has no signal (written as 0 µV).

EDF stores 16-bit integers (BDF, with OUT.bdf, 24-bit): each EMG channel's
physical range is taken from its own data, so the quantisation step is range /
65535 (0.15 µV for ±5 mV). Auxiliary channels (counters, triggers, a BDF Status
word) whose values are whole numbers are written one digital step per unit, so
they come back exactly; a Status word needs OUT.bdf.
Annotation onsets are kept to 100 µs (EDFlib's resolution: an event on an
odd sample at 20 kHz moves by half a sample), relative to the first sample;
the header's start time is the session's start to the second, the exact
start is in the recording field.
EDFlib keeps at most `number of annotation signals` annotations per data
record, so the writer sizes that (and the record length) to the session:
no annotation is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyedflib

from amrwatch.services.acquirer.annotations import stage_text, stim_text
from amrwatch.archive.session import NoSuchSession, open_session
from amrwatch.archive.index import ArchiveIndex, parse_utc
from amrwatch.archive.order import SignalOrder

#: EDFlib: annotation signals per file, and characters per annotation text.
MAX_ANNOTATION_SIGNALS = 64
MAX_ANNOTATION_TEXT = 40
#: Data record lengths tried, longest first (shorter records hold more annotations per second).
RECORD_SECONDS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01)
DIGITAL_MIN, DIGITAL_MAX = -32768, 32767


class ExportError(Exception):
    """The session cannot be exported as asked; the text says why and what to do."""


@dataclass
class ExportInfo:
    path: Path
    n_channels: int
    n_samples: int
    duration_s: float
    n_annotations: int
    missing_samples: int
    record_s: float
    annotation_signals: int


def annotations_of(idx: ArchiveIndex, sig: SignalOrder, fs: float) -> list[tuple[float, str]]:
    """(onset in s from the session's first sample, text), sorted."""
    sid = idx.session_id
    out: list[tuple[float, str]] = []
    stim_at: dict[int, int] = {}
    for e in sig.events:
        h = e.header
        if e.type == "stimulus":
            stim_at[h["stimulus_index"]] = h["sample_index"]
            out.append((h["sample_index"] / fs, stim_text(h["direction"], h.get("intensity_ma"), h.get("width_ms"))))
        elif e.type == "stage":
            at = h["sample_index"] if h.get("sample_index") is not None else _sample_at(sig, h["ts_utc"])
            out.append((at / fs, stage_text(h["stage"])))
    for e in idx.events:
        if e.session_id != sid:
            continue
        h = e.header
        if e.type == "amr_state":
            at = stim_at.get(h["stimulus_index"], _sample_at(sig, h["ts_utc"]))
            out.append((at / fs, f"AMR {h['channel']} {h['state']}"))
        elif e.type == "decision":
            out.append((_sample_at(sig, h["ts_utc"]) / fs, f"decision {h['kind']}"))
    for a, b in sig.missing_samples():
        out.append((a / fs, f"data gap {b - a} samples"))
    if sig.lo.size and sig.lo[0] > 0:
        out.append((0.0, f"data gap {int(sig.lo[0])} samples"))
    return sorted((round(t, 6), text[:MAX_ANNOTATION_TEXT]) for t, text in out)


def _sample_at(sig: SignalOrder, ts_utc: str) -> int:
    """The signal position of a wall-clock time: the first frame published after it."""
    if not sig.ts.size:
        return 0
    j = int(np.searchsorted(sig.ts, parse_utc(ts_utc), side="right"))
    return int(sig.lo[j]) if j < sig.lo.size else int(sig.hi[-1])


def _layout(fs: float, n_samples: int, n_annotations: int) -> tuple[float, int]:
    """(record length in s, annotation signals) that hold every annotation; a length that divides the
    session exactly is preferred (otherwise the last record is padded with 0 µV)."""
    fits = []
    for rec in RECORD_SECONDS:
        spr = fs * rec
        if abs(spr - round(spr)) > 1e-9:
            continue
        n_records = max(1, math.ceil(n_samples / round(spr)))
        need = math.ceil(n_annotations / n_records) if n_annotations else 1
        if need <= MAX_ANNOTATION_SIGNALS:
            fits.append((n_samples % round(spr) != 0, rec, max(1, need)))
    if not fits:
        raise ExportError(f"{n_annotations} annotations do not fit in EDF+ records of {RECORD_SECONDS[-1]} s with "
                          f"{MAX_ANNOTATION_SIGNALS} annotation signals at {fs:g} Hz")
    _padded, rec, n_annot = min(fits, key=lambda t: (t[0], -t[1]))
    return rec, n_annot


def _ranges(idx: ArchiveIndex, sig: SignalOrder, n_channels: int, kinds: list[str],
            digital: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's physical range. EMG: its own data's range (quantum = range / digital steps).
    Any other channel whose values are whole numbers spanning fewer than the digital steps (a counter,
    a trigger, a BDF Status word) gets physical = digital + offset, so its values come back exactly."""
    lo = np.full(n_channels, np.inf)
    hi = np.full(n_channels, -np.inf)
    whole = np.ones(n_channels, dtype=bool)
    for r in sig.rows:
        x = idx.samples(int(r))
        lo = np.minimum(lo, x.min(axis=1))
        hi = np.maximum(hi, x.max(axis=1))
        whole &= np.all(x == np.round(x), axis=1)
    lo = np.where(np.isfinite(lo), np.floor(lo), -1.0)
    hi = np.where(np.isfinite(hi), np.ceil(hi), 1.0)
    hi = np.where(hi <= lo, lo + 1.0, hi)
    span = digital[1] - digital[0]
    for i, kind in enumerate(kinds):
        if kind != "emg" and whole[i] and hi[i] - lo[i] <= span:
            hi[i] = lo[i] + span
    return lo, hi


def export_edf(data_dir: Path, session_id: str, out: Path) -> ExportInfo:
    try:
        session = open_session(Path(data_dir), session_id)
    except NoSuchSession as err:
        raise ExportError(str(err)) from None
    out = Path(out)
    if out.suffix.lower() not in (".edf", ".bdf"):
        raise ExportError(f"OUT must end in .edf (EDF+, 16-bit) or .bdf (BDF+, 24-bit, for recordings whose "
                          f"channels need more than 16 bits, e.g. a BioSemi Status channel); got {str(out)!r}")
    bdf = out.suffix.lower() == ".bdf"
    digital = (-(2**23), 2**23 - 1) if bdf else (DIGITAL_MIN, DIGITAL_MAX)
    with session:
        idx = session.index
        start = session.start()
        if start is None:
            raise ExportError(f"session {session_id} has no session_start in its archive: its montage is unknown")
        montage = start.header["montage"]
        fs = float(montage["sampling_rate_hz"])
        channels = montage["channels"]
        sig = session.signal()
        if not sig.rows.size:
            raise ExportError(f"session {session_id} has no signal in its archive")
        n_total = int(sig.hi[-1])
        notes = annotations_of(idx, sig, fs)
        record_s, n_annot = _layout(fs, n_total, len(notes))
        spr = int(round(fs * record_s))
        lo, hi = _ranges(idx, sig, len(channels), [c.get("kind", "emg") for c in channels], digital)
        headers = []
        for i, c in enumerate(channels):
            # The label the recording had (archived in the montage) goes back out, with its own unit.
            headers.append({"label": (c.get("label") or c["name"])[:16],
                            "dimension": "uV" if c.get("unit", "uV") == "uV" else c.get("unit", ""),
                            "sample_frequency": fs, "physical_min": float(lo[i]), "physical_max": float(hi[i]),
                            "digital_min": digital[0], "digital_max": digital[1],
                            "transducer": c.get("muscle", "")[:80], "prefilter": ""})
        out.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyedflib warns whenever the record length is set explicitly
            w = pyedflib.EdfWriter(str(out), len(channels),
                                   file_type=pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS)
            try:
                w.setSignalHeaders(headers)
                w.setDatarecordDuration(record_s)
                w.set_number_of_annotation_signals(n_annot)
                started = dt.datetime.fromisoformat(start.header["started_at"].replace("Z", "+00:00"))
                started = started.astimezone(dt.UTC).replace(tzinfo=None)
                # To the second: EDFlib adds a sub-second start to every onset and keeps onsets only to
                # 100 µs, which would move events by a sample; the exact start goes in the recording field.
                w.setStartdatetime(started.replace(microsecond=0))
                w.setEquipment("amrwatch")
                w.setRecordingAdditional(f"session {session_id} start {started:%H:%M:%S.%f} UTC"[:80])
                for t, text in notes:
                    w.writeAnnotation(t, -1, text)
                _write_signal(w, idx, sig, len(channels), spr, n_total)
            finally:
                w.close()
        return ExportInfo(out, len(channels), n_total, n_total / fs, len(notes),
                          sum(b - a for a, b in sig.missing_samples()) + int(sig.lo[0]), record_s, n_annot)


def _write_signal(w, idx: ArchiveIndex, sig: SignalOrder, n_channels: int, spr: int, n_total: int) -> None:
    """Frames in sample order, cut into data records; missing samples are 0 µV; the last record is padded."""
    buf = np.zeros((n_channels, spr), dtype=np.float64)
    rec_start = 0

    def flush() -> None:
        nonlocal rec_start
        w.blockWritePhysicalSamples(buf.ravel())
        buf[:] = 0.0
        rec_start += spr

    for r, first in zip(sig.rows, sig.lo):
        x = idx.samples(int(r))
        first, n, pos = int(first), x.shape[1], 0
        while pos < n:
            s = first + pos
            while s >= rec_start + spr:
                flush()
            take = min(n - pos, rec_start + spr - s)
            buf[:, s - rec_start:s - rec_start + take] = x[:, pos:pos + take]
            pos += take
    while rec_start < n_total:
        flush()
