"""A synthetic registry: sessions, summaries and follow-up as a clinic would record them.

Why: the cohort export, the report and their tests need a registry with the
shape of the 2025 study (157 operations) long before any institution has
one. Nothing here is patient data, and every session it writes says so
(`source = 'synthetic'`, the assumptions in its settings), so the report
can print a warning no reader can miss.

Assumptions (ours unless marked literature; each is a field of
`SyntheticRegistrySettings`):

- Factors and AMR persistence: the predictor's synthetic cohort generator
  (study/cohort.py), tuned to the study: 21.7% persistence,
  apparent AUC ≈ 0.93 at n = 157.
- Course: 15% of operations never show an AMR (literature, 214-patient
  series), drawn independently of the factors; their persistence label is
  dropped and no baseline amplitude, final percentage or prediction exists.
  Of the AMRs that disappear, 26/75 do so before decompression (literature:
  7% during opening, 19% during arachnoid dissection, 49% after
  decompression), the rest after it.
- Final amplitude, percent of baseline: log-normal, median 6% (clipped
  0–13.5%, i.e. the ≥ 86.5% reduction that predicted resolution) when the AMR
  disappeared; median 60% (clipped 14–150%) when it persisted.
- Per channel (issue #17; the session figure above is the largest channel's,
  as the analyzer computes it): the montage of the simulator, mentalis and
  orbicularis oris for ZYG stimulation, orbicularis oculi for MAR. Each
  channel shows an AMR with probability 96.2 % / 92.3 % (literature: Pan et
  al. 2025, the share of 208 patients with an LSR in those muscles) / 70 %
  (ours), at least one channel in every detected AMR. The draw above goes to
  the first channel with an AMR in that order (the mentalis in most
  operations); each other channel's is that draw times a log-normal factor
  (log-sd 0.5 orbicularis oris, 0.8 orbicularis oculi: correlated with the
  first, noisier), clipped to 0–13.5 % when the AMR disappeared and 0–150 %
  when it persisted; the session figure is then the largest of the channels.
  Baselines: the first channel's is the preoperative amplitude (the
  session's), the others' that times a uniform 0.3–1.0. Drawn from a second
  random stream, so every other figure is the one the same seed gave before.
- Prediction: the model given (default the shipped synthetic model) on the
  seven factors, with its own cut-offs.
- Persistent spasm (Cohen grade > 0) by AMR status (literature, meta-analysis):
  persisted 48% / 41% / 24% at discharge (taken as 1 week) / 3 months / 1 year,
  resolved 7% / 4% / 4%; 6 months interpolated (32.5% / 4%). Never-detected
  AMRs follow the resolved curve. One time to relief per patient is drawn
  from the piecewise-linear curve through those points, so a patient cured at
  3 months stays cured (no recurrence); relief after 1 year is not observed.
- Residual grade while spasm persists: uniform from 1 to the preoperative
  grade at the first visit (3% one grade worse), then one grade lower with
  probability 0.3 at each later visit.
- Complications, recorded at the first visit: immediate facial palsy 3%,
  delayed facial palsy 6%, hearing loss 3%, CSF leak 2%.
- Loss to follow-up (cumulative): 0% by 1 week, 3% by 3 months, 6% by
  6 months, 10% by 1 year.
- Operations uniformly spread over 2019–2024 (the study's period), weekdays,
  starting 08:00–14:00 UTC.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amrwatch.study.cohort import DEFAULT as DEFAULT_COHORT
from amrwatch.study.cohort import CohortGenerator
from amrwatch.services.predictor.features import FEATURE_NAMES, row_dict
from amrwatch.registry.outcomes import FollowUpSettings, derive_class
from amrwatch.registry.store import COMPLICATIONS, TIMEPOINTS, Registry, new_patient_token

SOURCE = "synthetic"
ACTOR = "synthetic-generator"
#: The simulator's montage (services/acquirer/sim/montage.py): site -> (channel name, direction, muscle).
SIM_CHANNELS: dict[str, tuple[str, str, str]] = {
    "ZYG_mentalis": ("MENT", "ZYG", "mentalis"),
    "ZYG_orbicularis_oris": ("OORIS", "ZYG", "orbicularis_oris"),
    "MAR_orbicularis_oculi": ("OOCUL", "MAR", "orbicularis_oculi"),
}


@dataclass(frozen=True)
class SyntheticRegistrySettings:
    never_detected: float = 0.15
    before_decompression_share: float = 26 / 75
    #: Where an early disappearance happens (shares of the early ones): opening 7, arachnoid dissection 19.
    early_stage_shares: dict[str, float] = field(
        default_factory=lambda: {"dural_opening": 7 / 26, "arachnoid_dissection": 19 / 26})
    final_pct_disappeared: tuple[float, float, float, float] = (6.0, 0.6, 0.0, 13.5)
    """(median, log-sd, min, max) of the final percent of baseline when the AMR disappeared."""
    final_pct_persisted: tuple[float, float, float, float] = (60.0, 0.35, 14.0, 150.0)
    persistent_spasm: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "persisted": {"1w": 0.48, "3m": 0.41, "6m": 0.325, "1y": 0.24},
        "disappeared": {"1w": 0.07, "3m": 0.04, "6m": 0.04, "1y": 0.04},
    })
    worse_probability: float = 0.03
    grade_drop_probability: float = 0.3
    complication_rates: dict[str, float] = field(default_factory=lambda: {
        "facial_palsy_immediate": 0.03, "facial_palsy_delayed": 0.06, "hearing_loss": 0.03, "csf_leak": 0.02})
    lost_by: dict[str, float] = field(default_factory=lambda: {"1w": 0.0, "3m": 0.03, "6m": 0.06, "1y": 0.10})
    channel_detected: dict[str, float] = field(default_factory=lambda: {
        "ZYG_mentalis": 0.962, "ZYG_orbicularis_oris": 0.923, "MAR_orbicularis_oculi": 0.70})
    """Per recording site, in order of precedence: the chance it shows an AMR when the session's does
    (mentalis and orbicularis oris: Pan et al. 2025; orbicularis oculi: ours)."""
    channel_log_sd: dict[str, float] = field(default_factory=lambda: {
        "ZYG_mentalis": 0.3, "ZYG_orbicularis_oris": 0.5, "MAR_orbicularis_oculi": 0.8})
    """Log-sd of a site's final percent around the session's draw, when it is not the first site with an AMR."""
    channel_baseline_share: tuple[float, float] = (0.3, 1.0)
    """Uniform range of a non-first site's baseline as a share of the preoperative amplitude."""
    period: tuple[str, str] = ("2019-01-01", "2024-12-31")
    first_hour_utc: tuple[int, int] = (8, 14)
    follow_up: FollowUpSettings = field(default_factory=FollowUpSettings)

    def __post_init__(self) -> None:
        for name in ("never_detected", "before_decompression_share", "worse_probability", "grade_drop_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {v}")
        for group, curve in self.persistent_spasm.items():
            vals = [curve.get(tp) for tp in TIMEPOINTS]
            if any(v is None or not 0.0 <= v <= 1.0 for v in vals) or any(b > a for a, b in zip(vals, vals[1:])):
                raise ValueError(f"persistent_spasm[{group!r}] must give a non-increasing probability in [0, 1] "
                                 f"for each of {list(TIMEPOINTS)}; got {curve}")
        if set(self.persistent_spasm) != {"persisted", "disappeared"}:
            raise ValueError(f"persistent_spasm must have the groups 'persisted' and 'disappeared'; "
                             f"got {sorted(self.persistent_spasm)}")
        lost = [self.lost_by.get(tp) for tp in TIMEPOINTS]
        if any(v is None or not 0.0 <= v <= 1.0 for v in lost) or lost != sorted(lost):
            raise ValueError(f"lost_by must give a non-decreasing fraction in [0, 1] for each of {list(TIMEPOINTS)}; "
                             f"got {self.lost_by}")
        unknown = set(self.complication_rates) - set(COMPLICATIONS)
        if unknown:
            raise ValueError(f"complication_rates names unknown complications {sorted(unknown)}; known: {COMPLICATIONS}")
        if abs(sum(self.early_stage_shares.values()) - 1.0) > 1e-9:
            raise ValueError(f"early_stage_shares must sum to 1; got {self.early_stage_shares}")
        if list(self.channel_detected) != list(SIM_CHANNELS) or list(self.channel_log_sd) != list(SIM_CHANNELS):
            raise ValueError(f"channel_detected and channel_log_sd must give, in this order, {list(SIM_CHANNELS)}; "
                             f"got {list(self.channel_detected)} and {list(self.channel_log_sd)}")
        if any(not 0.0 <= v <= 1.0 for v in self.channel_detected.values()):
            raise ValueError(f"channel_detected must be probabilities in [0, 1]; got {self.channel_detected}")
        if any(not 0.0 <= v <= 3.0 for v in self.channel_log_sd.values()):
            raise ValueError(f"channel_log_sd must be in [0, 3]; got {self.channel_log_sd}")
        lo_b, hi_b = self.channel_baseline_share
        if not 0.0 < lo_b <= hi_b <= 1.0:
            raise ValueError(f"channel_baseline_share must be 0 < low <= high <= 1; got {self.channel_baseline_share}")
        start, end = (dt.date.fromisoformat(d) for d in self.period)
        if end < start:
            raise ValueError(f"period must run forwards; got {self.period}")

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["follow_up"] = {"timepoint_days": dict(self.follow_up.timepoint_days)}
        return d


