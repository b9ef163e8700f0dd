"""Byte layout of one segment file, and a scanner that never trusts it.

FORMAT.md is the specification; this module is its reference
implementation. The scanner reports damage instead of raising, because the
callers decide what damage means: at the end of the newest segment it is a
torn write (repairable), anywhere else it is corruption.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

import crc32c

SEGMENT_MAGIC = b"AMRWSEG1"
FORMAT_VERSION = 1
#: magic, format version, header length, segment index.
SEGMENT_HEADER = struct.Struct("<8sHHI")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 16

RECORD_MAGIC = b"\xf0AMR"
#: magic, body length, kind, flags, reserved, record number.
RECORD_HEAD = struct.Struct("<4sIBBHQ")
HEADER_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = RECORD_HEAD.size + HEADER_CRC.size  # 24
CHAIN_SIZE = 32
RECORD_TRAILER_SIZE = CHAIN_SIZE + 4  # chain value + record CRC
RECORD_OVERHEAD = RECORD_HEADER_SIZE + RECORD_TRAILER_SIZE  # 60
MAX_BODY = 2**32 - 1

#: The chain value before the first record of a session.
GENESIS = bytes(CHAIN_SIZE)

#: Body of a `segment` record: segment index, chain value before this record.
SEGMENT_BODY = struct.Struct("<I32s")

SEGMENT_NAME = re.compile(r"^seg-(\d{6})\.amrlog$")


class Kind(enum.IntEnum):
    SEGMENT = 1
    OPEN = 2
    MESSAGE = 3
    GAP = 4
    CHECKPOINT = 5
    RESUME = 6
    CLOSE = 7


KIND_NAMES = {k.value: k.name.lower() for k in Kind}


@contextlib.contextmanager
def no_gc_pauses():
    """The cyclic garbage collector held off while a reader builds millions of short-lived objects.

    Reading a 2-hour session makes a few million objects (decoded frame
    headers, records) that form no cycles; every few hundred allocations the
    collector ran anyway, and its full passes walked all of them again — two
    of the index's six seconds (issue #18). Reference counting still frees
    everything; the collector is put back as it was, and any cycle made
    meanwhile is collected on its next pass."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def segment_name(index: int) -> str:
    return f"seg-{index:06d}.amrlog"


def segment_header(index: int) -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, index)


def chain_next(prev: bytes, kind: int, body) -> bytes:
    """h_n = SHA-256(h_{n-1} || kind byte || body)."""
    h = hashlib.sha256(prev)
    h.update(bytes((kind,)))
    h.update(body)
    return h.digest()


def append_record(buf: bytearray, record_no: int, kind: int, body, prev_chain: bytes) -> bytes:
    """Encode one record at the end of `buf`; returns its chain value.

    The body is copied once (into `buf`); the CRC runs over the bytes already
    in place so nothing is concatenated twice.
    """
    start = len(buf)
    head = RECORD_HEAD.pack(RECORD_MAGIC, len(body), kind, 0, 0, record_no)
    buf += head
    buf += HEADER_CRC.pack(crc32c.crc32c(head))
    buf += body
    chain = chain_next(prev_chain, kind, body)
    buf += chain
    with memoryview(buf) as view:
        crc = crc32c.crc32c(view[start:])
    buf += HEADER_CRC.pack(crc)
    return chain


def record_size(body_len: int) -> int:
    return RECORD_OVERHEAD + body_len


class RawRecord(NamedTuple):
    """A record whose header CRC and record CRC both hold (the chain is checked by the caller).
    A named tuple: a frozen dataclass costs more to build than checking the record."""

    record_no: int
    kind: int
    offset: int
    size: int
    body: memoryview
    chain: bytes


@dataclass(frozen=True)
class Damage:
    """Bytes [offset, end) of a segment that are not a valid record.

    `record_no` is the record number the header states when the header
    itself is intact, else None (the caller names the expected number).
    """

    offset: int
    end: int
    what: str
    detail: str
    record_no: int | None = None


@dataclass
class SegmentScan:
    index: int
    size: int
    header_problem: str | None
    records: list[RawRecord]
    damage: list[Damage]

    @property
    def tail_damage(self) -> Damage | None:
        """The damage that runs to the end of the file, if any."""
        if self.damage and self.damage[-1].end == self.size:
            return self.damage[-1]
        return None


