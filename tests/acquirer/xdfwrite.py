"""A minimal XDF writer for the tests (the format of Lab Streaming Layer's LabRecorder).

No Python package writes XDF; this follows the specification (github.com/sccn/xdf, "Specifications"):
the magic `XDF:`, then chunks [length-of-length byte][length][tag u16][content], tags 1 FileHeader,
2 StreamHeader, 3 Samples, 4 ClockOffset, 6 StreamFooter. pyxdf reads what it writes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1]) + struct.pack("<B", n)
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


def _header_xml(name: str, type_: str, labels: list[str], units: list[str], srate: float, fmt: str) -> bytes:
    chans = "".join(f"<channel><label>{escape(lbl)}</label><unit>{escape(u)}</unit><type>EMG</type></channel>"
                    for lbl, u in zip(labels, units))
    return (f"<?xml version=\"1.0\"?><info><name>{escape(name)}</name><type>{type_}</type>"
            f"<channel_count>{len(labels)}</channel_count><nominal_srate>{srate}</nominal_srate>"
            f"<channel_format>{fmt}</channel_format><source_id>{escape(name)}-src</source_id>"
            f"<created_at>1000.0</created_at><desc><channels>{chans}</channels></desc></info>").encode()


def write_xdf(path: Path, data: np.ndarray, labels: list[str], fs: float, markers: list[tuple[float, str]],
              *, t0: float = 1000.0, chunk: int = 100, units: list[str] | None = None,
              stamp_every: bool = False) -> Path:
    """`data` (channels, samples) in µV as stream 1 ('EMG', float32, every sample stamped with its time
    t0 + i/fs); `markers` (seconds from the first sample, text) as stream 2 ('EMG-markers', string)."""
    units = units or ["microvolts"] * len(labels)
    out = bytearray(b"XDF:")
    out += _chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version></info>")
    out += _chunk(2, struct.pack("<I", 1) + _header_xml("EMG", "EMG", labels, units, fs, "float32"))
    out += _chunk(2, struct.pack("<I", 2) + _header_xml("EMG-markers", "Markers", ["marker"], [""], 0, "string"))
    n = data.shape[1]
    x = data.astype("<f4")
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        body = bytearray(struct.pack("<I", 1) + _varlen(stop - start))
        for i in range(start, stop):  # as LabRecorder does: the chunk's first sample stamped, the rest deduced
            stamp = b"\x08" + struct.pack("<d", t0 + i / fs) if i == start or stamp_every else b"\x00"
            body += stamp + x[:, i].tobytes()
        out += _chunk(3, bytes(body))
    for t, text in markers:
        raw = text.encode()
        body = struct.pack("<I", 2) + _varlen(1) + b"\x08" + struct.pack("<d", t0 + t) + _varlen(len(raw)) + raw
        out += _chunk(3, body)
    for sid in (1, 2):
        out += _chunk(4, struct.pack("<I", sid) + struct.pack("<dd", t0, 0.0))
        out += _chunk(4, struct.pack("<I", sid) + struct.pack("<dd", t0 + n / fs, 0.0))
    for sid, count in ((1, n), (2, len(markers))):
        footer = (f"<?xml version=\"1.0\"?><info><first_timestamp>{t0}</first_timestamp><last_timestamp>"
                  f"{t0 + n / fs}</last_timestamp><sample_count>{count}</sample_count></info>").encode()
        out += _chunk(6, struct.pack("<I", sid) + footer)
    Path(path).write_bytes(bytes(out))
    return Path(path)
