"""The analyzer without sockets: signal, stimuli and stage markers in, messages out.

The live service and the offline `amrwatch analyze` drive this one class, so
the same input gives the same numbers either way (the audit replay relies on
it). Every call returns a list of `(message_type, body_fields)` where the
fields are exactly the body of the proto model (`amr_measurement`,
`amr_state`, `baseline`, `amr_course`, `alarm`).

Stage attribution is by sample index, never by arrival order. Bad input
(wrong channel count, a changed sampling rate, NaN samples, repeated or
out-of-order frames, gaps, stale stimuli) is counted in `counters`, reported
as an `alarm` with a message that says what happened, and the sweeps it
touches are published as rejected — the engine never raises on input.

`reject_reason` values: gap (samples missing in the sweep), nan, saturated,
diathermy, stale (older than the buffer), incomplete (the session ended
first), before_recording (a late joiner's first sweeps), not_fed (signal the
offline driver skipped; never expected).
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

import numpy as np

from ...proto.messages import Montage
from .baseline import BaselineTracker
from .classify import classify
from .condition import Conditioner, SweepGeometry
from .course import ChannelCourse, SweepMark
from .epoch import Epocher, PendingSweep, RingBuffer
from .measure import Measurer, reject_reasons
from .settings import AnalyzerSettings

Output = tuple[str, dict[str, Any]]

#: Published precision of the rows of measure.TABLE_ROWS: 0.001 µV, 0.0001 µV noise, 0.001 SNR,
#: 0.001 µV·ms, 0.1 µs latencies.
_SCALE = np.array([1e3, 1e4, 1e3, 1e3, 1e4, 1e4])[:, None]

#: Rejected sweeps whose samples are all there: their p2p and noise are still
#: reported, so the size of the interference is on record.
MEASURED_WHEN_REJECTED = ("diathermy", "saturated")


def _rows(indices: list[int]) -> np.ndarray | slice:
    """Channel rows to read from the ring buffer: a slice when they are adjacent (a view, not a copy)."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return np.array(indices)


