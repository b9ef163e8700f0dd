"""The archive's tunable numbers, each with its default and allowed range.

A bad value fails at construction with a message naming the field, the
allowed range and the value given, so a typo in a flag or environment
variable never silently weakens durability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from amrwatch.ranges import within as _within

MIB = 1024 * 1024


class ArchiveSettings(BaseModel):
    """How the recorder's append-only log is cut, committed and checkpointed."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: A segment file is closed and a new one started once it would grow past this.
    segment_bytes: Annotated[int, _within(4096, 2**31, "bytes")] = 64 * MIB
    #: Group commit: buffered records are written and fsynced at least this often.
    commit_interval_s: Annotated[float, _within(0.001, 1.0, "s")] = 0.1
    #: ... or as soon as this many bytes are buffered.
    commit_bytes: Annotated[int, _within(4096, 1024 * MIB, "bytes")] = 8 * MIB
    #: A checkpoint (log record + checkpoint.json) is taken at least this often ...
    checkpoint_interval_s: Annotated[float, _within(0.1, 3600.0, "s")] = 10.0
    #: ... and after at most this many records.
    checkpoint_every_records: Annotated[int, _within(1, 10**9, "records")] = 100_000
    #: Largest record body accepted (an emg_frame can be 64 MiB of samples).
    max_record_bytes: Annotated[int, _within(1024, 1024 * MIB, "bytes")] = 128 * MIB
    #: If set, checkpoint.json carries an HMAC-SHA256 made with the key in this file.
    hmac_key_file: Path | None = None

    def load_hmac_key(self) -> bytes | None:
        """The signing key, or None. A configured but unusable key file is an error,
        never a silent fallback to unsigned checkpoints."""
        if self.hmac_key_file is None:
            return None
        return read_hmac_key(self.hmac_key_file)


#: Shortest key accepted: 128 bits.
MIN_KEY_BYTES = 16


def read_hmac_key(path: Path) -> bytes:
    try:
        key = Path(path).read_bytes().strip()
    except OSError as err:
        raise ValueError(f"hmac_key_file: cannot read {str(path)!r} ({err.strerror}); "
                         "point it at a readable file holding at least 16 random bytes") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"hmac_key_file: the key must be at least {MIN_KEY_BYTES} bytes; "
                         f"{str(path)!r} holds {len(key)}")
    return key
