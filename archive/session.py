"""The one reader of an archived session: `open_session(...)`.

Every tool that reads a session back — `amrwatch analyze DIR`, `verify`,
`replay`, `export edf`, the monitor's replay view, the cohort table — goes
through this object, so they cannot disagree about what the session holds
or in which order it happened:

- `messages(order=...)`: the decoded bus messages, in one of three orders
  (see order.py): ``"log"`` as archived, ``"signal"`` as the acquirer
  published the session (refetched frames back in their place), ``"bus"``
  as the bus delivered them to every subscriber;
- `announced_settings(service)`: the settings a service announced for the
  session (`service_settings`), which a re-run must use;
- `index` (one pass over the log, see index.py), `lost()` (the gap records
  per stream) and `integrity()` (CRCs, hash chain, checkpoint).

Trust: the recorder archives only messages that passed the wire contract
(proto.codec.decode) when they arrived, and `integrity()` proves the bytes
unchanged since. The index still checks every emg_frame header against the
contract (a compiled checker built from the pydantic model, index.py) and
refuses the ones that fail, with the reason; every other message is decoded
through proto.codec and a refusal is kept in `refused`. Frames are then
built from the index's checked columns without validating each again,
which is what makes reading a 2-hour session take seconds.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amrwatch.archive.index import ArchiveIndex, Event, PendingIndex
from amrwatch.archive.integrity import Analysis, ArchiveError, analyse
from amrwatch.archive.order import SignalOrder, bus_order
from amrwatch.archive.seqset import SeqSet
from amrwatch.archive.writer import session_path
from amrwatch.proto.codec import DecodeError, decode
from amrwatch.proto.messages import SCHEMA_VERSION, EmgFrame, Message, Montage

ORDERS = ("log", "signal", "bus")


class NoSuchSession(ArchiveError, FileNotFoundError):
    """There is no archived session where the caller looked."""


@dataclass(frozen=True)
class AnnouncedSettings:
    """The first `service_settings` a service published for the session."""

    service: str
    settings: dict[str, Any]
    sha256: str
    record_no: int
    platform: dict[str, Any]
    #: Record number of a later announcement with other settings (the service restarted), or None.
    changed_at: int | None = None


@dataclass
class ArchivedSession:
    """An archived session opened for reading; never writes. Use as a context manager."""

    dir: Path
    _index: ArchiveIndex | None = field(default=None, repr=False)
    #: (record_no, why) of every archived message the contract refuses (skipped by `messages`).
    refused: list[tuple[int, str]] = field(default_factory=list)
    _signal: SignalOrder | None = field(default=None, repr=False)
    _u8: list[np.ndarray] | None = field(default=None, repr=False)
    _cols: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: Processes the index may be built with (ArchiveIndex.build): more than one only for a caller that owns
    #: no sockets or threads a fork could break — the offline commands, not a service.
    index_workers: int = 1
    _pending: PendingIndex | None = field(default=None, repr=False)

    @property
    def session_id(self) -> str:
        return self.dir.name

    @property
    def index(self) -> ArchiveIndex:
        """One pass over the log, built on first use (a torn tail is tolerated: it stops there)."""
        if self._index is None:
            pending, self._pending = self._pending, None
            if pending is None:
                pending = ArchiveIndex.start(self.dir, workers=self.index_workers)
            self._index = pending.finish()
            self.refused.extend(self._index.refused)
        return self._index

    def start_index(self) -> None:
        """Begin the index now (its workers, with `index_workers` > 1) so that it is built while the caller
        does other work, e.g. importing the analyzer (ArchiveIndex.start: the workers take segments from
        the back, this process from the front once it asks for `index`). Nothing to begin with one worker:
        `index` builds it on first use as before."""
        if self._index is None and self._pending is None and self.index_workers > 1:
            self._pending = ArchiveIndex.start(self.dir, workers=self.index_workers)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        self._u8 = None
        self._cols = None
        if self._index is not None:
            self._index.close_maps()

    def __enter__(self) -> ArchivedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ what it says

    def start(self) -> Event | None:
        return self.index.session_start()

    def end(self) -> Event | None:
        return self.index.session_end()

    def montage(self) -> Montage | None:
        start = self.start()
        return None if start is None else Montage.model_validate(start.header["montage"])

    def signal(self) -> SignalOrder:
        """The acquirer's frames and events of this session, in signal order (built once)."""
        if self._signal is None:
            self._signal = SignalOrder(self.index)
        return self._signal

    def signal_seconds(self) -> float:
        """Seconds of signal from sample 0 to the last archived sample."""
        start = self.start()
        sig = self.signal()
        if start is None or not sig.hi.size:
            return 0.0
        return float(sig.hi[-1]) / float(start.header["montage"]["sampling_rate_hz"])

    def lost(self) -> dict[tuple[str, str, str], SeqSet]:
        """Seqs the gap records say were lost, per (publisher, instance, type) stream."""
        out: dict[tuple[str, str, str], SeqSet] = {}
        for _no, g in self.index.gaps:
            if g.type is not None:
                out.setdefault((g.publisher, g.instance, g.type), SeqSet()).add_range(g.from_seq, g.to_seq)
        return out

    def announced_settings(self, service: str) -> AnnouncedSettings | None:
        """What `service` announced (`service_settings`) for this session, or None if it never did.

        A re-run must use these: an analyzer started with `--set` measures
        differently from the defaults. If the service restarted with other
        settings, `changed_at` names the record where they changed."""
        announced = [e for e in self.index.events_of("service_settings")
                     if e.session_id == self.session_id and e.publisher == service]
        if not announced:
            return None
        first = announced[0].body
        changed = [e.record_no for e in announced[1:] if e.body["settings_sha256"] != first["settings_sha256"]]
        return AnnouncedSettings(service, first["settings"], first["settings_sha256"], announced[0].record_no,
                                 first.get("platform", {}), changed[0] if changed else None)

    def integrity(self, hmac_key: bytes | None = None) -> Analysis:
        """Every record's CRCs, the SHA-256 chain, the structure and checkpoint.json (integrity.analyse)."""
        return analyse(self.dir, hmac_key)

    # ---------------------------------------------------------------- messages

    def messages(self, order: str = "signal", *, block_s: float | None = None,
                 types: Collection[str] | None = None) -> Iterator[Message]:
        """The session's bus messages, decoded, in `order`.

        - ``"log"``: every message in the order the recorder archived it;
        - ``"signal"``: the session's `session_start`, the acquirer's stage
          markers, factors, frames, stimuli and ground truth in the order it
          published them, then its `session_end` — what the analyzer re-runs;
        - ``"bus"``: every message in the order the bus delivered it (a
          refetched message goes back in front of the next one of its stream).

        `block_s` (signal order only): consecutive frames with nothing between
        them are handed over as one frame of up to that many seconds, never
        across a stimulus, a stage marker or a hole, and never past the frame
        holding the `end` stage marker: the analyzer's results do not depend on
        how the signal is split, and it is many times faster.

        `types`: only messages of these types (the others are not decoded).
        """
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
        if block_s is not None and order != "signal":
            raise ValueError(f"block_s applies to the signal order only; got order={order!r}")
        if order == "signal":
            out = self._signal_messages(block_s)
            return out if types is None else (m for m in out if m.type in types)
        return self._all_messages(order, types)

    def _event(self, e: Event) -> Message | None:
        """A non-frame message through the wire contract (proto.codec); a refusal is noted and skipped."""
        try:
            return decode([e.type.encode("ascii", "replace"), json.dumps(e.header).encode(), b""])
        except DecodeError as err:
            self.refused.append((e.record_no, str(err)))
            return None

    def _frame(self, row: int, samples: np.ndarray | None = None) -> EmgFrame:
        """Frame `row` from the index's checked columns (with `samples`: merged with the rows that follow)."""
        fr = self.index.frames
        pub, inst, sid, fs = fr.streams[fr.stream[row]]
        x = self.index.samples(row) if samples is None else samples
        ts = dt.datetime.fromtimestamp(fr.ts[row], dt.UTC)
        msg = EmgFrame.model_construct(
            type="emg_frame", schema_version=SCHEMA_VERSION, session_id=sid, seq=fr.seq[row], publisher=pub,
            instance=inst, ts_utc=ts, first_sample_index=fr.first_sample[row], n_channels=x.shape[0],
            n_samples=x.shape[1], sampling_rate_hz=fs, dtype="<f4", layout="channel_major",
            first_sample_device_s=fr.first_sample[row] / fs, first_sample_utc=ts)
        msg._samples = x
        return msg

    def _own(self, e: Event | None) -> Iterator[Message]:
        if e is not None:
            m = self._event(e)
            if m is not None:
                yield m

    def _signal_messages(self, block_s: float | None) -> Iterator[Message]:
        start = self.start()
        if start is None:
            return
        yield from self._own(start)
        sig = self.signal()
        rows = sig.rows.tolist()
        fs = float(start.header["montage"]["sampling_rate_hz"])
        block = max(1, int(block_s * fs)) if block_s is not None else 1
        ends = [e.header["sample_index"] for e in sig.events if e.type == "stage" and e.header["stage"] == "end"
                and e.header.get("sample_index") is not None]
        end_sample = min(ends) if ends else None
        from amrwatch.archive import kernels

        lo_all, hi_all = np.ascontiguousarray(sig.lo), np.ascontiguousarray(sig.hi)
        for kind, item in sig.runs():
            if kind != "frames":
                yield from self._own(item)
                continue
            a, b = item
            if block_s is None:
                for i in range(a, b):
                    yield self._frame(rows[i])
                continue
            # Blocks: contiguous frames, at most `block` samples, none past the frame holding the `end` marker
            # (split by a compiled loop: a Python step per 5 ms frame cost more than gathering the samples).
            first = a
            for end in kernels.block_ends(lo_all[a:b], hi_all[a:b], block,
                                          -1 if end_sample is None else end_sample).tolist():
                yield self._block(sig.rows[first:a + end])
                first = a + end
        yield from self._own(self.end())

    def _block(self, rows: np.ndarray) -> EmgFrame:
        """Consecutive frames as one: their samples copied channel-major straight from the segment's
        bytes in one compiled loop (kernels.channel_major); a view per frame would cost more than the copy."""
        if len(rows) == 1:
            return self._frame(int(rows[0]))
        idx = self.index
        fr = idx.frames
        cols = self._columns()
        r0 = int(rows[0])
        nc, ns = fr.n_channels[r0], fr.n_samples[r0]
        seg = cols["segment"][rows]
        if (cols["n_channels"][rows] == nc).all() and (cols["n_samples"][rows] == ns).all() and (seg == seg[0]).all():
            from amrwatch.archive import kernels

            if self._u8 is None:
                self._u8 = [np.frombuffer(m, dtype=np.uint8) for m in idx._maps]
            x = kernels.channel_major(self._u8[int(seg[0])], cols["payload_offset"][rows], nc, ns).view("<f4")
        else:
            x = np.concatenate([idx.samples(int(r)) for r in rows], axis=1)
        return self._frame(r0, samples=x)

    def _columns(self) -> dict[str, np.ndarray]:
        """The frame table's columns as numpy arrays (views, made once)."""
        if self._cols is None:
            fr = self.index.frames
            self._cols = {name: np.frombuffer(getattr(fr, name), dtype=np.int64) if len(fr)
                          else np.zeros(0, dtype=np.int64)
                          for name in ("segment", "payload_offset", "n_channels", "n_samples")}
        return self._cols

    def _all_messages(self, order: str, types: Collection[str] | None) -> Iterator[Message]:
        idx = self.index
        fr = idx.frames
        with_frames = types is None or "emg_frame" in types
        frames = ((fr.record_no[i], i) for i in range(len(fr) if with_frames else 0))
        events = ((e.record_no, e) for e in idx.events if types is None or e.type in types)
        merged = heapq.merge(frames, events, key=lambda t: t[0])
        if order == "bus":
            items = []
            for no, item in merged:
                if isinstance(item, int):
                    pub, inst, _sid, _fs = fr.streams[fr.stream[item]]
                    items.append((no, (pub, inst, "emg_frame"), fr.seq[item], item))
                else:
                    items.append((no, item.stream, item.seq, item))
            ordered: Any = bus_order(items)
        else:
            ordered = (item for _no, item in merged)
        for item in ordered:
            if isinstance(item, int):
                yield self._frame(item)
            else:
                yield from self._own(item)


def open_session(where: Path | str, session_id: str | None = None, *, index_workers: int = 1) -> ArchivedSession:
    """The session `session_id` of data directory `where`, or the session directory `where` itself.

    The id is checked so it cannot walk out of the data directory; NoSuchSession
    (an ArchiveError) says where it looked. `index_workers`: see ArchivedSession.index_workers."""
    where = Path(where)
    if session_id is None:
        d = where
        if not (d.is_dir() and any(d.glob("seg-*.amrlog"))):
            raise NoSuchSession(f"no archived session at {str(d)!r} (a session directory is DATA/sessions/ID and "
                                "holds seg-NNNNNN.amrlog files)")
        return ArchivedSession(d, index_workers=index_workers)
    try:
        d = session_path(where, session_id)
    except ValueError as err:
        raise NoSuchSession(str(err)) from None
    if not d.is_dir():
        raise NoSuchSession(f"no archived session {session_id!r} in {where} (`amrwatch sessions` lists them)")
    return ArchivedSession(d, index_workers=index_workers)
