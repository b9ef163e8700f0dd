"""Reading a session's log back with no trust: CRCs, record numbers, the hash
chain, the structure FORMAT.md prescribes, and the checkpoint outside the log.

One walk serves three callers: `verify` (list every problem), `recover`
(repair only a torn tail of the newest segment, refuse anything else) and
the reader (stream records, stop at the first problem).

Every record's header CRC, record CRC and chain value are computed whatever
the path. The common case — records that frame, one after the other, from
the start of a segment — is found by a compiled walk (kernels.py) and
checked in one tight loop (`_Walk._fast`); from the first record it cannot
take (damage, a bad kind), the general scan (segment.scan_segment) goes on,
so damage is named exactly as before (tests/archive/test_compiled_readers.py
holds the two paths to the same answers).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np

from amrwatch.archive.bodies import BodyError, CheckpointBody, Gap, check_message, decode_json, decode_segment
from amrwatch.archive.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointError, check_hmac, read_checkpoint
from amrwatch.archive.durable import ArchiveIO
from amrwatch.archive.segment import (
    GENESIS,
    KIND_NAMES,
    RECORD_HEAD,
    RECORD_HEADER_SIZE,
    RECORD_OVERHEAD,
    RECORD_TRAILER_SIZE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_NAME,
    Damage,
    Kind,
    RawRecord,
    SegmentScan,
    chain_next,
    check_header,
    no_gc_pauses,
    scan_segment,
    segment_name,
)

log = logging.getLogger("amrwatch.recorder.archive")

#: Records a fresh session holds before its first checkpoint.json exists:
#: segment, open, checkpoint (written by one commit, then the file).
RECORDS_BEFORE_FIRST_SIDECAR = 3


class ArchiveError(Exception):
    """Base of the archive's errors."""


