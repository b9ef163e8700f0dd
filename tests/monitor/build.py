"""A synthetic session as proto messages, in the order the acquirer sends them
(a stimulus follows the frame that holds its sample), with a response of
known size and latency so the tests can check what the monitor cuts."""

from __future__ import annotations

import datetime as dt

import numpy as np

from amrwatch.proto.messages import BY_TYPE, Message, utc_now

T0 = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.UTC)
SID = "20261124T080000Z-abc123"
FS = 20_000.0

CHANNELS = [
    {"name": "MENT", "muscle": "mentalis", "direction": "ZYG"},
    {"name": "OORIS", "muscle": "orbicularis_oris", "direction": "ZYG"},
    {"name": "OOCUL", "muscle": "orbicularis_oculi", "direction": "MAR"},
    {"name": "SAMPLE_INDEX", "muscle": "none", "direction": None, "kind": "sample_index", "unit": "index"},
]


def montage(fs: float = FS, channels: list[dict] | None = None) -> dict:
    return {"sampling_rate_hz": fs, "channels": channels or CHANNELS,
            "stimulation": [{"direction": "ZYG", "stimulated_branch": "zygomatic"},
                            {"direction": "MAR", "stimulated_branch": "marginal_mandibular"}]}


class Stream:
    """Builds messages with a correct envelope (gap-free seq per type)."""

    def __init__(self, session_id: str = SID, publisher: str = "acquirer") -> None:
        self.session_id = session_id
        self.publisher = publisher
        self.seq: dict[str, int] = {}

    def msg(self, type_: str, session_id: str | None | type = ..., **body) -> Message:
        cls = BY_TYPE[type_]
        samples = body.pop("samples", None)
        seq = self.seq.get(type_, 0)
        self.seq[type_] = seq + 1
        m = cls(type=type_, schema_version=1, session_id=self.session_id if session_id is ... else session_id,
                seq=seq, publisher=self.publisher, instance="0123abcd", ts_utc=utc_now(), **body)
        if samples is not None:
            m.with_samples(samples)
        return m

    def start(self, fs: float = FS, channels: list[dict] | None = None, source: str = "sim",
              replay_of: str | None = None) -> Message:
        return self.msg("session_start", started_at=T0, source=source, scenario="persists-unexpected",
                        replay_of=replay_of, manual=False, montage=montage(fs, channels), settings={},
                        ground_truth=False)

    def frame(self, first: int, samples: np.ndarray, fs: float = FS) -> Message:
        return self.msg("emg_frame", first_sample_index=first, n_channels=samples.shape[0],
                        n_samples=samples.shape[1], sampling_rate_hz=fs, dtype="<f4", layout="channel_major",
                        first_sample_device_s=first / fs, first_sample_utc=T0 + dt.timedelta(seconds=first / fs),
                        samples=samples.astype("<f4"))

    def stimulus(self, index: int, sample: int, direction: str, fs: float = FS) -> Message:
        return self.msg("stimulus", stimulus_index=index, sample_index=sample, stim_time_s=sample / fs,
                        direction=direction, intensity_ma=15.0, width_ms=0.2)

    def stage(self, stage: str, sample: int | None) -> Message:
        return self.msg("stage", stage=stage, source="scenario", sample_index=sample)

    def measurement(self, index: int, channel: str, direction: str, t: float, p2p: float, pct: float | None = None,
                    present: bool = True, rejected: bool = False, peak_ms: float | None = 11.0,
                    assessment: str | None = None, reason: str | None = None, noise_uv: float = 3.0,
                    detection_limit_uv: float | None = 20.0, stimulus_confirmed: bool | None = True,
                    onset_ms: float | None = None) -> Message:
        """A measurement; `assessment` defaults to what `present` and `rejected` say
        (a not_assessable sweep is never present and needs its `reason`)."""
        if assessment is None:
            assessment = "rejected" if rejected else "present" if present else "absent"
        if assessment == "rejected":
            rejected, reason = True, reason or "diathermy"
        if assessment != "present":
            present = False
        onset = onset_ms if onset_ms is not None else (10.0 if present else None)
        return self.msg("amr_measurement", stimulus_index=index, stim_time_s=t, channel=channel, direction=direction,
                        p2p_uv=p2p, onset_latency_ms=onset,
                        peak_latency_ms=peak_ms if present else None, area_uv_ms=100.0, n_phases=2, noise_uv=noise_uv,
                        snr=10.0, present=present, pct_of_baseline=pct, rejected=rejected,
                        reject_reason=reason if rejected else None, stage=None, assessment=assessment,
                        assessment_reason=reason, detection_limit_uv=None if rejected else detection_limit_uv,
                        stimulus_confirmed=None if rejected else stimulus_confirmed)

    def decision(self, decision_id: int, kind: str, priority: str = "medium", *, provisional: bool = False,
                 supersedes: int | None = None, rationale: str = "The AMR course so far says so.",
                 synthetic: bool = True, notice: str | None = "synthetic — not for clinical use") -> Message:
        return self.msg("decision", decision_id=decision_id, kind=kind, priority=priority, rationale=rationale,
                        evidence={}, supersedes=supersedes, provisional=provisional, synthetic=synthetic,
                        notice=notice)

    def alarm(self, key: str, state: str = "raised", session: bool = True) -> Message:
        return self.msg("alarm", session_id=self.session_id if session else None, kind="signal_lost",
                        priority="high", state=state, message="no samples for 1000 ms", source="acquirer",
                        alarm_key=key)