class AnalyzerEngine:
    """One session: its montage fixes the channels, the rate and who records which direction."""

    def __init__(self, montage: Montage, settings: AnalyzerSettings | None = None, *, source: str = "analyzer"):
        self.montage = montage
        self.settings = settings or AnalyzerSettings()
        self.source = source
        self.fs = float(montage.sampling_rate_hz)
        self.geometry = SweepGeometry(self.settings, self.fs)
        self.conditioner = Conditioner(self.geometry)
        self.measurer = Measurer(self.geometry)
        names = montage.channel_names()
        self.n_channels = len(names)
        self.recording: dict[str, tuple[list[str], np.ndarray | slice]] = {}
        for stim in montage.stimulation:
            chans = montage.recording_channels(stim.direction)
            if chans:
                self.recording[stim.direction] = (chans, _rows([names.index(c) for c in chans]))
        capacity = max(int(round(self.settings.buffer_s * self.fs)), self.geometry.n + 1)
        self.buffer = RingBuffer(self.n_channels, capacity)
        self.epocher = Epocher(self.geometry.pre, self.geometry.post)
        all_rec = [c for chans, _ in self.recording.values() for c in chans]
        self.baselines = BaselineTracker(self.settings, all_rec)
        self.courses: dict[str, ChannelCourse] = {
            c: ChannelCourse(c, d, self.settings) for d, (chans, _) in self.recording.items() for c in chans
        }
        self.stages: list[tuple[int, str]] = []
        self.end_sample: int | None = None
        self.counters: Counter[str] = Counter()
        self.n_measurements = 0
        self._seen_stimuli: set[int] = set()
        self._course_sent: dict[str, Any] | None = None

    # -- inputs ---------------------------------------------------------------------
    def on_frame(self, first_sample_index: int, samples: np.ndarray,
                 sampling_rate_hz: float | None = None) -> list[Output]:
        """A block of samples (channels, n) starting at `first_sample_index`."""
        out: list[Output] = []
        arr = np.asarray(samples)
        if arr.ndim != 2 or arr.shape[0] != self.n_channels:
            got = arr.shape[0] if arr.ndim == 2 else f"shape {arr.shape}"
            self._alarm(out, "channel_count", "input_rejected", "medium",
                        f"emg_frame at sample {first_sample_index} has {got} channels; the session's montage has "
                        f"{self.n_channels} ({', '.join(self.montage.channel_names())[:200]}): frame dropped, "
                        "sweeps spanning it are rejected as gaps")
            return out
        if sampling_rate_hz is not None and abs(sampling_rate_hz - self.fs) > 1e-9 * self.fs:
            self._alarm(out, "sampling_rate", "input_rejected", "high",
                        f"emg_frame at sample {first_sample_index} is sampled at {sampling_rate_hz:g} Hz; this "
                        f"session started at {self.fs:g} Hz and a rate cannot change mid-session: frame dropped, "
                        "start a new session for the new rate")
            return out
        if arr.shape[1] == 0:
            return out
        if not np.isfinite(arr).all():
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            self._alarm(out, "nan", "input_rejected", "medium",
                        f"emg_frame at sample {first_sample_index} carries {bad} NaN/infinite sample(s): "
                        "sweeps containing them are rejected")
        res = self.buffer.write(int(first_sample_index), arr)
        if res.kind == "gap":
            self.counters["gap_samples"] += res.missing
            self._alarm(out, "gap", "data_gap", "medium",
                        f"{res.missing} sample(s) ({res.missing / self.fs * 1000:.1f} ms) missing before sample "
                        f"{first_sample_index}: sweeps spanning them are rejected")
        elif res.kind in ("duplicate", "out_of_order", "overlap"):
            what = {
                "duplicate": "repeats samples already received: dropped",
                "out_of_order": "arrived after later samples (out of order): dropped, the hole it would fill "
                                "stays a gap",
                "overlap": f"overlaps samples already received: its first {res.dropped} sample(s) dropped",
            }[res.kind]
            self._alarm(out, res.kind, "input_rejected", "low",
                        f"emg_frame at samples {first_sample_index}..{first_sample_index + arr.shape[1] - 1} {what}")
        self._complete(out)
        return out

    def skip_to(self, sample_index: int) -> list[Output]:
        """Declare the signal up to `sample_index` deliberately not fed (offline: between sweeps)."""
        out: list[Output] = []
        self.buffer.skip_to(int(sample_index))
        self._complete(out)
        return out

    def on_stimulus(self, stimulus_index: int, sample_index: int, stim_time_s: float, direction: str) -> list[Output]:
        out: list[Output] = []
        if direction not in self.recording:
            self._alarm(out, "unknown_direction", "input_rejected", "medium",
                        f"stimulus #{stimulus_index} is {direction}, but the montage has no channel recording "
                        f"{direction}-LSR (directions with channels: {sorted(self.recording)}): not analysed")
            return out
        if stimulus_index in self._seen_stimuli:
            self._alarm(out, "duplicate_stimulus", "input_rejected", "low",
                        f"stimulus #{stimulus_index} received twice: the repeat is ignored")
            return out
        self._seen_stimuli.add(stimulus_index)
        sweep = self.epocher.add(stimulus_index, int(sample_index), float(stim_time_s), direction)
        hwm = self.buffer.hwm
        if hwm is not None and self.buffer.start is not None:
            if sweep.lo < hwm - self.buffer.capacity and sweep.lo >= self.buffer.start:
                self._alarm(out, "stale_stimulus", "input_rejected", "medium",
                            f"stimulus #{stimulus_index} at sample {sample_index} ({stim_time_s:.3f} s) is older "
                            f"than the {self.settings.buffer_s:g} s of signal the analyzer keeps: its sweep is "
                            "rejected as stale")
            elif sweep.lo > hwm + self.buffer.capacity:
                self._alarm(out, "future_stimulus", "input_rejected", "low",
                            f"stimulus #{stimulus_index} at sample {sample_index} is more than "
                            f"{self.settings.buffer_s:g} s ahead of the signal (newest sample {hwm - 1}): "
                            "it waits for its sweep")
        self._complete(out)
        return out

    def on_stage(self, stage: str, sample_index: int | None) -> list[Output]:
        out: list[Output] = []
        if sample_index is None:
            sample_index = self.buffer.hwm or 0
        bisect.insort(self.stages, (int(sample_index), stage))
        if stage == "end" and self.end_sample is None:
            self.end_sample = int(sample_index)
        self._maybe_course(out)
        return out

    def on_end(self) -> list[Output]:
        """The session ended: sweeps still waiting are rejected, baselines and course settled."""
        out: list[Output] = []
        for sweep in self.epocher.drain():
            self._finish(sweep, out)
        self._final(out)
        return out

    # -- sweeps -------------------------------------------------------------------------
    def stage_at(self, sample_index: int) -> str | None:
        i = bisect.bisect_right(self.stages, (sample_index, "\uffff"))
        return self.stages[i - 1][1] if i else None

    def _complete(self, out: list[Output]) -> None:
        done = self.epocher.complete(self.buffer.hwm)
        for sweep in done:
            self._finish(sweep, out)
        if done:
            self._maybe_course(out)

    def _finish(self, sweep: PendingSweep, out: list[Output]) -> None:
        names, rows = self.recording[sweep.direction]
        status, raw = self.buffer.read(sweep.lo, sweep.hi, rows)
        stage = self.stage_at(sweep.sample_index)
        n = len(names)
        if status != "ok":
            self.counters[f"rejected_{status}"] += n
            reasons: list[str | None] = [status] * n
            m = None
        else:
            reasons = reject_reasons(raw, self.geometry)
            x = np.where(np.isfinite(raw), raw, np.float32(0.0)) if "nan" in reasons else raw
            m = self.measurer(self.conditioner(x))
            for r in reasons:
                if r is not None:
                    self.counters[f"rejected_{r}"] += 1
        mark = SweepMark(sweep.stimulus_index, sweep.sample_index, stage)
        if m is not None:
            p2p, noise, snr, area, onset, peak = (np.rint(m.table * _SCALE) / _SCALE).tolist()
            present, phases = m.present.tolist(), m.n_phases.tolist()
        courses, baselines = self.courses, self.baselines
        established = baselines.established
        k, t_s, direction = sweep.stimulus_index, sweep.stim_time_s, sweep.direction
        for i, ch in enumerate(names):
            reason = reasons[i]
            course = courses[ch]
            transition = None
            if reason is None:
                ok, v, sn = present[i], p2p[i], snr[i]
                if ch not in established and baselines.add(ch, stage, v, ok) is not None:
                    out.append(self._baseline_output(ch))
                b = established.get(ch)
                pct = round(100.0 * v / b.baseline_uv, 3) if b is not None and b.baseline_uv else None
                fields: dict[str, Any] = {
                    "stimulus_index": k, "stim_time_s": t_s, "channel": ch, "direction": direction,
                    "p2p_uv": v,
                    "onset_latency_ms": onset[i] if ok else None,
                    "peak_latency_ms": peak[i] if ok else None,
                    "area_uv_ms": area[i],
                    "n_phases": phases[i] if ok else 0,
                    "noise_uv": noise[i],
                    "snr": sn if sn == sn else None,
                    "present": ok,
                    "pct_of_baseline": pct,
                    "rejected": False, "reject_reason": None, "stage": stage,
                    "assessment": "present" if ok else "absent", "assessment_reason": None,
                    "detection_limit_uv": round(max(self.settings.present_noise_factor * noise[i],
                                                    self.settings.present_floor_uv), 3),
                    "stimulus_confirmed": None,
                }
                transition = course.update(mark, ok, v, pct)
            else:
                course.rejected()
                measured = m is not None and reason in MEASURED_WHEN_REJECTED
                sn = snr[i] if measured else None
                fields = {
                    "stimulus_index": k, "stim_time_s": t_s, "channel": ch, "direction": direction,
                    "p2p_uv": p2p[i] if measured else 0.0,
                    "onset_latency_ms": None, "peak_latency_ms": None,
                    "area_uv_ms": area[i] if measured else 0.0,
                    "n_phases": 0,
                    "noise_uv": noise[i] if measured else 0.0,
                    "snr": sn if sn == sn else None,
                    "present": False, "pct_of_baseline": None,
                    "rejected": True, "reject_reason": reason, "stage": stage,
                    "assessment": "rejected", "assessment_reason": reason,
                    "detection_limit_uv": None, "stimulus_confirmed": None,
                }
            out.append(("amr_measurement", fields))
            if transition is not None:
                out.append(("amr_state", {
                    "channel": ch,
                    "direction": direction,
                    "state": transition.state,
                    "previous_state": transition.previous_state,
                    "stage": transition.stage,
                    "stimulus_index": transition.stimulus_index,
                    "pct_of_baseline": transition.pct_of_baseline,
                }))
        self.n_measurements += n

    def _baseline_output(self, channel: str) -> Output:
        b = self.baselines.established[channel]
        return ("baseline", {
            "channel": channel,
            "direction": self.courses[channel].direction,
            "baseline_uv": b.baseline_uv,
            "n_sweeps": b.n_sweeps,
            "amr_amplitude_uv": self.baselines.session_amplitude(),
        })

    # -- the end ----------------------------------------------------------------------------
    def _maybe_course(self, out: list[Output]) -> None:
        """At `end`, once every sweep of a stimulus before it is in, settle the course."""
        if self.end_sample is None or self._course_sent is not None or self.buffer.hwm is None:
            return
        if self.buffer.hwm < self.end_sample + self.geometry.post:
            return
        if any(s.sample_index < self.end_sample for s in self.epocher.pending):
            return
        self._final(out)

    def _final(self, out: list[Output]) -> None:
        for ch in self.courses:
            if self.baselines.finish(ch) is not None:
                out.append(self._baseline_output(ch))
        body = classify(
            list(self.courses.values()),
            {ch: self.baselines.value(ch) for ch in self.courses},
            self.stages,
        )
        if body != self._course_sent:
            self._course_sent = body
            out.append(("amr_course", body))

    # -- restart ------------------------------------------------------------------------------
    def resume(self, stages: list[tuple[int | None, str]], baselines: dict[str, tuple[float, int]],
               states: dict[str, tuple[str, int, str | None]], *, known: bool = True) -> list[str]:
        """Take up a session mid-way (the analyzer restarted): what this session already published.

        `stages` are its stage markers (sample index, stage) in order; `baselines` each channel's published
        (baseline_uv, n_sweeps); `states` each channel's last published amr_state (state, stimulus_index,
        stage). `known=False`: none of it could be had. A channel whose baseline is not given is still
        collected only while the session is in its `baseline` stage; otherwise it is unknown for the rest
        of the session (never a baseline from mid-operation sweeps), and so is the session's course. Each
        course resumes in its state with its runs at zero; a resumed disappearance is dated to the start of
        the stage it was confirmed in (the sweep that began its absent run is not published). Returns the
        channels whose baseline is unknown. Call before any signal is fed."""
        for idx, stage in stages:
            self.on_stage(stage, idx)
        latest = self.stages[-1][1] if self.stages else None
        collecting = known and latest == "baseline"
        for ch, course in self.courses.items():
            if known and ch in baselines:
                uv, n = baselines[ch]
                self.baselines.resume(ch, uv, n)
            elif not collecting:
                self.baselines.resume(ch, None)
            if known and ch in states:
                state, k, stage = states[ch]
                at = next((idx for idx, name in self.stages if name == stage), 0) if stage is not None else 0
                course.resume(state, SweepMark(k, at, stage))
        return sorted(self.baselines.unknown)

    @property
    def course_unknown(self) -> bool:
        """A restart lost a baseline: the session's course cannot be told (no amr_course is published)."""
        return bool(self.baselines.unknown)

    # -- alarms -------------------------------------------------------------------------------
    def _alarm(self, out: list[Output], what: str, kind: str, priority: str, message: str) -> None:
        self.counters[what] += 1
        out.append(("alarm", {
            "kind": kind,
            "priority": priority,
            "state": "raised",
            "message": message[:1000],
            "source": self.source,
            "alarm_key": f"{self.source}:{what}",
        }))