def describe(settings: dict[str, Any] | None = None) -> list[str]:
    """The generator's assumptions as sentences, for the report's data section."""
    d = settings if settings is not None else SyntheticRegistrySettings().as_json()
    ps, pd = d["persistent_spasm"]["persisted"], d["persistent_spasm"]["disappeared"]
    fd, fp = d["final_pct_disappeared"], d["final_pct_persisted"]
    return [
        "Factors and AMR persistence come from the predictor's synthetic cohort generator (assumed effect sizes "
        "tuned to the 2025 study's 21.7% persistence and apparent AUC of about 0.93); they are not estimates.",
        f"{d['never_detected']:.0%} of operations never show an AMR (214-patient series), independently of the "
        "factors; they carry no persistence label, baseline amplitude or prediction.",
        f"Of the AMRs that disappear, {d['before_decompression_share']:.1%} do so before decompression "
        f"(during opening or arachnoid dissection, 214-patient series), the rest after it.",
        f"Final amplitude: median {fd[0]:g}% of baseline (log-sd {fd[1]:g}, {fd[2]:g}–{fd[3]:g}%) when the AMR "
        f"disappeared, median {fp[0]:g}% ({fp[2]:g}–{fp[3]:g}%) when it persisted.",
        *_describe_channels(d),
        "Persistent spasm when the AMR persisted vs disappeared (meta-analysis; discharge taken as 1 week, "
        "6 months interpolated): " + ", ".join(f"{tp} {ps[tp]:.1%} vs {pd[tp]:.1%}" for tp in TIMEPOINTS)
        + "; never-detected AMRs follow the 'disappeared' curve; one time to relief per patient, no recurrence.",
        f"Residual Cohen grade while spasm persists: uniform up to the preoperative grade "
        f"({d['worse_probability']:.0%} one grade worse), dropping one grade with probability "
        f"{d['grade_drop_probability']:g} per later visit.",
        "Complications at the first visit: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.0%}" for k, v in d["complication_rates"].items()) + ".",
        "Cumulative loss to follow-up: " + ", ".join(f"{tp} {d['lost_by'][tp]:.0%}" for tp in TIMEPOINTS) + ".",
        f"Operations spread over {d['period'][0]} to {d['period'][1]}; predictions by the model given to the "
        "generator (by default the shipped synthetic model).",
    ]


