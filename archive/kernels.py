"""The archive's per-record loops, compiled (numba): framing, gathering header bytes and samples.

A 2-hour session is 1.4 million records. Every reader needs to know where
each record is (the index, the integrity check) and every frame's parts, and
a Python step per record cost seconds before any data was looked at (issue
#18). These loops do only byte arithmetic — no CRC, no hash, no JSON — so
what they find is exactly what the Python code they replace found, and
every check stays where it was: the integrity walk still computes both
CRCs and the SHA-256 chain of every record it is handed, the index still
decodes every frame header through the contract's compiled checker.

Kernels are compiled for one signature each at import, cached on disk where
possible (like the analyzer's, services/analyzer/jit.py: the archive may
not import a service); import this module lazily, only where a reader runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba.core import cgutils
from numba.extending import intrinsic

from amrwatch.archive.segment import RECORD_HEADER_SIZE, RECORD_MAGIC, RECORD_OVERHEAD

_M0, _M1, _M2, _M3 = RECORD_MAGIC
_HDR = RECORD_HEADER_SIZE
_OVER = RECORD_OVERHEAD


#: The bytes of a segment: read-only (a memory map, or a read buffer the caller marks read-only).
_U8 = numba.types.Array(numba.types.uint8, 1, "C", readonly=True)
_I64 = numba.types.Array(numba.types.int64, 1, "C")
_i64 = numba.types.int64


def _compiled(signature: Any) -> Callable[[Callable[..., Any]], Any]:
    def decorate(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(signature, cache=True, nogil=True)(fn)
        except RuntimeError:  # no cache location (read-only file system): compile in memory
            return numba.njit(signature, cache=False, nogil=True)(fn)

    return decorate


@intrinsic
def _memcpy(typingctx, dst, dst_at, src, src_at, n):  # pragma: no cover - compiled
    """`n` bytes from `src[src_at:]` to `dst[dst_at:]` as one `llvm.memcpy` (numba's slice assignment
    copies a byte at a time: a third of the speed on the 400-byte runs of a frame's channel). Unchecked:
    `_copy` checks the bounds."""
    sig = numba.types.void(dst, numba.types.int64, src, numba.types.int64, numba.types.int64)

    def codegen(context, builder, signature, args):
        d, d_at, s_, s_at, k = args
        d_ptr = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=d).data
        s_ptr = cgutils.create_struct_proxy(signature.args[2])(context, builder, value=s_).data
        cgutils.raw_memcpy(builder, builder.gep(d_ptr, [d_at]), builder.gep(s_ptr, [s_at]), k, 1)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always")
def _copy(dst, dst_at, src, src_at, n):  # pragma: no cover - compiled
    if n < 0 or dst_at < 0 or src_at < 0 or dst_at + n > dst.shape[0] or src_at + n > src.shape[0]:
        raise IndexError("copy out of bounds")
    _memcpy(dst, dst_at, src, src_at, n)


@_compiled(_i64(_U8, _i64))
def _u32(u8, at):  # pragma: no cover - compiled
    return (np.int64(u8[at]) | (np.int64(u8[at + 1]) << 8) | (np.int64(u8[at + 2]) << 16)
            | (np.int64(u8[at + 3]) << 24))


@_compiled(numba.types.Array(numba.types.boolean, 1, "C")(_U8, _I64, _I64, _U8))
def starts_with(u8, start, length, prefix):  # pragma: no cover - compiled
    """Whether each span (`start`, `length`) begins with the bytes `prefix` (a message's topic frame)."""
    n = start.shape[0]
    m = prefix.shape[0]
    out = np.zeros(n, np.bool_)
    for i in range(n):
        if length[i] < m:
            continue
        a = start[i]
        ok = True
        for j in range(m):
            if u8[a + j] != prefix[j]:
                ok = False
                break
        out[i] = ok
    return out


@_compiled(_I64(_U8, _I64))
def u32_at(u8, at):  # pragma: no cover - compiled
    """The little-endian uint32 at each offset in `at` (the CRCs a record states)."""
    out = np.empty(at.shape[0], np.int64)
    for i in range(at.shape[0]):
        out[i] = _u32(u8, at[i])
    return out


@_compiled(numba.types.Tuple((_I64, _I64, _I64, _I64, _I64, _i64))(_U8, _i64))
def frame_records(u8, start):  # pragma: no cover - compiled
    """Records framed from `start` on: (offset, body length, kind, flags | reserved, record number),
    and where framing stopped (the file's length if it did not).

    Framing is what the index has always trusted: a whole header's bytes, the
    magic, and a record that fits in the file. A record that does not frame
    stops the walk; the callers decide what the bytes from there on are."""
    total = u8.shape[0]
    cap = max(0, (total - start) // _OVER + 1)
    off = np.empty(cap, np.int64)
    blen = np.empty(cap, np.int64)
    kind = np.empty(cap, np.int64)
    bits = np.empty(cap, np.int64)
    no = np.empty(cap, np.int64)
    n = 0
    pos = start
    while pos < total:
        if total - pos < _HDR:
            break
        if u8[pos] != _M0 or u8[pos + 1] != _M1 or u8[pos + 2] != _M2 or u8[pos + 3] != _M3:
            break
        b = _u32(u8, pos + 4)
        end = pos + _OVER + b
        if end > total:
            break
        off[n] = pos
        blen[n] = b
        kind[n] = u8[pos + 8]
        bits[n] = np.int64(u8[pos + 9]) | np.int64(u8[pos + 10]) | np.int64(u8[pos + 11])
        no[n] = _u32(u8, pos + 12) | (_u32(u8, pos + 16) << 32)
        n += 1
        pos = end
    return off[:n], blen[:n], kind[:n], bits[:n], no[:n], pos


@_compiled(numba.types.Tuple((_I64,) * 7)(_U8, _I64, _I64))
def message_parts(u8, body, blen):  # pragma: no cover - compiled
    """Each message body's frames (4-byte length, then the bytes): how many, or -1 if the lengths do not
    add up to the body exactly (bodies.check_message says why); and where the first three are
    (start, length; -1 where there are fewer)."""
    n = body.shape[0]
    parts = np.empty(n, np.int64)
    t0 = np.full(n, -1, np.int64)
    tl = np.full(n, -1, np.int64)
    h0 = np.full(n, -1, np.int64)
    hl = np.full(n, -1, np.int64)
    p0 = np.full(n, -1, np.int64)
    pl = np.full(n, -1, np.int64)
    for i in range(n):
        pos = body[i]
        end = pos + blen[i]
        k = 0
        ok = True
        while pos < end:
            if end - pos < 4:
                ok = False
                break
            ln = _u32(u8, pos)
            if k == 0:
                t0[i], tl[i] = pos + 4, ln
            elif k == 1:
                h0[i], hl[i] = pos + 4, ln
            elif k == 2:
                p0[i], pl[i] = pos + 4, ln
            pos += 4 + ln
            k += 1
        parts[i] = k if ok and pos == end and k > 0 else -1
    return parts, t0, tl, h0, hl, p0, pl


@_compiled(numba.types.Array(numba.types.uint8, 1, "C")(_U8, _I64, _I64))
def json_array(u8, start, length):  # pragma: no cover - compiled
    """`[` + the spans joined by `,` + `]`: the frame headers of a segment as one JSON array, so the
    compiled checker decodes them in one call (a slice and a join per header cost more than the decoding)."""
    n = start.shape[0]
    out = np.empty(length.sum() + max(n - 1, 0) + 2, np.uint8)
    out[0] = 91  # [
    w = 1
    for i in range(n):
        if i:
            out[w] = 44  # ,
            w += 1
        a = start[i]
        ln = length[i]
        _copy(out, w, u8, a, ln)
        w += ln
    out[w] = 93  # ]
    return out


@_compiled(numba.types.Array(numba.types.uint8, 2, "C")(_U8, _I64, _i64, _i64))
def channel_major(u8, start, n_channels, n_samples):  # pragma: no cover - compiled
    """Frames of `n_channels` x `n_samples` float32 (channel-major payloads at the offsets in `start`) as
    one channel-major block, as bytes: row c holds channel c of every frame in turn. One copy, straight
    from the segment's bytes (gathering then transposing copied the block twice)."""
    n = start.shape[0]
    run = 4 * n_samples
    row = n * run
    out = np.empty(n_channels * row, np.uint8)
    for i in range(n):
        a = start[i]
        for c in range(n_channels):
            _copy(out, c * row + i * run, u8, a + c * run, run)
    return out.reshape(n_channels, row)


@_compiled(_I64(_I64, _I64, _i64, _i64))
def block_ends(lo, hi, block, end_sample):  # pragma: no cover - compiled
    """Where each block of a run of frames ends (exclusive), splitting as ArchivedSession.messages
    documents: contiguous frames only, at most `block` samples, and a block closes at the frame holding
    the `end` stage marker (`end_sample` < 0: none)."""
    n = lo.shape[0]
    ends = np.empty(n, np.int64)
    k = 0
    first = 0
    acc = 0
    for i in range(n):
        mergeable = (i > first and lo[i] == hi[i - 1] and acc + hi[i] - lo[i] <= block
                     and (end_sample < 0 or hi[i] < end_sample))
        if not mergeable and i > first:
            ends[k] = i
            k += 1
            first = i
            acc = 0
        acc += hi[i] - lo[i]
        if end_sample >= 0 and hi[i] >= end_sample:
            ends[k] = i + 1
            k += 1
            first = i + 1
            acc = 0
    if first < n:
        ends[k] = n
        k += 1
    return ends[:k]
