"""The monitor's timeline of an archived session (the read-only replay view), at any point.

(Not `audit/replay.py`, which plays an archive back onto a bus.)

`ReplayIndex` reads a session once — any iterable of decoded bus messages, in
the order they were archived — cuts its display sweeps, and notes the signal
time at which each event happened. `snapshot_at(t)` then rebuilds the page's
state as it stood at t seconds into the session, through the same
`SessionView` the live page uses, so the time slider shows exactly what the
live page showed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ...proto.messages import EmgFrame, Heartbeat, Message, SessionStart, SimTruth
from .settings import SweepSettings, ViewSettings
from .sweeps import Sweep, SweepCutter
from .view import SessionView


class ReplayError(ValueError):
    """The session cannot be shown (not archived, unreadable, empty)."""


@dataclass(frozen=True)
class _Entry:
    t_s: float
    msg: Message | None
    sweep: Sweep | None


class ReplayIndex:
    def __init__(
        self,
        messages: Iterable[Message],
        sweep_settings: SweepSettings | None = None,
        view_settings: ViewSettings | None = None,
    ) -> None:
        self.sweep_settings = sweep_settings or SweepSettings()
        self.view_settings = view_settings or ViewSettings()
        self.start: SessionStart | None = None
        self.entries: list[_Entry] = []
        self.n_messages = 0
        cutter: SweepCutter | None = None
        now = 0.0
        for msg in messages:
            self.n_messages += 1
            if isinstance(msg, SessionStart):
                if self.start is not None and msg.session_id != self.start.session_id:
                    continue  # one session per index
                self.start = msg
                cutter = SweepCutter(msg.montage, self.sweep_settings)
                self.entries.append(_Entry(now, msg, None))
                continue
            if self.start is not None and msg.session_id not in (None, self.start.session_id):
                continue
            if isinstance(msg, EmgFrame):
                now = max(now, (msg.first_sample_index + msg.n_samples) / msg.sampling_rate_hz)
                if cutter is not None:
                    self.entries.extend(_Entry(now, None, s) for s in cutter.on_frame(msg.first_sample_index,
                                                                                      msg.samples))
                continue
            if isinstance(msg, (Heartbeat, SimTruth)):
                continue  # service health and simulator truth are not part of the picture
            self.entries.append(_Entry(now, msg, None))
            if cutter is not None and msg.type == "stimulus":
                self.entries.extend(_Entry(now, None, s) for s in cutter.on_stimulus(
                    msg.stimulus_index, msg.sample_index, msg.stim_time_s, msg.direction))
        if cutter is not None:
            self.entries.extend(_Entry(now, None, s) for s in cutter.flush())
        if self.start is None:
            raise ReplayError("the archive holds no session_start: nothing to replay")
        self.duration_s = now
        self._times = [e.t_s for e in self.entries]

    @property
    def session_id(self) -> str:
        assert self.start is not None
        return self.start.session_id

    def snapshot_at(self, t_s: float) -> dict:
        """The page's snapshot as it was `t_s` seconds into the session."""
        t = min(max(0.0, float(t_s)), self.duration_s)
        view = SessionView(self.sweep_settings, self.view_settings, cut_sweeps=False)
        for e in self.entries[: bisect.bisect_right(self._times, t)]:
            if e.sweep is not None:
                view.add_sweep(e.sweep)
            else:
                view.apply(e.msg)
        view.now_s = t
        snap = view.snapshot()
        snap["replay"] = {"t_s": t, "duration_s": self.duration_s}
        return snap

    def info(self) -> dict:
        """What the slider needs: the length and the stage marks along it."""
        full = self.snapshot_at(self.duration_s)
        return {"session": full["session"], "duration_s": self.duration_s, "stages": full["stages"],
                "n_messages": self.n_messages}


# --------------------------------------------------------------------------- #
# The recorder's archive as an iterable of messages


def archived_messages(data_dir: Path, session_id: str) -> Iterator[Message]:
    """Every bus message archived for `session_id`, decoded, in the order the bus delivered them
    (archive.open_session, the reader `analyze` and `verify` use: a frame the recorder refetched goes back
    to its place). A torn tail (the session is still being written) is read up to where it is cut."""
    from amrwatch.archive.session import NoSuchSession, open_session

    try:
        session = open_session(data_dir, session_id)
    except NoSuchSession as err:
        raise ReplayError(str(err)) from None
    with session:
        stopped = session.index.stopped_at
        if stopped is not None and stopped[0] != max(p.name for p in session.dir.glob("seg-*.amrlog")):
            # Bytes that cannot be framed before the newest segment are damage, not a write in progress.
            raise ReplayError(f"the archive of {session_id} is damaged ({stopped[0]} cannot be read from byte "
                              f"{stopped[1]}); `amrwatch verify {session_id}` says more")
        # The archive keeps refused input too; the picture shows valid messages only.
        yield from session.messages("bus")


def list_archived(data_dir: Path) -> list[dict]:
    """Archived sessions, newest last, from the recorder's registry."""
    from amrwatch.registry.store import REGISTRY_FILE, Registry

    if not (Path(data_dir) / REGISTRY_FILE).exists():
        return []
    reg = Registry.in_data_dir(Path(data_dir))
    try:
        return [
            {"session_id": r.session_id, "started_at": r.started_at, "ended_at": r.ended_at, "source": r.source,
             "scenario": r.scenario, "replay_of": r.replay_of, "status": r.status}
            for r in reg.list()
        ]
    finally:
        reg.close()