class ArchiveCorrupt(ArchiveError):
    """A session whose log is damaged other than by a torn tail: it is left untouched."""

    def __init__(self, session_dir: Path, problems: list[Problem]):
        self.session_dir = Path(session_dir)
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"session archive {self.session_dir} is corrupt and was not modified: {shown}{more}. "
                         f"Run `amrwatch verify {self.session_dir.name}` for the full list")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an archive, located well enough to look at with a hex editor."""

    file: str
    record_no: int | None
    offset: int | None
    what: str
    detail: str

    def __str__(self) -> str:
        where = self.file
        if self.record_no is not None:
            where += f" record {self.record_no}"
        if self.offset is not None:
            where += f" at byte {self.offset}"
        return f"{where}: {self.what}: {self.detail}"


@dataclass(frozen=True)
class Record:
    """A record as read back: what it says and where it was found."""

    record_no: int
    kind: int
    body: bytes
    chain: bytes
    segment: int
    offset: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


def list_segments(session_dir: Path) -> list[tuple[int, Path]]:
    out = []
    try:
        entries = os.listdir(session_dir)
    except FileNotFoundError:
        return []
    for name in entries:
        m = SEGMENT_NAME.match(name)
        if m:
            out.append((int(m.group(1)), Path(session_dir) / name))
    return sorted(out)


@dataclass
class _Tail:
    segment: int
    path: Path
    damage: Damage
    expected_no: int | None
    valid_records_in_segment: int


class _Walk:
    """Walks every segment in order, yielding records and problems as it meets them."""

    def __init__(self, session_dir: Path, yield_records: bool = True, compiled: bool = True):
        self.dir = Path(session_dir)
        #: False: every record goes through scan_segment and the loop below (the reference the compiled
        #: fast path is tested against, tests/archive/test_compiled_readers.py).
        self.compiled = compiled
        #: False when only the problems are wanted (analyse): no record body is copied out.
        self.yield_records = yield_records
        self.segments = list_segments(self.dir)
        self.prev_chain: bytes | None = GENESIS
        self.expected_no: int | None = 0
        self.count = 0  # one past the last valid record's number
        self.head = GENESIS
        self.tail: _Tail | None = None
        self.closed_at: int | None = None
        self.open_seen = False
        self.last_checkpoint: tuple[int, bytes] | None = None
        self.chains_wanted: dict[int, bytes | None] = {}
        self.kinds_wanted: dict[int, int] = {}
        self.last_segment_size = 0
        self._buf = bytearray()

    def want_chain(self, record_no: int) -> None:
        self.chains_wanted[record_no] = None

    def walk(self) -> Iterator[Problem | Record]:
        if not self.segments:
            return
        last_index = self.segments[-1][0]
        for expected, (index, _) in enumerate(self.segments):
            if index != expected:
                yield Problem(segment_name(expected), None, None, "missing_segment",
                              f"segment {expected} is missing (found {[i for i, _ in self.segments]})")
                break
        for index, path in self.segments:
            data = self._read(path)
            name = path.name
            header_problem = check_header(data, index)
            first_in_segment = True
            n_valid = 0
            start = None
            if header_problem is None and self.compiled:
                # The records that frame, in one compiled pass, checked here in one tight loop; whatever it
                # does not handle (damage, anything but a message in sequence) goes the general way below.
                start, n_valid = yield from self._fast(name, index, data)
                first_in_segment = n_valid == 0
            if start is None or start < len(data):
                scan = scan_segment(bytes(data), index, start)
            else:
                scan = SegmentScan(index, len(data), None, [], [])
            tail = scan.tail_damage if index == last_index else None
            if index == last_index:
                self.last_segment_size = scan.size
            items: list[Damage | RawRecord]
            if scan.damage:
                items = sorted([*scan.damage, *scan.records], key=lambda t: t.offset)
            else:
                items = scan.records  # already in file order
            message, fast = Kind.MESSAGE, not self.yield_records
            for item in items:
                if fast and not first_in_segment and type(item) is RawRecord and item.kind == message:
                    # The common case inline (a generator per record costs more than its checks): a message
                    # in sequence, chained to the previous record, well framed, nothing else to note.
                    n = item.record_no
                    prev = self.prev_chain
                    if (n == self.expected_no and prev is not None and self.closed_at is None
                            and n not in self.chains_wanted and chain_next(prev, message, item.body) == item.chain):
                        try:
                            check_message(item.body)
                        except BodyError as err:
                            yield Problem(name, n, item.offset, "body", str(err))
                        self.prev_chain = self.head = item.chain
                        self.expected_no = n + 1
                        self.count = max(self.count, n + 1)
                        n_valid += 1
                        continue
                if isinstance(item, Damage):
                    if item is tail:
                        self.tail = _Tail(index, path, item, self.expected_no, n_valid)
                        continue
                    yield self._damage_problem(name, item)
                    first_in_segment = False
                    continue
                n_valid += 1
                yield from self._record(name, index, item, first_in_segment)
                first_in_segment = False
            if n_valid == 0 and not scan.damage:
                empty = Damage(scan.size, scan.size, "empty", "the segment holds a header and no record")
                if index == last_index:
                    self.tail = _Tail(index, path, empty, self.expected_no, 0)
                else:
                    yield Problem(path.name, self.expected_no, scan.size, "structure", empty.detail)
            if self.tail is not None:
                d = self.tail.damage
                named = d.record_no if d.record_no is not None else self.tail.expected_no
                yield Problem(path.name, named, d.offset, "torn_tail",
                              f"{d.what}: {d.detail}; {d.end - d.offset} bytes at the end of the newest segment "
                              "(a write cut short; reopening the session cuts them)")

    def _read(self, path: Path) -> memoryview:
        """A segment's bytes, read with one `readinto` into a buffer kept from one segment to the next
        (a fresh 64 MiB object per segment cost its allocation and page faults on top of the copy)."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if len(self._buf) < size:
                self._buf = bytearray(size)
            view = memoryview(self._buf)[:size]
            n = f.readinto(view)
            more = f.read()  # appended since the fstat (a session being recorded)
        if more:
            return memoryview(bytes(view[:n]) + more)
        return view[:n]

    def _fast(self, name: str, index: int, data: memoryview) -> Generator[Problem | Record, None, tuple[int, int]]:
        """The records of a segment whose header holds, from the first on, as far as the compiled framing
        walk (kernels.frame_records) goes and every record's header CRC and record CRC hold.

        A message in sequence and chained to the previous record is checked
        inline, as the walk's fast case always was (both CRCs, the SHA-256
        chain value, its framing into bus frames); any other record goes
        through `_record`. Returns where the general scan must take over
        (the first record not handled here) and how many records were valid."""
        from amrwatch.archive import kernels

        u8 = np.frombuffer(data, dtype=np.uint8)
        u8.flags.writeable = False
        off, blen, kind, bits, nos, stop = kernels.frame_records(u8, SEGMENT_HEADER_SIZE)
        known = (kind >= min(KIND_NAMES)) & (kind <= max(KIND_NAMES)) & (bits == 0)
        if not known.all():  # kind, flags or reserved wrong: _parse_at names it
            cut = int(np.argmin(known))
            stop = int(off[cut])
            off, blen, kind, nos = off[:cut], blen[:cut], kind[:cut], nos[:cut]
        end = off + blen + RECORD_OVERHEAD
        hcrc = kernels.u32_at(u8, off + RECORD_HEAD.size)
        rcrc = kernels.u32_at(u8, end - 4)
        msg = kind == Kind.MESSAGE
        framed = np.zeros(off.size, dtype=np.int64)
        if msg.any():
            framed[msg] = kernels.message_parts(u8, off[msg] + RECORD_HEADER_SIZE, blen[msg])[0]
        crc, sha256 = crc32c.crc32c, hashlib.sha256
        hs = RECORD_HEAD.size
        message = int(Kind.MESSAGE)
        kind_byte = bytes((message,))
        n_valid = 0
        first = True
        fast = not self.yield_records
        wanted = self.chains_wanted
        # The walk's state in locals while records take the inline path; written back before any other
        # code sees it (a return, or a record handed to `_record`).
        prev, expected, count = self.prev_chain, self.expected_no, self.count
        for o, n, k, no, e, hc, rc, parts in zip(off.tolist(), blen.tolist(), kind.tolist(), nos.tolist(),
                                                  end.tolist(), hcrc.tolist(), rcrc.tolist(), framed.tolist()):
            if crc(data[o:o + hs]) != hc or crc(data[o:e - 4]) != rc:
                self.prev_chain, self.expected_no, self.count = prev, expected, count
                return o, n_valid  # damaged: the general scan says how
            n_valid += 1
            b = o + RECORD_HEADER_SIZE
            if (fast and not first and k == message and no == expected and prev is not None
                    and self.closed_at is None and no not in wanted):
                h = sha256(prev)
                h.update(kind_byte)
                h.update(data[b:b + n])
                chain = h.digest()
                if chain == data[e - RECORD_TRAILER_SIZE:e - 4]:
                    if parts < 1:
                        try:
                            check_message(data[b:b + n])
                        except BodyError as err:
                            yield Problem(name, no, o, "body", str(err))
                    prev = self.head = chain
                    expected = no + 1
                    if expected > count:
                        count = expected
                    continue
            self.prev_chain, self.expected_no, self.count = prev, expected, count
            rec = RawRecord(no, k, o, e - o, data[b:b + n], bytes(data[e - RECORD_TRAILER_SIZE:e - 4]))
            yield from self._record(name, index, rec, first)
            prev, expected, count = self.prev_chain, self.expected_no, self.count
            first = False
        self.prev_chain, self.expected_no, self.count = prev, expected, count
        return int(stop), n_valid

    def _damage_problem(self, file: str, d: Damage) -> Problem:
        named = d.record_no if d.record_no is not None else self.expected_no
        if d.record_no is not None:
            self.expected_no = d.record_no + 1
        else:
            self.expected_no = None
        self.prev_chain = None
        return Problem(file, named, d.offset, d.what, f"{d.detail} ({d.end - d.offset} bytes unreadable)")

    def _record(self, file: str, index: int, rec: RawRecord, first_in_segment: bool) -> Iterator[Problem | Record]:
        n, kind = rec.record_no, rec.kind
        where = (file, n, rec.offset)
        if self.expected_no is not None and n != self.expected_no:
            yield Problem(*where, "sequence", f"record number {n} where {self.expected_no} was expected")
        prev = self.prev_chain
        if prev is not None and chain_next(prev, kind, rec.body) != rec.chain:
            yield Problem(*where, "chain", "SHA-256 chain value does not follow from the previous record "
                          "(the record or its predecessor was altered, removed or inserted)")
        if first_in_segment != (kind == Kind.SEGMENT):
            yield Problem(*where, "structure", "a segment must start with a `segment` record, and only there; "
                          f"found `{KIND_NAMES[kind]}`" + (" first" if first_in_segment else " inside"))
        if kind == Kind.SEGMENT:
            try:
                idx, carried = decode_segment(rec.body)
            except BodyError as err:
                yield Problem(*where, "body", str(err))
            else:
                if idx != index:
                    yield Problem(*where, "structure", f"segment record says segment {idx}; the file is segment {index}")
                if prev is not None and carried != prev:
                    yield Problem(*where, "chain", "the chain value carried from the previous segment is not "
                                  "the previous record's chain value")
        elif kind == Kind.OPEN:
            if n != 1 or self.open_seen:
                yield Problem(*where, "structure", "`open` must be record 1, once")
            self.open_seen = True
            try:
                meta = decode_json(rec.body, "open")
            except BodyError as err:
                yield Problem(*where, "body", str(err))
            else:
                if meta.get("session_id") != self.dir.name:
                    yield Problem(*where, "structure", f"open record names session {meta.get('session_id')!r}; "
                                  f"the archive directory is {self.dir.name!r}")
        elif kind == Kind.CHECKPOINT:
            try:
                cb = CheckpointBody.decode(rec.body)
            except BodyError as err:
                yield Problem(*where, "body", str(err))
            else:
                if cb.record_count != n or (prev is not None and cb.chain_head != prev.hex()):
                    yield Problem(*where, "checkpoint", f"checkpoint record states {cb.record_count} records with "
                                  f"head {cb.chain_head[:16]}…; the log holds {n} records before it"
                                  + (f" with head {prev.hex()[:16]}…" if prev is not None else ""))
                if cb.closed and self.closed_at is None:
                    yield Problem(*where, "structure", "checkpoint says the session is closed but no `close` precedes it")
            self.last_checkpoint = (n, rec.chain)
        elif kind == Kind.MESSAGE:
            try:
                check_message(rec.body)
            except BodyError as err:
                yield Problem(*where, "body", str(err))
        elif kind == Kind.GAP:
            try:
                Gap.decode(rec.body)
            except (BodyError, TypeError) as err:
                yield Problem(*where, "body", str(err))
        elif kind in (Kind.RESUME, Kind.CLOSE):
            try:
                decode_json(rec.body, KIND_NAMES[kind])
            except BodyError as err:
                yield Problem(*where, "body", str(err))
        if self.closed_at is not None and kind not in (Kind.CHECKPOINT, Kind.SEGMENT):
            yield Problem(*where, "structure", f"`{KIND_NAMES[kind]}` after the session was closed "
                          f"(record {self.closed_at})")
        if kind == Kind.CLOSE and self.closed_at is None:
            self.closed_at = n
        if n in self.chains_wanted:
            self.chains_wanted[n] = rec.chain
            self.kinds_wanted[n] = kind
        self.prev_chain = rec.chain
        self.expected_no = n + 1
        self.count = max(self.count, n + 1)
        self.head = rec.chain
        if self.yield_records:
            yield Record(n, kind, bytes(rec.body), rec.chain, index, rec.offset)


