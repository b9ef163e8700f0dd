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

Where the records and each frame's parts are is found by compiled loops
(kernels.py: byte arithmetic only, the same framing rule as before); what
is left per frame is the contract's check of its header and reading the
checked columns out, in one pass, with the cyclic collector held off
(segment.no_gc_pauses) while a segment's headers exist as objects.

That check is most of the work, and segments are independent of each other
but for stream numbers and where the walk stops: the offline commands build
the index on every core (`build`/`start` with workers: forked workers take
segments from the last one backwards, the caller from the first one
forwards, and the parts are merged in order into what one walk builds).
"""

from __future__ import annotations

import datetime as dt
import json
import mmap
import math
import operator
import os
import pickle
import signal
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import msgspec

from amrwatch.archive.bodies import BodyError, Gap, decode_json
from amrwatch.archive.integrity import list_segments
from amrwatch.archive.segment import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, Kind, no_gc_pauses
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
#: The header fields the index keeps or checks after decoding, read in one pass (_frames).
_COLUMNS = tuple(dict.fromkeys(("session_id", "publisher", "instance", "sampling_rate_hz", "seq", "first_sample_index",
                                "n_channels", "n_samples", "ts_utc", "first_sample_utc",
                                *(name for name, _ in _FRAME.patterns), *_FRAME.finite)))
_GETTERS = tuple((name, operator.attrgetter(name)) for name in _COLUMNS)
_get_tzinfo = operator.attrgetter("tzinfo")
_timestamp = operator.methodcaller("timestamp")


def _check_patterns(cols: dict[str, Any]) -> list[tuple[str, object, str]]:
    """(field, value, rule) of every distinct value that breaks its field's pattern or finiteness.
    Patterns are matched once per distinct value (session, publisher and instance repeat on every frame);
    finiteness is checked on the whole column at once, value by value only if something fails."""
    bad: list[tuple[str, object, str]] = []
    for name, memo in _FRAME.patterns:
        for v in set(cols[name]):
            if v is not None and not memo.ok(v):
                bad.append((name, v, f"must match {_PATTERN_TEXT[name]}"))
    for name in _FRAME.finite:
        col = cols[name]
        try:
            if np.isfinite(np.array(col, dtype=np.float64)).all():
                continue
        except (TypeError, ValueError):
            pass
        for v in set(col):
            if v is not None and not math.isfinite(v):
                bad.append((name, v, "must be a finite number"))
    return bad


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
    def build(cls, session_dir: Path, *, workers: int = 1) -> ArchiveIndex:
        """The index of the session in `session_dir`.

        `workers` > 1: that many minus one forked processes index segments from the back while this one
        indexes them from the front (see `start`), and their parts are merged in segment order — the same
        index as one walk (stream numbers, refusals, a stop at the first record that cannot be framed), built on more
        cores: the frame headers' contract check is most of an offline `analyze` of a 2-hour session
        (issue #18). Only for a process that owns no sockets or threads that a fork could break (the
        offline commands); a worker that fails is no error: its segments are walked here instead."""
        return cls.start(session_dir, workers=workers).finish()

    @classmethod
    def start(cls, session_dir: Path, *, workers: int = 1) -> PendingIndex:
        """`build`, begun: the workers are forked now and start indexing segments from the last one
        backwards while the caller does something else (an offline command imports the analyzer
        meanwhile); `finish()` then takes segments from the first one forwards until the two meet, and
        merges. Who does how much follows from who is faster (a busy machine, imports), not from a
        fixed split."""
        # The compiled walks (kernels: numba, ~0.8 s to import) are not loaded before the fork: a worker loads
        # them itself while this process imports whatever else it needs (for `analyze`, numba with the analyzer).
        idx = cls(Path(session_dir))
        if not idx.session_dir.is_dir():
            raise FileNotFoundError(f"no archived session at {idx.session_dir}")
        segments = list_segments(idx.session_dir)
        n = _workers(segments, workers)
        ends = _Ends(len(segments)) if n else None
        return PendingIndex(idx, segments, ends, [_Worker.start(idx.session_dir, segments, ends) for _ in range(n)]
                            if ends is not None else [])

    def _walk(self, segments: list[tuple[int, Path]], stream_no: dict) -> None:
        """Index `segments` (in order) into this index; stops after the first one holding bytes it cannot
        frame (`stopped_at`)."""
        from amrwatch.archive import kernels

        topic = np.frombuffer(_FRAME_TOPIC, dtype=np.uint8)
        for _seg, path in segments:
            data = _map(path)
            self._maps.append(data)
            total = len(data)
            if total <= SEGMENT_HEADER_SIZE:  # no record (the integrity check judges the header)
                continue
            u8 = np.frombuffer(data, dtype=np.uint8)
            # One compiled walk over the record headers (kernels.frame_records) instead of a Python step per
            # record: a 2-hour session's 1.4 million frames cost seconds that way before anything was read.
            off, blen, kind, _bits, nos, stop = kernels.frame_records(u8, SEGMENT_HEADER_SIZE)
            if stop < total:
                self.stopped_at = (path.name, int(stop))
            if nos.size:
                self.record_count = int(nos[-1]) + 1
            body = off + RECORD_HEADER_SIZE
            # An emg_frame is a message whose body starts with the 9-byte topic frame "emg_frame".
            is_frame = (kind == Kind.MESSAGE) & kernels.starts_with(u8, body, blen, topic)
            rows = np.flatnonzero(is_frame)
            if rows.size:
                parts, _t0, _tl, h0, hl, p0, pl = kernels.message_parts(u8, body[rows], blen[rows])
                self._frames(data, u8, nos[rows], parts, h0, hl, p0, pl, stream_no)
            for i in np.flatnonzero(~is_frame).tolist():
                record_no, k = int(nos[i]), int(kind[i])
                try:
                    self._record(data, k, record_no, int(body[i]), int(blen[i]), stream_no)
                except (BodyError, ValueError, KeyError, TypeError, struct.error):
                    self.unreadable.append(record_no)  # damaged content: the integrity check names it
            if self.stopped_at is not None:
                break

    def _part(self, stream_no: dict) -> dict[str, Any]:
        """What a worker found, to be sent back (its maps stay behind; the parent maps the same files)."""
        fr = self.frames
        return {"columns": {name: getattr(fr, name).tobytes() for name in _FRAME_COLUMNS},
                "streams": [k for k, _ in sorted(stream_no.items(), key=lambda kv: kv[1])],
                "events": self.events, "gaps": self.gaps, "resumes": self.resumes, "open_meta": self.open_meta,
                "close": self.close, "record_count": self.record_count, "stopped_at": self.stopped_at,
                "unreadable": self.unreadable, "refused": self.refused, "at": self._at, "maps": len(self._maps)}

    def _merge(self, part: dict[str, Any], segments: list[tuple[int, Path]], stream_no: dict) -> None:
        """A worker's part appended as if this index had walked its segments itself."""
        for _seg, path in segments[:part["maps"] - len(self._maps)]:
            self._maps.append(_map(path))
        # The worker numbered streams from 0 in the order it met them; the walk numbers new ones after ours.
        lut = np.array([stream_no.setdefault(k, len(stream_no)) for k in part["streams"]] or [0], dtype=np.int64)
        fr = self.frames
        for name in _FRAME_COLUMNS:
            col = part["columns"][name]
            if name == "stream" and col:
                col = lut[np.frombuffer(col, dtype=np.int64)].tobytes()
            getattr(fr, name).frombytes(col)
        self.events += part["events"]
        self.gaps += part["gaps"]
        self.resumes += part["resumes"]
        self.open_meta = part["open_meta"] if part["open_meta"] is not None else self.open_meta
        self.close = part["close"] if part["close"] is not None else self.close
        self.record_count = part["record_count"] or self.record_count
        self.stopped_at = part["stopped_at"]
        self.unreadable += part["unreadable"]
        self.refused += part["refused"]
        self._at.update(part["at"])

    def _frames(self, data, u8: np.ndarray, no: np.ndarray, parts: np.ndarray, h0: np.ndarray, hl: np.ndarray,
                p0: np.ndarray, pl: np.ndarray, stream_no: dict) -> None:
        """The emg_frame records of one segment (whose body starts with the topic frame), as columns.

        Where each frame's header and payload are comes from the compiled walk
        (kernels.message_parts); the headers are decoded in one call of the
        compiled checker (a JSON array of all of them, built by kernels.json_array);
        if any is refused, the batch is decoded one by one so each refusal names its record.
        """
        framed = parts == 3
        for r in no[~framed]:
            self.unreadable.append(int(r))  # not three frames: damaged content, the integrity check names it
        no, h0, hl, p0, pl = no[framed], h0[framed], hl[framed], p0[framed], pl[framed]
        if not no.size:
            return
        from amrwatch.archive import kernels

        try:
            heads = _FRAME_HEADERS.decode(kernels.json_array(u8, h0, hl))
            ok = np.ones(no.size, dtype=bool)
        except (msgspec.ValidationError, msgspec.DecodeError):
            heads, ok = [], np.zeros(no.size, dtype=bool)
            for i, (a, n) in enumerate(zip(h0.tolist(), hl.tolist())):
                try:
                    heads.append(_FRAME_HEADER.decode(data[a:a + n]))
                    ok[i] = True
                except msgspec.ValidationError as err:
                    self.refused.append((int(no[i]), f"emg_frame header: {err}"))
                except msgspec.DecodeError as err:
                    self.refused.append((int(no[i]), f"emg_frame header is not JSON: {err}"))
            no, p0, pl = no[ok], p0[ok], pl[ok]
        if not heads:
            return
        # The fields used below as columns, one C-level pass each (a pass building a tuple per header and
        # transposing them cost half as much again).
        cols = {name: list(map(getter, heads)) for name, getter in _GETTERS}
        bad_value = _check_patterns(cols)
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
            cols = {k: [v[i] for i in keep] for k, v in cols.items()}
        n = len(heads)
        nch = np.array(cols["n_channels"], dtype=np.int64)
        nsm = np.array(cols["n_samples"], dtype=np.int64)
        good = pl == 4 * nch * nsm
        # In UTC: a check per distinct time zone object (the decoder shares one for every 'Z'), not per frame.
        zones = set(map(_get_tzinfo, cols["ts_utc"])) | set(map(_get_tzinfo, cols["first_sample_utc"]))
        if any(z is None or z.utcoffset(None) != _UTC for z in zones):
            good &= np.fromiter((h.ts_utc.utcoffset() == _UTC and h.first_sample_utc.utcoffset() == _UTC
                                 for h in heads), bool, n)
        if not good.all():
            for i in np.flatnonzero(~good):
                h = heads[i]
                why = (f"emg_frame payload is {int(pl[i])} bytes; n_channels={h.n_channels} x n_samples="
                       f"{h.n_samples} x 4 = {4 * h.n_channels * h.n_samples} expected"
                       if pl[i] != 4 * h.n_channels * h.n_samples else
                       "emg_frame ts_utc / first_sample_utc must be in UTC (offset +00:00 or 'Z'); got "
                       f"{h.ts_utc} / {h.first_sample_utc}")
                self.refused.append((int(no[i]), why))
            keep = np.flatnonzero(good).tolist()
            no, p0, nch, nsm = no[keep], p0[keep], nch[keep], nsm[keep]
            cols = {k: [v[i] for i in keep] for k, v in cols.items()}
            n = len(keep)
            if not n:
                return
        fr = self.frames
        seg = len(self._maps) - 1
        parts = [cols[k] for k in ("publisher", "instance", "session_id", "sampling_rate_hz")]
        if all(len(set(c)) == 1 for c in parts):  # one stream (the usual case): no key per frame
            keys = [tuple(c[0] for c in parts)]
        else:
            keys = list(zip(*parts))
        distinct = set(keys)
        for k in sorted(distinct - stream_no.keys(), key=keys.index):
            stream_no[k] = len(stream_no)
        if len(distinct) == 1:
            streams = np.full(n, stream_no[keys[0]], dtype=np.int64)
        else:
            streams = np.fromiter(map(stream_no.__getitem__, keys), np.int64, n)
        fr.record_no.frombytes(no.tobytes())
        fr.segment.frombytes(np.full(n, seg, dtype=np.int64).tobytes())
        fr.payload_offset.frombytes(p0.tobytes())
        fr.seq.frombytes(np.array(cols["seq"], dtype=np.int64).tobytes())
        fr.first_sample.frombytes(np.array(cols["first_sample_index"], dtype=np.int64).tobytes())
        fr.n_samples.frombytes(nsm.tobytes())
        fr.n_channels.frombytes(nch.tobytes())
        fr.stream.frombytes(streams.tobytes())
        fr.ts.frombytes(np.fromiter(map(_timestamp, cols["ts_utc"]), np.float64, n).tobytes())

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



