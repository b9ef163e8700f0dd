"""Summaries of py-spy `record --format raw` output (collapsed stacks: `f1;f2;f3 COUNT`).

Only samples where a thread was running are recorded (py-spy's default
without --idle), so shares are of the process's busy time.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
#: Leaf frames that are waiting, not working (py-spy counts a thread blocked in poll(), select() or a C-level
#: sleep as active): poll/select/wait/sleep functions, and the services' watchdog thread, which sleeps.
_WAITING = re.compile(r"^(?:[\w.<>]*\.)?(?:poll|select|wait|sleep|_watchdog) \(")


def _stacks(path: Path):
    """(frames, count) per busy stack: thread/process pseudo-frames and waiting leaves dropped."""
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames and not _WAITING.match(frames[-1]):
            yield frames, int(count)


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(path: Path, top: int = 8) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, inclusive share, self share)]) by inclusive share, thread frames skipped."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(path):
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    boring = ("<module>", "main (", "run (amrwatch/service.py)", "_run_module_as_main", "_run_code", "cmd_")
    rows = [(f, c / total, own[f] / total) for f, c in inclusive.most_common()
            if not f.startswith(boring) and c / total < 0.999]
    return total, rows[:top]


def hottest_self(path: Path, top: int = 6) -> list[tuple[str, float]]:
    """Functions where the busy time is spent themselves (leaf frames)."""
    own: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(path):
        own[frames[-1]] += n
        total += n
    return [(f, c / total) for f, c in own.most_common(top)] if total else []


def share(path: Path, *prefixes: str) -> float:
    """Share of busy samples whose stack passes through a function starting with any of `prefixes`."""
    if not path.exists():
        return float("nan")
    hit = total = 0
    for frames, n in _stacks(path):
        total += n
        if any(f.startswith(prefixes) for f in frames):
            hit += n
    return hit / total if total else float("nan")


def markdown(outdir: Path, services: list[str], top: int = 6) -> str:
    if (outdir / "MISSING").exists():
        return f"No profile: {(outdir / 'MISSING').read_text()}.\n"
    lines = []
    for svc in services:
        p = outdir / f"{svc}.txt"
        if not p.exists() or not p.stat().st_size:
            continue
        total, rows = summarize(p, top)
        lines.append(f"**{svc}** ({total} busy samples at 200 Hz) — inclusive: "
                     + "; ".join(f"`{f}` {inc:.0%}" for f, inc, _ in rows)
                     + ". Self: " + "; ".join(f"`{f}` {s:.0%}" for f, s in hottest_self(p, top)) + ".")
        lines.append("")
    return "\n".join(lines)
