"""The compiled kernels: cached where a cache can be written, compiled in memory where none can."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

KERNEL = textwrap.dedent('''
    import numpy as np
    from amrwatch.services.analyzer.jit import compiled

    @compiled("float64(float32[:])")
    def total(x):
        s = 0.0
        for v in x:
            s += v
        return s

    print(total(np.arange(5, dtype=np.float32)))
''')


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") and k != "XDG_CACHE_HOME"}


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tmp_path / "kernel.py")], env={**_clean_env(), **env},
                          capture_output=True, text=True, timeout=120)


def test_kernels_are_cached_where_the_cache_directory_is_writable(tmp_path):
    (tmp_path / "kernel.py").write_text(KERNEL)
    cache = tmp_path / "cache"
    first = _run(tmp_path, NUMBA_CACHE_DIR=str(cache))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "10.0"
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc")), "no cache index or code written"
    again = _run(tmp_path, NUMBA_CACHE_DIR=str(cache))
    assert again.returncode == 0 and again.stdout.strip() == "10.0", again.stderr


def test_kernels_compile_in_memory_where_nothing_can_be_cached(tmp_path):
    """A read-only container without NUMBA_CACHE_DIR: numba finds no cache location (here every
    location it tries is a file, not a directory), and the kernel must still run."""
    (tmp_path / "kernel.py").write_text(KERNEL)
    (tmp_path / "probe.py").write_text("import numba\n@numba.njit(cache=True)\ndef f():\n    return 1\n")
    (tmp_path / "__pycache__").write_text("not a directory")
    (tmp_path / "xdg").write_text("not a directory")
    xdg = str(tmp_path / "xdg")
    # The situation is real: plain numba caching refuses to start in it.
    probe = subprocess.run([sys.executable, str(tmp_path / "probe.py")], env={**_clean_env(), "XDG_CACHE_HOME": xdg},
                           capture_output=True, text=True, timeout=120)
    assert "no locator available" in probe.stderr, probe.stderr
    done = _run(tmp_path, XDG_CACHE_HOME=xdg)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10.0"