def check_header(data, index: int) -> str | None:
    """What is wrong with a segment's 16-byte header, or None."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return f"segment header is {len(data)} bytes; {SEGMENT_HEADER_SIZE} expected"
    magic, version, hlen, idx = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        return f"segment magic is {bytes(magic)!r}; {SEGMENT_MAGIC!r} expected"
    if version != FORMAT_VERSION:
        return f"format version is {version}; {FORMAT_VERSION} expected"
    if hlen != SEGMENT_HEADER_SIZE:
        return f"header length field is {hlen}; {SEGMENT_HEADER_SIZE} expected"
    if idx != index:
        return f"segment index field is {idx}; the file name says {index}"
    return None


def _parse_at(data, pos: int) -> tuple[RawRecord | None, Damage | None]:
    """Try to read one record at `pos`. Either a record or the damage found there."""
    total = len(data)
    if total - pos < RECORD_HEADER_SIZE:
        return None, Damage(pos, total, "short", f"{total - pos} bytes left; a record header needs {RECORD_HEADER_SIZE}")
    magic, body_len, kind, flags, reserved, record_no = RECORD_HEAD.unpack_from(data, pos)
    (hcrc,) = HEADER_CRC.unpack_from(data, pos + RECORD_HEAD.size)
    if magic != RECORD_MAGIC:
        return None, Damage(pos, total, "magic", f"record magic is {bytes(magic)!r}; {RECORD_MAGIC!r} expected")
    if crc32c.crc32c(data[pos:pos + RECORD_HEAD.size]) != hcrc:
        return None, Damage(pos, total, "header_crc", "record header CRC-32C does not match")
    if kind not in KIND_NAMES or flags or reserved:
        return None, Damage(pos, total, "header", f"kind {kind}, flags {flags}, reserved {reserved}: "
                            f"kind must be one of {sorted(KIND_NAMES)}, flags and reserved 0", record_no)
    size = record_size(body_len)
    if pos + size > total:
        return None, Damage(pos, total, "short", f"record of {size} bytes runs past the end of the file "
                            f"({total - pos} bytes left)", record_no)
    end = pos + size
    (rcrc,) = HEADER_CRC.unpack_from(data, end - 4)
    if crc32c.crc32c(data[pos:end - 4]) != rcrc:
        return None, Damage(pos, end, "crc", "record CRC-32C does not match", record_no)
    body = data[pos + RECORD_HEADER_SIZE:pos + RECORD_HEADER_SIZE + body_len]
    chain = bytes(data[end - RECORD_TRAILER_SIZE:end - 4])
    return RawRecord(record_no, kind, pos, size, body, chain), None


def _next_valid(raw, view: memoryview, start: int) -> int | None:
    """Offset of the first fully valid record at or after `start`, else None.

    Searching for the 4-byte magic runs at C speed; a candidate must then
    pass both CRCs, so sample data that happens to contain the magic is
    never mistaken for a record.
    """
    pos = start
    while True:
        pos = raw.find(RECORD_MAGIC, pos)
        if pos < 0:
            return None
        rec, _ = _parse_at(view, pos)
        if rec is not None:
            return pos
        pos += 1


def scan_segment(data: bytes | bytearray | memoryview, index: int, start: int | None = None) -> SegmentScan:
    """Every valid record of one segment's bytes, and every damaged span between them.

    `start`: scan from that offset on, the header and the records before it
    having been checked by the caller (the integrity walk's compiled fast
    path hands over where it met something it does not handle)."""
    view = memoryview(data)
    total = len(view)
    header_problem = check_header(view, index) if start is None else None
    records: list[RawRecord] = []
    damage: list[Damage] = []
    if start is not None:
        pos = start
    elif header_problem is not None:
        nxt = _next_valid(data, view, 0) if total >= RECORD_HEADER_SIZE else None
        damage.append(Damage(0, nxt if nxt is not None else total, "segment_header", header_problem))
        if nxt is None:
            return SegmentScan(index, total, header_problem, records, damage)
        pos = nxt
    else:
        pos = SEGMENT_HEADER_SIZE
    while pos < total:
        rec, dmg = _parse_at(view, pos)
        if rec is not None:
            records.append(rec)
            pos += rec.size
            continue
        assert dmg is not None
        # A record whose header holds and whose CRC fails is one damaged record
        # when a valid record (or the end of file) follows it directly.
        if dmg.what == "crc":
            if dmg.end == total or _parse_at(view, dmg.end)[0] is not None:
                damage.append(dmg)
                pos = dmg.end
                continue
        nxt = _next_valid(data, view, pos + 1)
        end = nxt if nxt is not None else total
        damage.append(Damage(dmg.offset, end, dmg.what, dmg.detail, dmg.record_no))
        if nxt is None:
            break
        pos = nxt
    return SegmentScan(index, total, header_problem, records, damage)
