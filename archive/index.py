"""One cheap pass over a session's log: where every archived message is, and what it says.

Replay, verify, export and the recorder's own resume all need the same
thing — the session's messages sorted out by type, stream and sample index —
and none of them should pay for the CRCs and the hash chain twice (verify
checks those separately, recovery already did). So this walk trusts the
record framing, stops at the first record it cannot frame, and keeps:

- every `emg_frame` as a row of numbers (where its samples are, which samples
  they are): a two-hour session is 1.4 million frames, too many for objects.
  Their headers are checked against the frame contract in one batch per
  segment (a compiled checker built from EmgFrame's fields); a frame it
  refuses is left out and listed in `refused` with the reason;
- every other message as an `Event` with its decoded JSON header;
- the `open`, `gap`, `resume` and `close` records.

Samples are read back on demand through a memory map of the segment files.
"""

from __future__ import annotations

import datetime as dt
import json
import mmap
import math
import operator
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
from amrwatch.proto.hotpath import FastType

_LEN = struct.Struct("<I")


def _frame_header_check() -> FastType:
    """The compiled check of an emg_frame header: proto/hotpath.py's, derived from `EmgFrame`'s own
    pydantic fields (types, ranges, literals, patterns, finiteness), the same one every live subscriber
    uses — one translation of the contract, not two. It runs in C at a microsecond a header, where
    `model_validate_json` takes tens; the index needs it because a 2-hour session is 1.4 million frames:
    their headers are checked once here and the readers build frames from the checked columns without
    validating again."""
    from amrwatch.proto.messages import EmgFrame

    return FastType(EmgFrame)


_FRAME = _frame_header_check()
#: Headers decoded to objects (timestamps as aware datetimes); patterns and finiteness are checked once
#: per distinct value after decoding (_check_patterns): session, publisher and instance are the same for
#: every frame of a stream.
_FRAME_HEADER = msgspec.json.Decoder(_FRAME.objects)
_PATTERN_TEXT = {f.name: f.pattern for f in _FRAME.fields if f.pattern}
_FRAME_HEADERS = msgspec.json.Decoder(list[_FRAME.objects])  # type: ignore[valid-type]
#: A message body that starts with a 9-byte topic frame "emg_frame".
_FRAME_TOPIC = _LEN.pack(9) + b"emg_frame"
_get_nch = operator.attrgetter("n_channels")
_get_nsm = operator.attrgetter("n_samples")
_get_seq = operator.attrgetter("seq")
_get_first = operator.attrgetter("first_sample_index")
_get_ts = operator.attrgetter("ts_utc")
_get_fsu = operator.attrgetter("first_sample_utc")
_get_stream = operator.attrgetter("publisher", "instance", "session_id", "sampling_rate_hz")
_utcoffset = operator.methodcaller("utcoffset")
_timestamp = operator.methodcaller("timestamp")


def _check_patterns(heads: list) -> list[tuple[str, object, str]]:
    """(field, value, rule) of every distinct value that breaks its field's pattern or finiteness."""
    bad: list[tuple[str, object, str]] = []
    for name, memo in _FRAME.patterns:
        for v in set(map(operator.attrgetter(name), heads)):
            if v is not None and not memo.ok(v):
                bad.append((name, v, f"must match {_PATTERN_TEXT[name]}"))
    for name in _FRAME.finite:
        for v in set(map(operator.attrgetter(name), heads)):
            if v is not None and not math.isfinite(v):
                bad.append((name, v, "must be a finite number"))
    return bad


