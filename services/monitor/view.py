"""What the page knows about the running session, kept so that any client
can (re)join from a snapshot and then follow the increments.

`SessionView.apply` takes one bus message and returns the page messages it
causes (the event itself, minus raw signal; display sweeps; a new baseline
sweep; a fresh snapshot when a session starts). No sockets and no clock: the
live service, the replay view and the tests drive the same code. Times are
signal time — seconds from session start, from the sample indices — so a
replay at any speed draws the same picture.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ...proto.messages import (
    AlarmAck,
    Alarm,
    AmrCourse,
    AmrMeasurement,
    AmrState,
    Baseline,
    Decision,
    EmgFrame,
    Factors,
    Heartbeat,
    Message,
    Prediction,
    ReaderNote,
    SessionEnd,
    SessionStart,
    SimTruth,
    StageMarker,
    Stimulus,
    SweepDisplay,
)
from .readout import channel_readout, decisions_readout, run_key
from .settings import SweepSettings, ViewSettings
from .sweeps import Sweep, SweepCutter

#: Measurement fields a sweep carries so the page can mark its AMR peak and
#: say what the sweep could tell (a not-assessable sweep is drawn apart).
_SWEEP_MEASURE = ("p2p_uv", "peak_latency_ms", "onset_latency_ms", "present", "rejected", "assessment",
                  "assessment_reason", "detection_limit_uv", "stimulus_confirmed")


def event_json(msg: Message) -> dict:
    return msg.model_dump(mode="json")


@dataclass
class _Trend:
    """Columns of one channel's measurements, in arrival order."""

    i: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    p2p: list[float] = field(default_factory=list)
    pct: list[float | None] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)
    rejected: list[bool] = field(default_factory=list)
    #: per sweep: present | absent | not_assessable | rejected, and its reason (the trend
    #: draws a sweep that cannot tell apart from an absent one)
    assessment: list[str] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)

    def add(self, m: AmrMeasurement) -> None:
        self.i.append(m.stimulus_index)
        self.t.append(m.stim_time_s)
        self.p2p.append(round(m.p2p_uv, 2))
        self.pct.append(None if m.pct_of_baseline is None else round(m.pct_of_baseline, 2))
        self.present.append(m.present)
        self.rejected.append(m.rejected)
        self.assessment.append(m.assessment)
        self.reason.append(m.assessment_reason)

    def as_json(self) -> dict:
        return {"i": self.i, "t": self.t, "p2p": self.p2p, "pct": self.pct, "present": self.present,
                "rejected": self.rejected, "assessment": self.assessment, "reason": self.reason}