#: The FrameTable columns a worker sends back (everything but `streams`).
_FRAME_COLUMNS = ("record_no", "segment", "payload_offset", "seq", "first_sample", "n_samples", "n_channels",
                  "stream", "ts")


class PendingIndex:
    """An index being built (ArchiveIndex.start): the workers under way, the caller's part not begun."""

    def __init__(self, idx: ArchiveIndex, segments: list[tuple[int, Path]], ends: _Ends | None,
                 helpers: list[_Worker]) -> None:
        self.idx, self.segments, self.ends, self.helpers = idx, segments, ends, helpers

    def finish(self) -> ArchiveIndex:
        """Segments taken from the front and walked here until none is left, then the workers' segments
        merged after them in order (a segment a failed worker took is walked here)."""
        idx, segments, ends = self.idx, self.segments, self.ends
        stream_no: dict[tuple[str, str, str | None, float], int] = {}
        try:
            with no_gc_pauses():
                if ends is None:
                    idx._walk(segments, stream_no)
                else:
                    while idx.stopped_at is None and (i := ends.take_front()) is not None:
                        idx._walk(segments[i:i + 1], stream_no)
                    ends.close()  # a stop here: the workers take no more
                    parts: dict[int, dict[str, Any]] = {}
                    for w in self.helpers:
                        parts.update(w.result() or {})
                    for i in range(len(idx._maps), len(segments)):
                        if idx.stopped_at is not None:  # one walk stops at the first record it cannot frame
                            break
                        if i in parts:
                            idx._merge(parts[i], segments[i:i + 1], stream_no)
                        else:  # its worker failed
                            idx._walk(segments[i:i + 1], stream_no)
        finally:
            self.stop()
        idx.unreadable.sort()
        idx.frames.streams = [k for k, _ in sorted(stream_no.items(), key=lambda kv: kv[1])]
        return idx

    def stop(self) -> None:
        """Kill and reap every worker whose part was not taken."""
        for w in self.helpers:
            w.stop()
        if self.ends is not None:
            self.ends.release()