def _u32(u8: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint32 at each byte offset `at` of `u8`, as int64."""
    return np.ascontiguousarray(u8[at[:, None] + np.arange(4)]).view("<u4")[:, 0].astype(np.int64)
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
    #: record_no → (segment map, body offset, body length) of every non-frame message: its wire frames can be
    #: handed back exactly as archived (`message_frames`), for the archive read-out.
    _at: dict[int, tuple[int, int, int]] = field(default_factory=dict, repr=False)

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
        unpack = RECORD_HEAD.unpack_from
        count = 0
        for _seg, path in list_segments(idx.session_dir):
            data = _map(path)
            idx._maps.append(data)
            pos, total = SEGMENT_HEADER_SIZE, len(data)
            # emg_frames are set aside and indexed in one batch per segment (_frames): a Python step per
            # frame is what a 2-hour session's 1.4 million frames cannot afford.
            frame_nos: list[int] = []
            frame_pos: list[int] = []
            while pos < total:
                if total - pos < RECORD_HEADER_SIZE:
                    idx.stopped_at = (path.name, pos)
                    break
                magic, n, kind, _flags, _res, record_no = unpack(data, pos)
                end = pos + RECORD_OVERHEAD + n
                if magic != RECORD_MAGIC or end > total:
                    idx.stopped_at = (path.name, pos)
                    break
                body = pos + RECORD_HEADER_SIZE
                count = record_no + 1
                if kind == Kind.MESSAGE and data[body:body + 13] == _FRAME_TOPIC:
                    frame_nos.append(record_no)
                    frame_pos.append(body)
                else:
                    try:
                        idx._record(data, kind, record_no, body, n, stream_no)
                    except (BodyError, ValueError, KeyError, TypeError, struct.error):
                        idx.unreadable.append(record_no)  # damaged content: the integrity check names it
                pos = end
            idx.record_count = count
            if frame_nos:
                idx._frames(data, frame_nos, frame_pos, stream_no)
            if idx.stopped_at is not None:
                break
        fr.streams = [k for k, _ in sorted(stream_no.items(), key=lambda kv: kv[1])]
        return idx

    def _frames(self, data, nos: list[int], bodies: list[int], stream_no: dict) -> None:
        """The emg_frame records of one segment (whose body starts with the topic frame), as columns.

        Frame lengths are read with numpy, the headers are decoded in one call
        of the compiled checker (a JSON array of all of them); if any is
        refused, the batch is decoded one by one so each refusal names its record.
        """
        u8 = np.frombuffer(data, dtype=np.uint8)
        no = np.asarray(nos, dtype=np.int64)
        body = np.asarray(bodies, dtype=np.int64)
        h_len_at = body + 4 + 9
        hl = _u32(u8, h_len_at)
        h0 = h_len_at + 4
        p_len_at = h0 + hl
        inside = p_len_at + 4 <= len(u8)
        pl = np.zeros_like(hl)
        pl[inside] = _u32(u8, p_len_at[inside])
        p0 = p_len_at + 4
        rec_end = body + _u32(u8, body - RECORD_HEADER_SIZE + 4)  # the body length RECORD_HEAD states
        framed = inside & (p0 + pl == rec_end)
        for r in no[~framed]:
            self.unreadable.append(int(r))  # not three frames: damaged content, the integrity check names it
        no, h0, hl, p0, pl = no[framed], h0[framed], hl[framed], p0[framed], pl[framed]
        if not no.size:
            return
        spans = list(zip(h0.tolist(), (h0 + hl).tolist()))
        try:
            heads = _FRAME_HEADERS.decode(b"[" + b",".join([data[a:b] for a, b in spans]) + b"]")
            ok = np.ones(no.size, dtype=bool)
        except (msgspec.ValidationError, msgspec.DecodeError):
            heads, ok = [], np.zeros(no.size, dtype=bool)
            for i, (a, b) in enumerate(spans):
                try:
                    heads.append(_FRAME_HEADER.decode(data[a:b]))
                    ok[i] = True
                except msgspec.ValidationError as err:
                    self.refused.append((int(no[i]), f"emg_frame header: {err}"))
                except msgspec.DecodeError as err:
                    self.refused.append((int(no[i]), f"emg_frame header is not JSON: {err}"))
            no, p0, pl = no[ok], p0[ok], pl[ok]
        if not heads:
            return
        bad_value = _check_patterns(heads)
        if bad_value:
            keep = [i for i, h in enumerate(heads) if not any(getattr(h, f) == v for f, v, _ in bad_value)]
            for i, h in enumerate(heads):
                for f, v, pattern in bad_value:
                    if getattr(h, f) == v:
                        self.refused.append((int(no[i]), f"emg_frame header: {f} {pattern}; got {v!r}"))
                        break
            heads = [heads[i] for i in keep]
            no, p0, pl = no[keep], p0[keep], pl[keep]
            if not heads:
                return
        ts_utc = list(map(_get_ts, heads))
        utc = set(map(_utcoffset, ts_utc)) | set(map(_utcoffset, map(_get_fsu, heads)))
        nch = np.fromiter(map(_get_nch, heads), np.int64, len(heads))
        nsm = np.fromiter(map(_get_nsm, heads), np.int64, len(heads))
        good = pl == 4 * nch * nsm
        if utc != {_UTC}:
            good &= np.fromiter((h.ts_utc.utcoffset() == _UTC and h.first_sample_utc.utcoffset() == _UTC
                                 for h in heads), bool, len(heads))
        if not good.all():
            for i in np.flatnonzero(~good):
                h = heads[i]
                why = (f"emg_frame payload is {int(pl[i])} bytes; n_channels={h.n_channels} x n_samples="
                       f"{h.n_samples} x 4 = {4 * h.n_channels * h.n_samples} expected"
                       if pl[i] != 4 * h.n_channels * h.n_samples else
                       "emg_frame ts_utc / first_sample_utc must be in UTC (offset +00:00 or 'Z'); got "
                       f"{h.ts_utc} / {h.first_sample_utc}")
                self.refused.append((int(no[i]), why))
            keep = np.flatnonzero(good)
            heads = [heads[i] for i in keep]
            no, p0, nch, nsm = no[keep], p0[keep], nch[keep], nsm[keep]
        fr = self.frames
        seg = len(self._maps) - 1
        keys = list(map(_get_stream, heads))
        distinct = set(keys)
        for k in sorted(distinct - stream_no.keys(), key=keys.index):
            stream_no[k] = len(stream_no)
        if len(distinct) == 1:
            streams = np.full(len(keys), stream_no[keys[0]], dtype=np.int64)
        else:
            streams = np.fromiter(map(stream_no.__getitem__, keys), np.int64, len(keys))
        fr.record_no.frombytes(no.tobytes())
        fr.segment.frombytes(np.full(no.size, seg, dtype=np.int64).tobytes())
        fr.payload_offset.frombytes(p0.tobytes())
        fr.seq.frombytes(np.fromiter(map(_get_seq, heads), np.int64, len(heads)).tobytes())
        fr.first_sample.frombytes(np.fromiter(map(_get_first, heads), np.int64, len(heads)).tobytes())
        fr.n_samples.frombytes(nsm.tobytes())
        fr.n_channels.frombytes(nch.tobytes())
        fr.stream.frombytes(streams.tobytes())
        fr.ts.frombytes(np.fromiter(map(_timestamp, ts_utc), np.float64, len(heads)).tobytes())

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
        header = json.loads(data[h0:h0 + hl])
        self.events.append(Event(record_no, topic, header.get("publisher", ""), header.get("instance", ""),
                                 header.get("seq", -1), header.get("session_id"), header))
        self._at[record_no] = (len(self._maps) - 1, end - n, n)

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

    def message_frames(self, record_no: int) -> list[bytes]:
        """The wire frames of an archived non-frame message (an `Event`), byte for byte as archived."""
        seg, pos, n = self._at[record_no]
        data = self._maps[seg]
        end = pos + n
        out: list[bytes] = []
        while pos < end:
            (ln,) = _LEN.unpack_from(data, pos)
            out.append(bytes(data[pos + 4:pos + 4 + ln]))
            pos += 4 + ln
        return out

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

