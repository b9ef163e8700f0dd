"""checkpoint.json: the chain head kept outside the log, so cutting the newest
records off the log is detectable (a hash chain alone only proves the
records that remain belong together).

The file is one line of canonical JSON; any byte changed either breaks the
canonical spelling or the CRC-32C, and with a key configured the HMAC
makes a forged file (recomputed CRC) detectable too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path

import crc32c

from amrwatch.archive.bodies import canonical_json
from amrwatch.archive.durable import ArchiveIO

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_FORMAT = "amrwatch-archive-checkpoint/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(ValueError):
    """checkpoint.json is unreadable, not canonical, or fails its CRC/HMAC."""


def key_id(key: bytes) -> str:
    """Names a key without revealing it: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    session_id: str
    record_count: int
    chain_head: str
    closed: bool
    written_at: str
    hmac_key_id: str | None = None
    hmac_sha256: str | None = None

    def _signed_part(self) -> dict:
        part = {"format": CHECKPOINT_FORMAT, "session_id": self.session_id, "record_count": self.record_count,
                "chain_head": self.chain_head, "closed": self.closed, "written_at": self.written_at}
        if self.hmac_key_id is not None:
            part["hmac_key_id"] = self.hmac_key_id
        return part

    def to_bytes(self, key: bytes | None) -> bytes:
        """The file's exact content; signs with `key` when given."""
        part = self._signed_part()
        if key is not None:
            part["hmac_key_id"] = key_id(key)
        payload = canonical_json(part)
        full = dict(part)
        full["crc32c"] = f"{crc32c.crc32c(payload):08x}"
        if key is not None:
            full["hmac_sha256"] = hmac.new(key, payload, hashlib.sha256).hexdigest()
        return canonical_json(full) + b"\n"


def parse_checkpoint(data: bytes) -> Checkpoint:
    """Read checkpoint.json strictly: canonical spelling, known fields, CRC (HMAC is checked separately)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{CHECKPOINT_FILE} is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{CHECKPOINT_FILE} must hold a JSON object")
    if canonical_json(obj) + b"\n" != data:
        raise CheckpointError(f"{CHECKPOINT_FILE} is not in canonical form (sorted keys, no spaces, one line): "
                              "it was edited after it was written")
    required = {"format", "session_id", "record_count", "chain_head", "closed", "written_at", "crc32c"}
    optional = {"hmac_key_id", "hmac_sha256"}
    missing, unknown = required - set(obj), set(obj) - required - optional
    if missing or unknown:
        raise CheckpointError(f"{CHECKPOINT_FILE}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    if ("hmac_key_id" in obj) != ("hmac_sha256" in obj):
        raise CheckpointError(f"{CHECKPOINT_FILE}: hmac_key_id and hmac_sha256 must appear together")
    if obj["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{CHECKPOINT_FILE}: format is {obj['format']!r}; {CHECKPOINT_FORMAT!r} expected")
    part = {k: v for k, v in obj.items() if k not in ("crc32c", "hmac_sha256")}
    if obj["crc32c"] != f"{crc32c.crc32c(canonical_json(part)):08x}":
        raise CheckpointError(f"{CHECKPOINT_FILE}: CRC-32C does not match its content")
    rc = obj["record_count"]
    if not isinstance(rc, int) or isinstance(rc, bool) or rc < 1:
        raise CheckpointError(f"{CHECKPOINT_FILE}: record_count must be a positive integer; got {rc!r}")
    if not isinstance(obj["chain_head"], str) or not _HEX64.match(obj["chain_head"]):
        raise CheckpointError(f"{CHECKPOINT_FILE}: chain_head must be 64 lowercase hex digits; got {obj['chain_head']!r}")
    if not isinstance(obj["closed"], bool):
        raise CheckpointError(f"{CHECKPOINT_FILE}: closed must be true or false; got {obj['closed']!r}")
    return Checkpoint(obj["session_id"], rc, obj["chain_head"], obj["closed"], obj["written_at"],
                      obj.get("hmac_key_id"), obj.get("hmac_sha256"))


def check_hmac(cp: Checkpoint, key: bytes) -> str | None:
    """None when the checkpoint is signed with `key`, else what is wrong."""
    if cp.hmac_sha256 is None:
        return f"{CHECKPOINT_FILE} is not signed but a signing key is configured"
    if cp.hmac_key_id != key_id(key):
        return f"{CHECKPOINT_FILE} is signed with key {cp.hmac_key_id}, not with the configured key {key_id(key)}"
    expected = hmac.new(key, canonical_json(cp._signed_part()), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, cp.hmac_sha256):
        return f"{CHECKPOINT_FILE}: HMAC-SHA256 does not match (forged or altered)"
    return None


def read_checkpoint(session_dir: Path) -> Checkpoint | None:
    """None when there is no checkpoint.json; CheckpointError when there is a bad one."""
    path = Path(session_dir) / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_checkpoint(data)


def write_checkpoint(session_dir: Path, cp: Checkpoint, key: bytes | None, io: ArchiveIO) -> None:
    io.write_atomically(Path(session_dir) / CHECKPOINT_FILE, cp.to_bytes(key))