class _BaselineSweep:
    """Chooses the channel's representative baseline sweep: among the sweeps of
    the baseline stage (or the first N without one), the one whose window
    peak-to-peak is the median — a real sweep, not an average that jitter
    would shrink."""

    def __init__(self, max_candidates: int, window: tuple[float, float]) -> None:
        self.max = max_candidates
        self.window = window
        self.candidates: dict[int, tuple[float, Sweep]] = {}
        self.chosen: Sweep | None = None

    def offer(self, sweep: Sweep) -> bool:
        """True when the chosen sweep changed."""
        if len(self.candidates) >= self.max:
            return False
        p2p = sweep.window_p2p(*self.window)
        if p2p is None:
            return False
        self.candidates[sweep.stimulus_index] = (p2p, sweep)
        return self._choose()

    def reject(self, stimulus_index: int) -> bool:
        """The analyzer rejected this sweep (diathermy, saturation): not a candidate."""
        if self.candidates.pop(stimulus_index, None) is None:
            return False
        return self._choose()

    def _choose(self) -> bool:
        if not self.candidates:
            changed, self.chosen = self.chosen is not None, None
            return changed
        ranked = sorted(self.candidates.values(), key=lambda c: (c[0], c[1].stimulus_index))
        best = ranked[(len(ranked) - 1) // 2][1]
        changed = self.chosen is None or best.stimulus_index != self.chosen.stimulus_index
        self.chosen = best
        return changed


class SessionView:
    """The page's state; `snapshot()` is everything a client needs to draw."""

    def __init__(
        self,
        sweep_settings: SweepSettings | None = None,
        view_settings: ViewSettings | None = None,
        *,
        cut_sweeps: bool = True,
    ) -> None:
        self.sweep_settings = sweep_settings or SweepSettings()
        self.settings = view_settings or ViewSettings()
        self.cut_sweeps = cut_sweeps
        #: Sweeps the service publishes on the bus (`sweep_display`, for remote readers) when asked to.
        self.publish_sweeps = False
        self.to_publish: deque[dict] = deque(maxlen=256)
        self.services: dict[str, dict] = {}
        self.alarms: OrderedDict[str, dict] = OrderedDict()
        self._reset(None)

    # -- state -------------------------------------------------------------------
    def _reset(self, session_id: str | None) -> None:
        self.session_id = session_id
        self.start: SessionStart | None = None
        self.joined_late = False
        self.ended: dict | None = None
        self.cutter: SweepCutter | None = None
        self.fs: float | None = None
        self.now_s = 0.0
        self.stage: str | None = None
        self.stages: list[dict] = []
        self.stim_times: dict[int, float] = {}
        self.trend: dict[str, _Trend] = {}
        self.sweeps: dict[str, deque[dict]] = {}
        self.measured: OrderedDict[tuple[int, str], dict] = OrderedDict()
        self.baseline_pickers: dict[str, _BaselineSweep] = {}
        self.baseline_frozen = False
        self.baselines: dict[str, dict] = {}
        self.states: dict[str, dict] = {}
        self.transitions: list[dict] = []
        self.factors: dict[str, Any] = {}
        self.prediction: dict | None = None
        self.predictions: list[dict] = []
        self.decisions: deque[dict] = deque(maxlen=self.settings.decision_history)
        self.course: dict | None = None
        self.n_sweeps = 0
        #: Notes between the room and its remote readers (reader_note), and their presence.
        self.reader_notes: deque[dict] = deque(maxlen=50)
        # per channel: the newest measurement and how many in a row share its run_key
        self.latest: dict[str, dict] = {}
        self.runs: dict[str, tuple[tuple, int]] = {}
        self._readout_sent: dict | None = None
        # session-less alarms (service health) survive a new session; the session's own do not
        for key in [k for k, a in self.alarms.items() if a["session_id"] is not None]:
            del self.alarms[key]

    def _session_info(self) -> dict | None:
        if self.session_id is None:
            return None
        s = self.start
        info: dict[str, Any] = {"session_id": self.session_id, "joined_late": self.joined_late, "ended": self.ended}
        if s is not None:
            info.update(
                started_at=s.started_at.isoformat().replace("+00:00", "Z"),
                source=s.source,
                scenario=s.scenario,
                replay_of=s.replay_of,
                manual=s.manual,
                ground_truth=s.ground_truth,
                sampling_rate_hz=s.montage.sampling_rate_hz,
                channels=[
                    {"name": c.name, "muscle": c.muscle, "direction": c.direction}
                    for c in s.montage.channels
                    if c.kind == "emg" and c.direction is not None
                ],
            )
        return info

    def snapshot(self) -> dict:
        s = self.sweep_settings
        return {
            "session": self._session_info(),
            "display": {
                "pre_ms": s.pre_ms,
                "post_ms": s.post_ms,
                "blank_ms": s.blank_ms,
                "analysis_window_ms": list(s.analysis_window_ms),
                "waterfall_sweeps": self.settings.waterfall_sweeps,
            },
            "now_s": self.now_s,
            "stage": self.stage,
            "stages": list(self.stages),
            "trend": {ch: t.as_json() for ch, t in self.trend.items()},
            "sweeps": {ch: list(d) for ch, d in self.sweeps.items()},
            "baseline_sweeps": {
                ch: p.chosen.to_json(s.resolution_uv) for ch, p in self.baseline_pickers.items() if p.chosen
            },
            "baselines": dict(self.baselines),
            "states": dict(self.states),
            "transitions": list(self.transitions),
            "factors": dict(self.factors),
            "prediction": self.prediction,
            "predictions": list(self.predictions),
            "decisions": list(self.decisions),
            "course": self.course,
            "readout": self.readout(),
            "alarms": list(self.alarms.values()),
            "services": dict(self.services),
            "reader_notes": list(self.reader_notes),
        }

    # -- input ---------------------------------------------------------------------
    def readout(self) -> dict:
        """The words of the tiles and of the decision (readout.py), from the state."""
        chans = [c.name for c in self.start.montage.channels if c.kind == "emg" and c.direction is not None] \
            if self.start is not None else []
        chans += [c for c in self.latest if c not in chans] + [c for c in self.states if c not in chans]
        return {
            "channels": {c: channel_readout(self.latest.get(c), self.runs.get(c, ((), 0))[1], self.states.get(c),
                                            self.baselines.get(c)) for c in chans},
            "decision": decisions_readout(list(self.decisions)),
        }

    def apply(self, msg: Message) -> list[dict]:
        """Page messages caused by `msg`, in order; a `readout` message follows
        whenever the words on the page change."""
        out = self._apply(msg)
        if isinstance(msg, (AmrMeasurement, AmrState, Baseline, Decision, SessionStart)):
            r = self.readout()
            if r != self._readout_sent:
                self._readout_sent = r
                if not any(o["kind"] == "snapshot" for o in out):
                    out.append({"kind": "readout", "readout": r})
        return out

    def _apply(self, msg: Message) -> list[dict]:
        if isinstance(msg, Heartbeat):
            self.services[msg.service] = {"status": msg.status, "version": msg.version,
                                          "active_alarms": len(msg.active_alarms)}
            return []
        if isinstance(msg, Alarm):
            return self._alarm(msg)
        if isinstance(msg, AlarmAck):
            return self._ack(msg)
        if isinstance(msg, SessionStart):
            return self._session_start(msg)
        if msg.session_id is None:
            return []
        if self.session_id is None:
            # Joined mid-session: follow it; the montage comes when session_start is found.
            self._reset(msg.session_id)
            self.joined_late = True
        elif msg.session_id != self.session_id:
            return []  # a straggler from another session
        if isinstance(msg, EmgFrame):
            return self._frame(msg)
        if isinstance(msg, SimTruth):
            return []
        out: list[dict] = []
        if isinstance(msg, Stimulus):
            self.stim_times[msg.stimulus_index] = msg.stim_time_s
            out.append(self._event(msg))
            if self.cutter is not None and self.cut_sweeps:
                out += self._sweeps(self.cutter.on_stimulus(msg.stimulus_index, msg.sample_index,
                                                            msg.stim_time_s, msg.direction))
            return out
        if isinstance(msg, StageMarker):
            t = msg.sample_index / self.fs if (msg.sample_index is not None and self.fs) else self.now_s
            self.stage = msg.stage
            self.stages.append({"stage": msg.stage, "t_s": t, "source": msg.source})
            if msg.stage != "baseline":
                self.baseline_frozen = True
            out.append(self._event(msg, t_s=t))
            return out
        if isinstance(msg, AmrMeasurement):
            return self._measurement(msg)
        if isinstance(msg, AmrState):
            t = self.stim_times.get(msg.stimulus_index, self.now_s)
            self.states[msg.channel] = event_json(msg) | {"t_s": t}
            self.transitions.append({"channel": msg.channel, "state": msg.state,
                                     "previous_state": msg.previous_state, "stimulus_index": msg.stimulus_index,
                                     "stage": msg.stage, "t_s": t})
            return [self._event(msg, t_s=t)]
        if isinstance(msg, Baseline):
            self.baselines[msg.channel] = event_json(msg)
            return [self._event(msg)]
        if isinstance(msg, Factors):
            self.factors.update(msg.factors.given())
            return [self._event(msg)]
        if isinstance(msg, Prediction):
            self.prediction = event_json(msg) | {"t_s": self.now_s}
            self.predictions.append({"t_s": self.now_s, "probability": msg.probability, "band": msg.band})
            return [self._event(msg)]
        if isinstance(msg, Decision):
            d = event_json(msg) | {"t_s": self.now_s}
            self.decisions.append(d)
            return [self._event(msg)]
        if isinstance(msg, AmrCourse):
            self.course = event_json(msg)
            return [self._event(msg)]
        if isinstance(msg, SweepDisplay):
            return []  # this monitor's own sweeps, published for remote readers: the page has them already
        if isinstance(msg, ReaderNote):
            self.reader_notes.append(event_json(msg))
            return [self._event(msg)]
        if isinstance(msg, SessionEnd):
            self.ended = {"ended_at": msg.ended_at.isoformat().replace("+00:00", "Z"), "reason": msg.reason}
            if self.cutter is not None and self.cut_sweeps:
                out += self._sweeps(self.cutter.flush())
            out.append(self._event(msg))
            return out
        return [self._event(msg)]

    def add_sweep(self, sweep: Sweep) -> list[dict]:
        """A sweep cut elsewhere (the replay index cuts them once)."""
        return self._sweeps([sweep])

    def set_session_start(self, msg: SessionStart) -> list[dict]:
        """session_start fetched after joining late: keep what was gathered."""
        if self.session_id == msg.session_id and self.start is None:
            self._adopt(msg)
            return [{"kind": "snapshot", "snapshot": self.snapshot()}]
        return self._session_start(msg)

    # -- handlers ---------------------------------------------------------------------
    def _event(self, msg: Message, **extra: Any) -> dict:
        return {"kind": "event", "event": event_json(msg) | extra}

    def _adopt(self, msg: SessionStart) -> None:
        self.start = msg
        self.fs = msg.montage.sampling_rate_hz
        self.cutter = SweepCutter(msg.montage, self.sweep_settings) if self.cut_sweeps else None
        for c in msg.montage.channels:
            if c.kind == "emg" and c.direction is not None:
                self.sweeps.setdefault(c.name, deque(maxlen=self.settings.waterfall_sweeps))
                self.trend.setdefault(c.name, _Trend())

    def _session_start(self, msg: SessionStart) -> list[dict]:
        self._reset(msg.session_id)
        self._adopt(msg)
        return [self._event(msg), {"kind": "snapshot", "snapshot": self.snapshot()}]

    def _frame(self, msg: EmgFrame) -> list[dict]:
        self.fs = msg.sampling_rate_hz
        self.now_s = max(self.now_s, (msg.first_sample_index + msg.n_samples) / msg.sampling_rate_hz)
        if self.cutter is None or not self.cut_sweeps:
            return []
        return self._sweeps(self.cutter.on_frame(msg.first_sample_index, msg.samples))

    def _sweeps(self, sweeps: list[Sweep]) -> list[dict]:
        out: list[dict] = []
        res = self.sweep_settings.resolution_uv
        for sw in sweeps:
            self.n_sweeps += 1
            self.now_s = max(self.now_s, sw.stim_time_s)
            item = sw.to_json(res)
            item["stage"] = self.stage
            m = self.measured.get((sw.stimulus_index, sw.channel))
            item["m"] = m
            self.sweeps.setdefault(sw.channel, deque(maxlen=self.settings.waterfall_sweeps)).append(item)
            if self.publish_sweeps:
                self.to_publish.append(item)
            out.append({"kind": "sweep", "sweep": item})
            if self._baseline_candidate(sw.channel) and not (m and m["rejected"]):
                if self._picker(sw.channel).offer(sw):
                    out.append(self._baseline_sweep(sw.channel))
        return out

    def _baseline_candidate(self, channel: str) -> bool:
        if self.baseline_frozen:
            return False
        if self.stage == "baseline":
            return True
        # No baseline stage marked (yet): the first N sweeps stand in (docs/domain.md).
        return self.stage is None and len(self._picker(channel).candidates) < self.settings.baseline_first_n

    def _picker(self, channel: str) -> _BaselineSweep:
        p = self.baseline_pickers.get(channel)
        if p is None:
            p = self.baseline_pickers[channel] = _BaselineSweep(
                self.settings.baseline_max_candidates, self.sweep_settings.analysis_window_ms
            )
        return p

    def _baseline_sweep(self, channel: str) -> dict:
        chosen = self.baseline_pickers[channel].chosen
        sweep = chosen.to_json(self.sweep_settings.resolution_uv) if chosen is not None else None
        return {"kind": "baseline_sweep", "channel": channel, "sweep": sweep}

    def _measurement(self, m: AmrMeasurement) -> list[dict]:
        self.now_s = max(self.now_s, m.stim_time_s)
        self.stim_times.setdefault(m.stimulus_index, m.stim_time_s)
        self.trend.setdefault(m.channel, _Trend()).add(m)
        summary = {k: getattr(m, k) for k in _SWEEP_MEASURE}
        latest = event_json(m)
        latest.pop("ts_utc", None)
        key = run_key(latest)
        prev_key, n = self.runs.get(m.channel, ((), 0))
        self.runs[m.channel] = (key, n + 1 if key == prev_key else 1)
        self.latest[m.channel] = latest
        key = (m.stimulus_index, m.channel)
        self.measured[key] = summary
        while len(self.measured) > 4 * self.settings.waterfall_sweeps * max(1, len(self.trend)):
            self.measured.popitem(last=False)
        for item in self.sweeps.get(m.channel, ()):
            if item["stimulus_index"] == m.stimulus_index:
                item["m"] = summary
        out = [self._event(m)]
        picker = self.baseline_pickers.get(m.channel)
        if m.rejected and picker is not None and picker.reject(m.stimulus_index):
            out.append(self._baseline_sweep(m.channel))
        return out

    def _alarm(self, a: Alarm) -> list[dict]:
        if a.session_id is not None and self.session_id is not None and a.session_id != self.session_id:
            return []
        if a.state == "raised":
            self.alarms[a.alarm_key] = event_json(a) | {"ack": None}
        else:
            self.alarms.pop(a.alarm_key, None)
        return [self._event(a)]

    def _ack(self, ack: AlarmAck) -> list[dict]:
        alarm = self.alarms.get(ack.alarm_key)
        if alarm is not None:
            alarm["ack"] = {"operator": ack.operator, "note": ack.note,
                            "ts_utc": ack.ts_utc.isoformat().replace("+00:00", "Z")}
        return [self._event(ack)]
