#!/usr/bin/env python3
"""How fast `amrwatch verify` checks a long session, against reading the same bytes.

Writes a synthetic 2-hour, 4-channel (3 EMG + sample index), 20 kHz session
as the recorder would archive it: 1.44 million 5 ms emg_frame messages, a
stimulus per second, the surgical stages, patient factors, and the
analyzer's and predictor's events computed by their own engines — then
times, in the same run, on the same files:

- baseline: a plain sequential read of every segment file plus SHA-256 of
  its bytes (what any integrity check must at least do);
- integrity alone: CRCs, hash chain and checkpoint (integrity.analyse);
- verify: integrity and the full re-run of the analysis and predictions,
  compared field by field (the target: >= 200x real time);
- replay read-out: every message rebuilt and encoded as `amrwatch replay`
  publishes it, without pacing or a socket (how fast a replay could go).

Prints a markdown table. Usage:
    .venv/bin/python bench/verify_speed.py [--minutes 120] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from amrwatch.proto.codec import encode
from amrwatch.proto.messages import BY_TYPE, SCHEMA_VERSION, AlarmBody, DecisionBody, Montage, PredictionBody
from amrwatch.services.analyzer.engine import AnalyzerEngine
from amrwatch.services.predictor.core import PredictorCore
from amrwatch.services.predictor.service import load_or_explain
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.archive.session import open_session
from amrwatch.archive.integrity import analyse, list_segments
from amrwatch.audit.replay import replay_plan
from amrwatch.audit.verify import verify_session
from amrwatch.services.analyzer.offline import BLOCK_S

FS = 20_000
FRAME = 100  # 5 ms, as the acquirer publishes
SID = "20261124T080000Z-bench1"
T0 = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.UTC)
#: When each stage starts, as a fraction of the session (a two-hour operation: decompression at 70 min).
STAGES = [(0.0, "baseline"), (1 / 12, "incision"), (2 / 12, "dural_opening"), (3 / 12, "csf_release"),
          (4 / 12, "retraction"), (5 / 12, "arachnoid_dissection"), (7 / 12, "decompression"), (10 / 12, "closure")]
FACTORS = {"duration_years": 4.0, "cohen_grade": 3, "carbamazepine": True, "vessels": 1, "retraction_mm": 8.0,
           "displacement": 3}
MONTAGE = Montage(sampling_rate_hz=FS, channels=[
    {"name": "MENT", "muscle": "mentalis", "direction": "ZYG"},
    {"name": "OORIS", "muscle": "orbicularis_oris", "direction": "ZYG"},
    {"name": "OOCUL", "muscle": "orbicularis_oculi", "direction": "MAR"},
    {"name": "SAMPLE_INDEX", "muscle": "none", "direction": None, "kind": "sample_index", "unit": "index"},
], stimulation=[{"direction": "ZYG", "stimulated_branch": "zygomatic"},
                {"direction": "MAR", "stimulated_branch": "marginal_mandibular"}])


class Stamper:
    """Envelopes as each service's Publisher stamps them (seq per type)."""

    def __init__(self, publisher: str, instance: str) -> None:
        self.publisher, self.instance, self.seq = publisher, instance, {}

    def frames(self, type_: str, t_s: float, **body) -> list[bytes]:
        seq = self.seq.get(type_, 0)
        self.seq[type_] = seq + 1
        msg = BY_TYPE[type_](type=type_, schema_version=SCHEMA_VERSION, session_id=SID, seq=seq,
                             publisher=self.publisher, instance=self.instance,
                             ts_utc=T0 + dt.timedelta(seconds=t_s), **body)
        return encode(msg)


