"""One cheap pass over a session's log: where every archived message is, and what it says.

Replay, verify, export and the recorder's own resume all need the same
thing — the session's messages sorted out by type, stream and sample index —
and none of them should pay for the CRCs and the hash chain twice (verify
checks those separately, recovery already did). So this walk trusts the
record framing, stops at the first record it cannot frame, and keeps:

- every `emg_frame` as a row of numbers (where its samples are, which samples
  they are): a two-hour session is 1.4 million frames, too many for objects;
- every other message as an `Event` with its decoded JSON header;
- the `open`, `gap`, `resume` and `close` records.

Samples are read back on demand through a memory map of the segment files.
"""

from __future__ import annotations

import datetime as dt
import json
import mmap
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import msgspec

from amrwatch.archive.bodies import BodyError, Gap, decode_json
from amrwatch.archive.integrity import list_segments
from amrwatch.archive.segment import RECORD_HEAD, RECORD_HEADER_SIZE, RECORD_MAGIC, RECORD_OVERHEAD, SEGMENT_HEADER_SIZE, Kind
from amrwatch.archive.seqset import SeqSet

_LEN = struct.Struct("<I")


def _frame_header_decoder() -> msgspec.json.Decoder:
    """A compiled checker of an emg_frame header, built from `EmgFrame`'s own pydantic fields.

    Every field keeps its type, range, pattern or literal value from proto/, so
    nothing is re-spelled here; it runs in C at a microsecond a header, where
    `model_validate_json` takes tens. The index needs it because a 2-hour
    session is 1.4 million frames: their headers are checked once here and the
    readers build frames from the checked columns without validating again.
    """
    import annotated_types as at
    import datetime as _dt
    from typing import Annotated, Literal, get_origin

    from amrwatch.proto.messages import EmgFrame

    fields = []
    for name, f in EmgFrame.model_fields.items():
        tp: Any = f.annotation
        kw: dict[str, Any] = {}
        for m in f.metadata:
            if isinstance(m, at.Ge):
                kw["ge"] = m.ge
            elif isinstance(m, at.Le):
                kw["le"] = m.le
            elif getattr(m, "pattern", None):
                kw["pattern"] = m.pattern
        if tp is not None and "AwareDatetime" in getattr(tp, "__name__", ""):
            tp = Annotated[_dt.datetime, msgspec.Meta(tz=True)]
        elif kw and get_origin(tp) is not Literal:
            tp = Annotated[tp, msgspec.Meta(**kw)]
        fields.append((name, tp))
    struct = msgspec.defstruct("EmgFrameHeader", fields, forbid_unknown_fields=True)
    return msgspec.json.Decoder(struct)


_FRAME_HEADER = _frame_header_decoder()
_UTC = dt.timedelta(0)

#: Fields every bus message carries; everything else is the message's body.
ENVELOPE = ("type", "schema_version", "session_id", "seq", "publisher", "instance", "ts_utc")