def _describe_channels(d: dict[str, Any]) -> list[str]:
    if "channel_detected" not in d:  # a registry generated before per-channel figures were written
        return ["No per-channel figures (generated before they were written)."]
    det, sd = d["channel_detected"], d["channel_log_sd"]
    names = {k: k.replace("_", " ", 1).replace("_", " ") for k in det}
    return [
        "Per channel: an AMR in " + ", ".join(f"{names[k]} {v:.1%}" for k, v in det.items())
        + " of detected AMRs (mentalis and orbicularis oris: the shares Pan et al. 2025 reported; orbicularis "
        "oculi: assumed). The final amplitude above goes to the first of these with an AMR; each other "
        "channel's is it times a log-normal factor (log-sd " + ", ".join(f"{names[k]} {sd[k]:g}" for k in det)
        + "), clipped to the course's range, and the session figure is the largest channel's. These per-channel "
        "figures are invented to exercise the analysis; they carry no information about real muscles.",
    ]


@dataclass(frozen=True)
class SyntheticRegistryResult:
    n: int
    seed: int
    courses: dict[str, int]
    outcomes_written: int
    model_sha256: str


def _relief_day(u: float, curve: dict[str, float], days: dict[str, int]) -> int | None:
    """Day of relief by inverting the piecewise-linear 'still in spasm' curve; None beyond the last point."""
    t = [0.0] + [float(days[tp]) for tp in TIMEPOINTS]
    s = [1.0] + [curve[tp] for tp in TIMEPOINTS]
    if u <= s[-1]:
        return None
    for i in range(len(t) - 1):
        if s[i + 1] < u <= s[i]:
            x = t[i] + (s[i] - u) / (s[i] - s[i + 1]) * (t[i + 1] - t[i])
            return max(1, int(np.ceil(x)))
    return None  # pragma: no cover - u > s[-1] always falls in a segment


