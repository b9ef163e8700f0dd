"""`file:PATH` — recordings in the formats clinical and research systems export.

One spec for every file; the reader is picked by the extension and named in
the session's settings and log, and each is the field's own library rather
than a parser of ours:

| extension | reader | stimuli and stages from |
|---|---|---|
| .edf .bdf (EDF, EDF+, BDF, BDF+) | pyedflib (`edf.EdfSource`) | EDF+ annotations, trigger channels |
| .vhdr (BrainVision), .set (EEGLAB), .fif / .fif.gz (MNE/Neuromag), .gdf, .cnt (Neuroscan) | MNE-Python | the file's markers/events (MNE annotations) |
| .xdf (Lab Streaming Layer recordings) | pyxdf | the marker stream(s) |

MNE and pyxdf are the `[formats]` extra: without them the error says how to
install it. Every reader hands the same thing to `RecordingSource`: labels,
units, a block reader, and timed text events that `annotations.parse` turns
into stimuli and stages (unknown ones listed once, in `notes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import annotations
from .labels import VOLTAGE_UNITS, MontageError, montage_from_labels
from .source import Chunk, SourceError, StimulusEvent

EDF_SUFFIXES = (".edf", ".bdf", ".edf+", ".bdf+", ".rec")
MNE_SUFFIXES = (".vhdr", ".set", ".fif", ".fif.gz", ".gdf", ".cnt")
XDF_SUFFIXES = (".xdf", ".xdfz")
FORMATS_HINT = "pip install 'amrwatch[formats]' (MNE-Python and pyxdf)"


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    for s in (".fif.gz", *EDF_SUFFIXES, *MNE_SUFFIXES, *XDF_SUFFIXES):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def reader_name(path: Path) -> str:
    s = suffix_of(path)
    if s in EDF_SUFFIXES:
        return "pyedflib"
    if s in MNE_SUFFIXES:
        return "mne"
    if s in XDF_SUFFIXES:
        return "pyxdf"
    raise SourceError(f"file: {path.name}: no reader for {s or 'files without an extension'!r}; amrwatch reads "
                      f"{', '.join(EDF_SUFFIXES[:2] + MNE_SUFFIXES + XDF_SUFFIXES[:1])}")


def open_file(path: str, montage: Any = None, speed_hint: float | None = None):
    """`file:PATH` → a source, by extension."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"file: no such file {str(p)!r}; give the path of a recording "
                          "(.edf, .bdf, .vhdr, .set, .fif, .xdf ...)")
    reader = reader_name(p)
    if reader == "pyedflib":
        from .edf import EdfSource

        src = EdfSource(str(p), speed_hint=speed_hint, montage=montage)
        src.spec = f"file:{p}"
        return src
    if reader == "mne":
        return mne_source(p, montage)
    return xdf_source(p, montage)


