"""Carts for sync tests: data directories with closed sessions, real archives, outcomes and summaries."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from amrwatch.archive.settings import ArchiveSettings
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.registry.store import Registry, new_patient_token

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cart:
    name: str
    site: str
    data: Path
    sessions: list[str] = field(default_factory=list)
    recording: list[str] = field(default_factory=list)


def make_cart(tmp: Path, name: str, site: str, n: int, *, kib: int = 256, day: int = 2, open_sessions: int = 0,
              seed_ids: list[str] | None = None) -> Cart:
    """`n` closed sessions (archives of about `kib` KiB), each with a 1w outcome and a summary; plus
    `open_sessions` still recording (never pushed)."""
    cart = Cart(name, site, tmp / name)
    ids = list(seed_ids or []) + [secrets.token_hex(8) for _ in range(n + open_sessions - len(seed_ids or []))]
    with Registry.in_data_dir(cart.data) as reg:
        for i, sid in enumerate(ids):
            started = f"2026-03-{day:02d}T{8 + i % 10:02d}:{i % 60:02d}:00Z"
            reg.create_session(sid, actor="recorder", started_at=started, source="sim",
                               patient_token=new_patient_token(), settings={"cart": name})
            w = ArchiveWriter(session_path(cart.data, sid), ArchiveSettings(), meta={"session_id": sid})
            for _ in range(max(1, kib // 4)):
                w.append_message([b"emg_frame", os.urandom(4096)])
            if i >= n:
                w.commit()
                w.release()
                cart.recording.append(sid)
                continue
            w.close()
            reg.close_session(sid, actor="recorder")
            reg.set_summary(sid, {"course": "persisted" if i % 3 == 0 else "disappeared_after_decompression"},
                            actor="recorder")
            reg.add_outcome(sid, actor="dr_cart", timepoint="1w", cohen_grade=i % 3,
                            outcome_class=["cured", "improved", "improved"][i % 3])
            cart.sessions.append(sid)
    return cart


def sync_cmd(cart: Cart, registry: str, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "amrwatch", "sync", "--data", str(cart.data), "--to-registry", registry,
            "--to-archive", str(root), "--cart", cart.name, "--site", cart.site, *extra]


def sync(cart: Cart, registry: str, root: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(sync_cmd(cart, registry, root, *extra), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