def _start_times(n: int, rng: np.random.Generator, settings: SyntheticRegistrySettings) -> list[dt.datetime]:
    start, end = (dt.date.fromisoformat(d) for d in settings.period)
    weekdays = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    weekdays = [d for d in weekdays if d.weekday() < 5]
    days = sorted(rng.choice(len(weekdays), size=n, replace=True))
    h0, h1 = settings.first_hour_utc
    out = []
    for i in days:
        minute = int(rng.integers(h0 * 60, h1 * 60))
        d = weekdays[int(i)]
        out.append(dt.datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=dt.UTC))
    return out


def generate(data_dir: Path, n: int, *, seed: int = 0, settings: SyntheticRegistrySettings | None = None,
             cohort: CohortGenerator = DEFAULT_COHORT, model=None, registry: str | Path | None = None,
             site: str | None = None) -> SyntheticRegistryResult:
    """Write n synthetic sessions (registry rows, summaries, outcomes) into DATA_DIR's registry, or into
    `registry` (a URL) with each session marked as recorded at `site` (multi-site registries, issue #20)."""
    from amrwatch.services.predictor.model import LoadedModel

    settings = settings or SyntheticRegistrySettings()
    if not 1 <= n <= 100_000:
        raise ValueError(f"n must be 1-100000 sessions; got {n}")
    model = model or LoadedModel.load()
    rng = np.random.default_rng(seed)
    rng_channels = np.random.default_rng([seed, 1])  # a second stream: the first gives what it gave before
    X, persisted = cohort.cohort(n, int(rng.integers(2**31)))
    starts = _start_times(n, rng, settings)
    days = settings.follow_up.timepoint_days
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    probs = model.probabilities(X)
    low, high = model.cutoffs
    courses: Counter[str] = Counter()
    outcomes_written = 0
    gen_settings = {"synthetic_registry": settings.as_json(), "seed": seed,
                    "generator": f"{__name__}.generate"}
    with (Registry(registry) if registry is not None else Registry.in_data_dir(data_dir)) as reg, reg.batch():
        for i in range(n):
            factors = row_dict(X[i])
            if rng.random() < settings.never_detected:
                course, stage, final_pct = "never_detected", None, None
                factors["amr_amplitude_uv"] = None
            elif persisted[i]:
                course, stage = "persisted", None
                final_pct = _lognormal(rng, settings.final_pct_persisted)
            else:
                final_pct = _lognormal(rng, settings.final_pct_disappeared)
                if rng.random() < settings.before_decompression_share:
                    course = "disappeared_before_decompression"
                    stages = list(settings.early_stage_shares)
                    stage = stages[int(rng.choice(len(stages), p=list(settings.early_stage_shares.values())))]
                else:
                    course, stage = "disappeared_after_decompression", "decompression"
            courses[course] += 1
            per_channel = _channels(rng_channels, settings, course, final_pct, factors["amr_amplitude_uv"])
            if course != "never_detected":
                final_pct = max(c["final_pct_of_baseline"] for c in per_channel.values()
                                if c["final_pct_of_baseline"] is not None)
            prediction = None
            if course != "never_detected":
                p = float(probs[i])
                prediction = {"probability": p, "band": "low" if p < low else ("high" if p >= high else "intermediate"),
                              "cutoff_low": low, "cutoff_high": high, "model_sha256": model.sha256,
                              "synthetic": model.synthetic}
            summary = {
                "factors": {k: v for k, v in factors.items() if v is not None},
                "factor_sources": {k: ("analyzer" if k == "amr_amplitude_uv" else "operator")
                                   for k, v in factors.items() if v is not None},
                "course": course,
                "baseline_uv": factors["amr_amplitude_uv"],
                "final_pct_of_baseline": final_pct,
                "disappeared_at_stage": stage,
                "prediction": prediction,
                "per_channel": per_channel,
                "derived_from": "synthetic",
            }
            started = starts[i]
            sid = f"{started:%Y%m%dT%H%M%SZ}-{int(rng.integers(16**6)):06x}"
            reg.create_session(sid, actor=ACTOR, started_at=started, source=SOURCE, settings=gen_settings,
                               model_sha256=model.sha256, model_synthetic=model.synthetic,
                               patient_token=new_patient_token(), site=site, cart=site and f"{site}-cart")
            reg.close_session(sid, actor=ACTOR,
                              ended_at=started + dt.timedelta(minutes=int(rng.integers(120, 240))))
            reg.set_summary(sid, summary, actor=ACTOR)
            group = "persisted" if course == "persisted" else "disappeared"
            for visit in _follow_up(rng, settings, group, int(X[i, col["cohen_grade"]]), started.date(), days):
                reg.add_outcome(sid, actor=ACTOR, **visit)
                outcomes_written += 1
    return SyntheticRegistryResult(n=n, seed=seed, courses=dict(courses), outcomes_written=outcomes_written,
                                   model_sha256=model.sha256)