def parse_utc(text: str) -> float:
    """RFC 3339 UTC time → POSIX seconds."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Event(NamedTuple):
    """A non-signal message as archived."""

    record_no: int
    type: str
    publisher: str
    instance: str
    seq: int
    session_id: str | None
    header: dict[str, Any]

    @property
    def body(self) -> dict[str, Any]:
        return {k: v for k, v in self.header.items() if k not in ENVELOPE}

    @property
    def stream(self) -> tuple[str, str, str]:
        return self.publisher, self.instance, self.type


@dataclass
class FrameTable:
    """Every archived emg_frame as columns (row i = the i-th frame in archive order)."""

    record_no: array = field(default_factory=lambda: array("q"))
    segment: array = field(default_factory=lambda: array("q"))
    payload_offset: array = field(default_factory=lambda: array("q"))
    seq: array = field(default_factory=lambda: array("q"))
    first_sample: array = field(default_factory=lambda: array("q"))
    n_samples: array = field(default_factory=lambda: array("q"))
    n_channels: array = field(default_factory=lambda: array("q"))
    stream: array = field(default_factory=lambda: array("q"))
    ts: array = field(default_factory=lambda: array("d"))
    #: (publisher, instance, session_id, sampling_rate_hz) of each stream number.
    streams: list[tuple[str, str, str | None, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_no)

    def stream_of(self, i: int) -> tuple[str, str, str | None, float]:
        return self.streams[self.stream[i]]


@dataclass
class ArchiveIndex:
    session_dir: Path
    open_meta: dict[str, Any] | None = None
    frames: FrameTable = field(default_factory=FrameTable)
    events: list[Event] = field(default_factory=list)
    gaps: list[tuple[int, Gap]] = field(default_factory=list)
    resumes: list[tuple[int, dict]] = field(default_factory=list)
    close: tuple[int, dict] | None = None
    record_count: int = 0
    #: The walk met bytes it could not frame (a torn tail, or damage `verify` will name).
    stopped_at: tuple[str, int] | None = None
    #: Records whose body could not be read (damaged content; the integrity check names them).
    unreadable: list[int] = field(default_factory=list)
    #: emg_frame records whose header or payload the frame contract refuses: (record_no, why).
    refused: list[tuple[int, str]] = field(default_factory=list)
    _maps: list[mmap.mmap | bytes] = field(default_factory=list, repr=False)

    @property
    def session_id(self) -> str:
        return self.session_dir.name

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, session_dir: Path) -> ArchiveIndex:
        idx = cls(Path(session_dir))
        if not idx.session_dir.is_dir():
            raise FileNotFoundError(f"no archived session at {idx.session_dir}")
        stream_no: dict[tuple[str, str, str | None, float], int] = {}
        fr = idx.frames
        for _seg, path in list_segments(idx.session_dir):
            data = _map(path)
            idx._maps.append(data)
            pos, total = SEGMENT_HEADER_SIZE, len(data)
            while pos < total:
                if total - pos < RECORD_HEADER_SIZE:
                    idx.stopped_at = (path.name, pos)
                    break
                magic, n, kind, _flags, _res, record_no = RECORD_HEAD.unpack_from(data, pos)
                end = pos + RECORD_OVERHEAD + n
                if magic != RECORD_MAGIC or end > total:
                    idx.stopped_at = (path.name, pos)
                    break
                body = pos + RECORD_HEADER_SIZE
                idx.record_count = record_no + 1
                try:
                    idx._record(data, kind, record_no, body, n, stream_no)
                except (BodyError, ValueError, KeyError, TypeError, struct.error):
                    idx.unreadable.append(record_no)  # damaged content: the integrity check names it
                pos = end
            if idx.stopped_at is not None:
                break
        fr.streams = [k for k, _ in sorted(stream_no.items(), key=lambda kv: kv[1])]
        return idx

    def _record(self, data, kind: int, record_no: int, body: int, n: int, stream_no: dict) -> None:
        if kind == Kind.MESSAGE:
            self._message(data, record_no, body, n, stream_no)
        elif kind == Kind.GAP:
            self.gaps.append((record_no, Gap.decode(data[body:body + n])))
        elif kind == Kind.OPEN:
            self.open_meta = decode_json(data[body:body + n], "open")
        elif kind == Kind.RESUME:
            self.resumes.append((record_no, decode_json(data[body:body + n], "resume")))
        elif kind == Kind.CLOSE:
            self.close = (record_no, decode_json(data[body:body + n], "close"))

    def _message(self, data, record_no: int, pos: int, n: int, stream_no: dict) -> None:
        end = pos + n
        parts: list[tuple[int, int]] = []
        while pos < end:
            (ln,) = _LEN.unpack_from(data, pos)
            parts.append((pos + 4, ln))
            pos += 4 + ln
        if len(parts) != 3 or pos != end:
            raise ValueError("not a bus message of three frames")
        (t0, tl), (h0, hl), (p0, _pl) = parts
        topic = bytes(data[t0:t0 + tl]).decode("ascii", "replace")
        if topic == "emg_frame":
            try:
                h = _FRAME_HEADER.decode(data[h0:h0 + hl])
            except msgspec.ValidationError as err:
                self.refused.append((record_no, f"emg_frame header: {err}"))
                return
            except msgspec.DecodeError as err:
                self.refused.append((record_no, f"emg_frame header is not JSON: {err}"))
                return
            if h.ts_utc.utcoffset() != _UTC or h.first_sample_utc.utcoffset() != _UTC:
                self.refused.append((record_no, "emg_frame ts_utc / first_sample_utc must be in UTC (offset "
                                                f"+00:00 or 'Z'); got {h.ts_utc} / {h.first_sample_utc}"))
                return
            if _pl != 4 * h.n_channels * h.n_samples:
                self.refused.append((record_no, f"emg_frame payload is {_pl} bytes; n_channels={h.n_channels} x "
                                                f"n_samples={h.n_samples} x 4 = {4 * h.n_channels * h.n_samples} "
                                                "expected"))
                return
            fr = self.frames
            key = (h.publisher, h.instance, h.session_id, float(h.sampling_rate_hz))
            s = stream_no.setdefault(key, len(stream_no))
            fr.record_no.append(record_no)
            fr.segment.append(len(self._maps) - 1)
            fr.payload_offset.append(p0)
            fr.seq.append(h.seq)
            fr.first_sample.append(h.first_sample_index)
            fr.n_samples.append(h.n_samples)
            fr.n_channels.append(h.n_channels)
            fr.stream.append(s)
            fr.ts.append(h.ts_utc.timestamp())
            return
        header = json.loads(data[h0:h0 + hl])
        self.events.append(Event(record_no, topic, header.get("publisher", ""), header.get("instance", ""),
                                 header.get("seq", -1), header.get("session_id"), header))

    # ------------------------------------------------------------------ reads

    def samples(self, i: int) -> np.ndarray:
        """Frame i's samples, (n_channels, n_samples) float32 µV, read-only."""
        fr = self.frames
        nc, ns = fr.n_channels[i], fr.n_samples[i]
        off = fr.payload_offset[i]
        return np.frombuffer(self._maps[fr.segment[i]], dtype="<f4", count=nc * ns, offset=off).reshape(nc, ns)

    def payload_bytes(self, i: int) -> bytes:
        fr = self.frames
        off = fr.payload_offset[i]
        return bytes(self._maps[fr.segment[i]][off:off + 4 * fr.n_channels[i] * fr.n_samples[i]])

    def events_of(self, *types: str) -> list[Event]:
        return [e for e in self.events if e.type in types]

    def session_start(self) -> Event | None:
        """The session's own `session_start` (from the acquirer or a replay)."""
        return next((e for e in self.events if e.type == "session_start" and e.session_id == self.session_id), None)

    def session_end(self) -> Event | None:
        return next((e for e in self.events if e.type == "session_end" and e.session_id == self.session_id), None)

    def seqs(self) -> dict[tuple[str, str, str], SeqSet]:
        """Archived seqs per (publisher, instance, type) stream."""
        out: dict[tuple[str, str, str], SeqSet] = {}
        for e in self.events:
            out.setdefault(e.stream, SeqSet()).add(e.seq)
        fr = self.frames
        for i in range(len(fr)):
            pub, inst, _sid, _fs = fr.streams[fr.stream[i]]
            out.setdefault((pub, inst, "emg_frame"), SeqSet()).add(fr.seq[i])
        return out

    def close_maps(self) -> None:
        for m in self._maps:
            if isinstance(m, mmap.mmap):
                try:
                    m.close()
                except BufferError:  # a caller still holds a view; the map goes with it
                    pass
        self._maps = []

    def __enter__(self) -> ArchiveIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close_maps()


def _map(path: Path):
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

