"""`lsl:NAME[?setting=value&...]` — an inlet from a Lab Streaming Layer stream (pylsl).

Most research amplifiers stream over LSL. Stimuli come from a trigger channel
in the EMG stream (`TRIG`, `TRIG_ZYG`, ..., the detector every source shares,
triggers.py), from a companion string-marker stream (`NAME-markers`, or any
stream of type `Markers` whose name starts with NAME: `stim ZYG 15mA`,
`stage decompression`), or from both — then the trigger gives the sample and
the marker the label (direction, intensity, width).

Placement (why it is sample-exact from the first stimulus on):

- no LSL post-processing at all (no dejitter, no clocksync, no monotonize):
  each timestamp is the one the outlet sent. Dejitter fits a line through
  tens of seconds of timestamps: until it converges it moves samples by
  milliseconds, and on an irregular marker stream it has nothing to fit;
- a marker's time maps to the sample whose own timestamp (as received, kept
  per chunk for `keep_s`) is nearest to it — no rate arithmetic;
- marker and EMG outlets on one host share LSL's clock (`local_clock`), so
  their stamps are compared as sent; outlets on different hosts are brought
  onto one clock with each inlet's `time_correction()` (LSL's clock-offset
  estimate, refreshed every few seconds).

Gaps are never spliced: when a sample's timestamp jumps past the previous
one by more than `gap_tolerance_ms`, or the outlet restarts (a new uid or
source id, found by a background resolver after `reconnect_after_s` of
silence), the sample index jumps by the missing time, a `signal_lost` alarm
pulses (see `health()`), and triggers/markers after the gap are placed
against the new samples' own timestamps.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...proto.codec import describe
from . import annotations
from .labels import VOLTAGE_UNITS, montage_from_labels
from .source import Chunk, SourceError, StimulusEvent
from .triggers import TriggerDetector, TriggerSettings, trigger_detectors

log = logging.getLogger(__name__)

#: No post-processing: the outlet's own timestamps (see the module docstring).
FLAGS = pylsl.proc_none

UNIT_TO_UV = VOLTAGE_UNITS  # the one table of voltage units (labels.py)


class LslSettings(BaseModel):
    """Options given after `?` in `lsl:NAME?key=value&...`; each has a range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clock: Literal["auto", "shared_host", "time_correction"] = "auto"
    """How marker stamps meet sample stamps: auto = as sent when both outlets are on one host, else through
    each inlet's time_correction(); the others force one way."""
    markers: str | None = Field(None, max_length=256)
    """Name of the marker stream; default `NAME-markers`, `NAME_markers`, or a `Markers` stream named NAME*."""
    resolve_timeout_s: float = Field(10.0, ge=0.1, le=120.0)
    gap_tolerance_ms: float = Field(2.0, ge=0.0, le=1000.0)
    """A timestamp this much later than one sample period after the previous is a gap (samples lost)."""
    match_ms: float = Field(40.0, ge=0.0, le=100.0)
    """Trigger + markers: a marker labels the trigger pulse within this distance of its time."""
    marker_wait_ms: float = Field(300.0, ge=0.0, le=5000.0)
    """Trigger + markers: how much signal past a pulse to wait for its marker before sending it unlabelled."""
    keep_s: float = Field(30.0, ge=1.0, le=600.0)
    """Sample timestamps kept for markers that arrive late."""
    reconnect_after_s: float = Field(1.0, ge=0.1, le=60.0)
    """Silence after which a restarted outlet (new uid/source id) with the same name is taken up."""
    rate_window_s: float = Field(60.0, ge=5.0, le=3600.0)
    rate_tolerance_pct: float = Field(0.5, ge=0.01, le=50.0)
    """Received samples/s further than this from the nominal rate over `rate_window_s` raise an alarm."""
    trigger_threshold: float | None = Field(None, allow_inf_nan=False)
    trigger_min_swing: float = Field(0.5, gt=0.0, le=1e9)
    trigger_min_width_ms: float = Field(0.0, ge=0.0, le=10.0)
    trigger_min_gap_ms: float = Field(5.0, ge=0.0, le=50.0)

    def trigger(self) -> TriggerSettings:
        return TriggerSettings(self.trigger_threshold, self.trigger_min_swing, self.trigger_min_width_ms,
                               self.trigger_min_gap_ms)