class RecordingSource:
    """A whole recording that a library has opened: samples on demand, events pinned to samples."""

    paced = True
    manual = True
    scenario = None
    ground_truth = False

    def __init__(self, path: Path, reader: str, labels: list[str], units: list[str], fs: float, n_total: int,
                 block: Callable[[int, int], np.ndarray], events: list[tuple[int, str]], montage: Any = None) -> None:
        self.path = path
        self.spec = f"file:{path}"
        self.reader = reader
        self.fs = float(fs)
        self.n_total = int(n_total)
        self._block = block
        try:
            self.montage = montage_from_labels(labels, self.fs, units=units, montage=montage, require_analysed=True)
        except MontageError as err:
            raise SourceError(f"file: {path.name}: {err}") from None
        self.stimuli: list[StimulusEvent] = []
        self.stages: list[tuple[int, str]] = []
        unknown: Counter[str] = Counter()
        for idx, text in sorted(events, key=lambda e: e[0]):
            parsed = annotations.parse(text)
            if parsed is None:
                unknown[text.strip()[:60]] += 1
            elif not 0 <= idx < self.n_total:
                unknown[f"{text.strip()[:40]} (outside the recording)"] += 1
            elif parsed[0] == "stimulus":
                self.stimuli.append(StimulusEvent(idx, **parsed[1]))
            else:
                self.stages.append((idx, parsed[1]["stage"]))
        self.notes = [f"read with {reader}: {len(self.stimuli)} stimuli, {len(self.stages)} stage markers"]
        if unknown:
            listed = ", ".join(f"{t!r}" + (f" x{n}" if n > 1 else "") for t, n in unknown.most_common(20))
            self.notes.append(f"annotations not understood (listed once, not used): {listed}")
        if not self.stimuli:
            raise SourceError(f"file: {path.name}: no stimulus in its events ({', '.join(self.notes)}); mark them "
                              "as e.g. 'stim ZYG 15mA 0.2ms' (README, 'Stimulus and stage markers')")
        self.pos = self._si = self._gi = 0

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) of every channel, as `read` gives them (offline: sweeps only)."""
        return np.ascontiguousarray(self._block(lo, hi - lo), dtype="<f4")

    def read(self, n_samples: int) -> Chunk | None:
        if self.pos >= self.n_total:
            return None
        n = min(n_samples, self.n_total - self.pos)
        out = np.ascontiguousarray(self._block(self.pos, n), dtype="<f4")
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
        return {"file": self.path.name[:256], "reader": self.reader, "n_samples": self.n_total,
                "n_stimuli": len(self.stimuli), "sampling_rate_hz": self.fs}

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- MNE


def mne_source(path: Path, montage: Any = None) -> RecordingSource:
    try:
        import mne
    except ImportError:
        raise SourceError(f"file: {path.name} needs MNE-Python to be read: {FORMATS_HINT}") from None
    try:
        raw = mne.io.read_raw(str(path), preload=False, verbose="error")
    except Exception as err:  # noqa: BLE001 - MNE raises many types; the message is what matters
        raise SourceError(f"file: {path.name} cannot be read by MNE-Python ({type(err).__name__}: {err})") from None
    from mne.io.constants import FIFF

    orig = getattr(raw, "_orig_units", None) or {}
    scale, units = [], []
    for ch in raw.info["chs"]:
        if ch["unit"] == FIFF.FIFF_UNIT_V:  # MNE holds voltages in volts
            scale.append(1e6)
            units.append("uV")
        else:
            scale.append(1.0)
            units.append(str(orig.get(ch["ch_name"], "")))
    factor = np.asarray(scale)[:, None]

    def block(start: int, n: int) -> np.ndarray:
        return raw.get_data(start=start, stop=start + n) * factor

    events: list[tuple[int, str]] = []
    ann = raw.annotations
    if len(ann):
        idx = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)
        events = [(int(i), str(d)) for i, d in zip(idx, ann.description)]
    return RecordingSource(path, f"mne {mne.__version__} ({type(raw).__name__})", list(raw.ch_names), units,
                           float(raw.info["sfreq"]), raw.n_times, block, events, montage)


# ----------------------------------------------------------------------------------------------- XDF


def _first(d: dict, key: str, default: Any = None) -> Any:
    v = d.get(key)
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def xdf_source(path: Path, montage: Any = None) -> RecordingSource:
    """The EMG stream (the regular numeric stream with the most channels) and every string marker stream.

    pyxdf aligns the streams' clocks (the clock offsets the recorder logged) and dejitters the
    regular stream only; a marker lands on the EMG sample whose time stamp is nearest its own."""
    try:
        import pyxdf
    except ImportError:
        raise SourceError(f"file: {path.name} needs pyxdf to be read: {FORMATS_HINT}") from None
    try:
        streams, _header = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=True,
                                          verbose=False)
    except Exception as err:  # noqa: BLE001
        raise SourceError(f"file: {path.name} cannot be read by pyxdf ({type(err).__name__}: {err})") from None
    regular = [s for s in streams if float(_first(s["info"], "nominal_srate", 0) or 0) > 0
               and _first(s["info"], "channel_format") != "string" and len(s["time_stamps"])]
    if not regular:
        raise SourceError(f"file: {path.name}: no regularly sampled numeric stream (the EMG) among its "
                          f"{len(streams)} stream(s)")
    emg = max(regular, key=lambda s: int(_first(s["info"], "channel_count", 0)))
    info = emg["info"]
    n_ch = int(_first(info, "channel_count"))
    labels, units = [], []
    try:
        chans = info["desc"][0]["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        chans = []
    for i in range(n_ch):
        c = chans[i] if i < len(chans) else {}
        labels.append(str(_first(c, "label", f"CH{i + 1}")))
        units.append(str(_first(c, "unit", "uV")))
    data = np.asarray(emg["time_series"], dtype=np.float64).T  # (channels, samples)
    word = {"microvolts": "uv", "millivolts": "mv", "volts": "v"}
    scale = np.array([VOLTAGE_UNITS.get(word.get(u.strip().lower(), u.strip().lower()), 1.0) for u in units])[:, None]
    units = ["uV" if word.get(u.strip().lower(), u.strip().lower()) in VOLTAGE_UNITS else u for u in units]
    data = data * scale
    ts = np.asarray(emg["time_stamps"], dtype=np.float64)
    events: list[tuple[int, str]] = []
    for s in streams:
        if s is emg or _first(s["info"], "channel_format") != "string":
            continue
        for t, row in zip(s["time_stamps"], s["time_series"]):
            k = int(np.searchsorted(ts, t))
            if k > 0 and (k == len(ts) or t - ts[k - 1] <= ts[k] - t):
                k -= 1
            events.append((k, str(row[0]) if len(row) else ""))
    name = _first(info, "name", "?")
    return RecordingSource(path, f"pyxdf {getattr(pyxdf, '__version__', '?')} (stream {name!r})", labels, units,
                           float(_first(info, "nominal_srate")), data.shape[1],
                           lambda start, n: data[:, start:start + n], events, montage)
