"""The analyzer without sockets: signal, stimuli and stage markers in, messages out.

The live service and the offline `amrwatch analyze` drive this one class, so
the same input gives the same numbers either way (the audit replay relies on
it). Every call returns a list of proto message bodies (`Output`:
`AmrMeasurementBody`, `AmrStateBody`, `BaselineBody`, `AmrCourseBody`,
`AlarmBody`): typed, so a consumer reads `body.p2p_uv` and a misspelt field
is a type error, not a silent KeyError at run time. They are built without
validation (proto's `unchecked`: the publisher validates each message when it
stamps the envelope, and the engine must not pay twice per sweep); the tests
check every body the engine makes against `validate_body`.

Stage attribution is by sample index, never by arrival order. Bad input
(wrong channel count, a changed sampling rate, NaN samples, repeated or
out-of-order frames, gaps, stale stimuli) is counted in `counters`, reported
as an `alarm` with a message that says what happened, and the sweeps it
touches are published as rejected — the engine never raises on input.

`reject_reason` values (proto's REJECT_REASONS): gap (samples missing in the sweep), nan, saturated,
diathermy, stale (older than the buffer), incomplete (the session ended
first), before_recording (a late joiner's first sweeps), not_fed (signal the
offline driver skipped; never expected).

A sweep that is read is then assessed (assess.py): `present`, `absent`, or
`not_assessable` with the reason — stimulus_unconfirmed (integrity.py),
direct_response (measure.py), intensity_below_baseline, noise_too_high. Only
present and absent sweeps feed the baseline and the course.

Alarms come in two sorts. Bad input is a pulse: an `AlarmBody` with state
"raised" that the service lets expire. The conditions of CONDITION_KINDS
(stimulation failure, recording quality, direct response, weaker stimulus) are
raised and cleared by the engine itself, as alarms with state "raised" and
"cleared" and the same alarm_key; all still raised are cleared when the
session ends.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, TypeAlias, cast

import numpy as np

from ...proto.messages import (
    AlarmBody,
    AlarmKind,
    AlarmPriority,
    AmrCourseBody,
    AmrMeasurementBody,
    AmrStateBody,
    AmrStateName,
    Assessment,
    BaselineBody,
    Direction,
    Montage,
    Stage,
    unchecked,
)
from .assess import References, Run, StimulusStrength
from .baseline import BaselineTracker
from .classify import classify
from .condition import Conditioner, SweepGeometry
from .course import ChannelCourse, SweepMark
from .epoch import Epocher, PendingSweep, RingBuffer
from .integrity import RESPONDED, StimulusCheck
from .measure import Measurer, reject_reasons
from .settings import AnalyzerSettings

#: What the engine returns: proto message bodies (the service stamps the envelope and publishes them).
Output: TypeAlias = AmrMeasurementBody | AmrStateBody | BaselineBody | AmrCourseBody | AlarmBody

_measurement = unchecked(AmrMeasurementBody)
_state = unchecked(AmrStateBody)
_baseline = unchecked(BaselineBody)
_course = unchecked(AmrCourseBody)
_alarm_body = unchecked(AlarmBody)

#: Published precision of the rows of measure.TABLE_ROWS: 0.001 µV, 0.0001 µV noise, 0.001 SNR,
#: 0.001 µV·ms, 0.1 µs latencies.
_SCALE = np.array([1e3, 1e4, 1e3, 1e3, 1e4, 1e4])[:, None]

#: Rejected sweeps whose samples are all there: their p2p and noise are still
#: reported, so the size of the interference is on record.
MEASURED_WHEN_REJECTED = ("diathermy", "saturated")

#: Alarm kinds the engine raises and clears itself (conditions); every other alarm is a pulse.
CONDITION_KINDS = ("stimulation_failure", "recording_quality", "direct_response")


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
        own: dict[str, list[int]] = {}
        for stim in montage.stimulation:
            chans = montage.recording_channels(stim.direction)
            if chans:
                own[stim.direction] = [names.index(c) for c in chans]
                self.recording[stim.direction] = (chans, _rows(own[stim.direction]))
        self.stimulus_check = StimulusCheck(montage, self.geometry, self.conditioner, own)
        capacity = max(int(round(self.settings.buffer_s * self.fs)), self.geometry.n + 1)
        self.buffer = RingBuffer(self.n_channels, capacity)
        self.epocher = Epocher(self.geometry.pre, self.geometry.post)
        all_rec = [c for chans, _ in self.recording.values() for c in chans]
        self.baselines = BaselineTracker(self.settings, all_rec)
        self.courses: dict[str, ChannelCourse] = {
            c: ChannelCourse(c, d, self.settings) for d, (chans, _) in self.recording.items() for c in chans
        }
        self.references = References(all_rec)
        self.strength = StimulusStrength()
        s = self.settings
        self._quality = {c: Run(s.quality_alarm_sweeps, s.quality_alarm_sweeps) for c in all_rec}
        self._direct = {c: Run(s.direct_alarm_sweeps) for c in all_rec}
        self._unconfirmed = {d: Run(s.stimulation_failure_stimuli) for d in self.recording}
        self._conditions: dict[str, tuple[AlarmKind, AlarmPriority]] = {}
        """alarm_key → (kind, priority) of the conditions raised and not yet cleared."""
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

    def on_stimulus(self, stimulus_index: int, sample_index: int, stim_time_s: float, direction: str,
                    intensity_ma: float | None = None, width_ms: float | None = None) -> list[Output]:
        """A stimulus; `intensity_ma`/`width_ms` as the source reports them (None: unknown, not compared)."""
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
        sweep = self.epocher.add(stimulus_index, int(sample_index), float(stim_time_s), direction,
                                 None if intensity_ma is None else float(intensity_ma),
                                 None if width_ms is None else float(width_ms))
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
        for key in list(self._conditions):
            self._clear(out, key, "the session ended")
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
        # A proto stage (sources and services mark only those) and a direction the montage stimulates
        # (on_stimulus refuses any other): typed for the bodies below.
        stage = cast("Stage | None", self.stage_at(sweep.sample_index))
        n = len(names)
        settings = self.settings
        confirmation = None
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
            p2p, noise, snr, area, onset, peak = (np.rint(m.table * _SCALE) / _SCALE).tolist()
            present, phases, direct = m.present.tolist(), m.n_phases.tolist(), m.direct.tolist()
            # A response on a usable channel (an AMR, or a direct response) proves delivery: the common
            # case, decided without touching other rows.
            if reasons.count(None) == n:
                confirmation = RESPONDED if True in present else \
                    self.stimulus_check(sweep.direction, raw, False, self._reader(sweep))
            else:
                usable = [i for i, r in enumerate(reasons) if r is None]
                if usable:
                    confirmation = RESPONDED if any(present[i] for i in usable) else \
                        self.stimulus_check(sweep.direction, raw[usable], False, self._reader(sweep))
        mark = SweepMark(sweep.stimulus_index, sweep.sample_index, stage)
        courses, baselines = self.courses, self.baselines
        established = baselines.established
        k, t_s, direction = sweep.stimulus_index, sweep.stim_time_s, cast(Direction, sweep.direction)
        confirmed = None if confirmation is None else confirmation.confirmed
        weaker = None
        if confirmed:
            self.strength.collect(direction, stage, sweep.intensity_ma, sweep.width_ms)
            weaker = self.strength.weaker(direction, sweep.intensity_ma, sweep.width_ms)
        factor, floor, fraction = settings.present_noise_factor, settings.present_floor_uv, \
            settings.detectability_fraction
        references, medians, quality_runs, direct_runs = self.references, self.references.median, \
            self._quality, self._direct
        quality_events: list[tuple[str, str, dict[str, Any]]] = []
        direct_events: list[tuple[str, str, dict[str, Any]]] = []
        for i, ch in enumerate(names):
            reason = reasons[i]
            course = courses[ch]
            transition = None
            if reason is None:
                v, sn, nz = p2p[i], snr[i], noise[i]
                limit = round(max(factor * nz, floor), 3)
                b = established.get(ch)
                base_uv = b.baseline_uv if b is not None else 0.0
                ref = base_uv or medians[ch]  # the baseline; without a non-zero one, the median so far
                hidden = ref is not None and limit > fraction * ref
                d = direct[i]
                ok = present[i] and not d
                why = None
                if not confirmed:
                    why = "stimulus_unconfirmed"
                elif d:
                    why = "direct_response"
                elif ok:
                    pass
                elif weaker is not None:
                    why = "intensity_below_baseline"
                elif hidden:
                    why = "noise_too_high"
                if why is None:
                    if ok and not base_uv:
                        references.add_present(ch, v)
                    if b is None and baselines.add(ch, stage, v, ok, nz) is not None:
                        out.append(self._baseline_output(ch))
                        self.strength.fix(direction)
                        b = established[ch]
                    pct = round(100.0 * v / b.baseline_uv, 3) if b is not None and b.baseline_uv else None
                    transition = course.update(mark, ok, v, pct)
                    assessment: Assessment = "present" if ok else "absent"
                else:
                    course.not_assessable()
                    pct = None  # noise, no stimulus, a direct response, a weaker stimulus: not the AMR's size
                    assessment = "not_assessable"
                timed = ok or d
                body = _measurement(
                    stimulus_index=k, stim_time_s=t_s, channel=ch, direction=direction,
                    p2p_uv=v,
                    onset_latency_ms=onset[i] if timed else None,
                    peak_latency_ms=peak[i] if timed else None,
                    area_uv_ms=area[i],
                    n_phases=phases[i] if timed else 0,
                    noise_uv=nz,
                    snr=sn if sn == sn else None,
                    present=ok and why is None,
                    pct_of_baseline=pct,
                    rejected=False, reject_reason=None, stage=stage,
                    assessment=assessment, assessment_reason=why,
                    detection_limit_uv=limit,
                    stimulus_confirmed=confirmed,
                )
                run = quality_runs[ch]
                if ref is not None and (hidden or run.bad or run.active):  # nothing to count otherwise
                    change = run.update(hidden, mark)
                    if change:
                        quality_events.append((ch, change, {"noise": nz, "limit": limit, "ref": ref,
                                                            "ref_what": "baseline AMR" if base_uv else
                                                            "median of the present sweeps so far",
                                                            "base_noise": None if b is None else b.noise_uv}))
                run = direct_runs[ch]
                if confirmed and (d or run.bad or run.active):
                    change = run.update(d, mark)
                    if change:
                        direct_events.append((ch, change, {"onset": onset[i], "p2p": v}))
            else:
                course.rejected()
                measured = m is not None and reason in MEASURED_WHEN_REJECTED
                sn = snr[i] if measured else None
                body = _measurement(
                    stimulus_index=k, stim_time_s=t_s, channel=ch, direction=direction,
                    p2p_uv=p2p[i] if measured else 0.0,
                    onset_latency_ms=None, peak_latency_ms=None,
                    area_uv_ms=area[i] if measured else 0.0,
                    n_phases=0,
                    noise_uv=noise[i] if measured else 0.0,
                    snr=sn if sn == sn else None,
                    present=False, pct_of_baseline=None,
                    rejected=True, reject_reason=reason, stage=stage,
                    assessment="rejected", assessment_reason=reason,
                    detection_limit_uv=None, stimulus_confirmed=None,
                )
            out.append(body)
            if transition is not None:
                since = transition.since
                out.append(_state(
                    channel=ch,
                    direction=direction,
                    state=transition.state,
                    previous_state=transition.previous_state,
                    stage=transition.stage,
                    stimulus_index=transition.stimulus_index,
                    pct_of_baseline=transition.pct_of_baseline,
                    since_stimulus_index=since.stimulus_index if since else None,
                    since_sample_index=since.sample_index if since else None,
                    since_stage=since.stage if since else None,
                ))
        self.n_measurements += n
        if confirmation is not None:
            self._stimulation_alarms(out, sweep, mark, confirmation.confirmed, confirmation.by, weaker)
        for ch, change, info in quality_events:
            self._quality_alarm(out, ch, change, mark, info)
        for ch, change, info in direct_events:
            self._direct_alarm(out, ch, direction, change, mark, info)

    def _reader(self, sweep: PendingSweep):
        """Other rows of the sweep, read from the ring buffer only if the stimulus check needs them."""
        def read(rows: np.ndarray) -> np.ndarray | None:
            status, raw = self.buffer.read(sweep.lo, sweep.hi, rows)
            return raw if status == "ok" else None
        return read

    def _baseline_output(self, channel: str) -> BaselineBody:
        b = self.baselines.established[channel]
        return _baseline(
            channel=channel,
            direction=cast(Direction, self.courses[channel].direction),
            baseline_uv=b.baseline_uv,
            n_sweeps=b.n_sweeps,
            amr_amplitude_uv=self.baselines.session_amplitude(),
        )

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
            out.append(_course(**body))

    # -- restart ------------------------------------------------------------------------------
    def resume(self, stages: list[tuple[int | None, str]], baselines: dict[str, tuple[float, int]],
               states: dict[str, tuple[str, int, str | None]], *, known: bool = True) -> list[str]:
        """Take up a session mid-way (the analyzer restarted): what this session already published.

        `stages` are its stage markers (sample index, stage) in order; `baselines` each channel's published
        (baseline_uv, n_sweeps); `states` each channel's last published amr_state (state, stimulus_index,
        stage[, since_stimulus_index, since_sample_index, since_stage]). `known=False`: none of it could be had. A channel whose baseline is not given is still
        collected only while the session is in its `baseline` stage; otherwise it is unknown for the rest
        of the session (never a baseline from mid-operation sweeps), and so is the session's course. Each
        course resumes in its state with its runs at zero; a resumed disappearance is dated to the first sweep
        of its absent run as published (`since_*`), or, for older archives, to the start of the stage it was
        confirmed in. Returns the
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
                state, k, stage, *since = states[ch]  # as published: an amr_state's state and stages
                if since and since[0] is not None:  # the absent run's first sweep, as the session published it
                    course.resume(cast(AmrStateName, state), SweepMark(since[0], since[1] or 0, since[2]))
                else:
                    at = next((idx for idx, name in self.stages if name == stage), 0) if stage is not None else 0
                    course.resume(cast(AmrStateName, state), SweepMark(k, at, cast("Stage | None", stage)))
        return sorted(self.baselines.unknown)

    @property
    def course_unknown(self) -> bool:
        """A restart lost a baseline: the session's course cannot be told (no amr_course is published)."""
        return bool(self.baselines.unknown)

    # -- alarms -------------------------------------------------------------------------------
    def _stimulation_alarms(self, out: list[Output], sweep: PendingSweep, mark: SweepMark, confirmed: bool,
                            by: str | None, weaker: str | None) -> None:
        d = sweep.direction
        key = f"stimulation_failure:{d}"
        run = self._unconfirmed[d]
        change = run.update(not confirmed, mark)
        if change == "raise":
            since: SweepMark = run.since
            muscles = self.stimulus_check.direct_names[d]
            proof = ("no stimulus artifact, " if self.settings.stimulus_check == "artifact_or_direct" else "") + (
                f"no direct response of {', '.join(muscles)}" if muscles else
                "no direct response (no channel of a muscle the stimulated branch supplies in this montage)")
            current = f" (set to {sweep.intensity_ma:g} mA)" if sweep.intensity_ma is not None else ""
            self._raise(out, key, "stimulation_failure", "high",
                        f"{d} stimulation not confirmed for {run.bad} consecutive stimuli since stimulus "
                        f"#{since.stimulus_index} ({since.sample_index / self.fs:.1f} s, stage "
                        f"{since.stage or '—'}): {proof}, and no AMR. Check the stimulator output, the "
                        f"stimulating needles and their cable, and the current setting{current}. Until stimuli "
                        f"are confirmed, {d} sweeps are not_assessable and cannot show a disappearance.")
        elif change == "clear":
            how = {"response": "a response", "artifact": "the stimulus artifact",
                   "direct_response": "a direct response"}.get(by or "", "the recording")
            self._clear(out, key, f"{d} stimulation confirmed again at stimulus #{sweep.stimulus_index} "
                                  f"(by {how})")
        wkey = f"{self.source}:intensity_below_baseline:{d}"
        reported = sweep.intensity_ma is not None or sweep.width_ms is not None
        if weaker is not None and wkey not in self._conditions:
            self._raise(out, wkey, "stimulation_failure", "low",
                        f"{d} stimulus #{sweep.stimulus_index} is weaker than at baseline ({weaker}): amplitudes "
                        "are no longer comparable with the baseline, and absent sweeps at this strength are "
                        "not_assessable (a disappearance cannot be produced by turning the current down). "
                        "Restore the baseline stimulus to judge the AMR.")
        elif weaker is None and confirmed and reported and wkey in self._conditions:
            self._clear(out, wkey, f"{d} stimulus back to its baseline strength at stimulus #{sweep.stimulus_index}")

    def _quality_alarm(self, out: list[Output], ch: str, change: str, mark: SweepMark, info: dict) -> None:
        key = f"recording_quality:{ch}"
        if change == "clear":
            self._clear(out, key, f"{ch}: recording good enough again to show the AMR's absence (detection limit "
                                  f"{info['limit']:.0f} µV, {info['ref_what']} {info['ref']:.0f} µV)")
            return
        base = ("not known (no baseline yet, or the analyzer restarted)" if info["base_noise"] is None
                else f"{info['base_noise']:.1f} µV at baseline")
        frac = self.settings.detectability_fraction
        self._raise(out, key, "recording_quality", "medium",
                    f"{ch}: the recording cannot show whether the AMR has gone, for "
                    f"{self.settings.quality_alarm_sweeps} consecutive sweeps (since stimulus "
                    f"#{self._quality[ch].since.stimulus_index}): noise {info['noise']:.1f} µV RMS now, {base}; "
                    f"detection limit {info['limit']:.0f} µV against the {info['ref_what']} {info['ref']:.0f} µV "
                    f"(it must be at most {frac * 100:g}% of it). Absent sweeps are not counted as a "
                    "disappearance. Check electrode contact and impedance, mains interference, and diathermy or "
                    "other equipment near the leads.")

    def _direct_alarm(self, out: list[Output], ch: str, direction: str, change: str, mark: SweepMark,
                      info: dict) -> None:
        key = f"direct_response:{ch}"
        if change == "clear":
            self._clear(out, key, f"{ch}: no direct response at stimulus #{mark.stimulus_index}")
            return
        self._raise(out, key, "direct_response", "low",
                    f"{ch}: a direct response from current spread, not an AMR, in "
                    f"{self.settings.direct_alarm_sweeps} consecutive {direction} sweeps (since stimulus "
                    f"#{self._direct[ch].since.stimulus_index}; onset {info['onset']:.1f} ms, "
                    f"{info['p2p']:.0f} µV; an AMR starts after {self.settings.amr_onset_min_ms:g} ms). These "
                    "sweeps are not_assessable. Lower the stimulus intensity or check the position of the "
                    f"stimulating electrode on the {direction} branch.")

    def _raise(self, out: list[Output], what: str, kind: AlarmKind, priority: AlarmPriority, message: str) -> None:
        key = what if what.startswith(f"{self.source}:") else f"{self.source}:{what}"
        self._conditions[key] = (kind, priority)
        out.append(_alarm_body(kind=kind, priority=priority, state="raised", message=message[:1000],
                               source=self.source, alarm_key=key))

    def _clear(self, out: list[Output], key: str, message: str) -> None:
        """Clear a raised condition; `key` is the full alarm_key or the part after the source."""
        if not key.startswith(f"{self.source}:"):
            key = f"{self.source}:{key}"
        held = self._conditions.pop(key, None)
        if held is None:
            return
        kind, priority = held
        out.append(_alarm_body(kind=kind, priority=priority, state="cleared", message=message[:1000],
                               source=self.source, alarm_key=key))

    def _alarm(self, out: list[Output], what: str, kind: AlarmKind, priority: AlarmPriority, message: str) -> None:
        self.counters[what] += 1
        out.append(_alarm_body(
            kind=kind,
            priority=priority,
            state="raised",
            message=message[:1000],
            source=self.source,
            alarm_key=f"{self.source}:{what}",
        ))