def parse_spec(arg: str) -> tuple[str, LslSettings]:
    """`NAME?key=value&...` → (NAME, settings); a bad option is refused naming it, its range and the value."""
    name, _, query = arg.partition("?")
    opts: dict[str, Any] = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        opts[key] = values[-1]
    try:
        numeric = {k: (float(v) if k not in ("markers", "clock") and v not in ("", "none") else None if v == "none"
                       else v) for k, v in opts.items()}
    except ValueError as err:
        raise SourceError(f"lsl: options after '?' must be numbers (except markers, clock); {err}") from None
    try:
        return name, LslSettings(**numeric)
    except ValidationError as err:
        raise SourceError(f"lsl: option refused: {describe(err)}") from None


def _channels(info: pylsl.StreamInfo) -> tuple[list[str], list[str]]:
    """Labels and units from the stream description (XDF meta-data: channels/channel/label, unit)."""
    labels, units = [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < info.channel_count():
        labels.append(ch.child_value("label") or f"CH{len(labels) + 1}")
        units.append(ch.child_value("unit") or "")
        ch = ch.next_sibling()
    while len(labels) < info.channel_count():
        labels.append(f"CH{len(labels) + 1}")
        units.append("")
    return labels, units


def _often(n: int, fmt: str, *args: Any) -> None:
    """Warn for the first 5 occurrences, then every 100th (a quiet trigger line would warn per stimulus)."""
    if n <= 5 or n % 100 == 0:
        log.warning(fmt + " (occurrence %d)", *args, n)


@dataclass
class _Inlet:
    """One connected LSL stream and what is known about its clock."""

    inlet: pylsl.StreamInlet
    info: pylsl.StreamInfo
    tc: float = 0.0  # time_correction(): add to this stream's stamps for the local clock
    tc_at: float = -1e9

    @property
    def uid(self) -> str:
        return self.info.uid()

    @property
    def hostname(self) -> str:
        return self.info.hostname()

    def refresh_tc(self, now: float, timeout: float = 0.0) -> None:
        if now - self.tc_at < 5.0:
            return
        try:
            self.tc = float(self.inlet.time_correction(timeout=timeout))
            self.tc_at = now
        except (LslTimeout, LostError):
            pass


@dataclass
class _Pending:
    """A stimulus waiting for its partner (trigger + markers) or for its sample (markers)."""

    index: int
    event: StimulusEvent
    matched: bool = False


@dataclass
class _Counts:
    gaps: int = 0
    gap_samples: int = 0
    restarts: int = 0
    markers_placed: int = 0
    markers_dropped: int = 0
    triggers: int = 0
    labelled_by_marker: int = 0
    triggers_without_marker: int = 0
    markers_without_trigger: int = 0
    late_markers: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class LslSource:
    paced = False
    manual = True
    scenario = None
    ground_truth = False

    def __init__(self, arg: str, resolve_timeout_s: float | None = None, montage: Any = None) -> None:
        name, self.cfg = parse_spec(arg)
        if resolve_timeout_s is not None:
            self.cfg = self.cfg.model_copy(update={"resolve_timeout_s": resolve_timeout_s})
        self.spec = f"lsl:{arg}"
        self.name = name
        timeout = self.cfg.resolve_timeout_s
        found = pylsl.resolve_byprop("name", name, 1, timeout)
        if not found:
            raise SourceError(
                f"lsl: no LSL stream named {name!r} found within {timeout:g} s; "
                "check the amplifier's LSL app is streaming on this network"
            )
        self.emg = self._connect(found[0], timeout)
        info = self.emg.info
        self.fs = float(info.nominal_srate())
        if self.fs <= 0:
            raise SourceError(f"lsl: stream {name!r} has an irregular rate; AMR needs a regular EMG stream")
        if info.channel_format() == pylsl.cf_string:
            raise SourceError(f"lsl: stream {name!r} carries strings; give the EMG stream's name")
        self.n_channels = info.channel_count()
        self.labels, self.units = _channels(info)
        try:
            # No unit given: µV, as the README says. A montage file (--montage) states what each channel is.
            self.montage = montage_from_labels(self.labels, self.fs, units=[u or "uV" for u in self.units],
                                               montage=montage, require_analysed=True)
        except ValueError as err:
            raise SourceError(f"lsl: stream {name!r}: {err}") from None
        self.scale = np.ones((self.n_channels, 1), dtype=np.float64)
        for i, (ch, unit) in enumerate(zip(self.montage.channels, self.units)):
            u = unit.strip().lower()
            if ch.kind != "emg" or not u:
                continue  # no unit given: µV, as the README says
            if u not in UNIT_TO_UV:
                raise SourceError(
                    f"lsl: channel {self.labels[i]!r} of {name!r} has unit {unit!r}; expected one of "
                    "uV/microvolts, mV/millivolts, V/volts, nV"
                )
            self.scale[i, 0] = UNIT_TO_UV[u]
        self.triggers: dict[int, TriggerDetector] = trigger_detectors(self.montage, self.cfg.trigger())
        self.markers = self._marker_inlet(name)
        self.mode = ("both" if self.markers else "trigger") if self.triggers else ("markers" if self.markers
                                                                                    else "none")
        if self.mode == "none":
            log.warning("lsl: %s has no trigger channel and no marker stream: no stimuli will be known", name)
        self.emg.refresh_tc(time.monotonic(), timeout=min(timeout, 2.0))
        if self.markers is not None:
            self.markers.refresh_tc(time.monotonic(), timeout=min(timeout, 2.0))
        self.resolver = pylsl.ContinuousResolver(prop="name", value=name, forget_after=2.0)
        self.counts = _Counts()
        self.pos = 0  # sample index of the next sample
        self._last_ts: float | None = None  # EMG-clock stamp of the last sample
        self._last_local: float | None = None  # local-clock stamp of the last sample
        self._last_host = self.emg.hostname  # one host, one clock: stamps compare as sent
        self._last_arrival = time.monotonic()
        self._after_restart = False
        self._carry: tuple[np.ndarray, np.ndarray] | None = None
        self._ring: deque[tuple[int, np.ndarray]] = deque()  # (first index, sample stamps) per block
        self._pending_markers: deque[tuple[float, str]] = deque()  # (EMG-clock time, text)
        self._pending_edges: list[_Pending] = []
        self._pending_labels: list[_Pending] = []
        self._sent_unlabelled: deque[int] = deque(maxlen=64)
        self._rate: deque[tuple[float, int]] = deque()
        self._received = 0
        self._health: dict[str, tuple[str, str, str, bool]] = {}
        self._next_look = 0.0
        self._next_rate = 0.0
        self._stamp_dev: deque[tuple[float, float]] = deque()
        self.stamp_jitter_max_ms = 0.0
        self._next_marker_look = 0.0
        self._markers_lost = False
        self.marker_resolver = (pylsl.ContinuousResolver(prop="name", value=self.markers.info.name(), forget_after=2.0)
                                if self.markers is not None else None)
        self._buf = np.empty((max(int(self.fs), 1), self.n_channels), dtype=np.float32)
        self.stream_facts = self._facts()
        log.info("lsl: %s from %s (%s), %g Hz, %d channels; stimuli timed by %s", name, info.hostname(),
                 info.source_id() or "no source id", self.fs, self.n_channels, self.mode)

    # -- connecting --------------------------------------------------------------
    @staticmethod
    def _connect(info: pylsl.StreamInfo, timeout: float, regular: bool = True) -> _Inlet:
        # recover=False: a lost outlet is taken up by us (new uid, clock, gap), never silently.
        inlet = pylsl.StreamInlet(info, max_buflen=60 if regular else 360, recover=False, processing_flags=FLAGS)
        full = inlet.info(timeout=timeout)
        # Open the data connection now: an inlet otherwise connects on its first pull,
        # and whatever was pushed before that is never seen.
        inlet.open_stream(timeout=timeout)
        return _Inlet(inlet, full)

    def _marker_inlet(self, name: str) -> _Inlet | None:
        if self.cfg.markers:
            streams = pylsl.resolve_byprop("name", self.cfg.markers, 1, self.cfg.resolve_timeout_s)
            if not streams:
                raise SourceError(f"lsl: marker stream {self.cfg.markers!r} (option markers=) not found within "
                                  f"{self.cfg.resolve_timeout_s:g} s")
            return self._connect(streams[0], self.cfg.resolve_timeout_s, regular=False)
        streams = pylsl.resolve_byprop("type", "Markers", 0, 1.0)
        wanted = (f"{name}-markers", f"{name}_markers")
        streams.sort(key=lambda i: i.name() not in wanted)
        for info in streams:
            if info.name() in wanted or info.name().startswith(name):
                return self._connect(info, self.cfg.resolve_timeout_s, regular=False)
        return None

    def _facts(self) -> dict[str, Any]:
        info = self.emg.info
        m = self.markers
        return {
            "kind": "lsl",
            "name": info.name()[:256],
            "source_id": info.source_id()[:256],
            "uid": info.uid()[:256],
            "hostname": info.hostname()[:256],
            "nominal_rate_hz": self.fs,
            "channel_format": {pylsl.cf_float32: "float32", pylsl.cf_double64: "double64",
                               pylsl.cf_int32: "int32", pylsl.cf_int16: "int16", pylsl.cf_int8: "int8",
                               pylsl.cf_int64: "int64"}.get(info.channel_format(), "other"),
            "channel_labels": [lbl[:64] for lbl in self.labels][:256],
            "channel_units": [u[:32] for u in self.units][:256],
            "stimulus_timing": self.mode,
            "trigger_channels": [self.montage.channels[i].name for i in self.triggers],
            "marker_stream": m.info.name()[:256] if m else None,
            "marker_source_id": m.info.source_id()[:256] if m else None,
            "marker_hostname": m.hostname[:256] if m else None,
            "clock": self._clock_kind(),
        }

    def _clock_kind(self) -> str:
        if self.markers is None:
            return "samples"  # triggers are in the samples: no clock involved
        if self.cfg.clock != "auto":
            return self.cfg.clock
        return "shared_host" if self.markers.hostname == self.emg.hostname else "time_correction"

    # -- reading -------------------------------------------------------------------
    def read(self, n_samples: int) -> Chunk | None:
        now = time.monotonic()
        self.emg.refresh_tc(now)
        if self.markers is not None:
            self.markers.refresh_tc(now)
        data, ts = self._next_block(min(n_samples, self._buf.shape[0]))
        chunk = Chunk(first_sample_index=self.pos, samples=np.empty((self.n_channels, 0), dtype="<f4"))
        if ts.size:
            self._take_block(data, ts, chunk)
        elif now - self._last_arrival > self.cfg.reconnect_after_s and now >= self._next_look:
            self._next_look = now + 0.2
            self._maybe_switch()
        if self._markers_lost and now >= self._next_marker_look:
            self._next_marker_look = now + 0.2
            self._switch_markers()
        self._pull_markers()
        self._place(chunk)
        self._watch_rate(time.monotonic())
        return chunk

    def _next_block(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._carry is not None:
            data, ts = self._carry
            self._carry = None
            if ts.size > n:
                self._carry = (data[n:], ts[n:])
                data, ts = data[:n], ts[:n]
            return data, ts
        try:
            _, stamps = self.emg.inlet.pull_chunk(timeout=0.02, max_samples=n, dest_obj=self._buf)
        except LostError:
            now = time.monotonic()
            if now >= self._next_look:
                self._next_look = now + 0.2
                self._maybe_switch(lost=True)
            return self._buf[:0], np.empty(0)
        k = len(stamps)
        return self._buf[:k].copy(), np.asarray(stamps, dtype=np.float64)

    def _take_block(self, data: np.ndarray, ts: np.ndarray, chunk: Chunk) -> None:
        """Check continuity, keep the stamps, hand out samples and trigger edges."""
        period = 1.0 / self.fs
        tol = self.cfg.gap_tolerance_ms / 1000.0 + 0.5 * period
        local0 = ts[0] + self.emg.tc  # only used across hosts
        d = 0.0
        if self._last_ts is not None:
            if self._after_restart and self.emg.hostname != self._last_host:  # another host: local clock
                d = local0 - (self._last_local + period)
            else:
                d = ts[0] - (self._last_ts + period)
            if d < -tol:  # stamps went backwards: an outlet with its own clock origin; use arrival time
                missing = max(1, int(round((time.monotonic() - self._last_arrival) * self.fs)) - ts.size)
                self._gap(missing, f"timestamps went back by {-d:.3f} s (outlet restarted with another clock); "
                                   "gap length estimated from arrival time")
            elif d > tol or self._after_restart and d > 0.5 * period:
                self._gap(int(round(d * self.fs)), f"{d * 1000:.1f} ms of samples never arrived")
        boundary = abs(d) if self._last_ts is not None and not self._after_restart and abs(d) <= tol else 0.0
        self._after_restart = False
        # a block is contiguous by construction: cut it at the first jump, the rest waits
        dev = np.abs(np.diff(ts) - period)
        jumps = np.flatnonzero(dev > tol)
        if jumps.size:
            cut = int(jumps[0]) + 1
            self._carry = (data[cut:], ts[cut:]) if self._carry is None else (
                np.concatenate([data[cut:], self._carry[0]]), np.concatenate([ts[cut:], self._carry[1]]))
            data, ts = data[:cut], ts[:cut]
            dev = dev[:cut - 1]
        self._watch_stamps(max(boundary, float(dev.max()) if dev.size else 0.0))
        chunk.first_sample_index = self.pos
        chunk.samples = np.ascontiguousarray((data.T * self.scale).astype("<f4"))
        chunk.device_time_s = float(ts[0])
        for row, det in self.triggers.items():
            for ev in det.feed(data[:, row], self.pos):
                self.counts.triggers += 1
                if self.markers is None:
                    chunk.stimuli.append(ev)
                else:
                    self._pending_edges.append(_Pending(ev.sample_index, ev))
        self._ring.append((self.pos, ts))
        keep = int(self.cfg.keep_s * self.fs)
        while self._ring and self._ring[0][0] + self._ring[0][1].size < self.pos - keep:
            self._ring.popleft()
        self.pos += ts.size
        self._last_ts = float(ts[-1])
        self._last_local = float(ts[-1]) + self.emg.tc
        self._last_host = self.emg.hostname
        self._last_arrival = time.monotonic()
        self._received += ts.size
        self._rate.append((self._last_arrival, self._received))

    def _gap(self, missing: int, why: str) -> None:
        missing = max(1, missing)
        self.counts.gaps += 1
        self.counts.gap_samples += missing
        msg = (f"{self.name}: {missing} sample(s) ({missing / self.fs * 1000:.1f} ms) missing before sample "
               f"{self.pos + missing} — {why}; the session records the gap and resumes")
        log.warning("lsl: %s", msg)
        self._health["lsl_gap"] = ("signal_lost", "high", msg[:1000], True)
        self.pos += missing
        for det in self.triggers.values():
            det.reset()
        self._rate.clear()

    def _maybe_switch(self, lost: bool = False) -> None:
        """Silence (or a lost outlet): take up a stream of the same name with another uid, if one is there."""
        for info in self.resolver.results():
            if info.uid() == self.emg.uid:
                continue
            if info.nominal_srate() != self.fs or info.channel_count() != self.n_channels:
                key = f"lsl_incompatible:{info.uid()}"
                if key not in self.counts.extra:
                    self.counts.extra[key] = 1
                    log.error("lsl: a new %r stream (%s) runs at %g Hz with %d channels, this session at %g Hz "
                              "with %d: not taken up; start a new session for it", self.name, info.uid(),
                              info.nominal_srate(), info.channel_count(), self.fs, self.n_channels)
                continue
            try:
                new = self._connect(info, 2.0)
            except (LslTimeout, LostError) as err:
                log.warning("lsl: new %r stream %s could not be opened (%s); trying again", self.name, info.uid(), err)
                continue
            new.refresh_tc(time.monotonic(), timeout=2.0)
            try:
                self.emg.inlet.close_stream()
            except Exception:  # noqa: BLE001 - the old outlet is gone; nothing to close cleanly
                pass
            log.warning("lsl: %s restarted (uid %s → %s, source id %r, host %s); resuming", self.name,
                        self.emg.uid, new.uid, new.info.source_id(), new.hostname)
            self.emg = new
            self.counts.restarts += 1
            self._after_restart = True
            self._carry = None
            self.stream_facts = {**self.stream_facts, "uid": new.uid[:256], "source_id": new.info.source_id()[:256],
                                 "hostname": new.hostname[:256]}
            return
        if lost and "lsl_lost" not in self.counts.extra:
            self.counts.extra["lsl_lost"] = 1
            log.warning("lsl: %s lost; waiting for it (or a restarted outlet of that name) to come back", self.name)

    def _switch_markers(self) -> None:
        """The marker outlet was lost: take up a marker stream of the same name with another uid."""
        assert self.markers is not None and self.marker_resolver is not None
        for info in self.marker_resolver.results():
            if info.uid() == self.markers.uid:
                continue
            try:
                new = self._connect(info, 2.0, regular=False)
            except (LslTimeout, LostError):
                continue
            new.refresh_tc(time.monotonic(), timeout=2.0)
            self.markers = new
            self._markers_lost = False
            self.counts.restarts += 1
            log.warning("lsl: marker stream %s restarted (uid %s); taken up", info.name(), info.uid())
            return

    # -- stimuli ---------------------------------------------------------------------
    def _pull_markers(self) -> None:
        if self.markers is None:
            return
        offset = 0.0 if self._clock_kind() == "shared_host" else self.markers.tc - self.emg.tc
        while True:
            try:
                sample, ts = self.markers.inlet.pull_sample(timeout=0.0)
            except LostError:
                if not self._markers_lost:
                    log.warning("lsl: marker stream %s lost; waiting for it to come back", self.markers.info.name())
                self._markers_lost = True
                return
            if sample is None:
                return
            self._pending_markers.append((float(ts) + offset, str(sample[0])))

    def _index_of(self, t: float) -> int | None:
        """The sample whose own stamp is nearest `t`; None when `t` is in a gap or no longer kept."""
        half = 0.5 / self.fs
        after: tuple[int, np.ndarray] | None = None  # the block after the one looked at
        for first, ts in reversed(self._ring):
            if t > ts[-1] + half:
                if after is not None and after[0] == first + ts.size:
                    # between two blocks with no samples missing (stamps that wander): the nearer sample
                    return first + ts.size - 1 if t - ts[-1] <= after[1][0] - t else after[0]
                return None  # after this block and before the next: in a gap
            if t >= ts[0] - half:
                i = int(np.searchsorted(ts, t))
                if i == ts.size or (i > 0 and t - ts[i - 1] <= ts[i] - t):
                    i -= 1
                return first + i
            after = (first, ts)
        return None

    def _place(self, chunk: Chunk) -> None:
        half = 0.5 / self.fs
        pending = self._pending_markers
        while pending and self._last_ts is not None and pending[0][0] <= self._last_ts + half:
            t, text = self._pending_markers.popleft()
            parsed = annotations.parse(text)
            if parsed is None:
                continue
            idx = self._index_of(t)
            if idx is None:
                self.counts.markers_dropped += 1
                log.warning("lsl: marker %r at %.4f s falls in a gap of %s or before the %g s of stamps kept: "
                            "dropped", text, t, self.name, self.cfg.keep_s)
                continue
            self.counts.markers_placed += 1
            if parsed[0] == "stage":
                chunk.stages.append((idx, parsed[1]["stage"]))
            elif self.triggers:
                self._pending_labels.append(_Pending(idx, StimulusEvent(idx, **parsed[1])))
            else:
                chunk.stimuli.append(StimulusEvent(idx, **parsed[1]))
        if self.triggers and self.markers is not None:
            self._pair(chunk)

    def _pair(self, chunk: Chunk) -> None:
        """Trigger + markers: each pulse takes the label of the nearest marker within `match_ms`."""
        win = int(round(self.cfg.match_ms * self.fs / 1000.0))
        for edge in self._pending_edges:
            best = None
            for lab in self._pending_labels:
                if not lab.matched and abs(lab.index - edge.index) <= win:
                    if best is None or abs(lab.index - edge.index) < abs(best.index - edge.index):
                        best = lab
            if best is not None:
                best.matched = edge.matched = True
                ev = best.event
                chunk.stimuli.append(StimulusEvent(edge.index, ev.direction, ev.intensity_ma, ev.width_ms))
                self.counts.labelled_by_marker += 1
        for lab in self._pending_labels:  # its pulse already went out unlabelled: never send it twice
            late = next((i for i in self._sent_unlabelled if abs(i - lab.index) <= win), None) if not lab.matched \
                else None
            if late is not None:
                lab.matched = True
                self.counts.late_markers += 1
                _often(self.counts.late_markers,
                       "lsl: marker %s for the pulse at sample %d came more than marker_wait_ms (%g ms of signal) "
                       "after it; the pulse was already sent with its trigger label", lab.event.direction, late,
                       self.cfg.marker_wait_ms)
        wait = int(round(self.cfg.marker_wait_ms * self.fs / 1000.0))
        for edge in self._pending_edges:
            if not edge.matched and edge.index + wait < self.pos:
                edge.matched = True
                self._sent_unlabelled.append(edge.index)
                chunk.stimuli.append(edge.event)
                self.counts.triggers_without_marker += 1
                _often(self.counts.triggers_without_marker,
                       "lsl: trigger pulse at sample %d has no marker within %g ms: sent as %s (from the trigger "
                       "channel)", edge.index, self.cfg.match_ms, edge.event.direction)
        for lab in self._pending_labels:
            if not lab.matched and lab.index + wait < self.pos:
                lab.matched = True
                chunk.stimuli.append(lab.event)
                self.counts.markers_without_trigger += 1
                _often(self.counts.markers_without_trigger,
                       "lsl: marker %s at sample %d has no trigger pulse within %g ms: placed by its timestamp",
                       lab.event.direction, lab.index, self.cfg.match_ms)
        self._pending_edges = [e for e in self._pending_edges if not e.matched]
        self._pending_labels = [m for m in self._pending_labels if not m.matched]
        chunk.stimuli.sort(key=lambda s: s.sample_index)

    # -- health ----------------------------------------------------------------------
    def _watch_rate(self, now: float) -> None:
        """Samples received per second against the nominal rate, over `rate_window_s`.

        Arrival times carry one-sided delays (a busy machine, a stalled network, a consumer catching up),
        so the rate is read from the least-delayed arrivals: the minimum of (arrival − samples/nominal
        rate) in the window's first and last fifth. A true rate off nominal moves that minimum steadily;
        a backlog that drains does not."""
        if now < self._next_rate:
            return
        self._next_rate = now + 1.0
        w = self.cfg.rate_window_s
        while len(self._rate) > 1 and self._rate[1][0] <= now - w:
            self._rate.popleft()
        if len(self._rate) < 2 or now - self._rate[0][0] < 0.95 * w:
            return
        arr = np.array(self._rate)
        t, lag = arr[:, 0], arr[:, 0] - arr[:, 1] / self.fs
        fifth = (t[-1] - t[0]) / 5.0
        head, tail = t <= t[0] + fifth, t >= t[-1] - fifth
        drift = (lag[tail].min() - lag[head].min()) / (t[tail].mean() - t[head].mean())
        off = -drift * 100.0  # n = r·t, lag = t·(1 − r/fs): r/fs − 1 = −d(lag)/dt
        rate = self.fs * (1.0 + off / 100.0)
        if abs(off) > self.cfg.rate_tolerance_pct:
            self._health["lsl_rate"] = (
                "recording_quality", "medium",
                f"{self.name} delivers {rate:.1f} samples/s over the last {w:g} s; its nominal rate is "
                f"{self.fs:g} Hz ({off:+.2f} %, allowed ±{self.cfg.rate_tolerance_pct:g} %): latencies and "
                "stimulus placement assume the nominal rate", False)
        else:
            self._health.pop("lsl_rate", None)

    def _watch_stamps(self, dev_s: float) -> None:
        """Stamps that wander from one sample period apart (an outlet stamping chunks when it pushes them,
        not with their sample time) limit marker placement to that wander: say so while it lasts."""
        now = time.monotonic()
        self._stamp_dev.append((now, dev_s))
        self.stamp_jitter_max_ms = max(self.stamp_jitter_max_ms, dev_s * 1000.0)
        while self._stamp_dev and self._stamp_dev[0][0] < now - 10.0:
            self._stamp_dev.popleft()
        worst = max(v for _, v in self._stamp_dev)
        if self.mode == "markers" and worst > 1.0 / self.fs:
            self._health["lsl_stamps"] = (
                "recording_quality", "medium",
                f"{self.name}'s sample stamps wander by up to {worst * 1000:.2f} ms from one sample period apart "
                f"(> 1 sample at {self.fs:g} Hz): markers are placed against these stamps, so stimuli may be off by "
                "as much; stamp chunks with their sample time in the outlet, or record a trigger channel", False)
        else:
            self._health.pop("lsl_stamps", None)

    def health(self) -> dict[str, tuple[str, str, str, bool]]:
        """Conditions for the acquirer to alarm on: key → (kind, priority, message, pulse).
        A pulse (a gap) is reported once; the others stay while they last."""
        out = dict(self._health)
        for k in [k for k, v in self._health.items() if v[3]]:
            del self._health[k]
        return out

    def settings(self) -> dict[str, Any]:
        return {"stream": self.name[:256], "sampling_rate_hz": self.fs, "markers": self.markers is not None,
                "stimulus_timing": self.mode, "gap_tolerance_ms": self.cfg.gap_tolerance_ms,
                "match_ms": self.cfg.match_ms, "rate_window_s": self.cfg.rate_window_s,
                "rate_tolerance_pct": self.cfg.rate_tolerance_pct}

    def close(self) -> None:
        for s in (self.emg, self.markers):
            if s is not None:
                try:
                    s.inlet.close_stream()
                except Exception:  # noqa: BLE001 - closing a lost stream
                    pass
