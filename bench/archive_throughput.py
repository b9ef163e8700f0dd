#!/usr/bin/env python3
"""Sustained archive throughput with fsync on, against a raw write+fsync baseline.

Appends real emg_frame messages (proto codec; 64 channels x 100 samples of
float32 = 5 ms at 20 kHz) to an ArchiveWriter with group commit every 100 ms,
and the same bytes with plain os.write + os.fsync on the same schedule, in the
same run, on the same filesystem:

- paced: at the real acquisition rate for --seconds each, reporting CPU
  seconds per wall second (the issue's target: < 0.25 of one core);
- flat out: as fast as possible for --burst-seconds each, reporting MB/s and
  how many times the 64 x 20 kHz rate that is.

Prints a markdown table. Usage:
    .venv/bin/python bench/archive_throughput.py [--seconds 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from amrwatch.proto.codec import encode
from amrwatch.proto.messages import EmgFrame
from amrwatch.archive.writer import ArchiveWriter
from amrwatch.archive.bodies import encode_message
from amrwatch.archive.settings import ArchiveSettings


def make_frames(n: int, channels: int, samples: int, rate: float) -> list[list[bytes]]:
    rng = np.random.default_rng(1)
    t0 = dt.datetime.now(dt.UTC)
    out = []
    for i in range(n):
        msg = EmgFrame(type="emg_frame", schema_version=1, session_id="bench", seq=i, publisher="acquirer",
                       instance="0123abcd", ts_utc=t0, first_sample_index=i * samples, n_channels=channels,
                       n_samples=samples, sampling_rate_hz=rate, dtype="<f4", layout="channel_major",
                       first_sample_device_s=i * samples / rate, first_sample_utc=t0)
        msg.with_samples(rng.normal(0.0, 20.0, (channels, samples)).astype("<f4"))
        out.append(encode(msg))
    return out


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class ArchiveSink:
    name = "archive (CRC-32C + SHA-256 chain)"

    def __init__(self, d: Path, commit_s: float):
        self.w = ArchiveWriter(d / "sessions" / "bench", ArchiveSettings(commit_interval_s=commit_s))
        self.bytes = 0

    def append(self, frames: list[bytes]) -> None:
        self.w.append_message(frames)
        self.bytes += sum(len(f) for f in frames)

    def due(self) -> bool:
        return self.w.needs_commit()

    def commit(self) -> None:
        self.w.commit()

    def close(self) -> None:
        self.w.close()


class RawSink:
    name = "baseline (os.write + fsync)"

    def __init__(self, d: Path, commit_s: float):
        self.fd = os.open(d / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.buf = bytearray()
        self.commit_s = commit_s
        self.commit_bytes = ArchiveSettings().commit_bytes
        self.oldest: float | None = None
        self.bytes = 0

    def append(self, frames: list[bytes]) -> None:
        self.buf += encode_message(frames)  # the same body bytes the archive stores, nothing else
        self.bytes += sum(len(f) for f in frames)
        if self.oldest is None:
            self.oldest = time.monotonic()

    def due(self) -> bool:
        """The archive's group-commit rule: the interval elapsed or commit_bytes buffered."""
        return self.oldest is not None and (len(self.buf) >= self.commit_bytes
                                            or time.monotonic() - self.oldest >= self.commit_s)

    def commit(self) -> None:
        view = memoryview(self.buf)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        view.release()
        os.fsync(self.fd)
        self.buf = bytearray()
        self.oldest = None

    def close(self) -> None:
        self.commit()
        os.close(self.fd)