@dataclass
class Analysis:
    problems: list[Problem]
    tail: _Tail | None
    record_count: int
    chain_head: bytes
    closed: bool
    checkpoint: Checkpoint | None
    last_checkpoint: tuple[int, bytes] | None
    segments: list[tuple[int, Path]]
    last_segment_size: int

    @property
    def corruption(self) -> list[Problem]:
        """Everything but the torn tail."""
        return [p for p in self.problems if p.what != "torn_tail"]


def analyse(session_dir: Path, hmac_key: bytes | None = None) -> Analysis:
    session_dir = Path(session_dir)
    problems: list[Problem] = []
    cp: Checkpoint | None = None
    try:
        cp = read_checkpoint(session_dir)
    except CheckpointError as err:
        problems.append(Problem(CHECKPOINT_FILE, None, None, "checkpoint", str(err)))
    if cp is not None and hmac_key is not None:
        why = check_hmac(cp, hmac_key)
        if why is not None:
            problems.append(Problem(CHECKPOINT_FILE, None, None, "hmac", why))
    w = _Walk(session_dir, yield_records=False)
    if cp is not None:
        w.want_chain(cp.record_count - 1)
    with no_gc_pauses():
        problems.extend(w.walk())  # type: ignore[arg-type]  # only problems without records
    if not w.segments:
        problems.append(Problem(session_dir.name, None, None, "empty", "no segment files in the session directory"))
    if cp is not None:
        if cp.session_id != session_dir.name:
            problems.append(Problem(CHECKPOINT_FILE, None, None, "checkpoint",
                                    f"checkpoint is for session {cp.session_id!r}, not {session_dir.name!r}"))
        at = cp.record_count - 1
        seen = w.chains_wanted.get(at)
        if w.count < cp.record_count:
            problems.append(Problem(CHECKPOINT_FILE, w.count, None, "truncated",
                                    f"{CHECKPOINT_FILE} says records 0..{at} were durable; the log holds only "
                                    f"{w.count} (records {w.count}..{at} are missing: newest records were cut)"))
        elif seen is None or seen.hex() != cp.chain_head:
            problems.append(Problem(CHECKPOINT_FILE, at, None, "checkpoint",
                                    f"{CHECKPOINT_FILE} states chain head {cp.chain_head[:16]}… for record {at}; "
                                    f"the log's record {at} has {seen.hex()[:16] + '…' if seen else 'no valid chain value'}"))
        elif w.kinds_wanted.get(at) != Kind.CHECKPOINT:
            problems.append(Problem(CHECKPOINT_FILE, at, None, "checkpoint",
                                    f"record {at} named by {CHECKPOINT_FILE} is not a checkpoint record"))
        if cp.closed and (w.count > cp.record_count or w.tail is not None):
            problems.append(Problem(CHECKPOINT_FILE, cp.record_count, None, "structure",
                                    f"the session was closed at {cp.record_count} records; the log continues after it"))
    elif w.count > RECORDS_BEFORE_FIRST_SIDECAR:
        problems.append(Problem(CHECKPOINT_FILE, None, None, "checkpoint_missing",
                                f"{CHECKPOINT_FILE} is missing but the log holds {w.count} records "
                                f"(it exists from record {RECORDS_BEFORE_FIRST_SIDECAR - 1} on)"))
    if w.closed_at is not None and w.tail is not None and not any(p.what == "structure" for p in problems):
        problems.append(Problem(w.tail.path.name, None, w.tail.damage.offset, "structure",
                                "damaged bytes after the session's `close` record"))
    return Analysis(problems, w.tail, w.count, w.head, w.closed_at is not None, cp, w.last_checkpoint,
                    w.segments, w.last_segment_size)