def _channels(rng: np.random.Generator, settings: SyntheticRegistrySettings, course: str, final_pct: float | None,
              amplitude: float | None) -> dict[str, dict[str, Any]]:
    """Each simulated channel's figures (see the module docstring); all empty when no AMR was detected."""
    u = rng.random(len(SIM_CHANNELS) * 2)  # a fixed number of draws per session, whatever the course
    z = rng.standard_normal(len(SIM_CHANNELS))
    out: dict[str, dict[str, Any]] = {}
    detected = [u[j] < settings.channel_detected[k] for j, k in enumerate(SIM_CHANNELS)]
    if not any(detected):
        detected[0] = True
    hi = settings.final_pct_disappeared[3] if course != "persisted" else settings.final_pct_persisted[3]
    first = detected.index(True)
    lo_b, hi_b = settings.channel_baseline_share
    for j, (site, (name, direction, muscle)) in enumerate(SIM_CHANNELS.items()):
        entry: dict[str, Any] = {"direction": direction, "muscle": muscle, "state": None, "baseline_uv": None,
                                 "final_pct_of_baseline": None}
        if course != "never_detected" and detected[j] and final_pct is not None and amplitude is not None:
            if j == first:
                pct, base = final_pct, amplitude
            else:
                pct = round(float(np.clip(final_pct * np.exp(settings.channel_log_sd[site] * z[j]), 0.0, hi)), 2)
                base = round(amplitude * (lo_b + (hi_b - lo_b) * float(u[len(SIM_CHANNELS) + j])), 2)
            gone = pct <= settings.final_pct_disappeared[3]
            entry.update(state="disappeared" if gone else "present", baseline_uv=base, final_pct_of_baseline=pct)
        out[name] = entry
    return out


def _lognormal(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> float:
    median, log_sd, lo, hi = spec
    return round(float(np.clip(median * np.exp(log_sd * rng.standard_normal()), lo, hi)), 2)


def _follow_up(rng: np.random.Generator, settings: SyntheticRegistrySettings, group: str, preop: int,
               surgery: dt.date, days: dict[str, int]) -> list[dict[str, Any]]:
    """The outcome rows one patient's follow-up visits produce, in time order."""
    relief = _relief_day(float(rng.random()), settings.persistent_spasm[group], days)
    u_lost = float(rng.random())
    complications = [c for c, rate in settings.complication_rates.items() if rng.random() < rate]
    first_worse = rng.random() < settings.worse_probability
    first_grade = min(4, preop + 1) if first_worse else int(rng.integers(1, preop + 1))
    drops = rng.random(len(TIMEPOINTS)) < settings.grade_drop_probability
    visits: list[dict[str, Any]] = []
    grade: int | None = None
    relief_recorded = False
    for k, tp in enumerate(TIMEPOINTS):
        in_spasm = relief is None or relief > days[tp]
        if in_spasm:
            grade = first_grade if grade is None else (max(1, grade - 1) if drops[k] else grade)
        if u_lost < settings.lost_by[tp]:
            break
        visit: dict[str, Any] = {"timepoint": tp, "cohen_grade": grade if in_spasm else 0}
        visit["outcome_class"] = derive_class(visit["cohen_grade"], preop)
        if not in_spasm and not relief_recorded:
            visit["relief_date"] = (surgery + dt.timedelta(days=relief)).isoformat()
            relief_recorded = True
        if not visits and complications:
            visit["complications"] = complications
        visits.append(visit)
    return visits
