"""An independent EMG recording played through real pylsl outlets, for the LSL tests and bench.

Not the project's simulator: a small generator of its own, so the source is
checked against a recording it was not written with. 3 EMG channels (MENT,
OORIS: ZYG-LSR; OOCUL: MAR-LSR) at 20 kHz, white noise of `NOISE_UV` RMS, a
stimulus every ~0.5 s (irregular directions, jittered spacing) with a
decaying artifact and a biphasic AMR whose p2p is 8-20x the noise RMS and
whose onset (the start of a linear-ish rise) is known to the sample.

Modes: `markers` (marker stream `NAME-markers`, each `stim DIR 15mA` stamped
with its stimulus sample's exact time), `trigger` (channels `TRIG_ZYG` and
`TRIG_MAR` of 5 V, 0.2 ms pulses, no marker stream), `both` (one plain `TRIG`
channel that cannot tell the directions apart + markers that can, stamped off
by up to ±`MARKER_JITTER_MS`, like a stimulator's software log).

Run as a script (the outlets in their own process, so a test can kill it):
    python lsl_outlet.py NAME MODE --seed S --duration-s D [--speed X] [--t0 T] [--resume]
Samples are stamped `t0 + i / FS` (chunks of `CHUNK` samples, each stamped with
its last sample's time, LSL's push_chunk convention); `--resume` starts at the
sample `now` is at, for a restarted outlet. Prints `READY` when the outlets
exist, `START i0 t0` when the first sample leaves, `DONE i_end` at the end.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

FS = 20_000
CHUNK = 100  # 5 ms
NOISE_UV = 5.0
EMG = ["MENT", "OORIS", "OOCUL"]
RECORDS = {"ZYG": (0, 1), "MAR": (2,)}
PHASE_MS = 3.0
ARTIFACT_UV = 300.0
TRIG_V = 5.0
TRIG_SAMPLES = 4  # 0.2 ms
MARKER_JITTER_MS = 5.0


def labels(mode: str) -> list[str]:
    return EMG + {"markers": [], "trigger": ["TRIG_ZYG", "TRIG_MAR"], "both": ["TRIG"]}[mode]


def stimuli(seed: int, n_total: int) -> list[dict]:
    """The truth: sample index, direction, AMR p2p (µV) and onset (ms) of every stimulus."""
    rng = np.random.default_rng([seed, 1])
    out = []
    i = int(0.3 * FS)
    while i + int(0.06 * FS) < n_total:
        d = "ZYG" if rng.random() < 0.6 else "MAR"
        out.append({"index": i, "direction": d, "p2p_uv": float(rng.uniform(8.0, 20.0) * NOISE_UV),
                    "onset_ms": float(rng.uniform(8.0, 12.0)),
                    "marker_jitter_s": float(rng.uniform(-MARKER_JITTER_MS, MARKER_JITTER_MS) / 1000.0)})
        i += int(rng.integers(int(0.45 * FS), int(0.55 * FS)))
    return out


class Recording:
    """Samples [i0, i0 + n) of the recording, for any i0 (noise seeded per second)."""

    def __init__(self, seed: int, n_total: int, mode: str):
        self.seed, self.mode = seed, mode
        self.stims = stimuli(seed, n_total)
        self.idx = np.array([s["index"] for s in self.stims])
        self.n_ch = len(labels(mode))
        self._sec: dict[int, np.ndarray] = {}

    def _noise(self, sec: int) -> np.ndarray:
        if sec not in self._sec:
            if len(self._sec) > 4:
                self._sec.clear()
            rng = np.random.default_rng([self.seed, 2, sec])
            x = rng.normal(0.0, NOISE_UV, (FS, self.n_ch))
            if self.n_ch > len(EMG):
                x[:, len(EMG):] = rng.normal(0.0, 0.01, (FS, self.n_ch - len(EMG)))  # trigger line, volts
            self._sec[sec] = x
        return self._sec[sec]

    def block(self, i0: int, n: int) -> np.ndarray:
        out = np.empty((n, self.n_ch))
        k = 0
        while k < n:
            sec, off = divmod(i0 + k, FS)
            m = min(n - k, FS - off)
            out[k:k + m] = self._noise(sec)[off:off + m]
            k += m
        t = np.arange(i0, i0 + n)
        lo = np.searchsorted(self.idx, i0 - int(0.05 * FS))
        hi = np.searchsorted(self.idx, i0 + n)
        for s in self.stims[lo:hi]:
            dt_ms = (t - s["index"]) / FS * 1000.0
            art = np.where(dt_ms >= 0, ARTIFACT_UV * np.exp(-np.clip(dt_ms, 0, None) / 0.3), 0.0)
            out[:, :len(EMG)] += art[:, None]
            u = (dt_ms - s["onset_ms"]) / PHASE_MS  # phases: +half sine over [0, 1), -half sine over [1, 2)
            amr = np.where((u >= 0) & (u < 1), np.sin(np.pi * u), 0.0) - np.where((u >= 1) & (u < 2),
                                                                                   np.sin(np.pi * (u - 1)), 0.0)
            for ch in RECORDS[s["direction"]]:
                out[:, ch] += 0.5 * s["p2p_uv"] * amr
            if self.n_ch > len(EMG):
                pulse = (t >= s["index"]) & (t < s["index"] + TRIG_SAMPLES)
                row = len(EMG) + (1 if self.mode == "trigger" and s["direction"] == "MAR" else 0)
                out[pulse, row] += TRIG_V
        return out.astype(np.float32)


def make_outlets(name: str, mode: str, source_id: str):
    import pylsl

    info = pylsl.StreamInfo(name, "EMG", len(labels(mode)), FS, pylsl.cf_float32, source_id)
    chans = info.desc().append_child("channels")
    for lbl in labels(mode):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lbl)
        ch.append_child_value("unit", "V" if lbl.startswith("TRIG") else "microvolts")
    emg = pylsl.StreamOutlet(info, chunk_size=CHUNK, max_buffered=60)
    mk = None
    if mode in ("markers", "both"):
        mk = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-markers", "Markers", 1, 0, pylsl.cf_string,
                                                 f"{source_id}-markers"))
    return emg, mk


def main(argv: list[str] | None = None) -> None:
    import pylsl

    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("mode", choices=["markers", "trigger", "both"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--t0", type=float, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--source-id", default=None)
    p.add_argument("--wait-s", type=float, default=60.0)
    p.add_argument("--stamp-jitter-ms", type=float, default=0.0,
                   help="stamp each chunk up to this much off its sample time (an app stamping at push time)")
    a = p.parse_args(argv)
    n_total = int(a.duration_s * FS)
    rec = Recording(a.seed, n_total, a.mode)
    emg, mk = make_outlets(a.name, a.mode, a.source_id or f"{a.name}-src")
    print("READY", flush=True)
    deadline = time.monotonic() + a.wait_s
    while not (emg.have_consumers() and (mk is None or mk.have_consumers())):
        if time.monotonic() > deadline:
            print("NO CONSUMER", flush=True)
            sys.exit(2)
        time.sleep(0.005)
    now = pylsl.local_clock()
    t0 = a.t0 if a.t0 is not None else now
    i = 0
    if a.resume:
        i = int(np.ceil((now - t0) * FS / CHUNK)) * CHUNK
    start_wall = now
    i_start = i
    print(f"START {i} {t0!r}", flush=True)
    si = int(np.searchsorted(rec.idx, i))
    jitter_rng = np.random.default_rng([a.seed, 3])
    while i < n_total:
        n = min(CHUNK, n_total - i)
        due = start_wall + (i + n - i_start) / FS / a.speed  # a chunk leaves once its last sample is taken
        wait = due - pylsl.local_clock()
        if wait > 0:
            time.sleep(wait)  # pacing the recording, like an amplifier
        wobble = jitter_rng.uniform(-a.stamp_jitter_ms, a.stamp_jitter_ms) / 1000.0 if a.stamp_jitter_ms else 0.0
        emg.push_chunk(rec.block(i, n), t0 + (i + n - 1) / FS + wobble)
        while mk is not None and si < len(rec.stims) and rec.stims[si]["index"] < i + n:
            s = rec.stims[si]
            jitter = s["marker_jitter_s"] if a.mode == "both" else 0.0
            mk.push_sample([f"stim {s['direction']} 15mA"], t0 + s["index"] / FS + jitter)
            si += 1
        i += n
    print(f"DONE {i}", flush=True)
    # keep the outlets up until the consumer has pulled everything
    end = time.monotonic() + 5.0
    while time.monotonic() < end and emg.have_consumers():
        time.sleep(0.05)


if __name__ == "__main__":
    main()
