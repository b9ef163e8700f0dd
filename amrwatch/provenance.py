"""What a result was computed on: library versions and the CPU.

Archived with each session's `service_settings`. Float arithmetic is exact
only on the same platform: BLAS and FFT kernels are chosen by CPU and library
version, so a re-run elsewhere can differ in the last published digit. The
verify report names both platforms when they differ, so that such a
difference is read for what it is (the integrity check, not the re-run, is
what proves an archive unaltered).
"""

from __future__ import annotations

import functools
import platform as _platform
from importlib import metadata

#: Libraries whose kernels produce the published numbers.
LIBRARIES = ("numpy", "scipy", "numba", "onnxruntime")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    return (_platform.processor() or _platform.machine() or "unknown")[:200]


@functools.cache
def platform() -> dict[str, str]:
    """Versions and CPU, as short strings (fits a ScalarMap)."""
    out = {"python": _platform.python_version(), "machine": _platform.machine(), "cpu": _cpu()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def differences(archived: dict[str, object], here: dict[str, str] | None = None) -> list[str]:
    """'numpy 2.4.6 → 2.5.0'-style lines for what differs between an archived platform and this one."""
    here = here if here is not None else platform()
    return [f"{k} {archived.get(k, '?')} → {here.get(k, '?')}" for k in sorted(set(archived) | set(here))
            if archived.get(k) != here.get(k)]
