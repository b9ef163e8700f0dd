"""`make bench`: run every benchmark, print the tables, write bench/RESULTS.md.

Each module under bench/ with a `run() -> str` (markdown) is a section.
Figures are ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path

SECTIONS = ["bench.bus"]
OPTIONAL = ["bench.analyzer_speed", "bench.archive_throughput", "bench.predictor_speed", "bench.verify_speed"]
HERE = Path(__file__).resolve().parent


def machine() -> str:
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import numpy
    import zmq

    return (f"- when: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}\n"
            f"- python {platform.python_version()}, numpy {numpy.__version__}, pyzmq {zmq.__version__}, "
            f"libzmq {zmq.zmq_version()}\n"
            "- shared machine: absolute times are noisy; compare the ratios, measured in the same run\n")


def main() -> int:
    only = sys.argv[1:]
    parts = ["# amrwatch benchmark results", "", "Re-run with `make bench`.", "", machine()]
    for name in SECTIONS + OPTIONAL:
        if only and name.split(".")[-1] not in only:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name and name in OPTIONAL:
                continue
            raise
        if not hasattr(mod, "run"):
            continue
        t = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        section = mod.run()
        print(section, flush=True)
        parts.append(section)
        parts.append(f"_({name} took {time.monotonic() - t:.0f} s)_\n")
    if not only:
        (HERE / "RESULTS.md").write_text("\n".join(parts))
        print(f"wrote {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