def _iso(t_s: float) -> str:
    return (T0 + dt.timedelta(seconds=t_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_session(data: Path, seconds: int) -> dict[str, int]:
    """The synthetic session, archived; the analyzer and predictor events computed as verify will."""
    rng = np.random.default_rng(7)
    acq, ana, pre = Stamper("acquirer", "a0c0a0c0"), Stamper("analyzer", "b1b1b1b1"), Stamper("predictor", "c2c2c2c2")
    engine = AnalyzerEngine(MONTAGE)
    core = PredictorCore(load_or_explain(None))
    w = ArchiveWriter(session_path(data, SID))
    n_total = seconds * FS
    end_sample = n_total - 2 * FS
    stages = [(int(f * seconds) * FS, s) for f, s in STAGES] + [(end_sample, "end")]
    stim_samples = [int((0.5 + k) * FS) for k in range(seconds - 1)]
    decompression_s = next(i for i, s in stages if s == "decompression") / FS
    pool = rng.normal(0.0, 3.0, (3, 7 * FS)).astype(np.float32)
    t = np.arange(int(0.008 * FS)) / FS
    wave = (np.sin(2 * np.pi * t / 0.008) * np.hanning(t.size)).astype(np.float32)
    onset = int(0.010 * FS)
    counts = {"frames": 0, "analyzer": 0, "predictor": 0}
    block = max(1, min(int(BLOCK_S * FS), engine.buffer.capacity // 2))
    pending: list[np.ndarray] = []
    first = hi_pending = n_pending = 0

    def emit_outputs(outputs, t_s: float) -> None:
        for out in outputs:
            if isinstance(out, AlarmBody):
                continue
            body = out.fields()
            w.append_message(ana.frames(out.TOPIC, t_s, **body))
            counts["analyzer"] += 1
            feed_predictor(out.TOPIC, ana, body, t_s)

    def feed_predictor(kind: str, stamper: Stamper, body: dict, t_s: float) -> None:
        if kind not in ("factors", "baseline", "stage", "amr_state", "amr_measurement", "amr_course"):
            return
        msg = BY_TYPE[kind](type=kind, schema_version=SCHEMA_VERSION, session_id=SID, seq=0,
                            publisher=stamper.publisher, instance=stamper.instance, ts_utc=T0, **body)
        for out in core.on_message(msg):
            if isinstance(out, (PredictionBody, DecisionBody)):
                w.append_message(pre.frames(out.TOPIC, t_s, **out.fields()))
                counts["predictor"] += 1

    def flush(t_s: float) -> None:
        nonlocal pending, n_pending
        if pending:
            x = pending[0] if len(pending) == 1 else np.concatenate(pending, axis=1)
            emit_outputs(engine.on_frame(first, x, float(FS)), t_s)
            pending, n_pending = [], 0

    w.append_message(acq.frames("session_start", 0.0, started_at=T0, source="sim", scenario="bench", replay_of=None,
                                manual=False, montage=MONTAGE, settings={"bench": True}, ground_truth=False))
    header = ('{"type":"emg_frame","schema_version":1,"session_id":"%s","seq":%d,"publisher":"acquirer",'
              '"instance":"a0c0a0c0","ts_utc":"%s","first_sample_index":%d,"n_channels":4,"n_samples":%d,'
              '"sampling_rate_hz":20000.0,"dtype":"<f4","layout":"channel_major","first_sample_device_s":%r,'
              '"first_sample_utc":"%s"}')
    si = si_stage = 0
    for sec in range(seconds):
        lo_s = sec * FS
        x = np.empty((4, FS), dtype=np.float32)
        off = int(rng.integers(0, pool.shape[1] - FS))
        x[:3] = pool[:, off:off + FS]
        x[3] = (np.arange(lo_s, lo_s + FS) % 2**24).astype(np.float32)
        for k in range(si, len(stim_samples)):
            s = stim_samples[k]
            if s >= lo_s + FS:
                break
            since = s / FS - decompression_s
            amp = 200.0 if since < 60 else max(0.0, 200.0 - (since - 60) * 20)
            rows = (0, 1) if k % 2 == 0 else (2,)
            a = s - lo_s + onset
            for r in rows:
                seg = x[r, a:a + wave.size]
                seg += amp * wave[:seg.size]
        for lo in range(lo_s, lo_s + FS, FRAME):
            hi = lo + FRAME
            t_s = hi / FS
            while si_stage < len(stages) and stages[si_stage][0] < hi:
                idx_s, name = stages[si_stage]
                flush(t_s)
                body = {"stage": name, "source": "scenario", "sample_index": idx_s}
                w.append_message(acq.frames("stage", t_s, **body))
                feed_predictor("stage", acq, body, t_s)
                emit_outputs(engine.on_stage(name, idx_s), t_s)
                si_stage += 1
            if lo == FS:  # the patient's factors, 1 s in
                flush(t_s)
                body = {"factors": FACTORS, "source": "scenario"}
                w.append_message(acq.frames("factors", t_s, **body))
                feed_predictor("factors", acq, body, t_s)
            seq = acq.seq.get("emg_frame", 0)
            acq.seq["emg_frame"] = seq + 1
            frame = x[:, lo - lo_s:hi - lo_s]
            w.append_message([b"emg_frame", (header % (SID, seq, _iso(t_s), lo, FRAME, lo / FS, _iso(lo / FS))).encode(),
                              np.ascontiguousarray(frame).tobytes()])
            counts["frames"] += 1
            mergeable = pending and lo == hi_pending and n_pending + FRAME <= block and lo + FRAME < end_sample
            if not mergeable:
                flush(t_s)
                first = lo
            pending.append(frame)
            n_pending += FRAME
            hi_pending = hi
            if hi >= end_sample:
                flush(t_s)
            while si < len(stim_samples) and stim_samples[si] < hi:
                s = stim_samples[si]
                flush(t_s)
                body = {"stimulus_index": si, "sample_index": s, "stim_time_s": s / FS,
                        "direction": "ZYG" if si % 2 == 0 else "MAR", "intensity_ma": 15.0, "width_ms": 0.2}
                w.append_message(acq.frames("stimulus", t_s, **body))
                emit_outputs(engine.on_stimulus(si, s, s / FS, body["direction"]), t_s)
                si += 1
            if w.needs_commit():
                w.commit()
    flush(seconds)
    w.append_message(acq.frames("session_end", seconds, ended_at=T0 + dt.timedelta(seconds=seconds),
                                reason="scenario_end", n_frames=counts["frames"], n_stimuli=si, n_samples=n_total))
    emit_outputs(engine.on_end(), seconds)
    w.close()
    return counts


def baseline_read(d: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for _i, path in list_segments(d):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
                n += len(chunk)
    return time.perf_counter() - t, n


def replay_readout(d: Path) -> tuple[float, int]:
    from amrwatch.proto.messages import EmgFrame

    t = time.perf_counter()
    n = 0
    with open_session(d) as session:
        for _t, cls, body in replay_plan(session, T0):
            samples = body.pop("samples", None)
            msg = cls(type=cls.TOPIC, schema_version=1, session_id=SID, seq=0, publisher="replay",
                      instance="d3d3d3d3", ts_utc=T0, **body)
            if cls is EmgFrame:
                msg.with_samples(samples)
            encode(msg)
            n += 1
    return time.perf_counter() - t, n


def run(minutes: int = 120, where: str | None = None) -> str:
    root = Path(tempfile.mkdtemp(prefix="amrwatch-verify-bench-", dir=where))
    try:
        data = root / "data"
        seconds = minutes * 60
        t = time.perf_counter()
        counts = write_session(data, seconds)
        t_write = time.perf_counter() - t
        d = session_path(data, SID)
        size = sum(p.stat().st_size for p in d.iterdir())
        t_base, nbytes = baseline_read(d)
        t = time.perf_counter()
        problems = analyse(d).problems
        t_integrity = time.perf_counter() - t
        report = verify_session(data, SID)
        t_replay, n_replay = replay_readout(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rt = float(seconds)
    rows = [
        ("baseline: sequential read + SHA-256 of the segment files", t_base, f"{nbytes / t_base / 1e6:.0f} MB/s"),
        ("integrity alone (CRCs, hash chain, checkpoint)", t_integrity, "what verify's second process does"),
        ("verify: integrity + re-run of analysis and predictions, compared", report.seconds,
         "IDENTICAL" if report.ok else f"FAILED: {len(report.problems)} problems, {len(report.differences)} differences"),
        ("replay read-out: every message rebuilt and encoded (no pacing, no socket)", t_replay, f"{n_replay} messages"),
    ]
    out = [
        f"## Verify and replay speed ({minutes} min x 4 channels x 20 kHz session)",
        "",
        f"Synthetic session: {counts['frames']:,} emg_frames of 5 ms, {seconds - 1:,} stimuli, "
        f"{counts['analyzer']:,} analyzer and {counts['predictor']:,} predictor events; archive "
        f"{size / 1e9:.2f} GB (written in {t_write:.0f} s). Target: verify >= 200x real time.",
        "",
        "| step | seconds | x real time | note |",
        "|---|---:|---:|---|",
    ]
    for name, secs, note in rows:
        out.append(f"| {name} | {secs:.1f} | {rt / secs:.0f}x | {note} |")
    out += ["", f"verify compared {json.dumps(report.compared)}; it costs {report.seconds / t_base:.1f}x the "
            f"baseline read (integrity runs on a second core while the main one re-runs the analysis)."]
    if problems:
        out.append(f"integrity problems: {problems[:3]}")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=120)
    p.add_argument("--dir", help="where to write the temporary archive (default: the system temp dir)")
    a = p.parse_args()
    print(run(a.minutes, a.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