def response(n: int, fs: float, onset_ms: float, p2p_uv: float, period_ms: float = 4.0) -> np.ndarray:
    """One full sine period of peak-to-peak `p2p_uv` starting at `onset_ms`:
    its extremes are at onset + period/4 and onset + 3·period/4."""
    t_ms = np.arange(n) * 1000.0 / fs
    x = np.zeros(n)
    on = (t_ms >= onset_ms) & (t_ms < onset_ms + period_ms)
    x[on] = p2p_uv / 2.0 * np.sin(2 * np.pi * (t_ms[on] - onset_ms) / period_ms)
    return x


def session_signal(
    n_stimuli: int,
    *,
    fs: float = FS,
    period_s: float = 0.5,
    first_s: float = 0.25,
    amplitudes: dict[str, list[float]] | None = None,
    onset_ms: float = 10.0,
    offset_uv: float = 0.0,
    noise_uv: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """(channels × samples µV, [(stimulus_index, sample_index, direction)]).
    Stimuli alternate ZYG, MAR; the channels of the stimulated direction carry
    a response of amplitudes[channel][k] µV (default 100); SAMPLE_INDEX holds
    the absolute sample index."""
    rng = np.random.default_rng(seed)
    n = int((first_s + n_stimuli * period_s + 0.1) * fs)
    x = np.full((len(CHANNELS), n), offset_uv) + noise_uv * rng.standard_normal((len(CHANNELS), n))
    x[3] = np.arange(n)
    stims = []
    for k in range(n_stimuli):
        s = int(round((first_s + k * period_s) * fs))
        direction = "ZYG" if k % 2 == 0 else "MAR"
        stims.append((k, s, direction))
        for row, ch in enumerate(CHANNELS[:3]):
            if ch["direction"] != direction:
                continue
            amp = (amplitudes or {}).get(ch["name"], [100.0] * n_stimuli)[k]
            seg = response(int(0.05 * fs), fs, onset_ms, amp)
            x[row, s:s + seg.size] += seg
    return x, stims


def session_messages(stream: Stream, x: np.ndarray, stims: list[tuple[int, int, str]], *, frame_n: int = 100,
                     fs: float = FS, start: bool = True, end: bool = False) -> list[Message]:
    """The acquirer's order: session_start, then each frame followed by the stimuli in it."""
    out: list[Message] = [stream.start(fs)] if start else []
    pending = list(stims)
    for first in range(0, x.shape[1] - frame_n + 1, frame_n):
        out.append(stream.frame(first, x[:, first:first + frame_n], fs))
        while pending and pending[0][1] < first + frame_n:
            k, s, d = pending.pop(0)
            out.append(stream.stimulus(k, s, d, fs))
    if end:
        out.append(stream.msg("session_end", ended_at=T0, reason="scenario_end", n_frames=0, n_stimuli=len(stims),
                              n_samples=x.shape[1]))
    return out