def _workers(segments: list[tuple[int, Path]], workers: int) -> int:
    """How many processes to fork besides this one: none for a small session, where a fork costs more than
    it saves, or where there is no fork."""
    if workers <= 1 or len(segments) < 2 or not hasattr(os, "fork"):
        return 0
    total = 0
    for _seg, path in segments:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return max(0, min(workers - 1, len(segments) - 1, total // _MIN_CHUNK_BYTES - 1))


class _Ends:
    """The first and last segment nobody has taken yet, in a small unnamed file shared with the forked
    workers and changed under a POSIX record lock (released by the kernel if its holder dies, so a killed
    worker cannot leave the others waiting): this process takes from the front, the workers from the back."""

    def __init__(self, n: int) -> None:
        import tempfile

        self._file = tempfile.TemporaryFile()
        self._fd = self._file.fileno()
        self._set(0, n - 1)

    def _set(self, lo: int, hi: int) -> None:
        os.pwrite(self._fd, struct.pack("<qq", lo, hi), 0)

    def _take(self, front: bool) -> int | None:
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            lo, hi = struct.unpack("<qq", os.pread(self._fd, 16, 0))
            if lo > hi:
                return None
            self._set(lo + 1, hi) if front else self._set(lo, hi - 1)
            return lo if front else hi
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def take_front(self) -> int | None:
        return self._take(True)

    def take_back(self) -> int | None:
        return self._take(False)

    def release(self) -> None:
        self._file.close()

    def close(self) -> None:
        """Nothing left to take."""
        import fcntl

        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            self._set(1, 0)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)


def cores() -> int:
    """CPUs this process may run on: how many workers an offline command builds the index with."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: Below this many bytes per worker the index is built in one process.
_MIN_CHUNK_BYTES = 128 << 20


class _Worker:
    """A forked process taking segments from the back (_Ends) until none is left and sending back each one's
    part, pickled, through a pipe."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    @classmethod
    def start(cls, session_dir: Path, segments: list[tuple[int, Path]], ends: _Ends) -> _Worker:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: its parts, then gone without running anything of the parent's
            code = 1
            try:
                os.close(r)
                parts = {}
                with no_gc_pauses():
                    while (i := ends.take_back()) is not None:
                        parts[i] = cls._index(session_dir, segments, i)
                with os.fdopen(w, "wb") as out:
                    pickle.dump(parts, out, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        return cls(pid, r)

    @staticmethod
    def _index(session_dir: Path, segments: list[tuple[int, Path]], i: int) -> dict[str, Any]:
        part = ArchiveIndex(session_dir)
        part._maps = [b""] * i  # empty maps for the segments before this one, so its number stays the session's
        stream_no: dict = {}
        part._walk(segments[i:i + 1], stream_no)
        return part._part(stream_no)

    def result(self) -> dict[int, dict[str, Any]] | None:
        """The worker's parts by segment, or None if it failed (died, or sent something else)."""
        try:
            with os.fdopen(self.fd, "rb") as f:
                self.fd = -1
                parts = pickle.load(f)
        except Exception:  # noqa: BLE001 - any failure of the worker: the caller walks its segments itself
            parts = None
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return parts if status == 0 and isinstance(parts, dict) else None

    def stop(self) -> None:
        """Kill and reap the worker if its parts were not taken (the walk stopped before them, or failed)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = 0