def iter_records(session_dir: Path, *, allow_torn_tail: bool = False) -> Iterator[Record]:
    """Stream the records in order, checking CRCs and the chain; raise ArchiveCorrupt at the first problem."""
    w = _Walk(Path(session_dir))
    for item in w.walk():
        if isinstance(item, Problem):
            if item.what == "torn_tail" and allow_torn_tail:
                continue
            raise ArchiveCorrupt(Path(session_dir), [item])
        yield item


@dataclass(frozen=True)
class Cut:
    """What recovery removed from the end of the newest segment."""

    segment: str
    offset: int
    bytes_cut: int
    removed_file: bool
    reason: str


@dataclass(frozen=True)
class RecoveryReport:
    session_dir: Path
    record_count: int
    chain_head: bytes
    closed: bool
    cut: Cut | None
    last_segment: int | None
    last_segment_size: int
    last_checkpoint: tuple[int, bytes] | None
    checkpoint_missing: bool

    def as_dict(self) -> dict:
        cut = None
        if self.cut is not None:
            cut = {"segment": self.cut.segment, "offset": self.cut.offset, "bytes_cut": self.cut.bytes_cut,
                   "removed_file": self.cut.removed_file, "reason": self.cut.reason}
        return {"record_count": self.record_count, "chain_head": self.chain_head.hex(), "cut": cut}