def run(sink_cls: Callable, d: Path, frames: list[list[bytes]], seconds: float, frame_s: float | None,
        commit_s: float) -> dict:
    """frame_s=None: flat out; else one frame every frame_s seconds (real time)."""
    d.mkdir(parents=True)
    sink = sink_cls(d, commit_s)
    commit_times: list[float] = []
    n = 0
    cpu0, t0 = cpu_seconds(), time.monotonic()
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if frame_s is not None:
            due_at = t0 + n * frame_s
            if due_at > now:
                time.sleep(due_at - now)
        sink.append(frames[n % len(frames)])
        n += 1
        if sink.due():
            c0 = time.monotonic()
            sink.commit()
            commit_times.append(time.monotonic() - c0)
    sink.commit()
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    sink.close()
    disk = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    shutil.rmtree(d)
    return {"sink": sink.name, "frames": n, "wall": wall, "cpu": cpu, "payload_bytes": sink.bytes,
            "disk_bytes": disk, "commits": len(commit_times),
            "commit_p50_ms": 1000 * statistics.median(commit_times) if commit_times else float("nan"),
            "commit_max_ms": 1000 * max(commit_times) if commit_times else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="paced run length, each sink (default 20)")
    ap.add_argument("--burst-seconds", type=float, default=3.0, help="flat-out run length, each sink (default 3)")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--rate", type=float, default=20_000.0, help="samples per second per channel")
    ap.add_argument("--frame-ms", type=float, default=5.0)
    ap.add_argument("--commit-ms", type=float, default=100.0)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    a = ap.parse_args(argv)

    samples = int(round(a.rate * a.frame_ms / 1000))
    frame_s = a.frame_ms / 1000
    required = a.channels * a.rate * 4  # bytes of samples per second
    frames = make_frames(200, a.channels, samples, a.rate)
    root = Path(tempfile.mkdtemp(prefix="amrwatch-bench-", dir=a.dir))
    try:
        results = []
        for mode, secs, pace in (("paced", a.seconds, frame_s), ("flat out", a.burst_seconds, None)):
            for i, sink in enumerate((ArchiveSink, RawSink)):
                r = run(sink, root / f"{mode.replace(' ', '_')}-{i}", frames, secs, pace, a.commit_ms / 1000)
                r["mode"] = mode
                results.append(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"# Archive throughput — {a.channels} ch x {a.rate:g} Hz float32, {a.frame_ms:g} ms frames, "
          f"group commit + fsync every {a.commit_ms:g} ms\n")
    print(f"Required: {required / 1e6:.2f} MB/s of samples ({1 / frame_s:.0f} frames/s). "
          f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, dir on "
          f"`{_fs_of(a.dir or Path(tempfile.gettempdir()))}`.\n")
    print("| mode | sink | frames | wall s | MB/s (samples) | x required rate | CPU s / wall s | "
          "commits | commit p50 ms | commit max ms | disk bytes / sample byte |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sample_bytes = r["frames"] * a.channels * samples * 4
        mbps = sample_bytes / r["wall"] / 1e6
        print(f"| {r['mode']} | {r['sink']} | {r['frames']} | {r['wall']:.1f} | {mbps:.2f} | "
              f"{mbps * 1e6 / required:.2f} | {r['cpu'] / r['wall']:.3f} | {r['commits']} | "
              f"{r['commit_p50_ms']:.2f} | {r['commit_max_ms']:.2f} | {r['disk_bytes'] / sample_bytes:.3f} |")
    by = {(r["mode"], r["sink"].split()[0]): r for r in results}
    pa, pb = by[("paced", "archive")], by[("paced", "baseline")]
    fa, fb = by[("flat out", "archive")], by[("flat out", "baseline")]
    cpu_a, cpu_b = pa["cpu"] / pa["wall"], pb["cpu"] / pb["wall"]
    tput_a = fa["frames"] / fa["wall"]
    tput_b = fb["frames"] / fb["wall"]
    print()
    print(f"- paced CPU: archive {cpu_a:.3f} vs baseline {cpu_b:.3f} core (ratio {cpu_a / cpu_b:.2f}); "
          f"target < 0.25 core: {'met' if cpu_a < 0.25 else 'NOT met'}")
    print(f"- flat-out throughput: archive {tput_a * frame_s:.1f}x vs baseline {tput_b * frame_s:.1f}x the "
          f"required rate (archive/baseline = {tput_a / tput_b:.2f})")
    return 0


def _fs_of(path: Path) -> str:
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best):
                    best, fstype = mnt, f"{typ} ({dev} on {mnt})"
    except OSError:
        pass
    return fstype


if __name__ == "__main__":
    sys.exit(main())
