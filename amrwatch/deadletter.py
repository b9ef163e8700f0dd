"""A bounded file of refused messages, so hostile or broken input can be
examined afterwards without ever growing the disk without limit."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class DeadLetter:
    def __init__(self, path: Path, max_bytes: int = 5 * 1024 * 1024, keep_bytes_per_frame: int = 512) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep_bytes_per_frame
        self.written = 0
        self.failed = False

    def write(self, reason: str, text: str, frames: list) -> None:
        if self.failed:
            return
        rec = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "reason": reason,
            "error": text[:2000],
            "frames": [base64.b64encode(bytes(getattr(f, "bytes", f))[: self.keep]).decode() for f in frames[:4]],
            "sizes": [len(getattr(f, "bytes", f)) for f in frames[:16]],
        }
        line = (json.dumps(rec) + "\n").encode()
        try:
            # Refused input may carry anything, identifiers included: owner-only, 0700 / 0600.
            for parent in reversed([p for p in self.path.parents if not p.exists()]):
                parent.mkdir(mode=0o700, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.path.with_suffix(self.path.suffix + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "ab") as f:
                f.write(line)
            self.written += 1
        except OSError as err:  # the dead-letter file is a diagnostic, never a reason to stop
            self.failed = True
            log.error("dead-letter file %s unavailable (%s); refused messages are still counted", self.path, err)