def recover(session_dir: Path, *, hmac_key: bytes | None = None, io: ArchiveIO | None = None) -> RecoveryReport:
    """Make a session appendable again: cut a torn tail of the newest segment, refuse anything else.

    A torn tail is damage that runs to the end of the newest segment with no
    valid record after it. It is repairable only if checkpoint.json does not
    say those records were durable; otherwise the log was truncated and the
    session is corrupt.
    """
    session_dir = Path(session_dir)
    io = io or ArchiveIO()
    a = analyse(session_dir, hmac_key)
    bad = [p for p in a.corruption if p.what != "empty"]
    if bad:
        raise ArchiveCorrupt(session_dir, bad)
    cut = None
    segments = list(a.segments)
    last_size = a.last_segment_size
    if a.tail is not None:
        t = a.tail
        d = t.damage
        remove = t.valid_records_in_segment == 0 or d.offset <= SEGMENT_HEADER_SIZE
        reason = f"{d.what}: {d.detail}"
        if remove:
            os.unlink(t.path)
            io.fsync_dir(session_dir)
            segments = segments[:-1]
            last_size = segments[-1][1].stat().st_size if segments else 0
        else:
            fd = io.open(t.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, d.offset)
                io.fsync(fd)
            finally:
                io.close(fd)
            last_size = d.offset
        cut = Cut(t.path.name, d.offset, d.end - d.offset, remove, reason)
        log.warning("session %s: cut a torn tail of %s at byte %d (%d bytes%s): %s", session_dir.name,
                    t.path.name, d.offset, d.end - d.offset, ", file removed" if remove else "", reason)
    return RecoveryReport(
        session_dir=session_dir,
        record_count=a.record_count,
        chain_head=a.chain_head,
        closed=a.closed,
        cut=cut,
        last_segment=segments[-1][0] if segments else None,
        last_segment_size=last_size,
        last_checkpoint=a.last_checkpoint,
        checkpoint_missing=a.checkpoint is None and a.record_count > 0,
    )

