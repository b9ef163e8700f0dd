"""Line up recomputed events with archived ones and say exactly where they differ.

Each service's events of one type form a gap-free seq stream, so the i-th
recomputed event belongs at seq `base + i`. At that seq the archive holds
the event (compared field by field, envelope aside), or a `gap` record says
it was lost (the recomputed one stands in for it, which is not a
difference), or neither (a difference). Archived events no re-run produced
are differences too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amrwatch.proto.messages import validate_body
from amrwatch.archive.index import Event
from amrwatch.archive.seqset import SeqSet


@dataclass(frozen=True)
class Difference:
    type: str
    what: str
    """Which event: 'stimulus 12 MENT', 'seq 5004' ..."""
    record_no: int | None
    """The archived record (None when the archive lacks the event)."""
    field: str | None
    archived: Any
    recomputed: Any

    def __str__(self) -> str:
        where = f"record {self.record_no}" if self.record_no is not None else "not archived"
        if self.field is None:
            return f"{self.type} {self.what} ({where}): {self.archived} / {self.recomputed}"
        return (f"{self.type} {self.what} ({where}): {self.field} archived {self.archived!r}, "
                f"recomputed {self.recomputed!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "what": self.what, "record_no": self.record_no, "field": self.field,
                "archived": self.archived, "recomputed": self.recomputed}


def normalise(type_: str, body: dict[str, Any]) -> dict[str, Any]:
    """A recomputed body as it would read back from the wire (validated, JSON types)."""
    return validate_body(type_, body).model_dump(mode="json")


def label(type_: str, body: dict[str, Any], seq: int) -> str:
    if type_ == "amr_measurement":
        return f"stimulus {body.get('stimulus_index')} {body.get('channel')}"
    if type_ in ("amr_state", "baseline"):
        return f"{body.get('channel')} seq {seq}"
    if type_ == "decision":
        return f"#{body.get('decision_id')} {body.get('kind')} seq {seq}"
    return f"seq {seq}"


@dataclass
class Alignment:
    compared: int = 0
    stood_in: int = 0
    """Recomputed events whose archived copy a recorded gap says was lost."""


def align(type_: str, archived: Sequence[Event], recomputed: Sequence[dict[str, Any]], lost: SeqSet,
          out: list[Difference], key=None) -> Alignment:
    """Compare one publisher's stream of one type; differences are appended to `out`.

    `key` (for measurements) finds where the streams start when the session's
    first events were lost without a trace; otherwise the first seq archived
    or recorded lost is the first event.
    """
    res = Alignment()
    by_seq: dict[int, Event] = {}
    for e in archived:
        if e.seq in by_seq:
            out.append(Difference(type_, f"seq {e.seq}", e.record_no, None, "archived twice",
                                  f"first copy is record {by_seq[e.seq].record_no}"))
            continue
        by_seq[e.seq] = e
    norm = [normalise(type_, b) for b in recomputed]
    firsts = [s for s in (min(by_seq, default=None), lost.min) if s is not None]
    base = min(firsts) if firsts else 0
    if key is not None and by_seq:
        where = {key(b): i for i, b in enumerate(norm)}
        for seq in sorted(by_seq):
            i = where.get(key(by_seq[seq].body))
            if i is not None:
                base = seq - i
                break
    for i, body in enumerate(norm):
        seq = base + i
        e = by_seq.pop(seq, None)
        if e is None:
            if seq in lost:
                res.stood_in += 1
            else:
                out.append(Difference(type_, label(type_, body, seq), None, None, "missing from the archive",
                                      "recomputed"))
            continue
        res.compared += 1
        arch = e.body
        for f in sorted(set(arch) | set(body)):
            if arch.get(f, "<absent>") != body.get(f, "<absent>"):
                out.append(Difference(type_, label(type_, arch, seq), e.record_no, f, arch.get(f, "<absent>"),
                                      body.get(f, "<absent>")))
    for seq, e in sorted(by_seq.items()):
        out.append(Difference(type_, label(type_, e.body, seq), e.record_no, None, "archived",
                              "not produced by the re-run"))
    return res
