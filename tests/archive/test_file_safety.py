"""Files that say who was operated on are owner-only; the data directory cannot be used to write
elsewhere through a planted symlink."""

from __future__ import annotations

import stat
from pathlib import Path

from amrwatch.deadletter import DeadLetter
from amrwatch.archive.writer import ArchiveWriter
from amrwatch.archive.checkpoint import CHECKPOINT_FILE
from amrwatch.registry.pseudonyms import PseudonymMap
from amrwatch.registry.store import Registry

from .sessions import emg_frames


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_registry_pseudonym_map_and_deadletter_are_owner_only(tmp_path: Path):
    data = tmp_path / "new" / "data"
    with Registry.in_data_dir(data) as reg:
        reg.create_session("0123456789abcdef", actor="test", started_at="2026-11-24T08:00:00Z", source="sim")
        for f in ("registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm"):
            assert mode(data / f) == 0o600, (f, oct(mode(data / f)))
    assert mode(data) == 0o700 and mode(data.parent) == 0o700

    ids = tmp_path / "identities" / "map.sqlite"
    with PseudonymMap(ids, data_dir=data) as pm:
        pm.token_for("H1234", actor="test")
    assert mode(ids) == 0o600 and mode(ids.parent) == 0o700

    dl = DeadLetter(tmp_path / "dl" / "deadletter" / "monitor.jsonl")
    dl.write("bad", "refused", [b"x"])
    assert dl.written == 1
    assert mode(dl.path) == 0o600 and mode(dl.path.parent) == 0o700


def test_an_existing_world_readable_registry_is_narrowed(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.sqlite").touch(mode=0o644)
    (data / "registry.sqlite").chmod(0o644)
    Registry.in_data_dir(data).close()
    assert mode(data / "registry.sqlite") == 0o600


def test_a_symlink_planted_as_the_checkpoint_tmp_file_is_not_written_through(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    d = tmp_path / "data" / "sessions" / "0123456789abcdef"
    w = ArchiveWriter(d, meta={"test": "symlink"})
    w.append_message(emg_frames(0))
    w.commit()
    (d / (CHECKPOINT_FILE + ".tmp")).symlink_to(victim)
    w.append_message(emg_frames(1))
    w.close()
    assert victim.read_text() == "precious\n"
    assert not (d / CHECKPOINT_FILE).is_symlink() and b"record_count" in (d / CHECKPOINT_FILE).read_bytes()
