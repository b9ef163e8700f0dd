"""FORMAT.md is enough to verify an archive: an independent reader, written from
that page alone (no amrwatch imports), agrees with the writer's output and
notices a change."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from pathlib import Path

import crc32c

from amrwatch.archive.writer import ArchiveWriter
from amrwatch.archive.settings import ArchiveSettings

from .sessions import emg_frames

FORMAT_MD = Path(__file__).resolve().parents[2] / "archive" / "FORMAT.md"


def auditor_verify(session_dir: Path, key: bytes | None = None) -> list[str]:
    """Written from FORMAT.md's tables; returns what is wrong (empty: intact)."""
    errors: list[str] = []
    names = sorted(p.name for p in session_dir.iterdir() if re.fullmatch(r"seg-\d{6}\.amrlog", p.name))
    if [int(n[4:10]) for n in names] != list(range(len(names))):
        errors.append("segment indices have gaps")
    h, expect, kinds, chains = bytes(32), 0, {}, {}
    for name in names:
        data = (session_dir / name).read_bytes()
        magic, version, hlen, idx = struct.unpack_from("<8sHHI", data, 0)
        if (magic, version, hlen, idx) != (b"AMRWSEG1", 1, 16, int(name[4:10])):
            errors.append(f"{name}: bad header")
        pos = 16
        while pos < len(data):
            magic, n, kind, flags, reserved, no = struct.unpack_from("<4sIBBHQ", data, pos)
            (hcrc,) = struct.unpack_from("<I", data, pos + 20)
            if magic != b"\xf0AMR" or crc32c.crc32c(data[pos:pos + 20]) != hcrc or flags or reserved:
                errors.append(f"{name}@{pos}: bad record header")
                break
            end = pos + n + 60
            body, stored = data[pos + 24:pos + 24 + n], data[pos + 24 + n:pos + 56 + n]
            if end > len(data) or crc32c.crc32c(data[pos:end - 4]) != struct.unpack_from("<I", data, end - 4)[0]:
                errors.append(f"{name} record {no}: bad CRC")
                break
            if no != expect:
                errors.append(f"record {no} where {expect} expected")
            if kind == 1 and body[4:] != h:
                errors.append(f"record {no}: segment record does not carry the previous chain value")
            if kind == 5:
                cb = json.loads(body)
                if cb["record_count"] != no or cb["chain_head"] != h.hex():
                    errors.append(f"record {no}: checkpoint record disagrees with the log")
            h = hashlib.sha256(h + bytes([kind]) + body).digest()
            if h != stored:
                errors.append(f"record {no}: chain mismatch")
            kinds[no], chains[no] = kind, h
            expect, pos = no + 1, end
    raw = (session_dir / "checkpoint.json").read_bytes()
    cp = json.loads(raw)
    if json.dumps(cp, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n" != raw:
        errors.append("checkpoint.json not canonical")
    covered = json.dumps({k: v for k, v in cp.items() if k not in ("crc32c", "hmac_sha256")}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=True).encode()
    if f"{crc32c.crc32c(covered):08x}" != cp["crc32c"]:
        errors.append("checkpoint.json CRC")
    if key is not None and (cp.get("hmac_key_id") != hashlib.sha256(key).hexdigest()[:16]
                            or hmac.new(key, covered, hashlib.sha256).hexdigest() != cp.get("hmac_sha256")):
        errors.append("checkpoint.json HMAC")
    last = cp["record_count"] - 1
    if expect < cp["record_count"] or chains.get(last, b"").hex() != cp["chain_head"] or kinds.get(last) != 5:
        errors.append("log does not reach the checkpoint")
    if cp["closed"] and expect != cp["record_count"]:
        errors.append("records after close")
    return errors


def test_an_auditor_tool_written_from_format_md_agrees(tmp_path: Path, key_file: Path):
    st = ArchiveSettings(segment_bytes=4096, hmac_key_file=key_file, checkpoint_every_records=7)
    w = ArchiveWriter(tmp_path / "sessions" / "S1", st)
    for i in range(30):
        w.append_message(emg_frames(i, n_samples=16))
        if i % 4 == 0:
            w.commit()
    w.append_gap("acquirer", "0123abcd", 1, 2, "lost")
    w.close()
    key = st.load_hmac_key()
    assert len(list(w.dir.glob("seg-*"))) > 2
    assert auditor_verify(w.dir, key) == []

    seg = w.dir / "seg-000001.amrlog"
    data = bytearray(seg.read_bytes())
    data[200] ^= 0x20
    seg.write_bytes(data)
    assert auditor_verify(w.dir, key)


def test_the_crc_check_value_in_format_md_is_the_one_used():
    text = FORMAT_MD.read_text()
    assert 'crc32c(b"123456789") = 0xE3069283' in text
    assert crc32c.crc32c(b"123456789") == 0xE3069283
