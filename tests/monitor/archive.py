"""Write a session into a real archive (the recorder's writer and registry),
for the replay view's tests."""

from __future__ import annotations

from pathlib import Path

from amrwatch.proto.codec import encode
from amrwatch.proto.messages import Message, SessionStart
from amrwatch.archive.writer import ArchiveWriter, session_path
from amrwatch.registry.store import Registry


def write_archive(data_dir: Path, msgs: list[Message]) -> str:
    start = next(m for m in msgs if isinstance(m, SessionStart))
    sid = start.session_id
    writer = ArchiveWriter(session_path(data_dir, sid))
    for m in msgs:
        writer.append_message(encode(m))
    writer.close()
    with Registry.in_data_dir(data_dir) as reg:
        reg.create_session(sid, actor="test", started_at=start.started_at, source=start.source,
                           scenario=start.scenario, montage=start.montage.model_dump(mode="json"))
        reg.close_session(sid, actor="test")
    return sid
