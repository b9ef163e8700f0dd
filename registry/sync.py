"""`amrwatch sync`: a cart's closed sessions pushed to the central registry and archive root.

Why this shape: the cart must record with the network down, so nothing in the
recorder waits on the centre. Sync is store and forward: each run pushes what
is closed and not yet pushed (or changed since: a later outcome, a new
summary), in an order that makes every step safe to repeat after a crash or a
`kill -9`:

1. the archive is copied into `ROOT/.incoming/`, fsynced, verified there with
   the same integrity analysis `amrwatch verify` uses (record CRCs, the hash
   chain, the checkpoint), and only then renamed into `ROOT/sessions/<id>`;
   a copy that fails is removed and the session is refused, naming the problem;
2. in ONE central transaction: the session row (with the cart and site), its
   summaries, outcomes and the cart's audit rows, each keyed by (cart, id on
   the cart) so a second push inserts nothing; the presence log's closed
   intervals and the follow-up links (matched by their content: the link is
   pushed with the second of its two sessions); and the archive receipt that
   says the copy was verified;
3. the cart notes what it pushed (sync_state) so the next run skips it.

A kill between any two steps leaves either nothing (the transaction rolled
back, the staging copy is thrown away) or a step the next run recognises.

Collisions: session ids (64 random bits) and patient tokens (96 random bits)
are unique by construction; a clash is still checked and refused, never merged.
An outcome entered centrally for the same follow-up point as the cart's is a
conflict unless both say the same; the error names both and the `--resolve`
that settles it, and either way both rows stay in the history.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from amrwatch.archive.checkpoint import CheckpointError, read_checkpoint
from amrwatch.archive.integrity import analyse
from amrwatch.archive.writer import session_path
from amrwatch.registry.store import (
    FollowupRow,
    OutcomeRow,
    Registry,
    RegistryError,
    _outcome,
    utc_now_iso,
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,31}$")
SYNC_LOCK = "sync.lock"
_RESOLVE = re.compile(r"^([A-Za-z0-9_\-]{1,64}):(1w|3m|6m|1y)=(central|cart)$")


class SyncError(RuntimeError):
    """Sync cannot start (configuration, another sync running)."""


class SessionRefused(RuntimeError):
    """One session is not pushed this run; the text says why and what to do."""


@dataclass
class SyncReport:
    pushed: list[str] = field(default_factory=list)
    unchanged: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    waiting_open: int = 0
    corrupt: int = 0
    archive_bytes: int = 0
    archives_copied: int = 0


def check_name(value: str | None, what: str, env: str) -> str:
    if not value or not _NAME.match(value):
        raise SyncError(f"{what} must be 1-32 characters (a letter first, then A-Z a-z 0-9 _ . -), given by --{what} "
                        f"or ${env}; got {value!r}")
    return value


def parse_resolve(items: list[str] | None) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for item in items or []:
        m = _RESOLVE.match(item)
        if not m:
            raise SyncError(f"--resolve must be SESSION:TIMEPOINT=central|cart (e.g. 4f1c2a9e0b7d3e11:3m=central); "
                            f"got {item!r}")
        out[(m.group(1), m.group(2))] = m.group(3)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_tree(src: Path, dst: Path) -> int:
    """Copy the session's files (flat directory) and fsync them; the bytes copied."""
    dst.mkdir(parents=True, mode=0o700)
    total = 0
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.is_symlink():
            continue
        target = dst / f.name
        with open(f, "rb") as fin, open(target, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
            total += fout.tell()
    _fsync_dir(dst)
    return total


def _problems_text(problems) -> str:
    shown = "; ".join(f"{p.file}: {p.what}: {p.detail}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return shown + more


class Syncer:
    def __init__(self, local: Registry, data_dir: Path, central: Registry, archive_root: Path, *, cart: str,
                 site: str, resolve: dict[tuple[str, str], str] | None = None) -> None:
        self.local, self.central = local, central
        self.data_dir, self.root = Path(data_dir), Path(archive_root)
        self.cart = check_name(cart, "cart", "AMRWATCH_CART")
        self.site = check_name(site, "site", "AMRWATCH_SITE")
        self.actor = f"sync.{self.cart}"
        self.resolve = resolve or {}
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ run

    def run(self, progress=None) -> SyncReport:
        self._lock()
        try:
            (self.root / "sessions").mkdir(parents=True, exist_ok=True, mode=0o700)
            incoming = self.root / ".incoming"
            incoming.mkdir(exist_ok=True, mode=0o700)
            for stale in incoming.glob(f"{self.cart}.*.tmp"):  # a copy a killed run left half-done
                shutil.rmtree(stale, ignore_errors=True)
            report = SyncReport()
            state = {r["session_id"]: r for r in self.local._q("SELECT * FROM sync_state")}
            for s in self.local.list():
                if s.status != "closed":  # recording: later; corrupt: never (its archive failed verification)
                    report.waiting_open += s.status == "recording"
                    report.corrupt += s.status == "corrupt"
                    continue
                fp = self._fingerprint(s)
                st = state.get(s.session_id)
                if st is not None and st["fingerprint"] == fp and st["archive_verified"] and not st["last_error"]:
                    report.unchanged += 1
                    continue
                try:
                    self._push(s, fp, report)
                    report.pushed.append(s.session_id)
                    self._note(s.session_id, fp, True, None)
                except SessionRefused as why:
                    report.refused[s.session_id] = str(why)
                    self._note(s.session_id, fp, bool(st and st["archive_verified"]), str(why))
                if progress:
                    progress(s.session_id)
            return report
        finally:
            self._unlock()

    def _lock(self) -> None:
        path = self.data_dir / SYNC_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise SyncError(f"another `amrwatch sync` ({holder or 'pid unknown'}) is running on {self.data_dir}; "
                            "it pushes the same sessions — let it finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _fingerprint(self, s) -> str:
        outs = [o.id for o in self.local.outcomes(s.session_id, include_superseded=True)]
        sums = [r.id for r in self.local.summary_history(s.session_id)]
        presence = [(p.id, p.from_at, p.until_at) for p in self.local.presence(s.session_id)]
        links = [f.id for f in self._links(s.session_id)]
        blob = json.dumps([s.as_dict(), outs, sums, presence, links], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _note(self, sid: str, fp: str, verified: bool, error: str | None) -> None:
        with self.local._tx():
            params = {"s": sid, "f": fp, "v": int(verified), "at": utc_now_iso(), "e": error}
            if self.local._exec("UPDATE sync_state SET fingerprint = :f, archive_verified = :v, synced_at = :at, "
                                "last_error = :e WHERE session_id = :s", params).rowcount == 0:
                self.local._exec("INSERT INTO sync_state (session_id, fingerprint, archive_verified, synced_at, "
                                 "last_error) VALUES (:s, :f, :v, :at, :e)", params)

    # ---------------------------------------------------------------- steps

    def _push(self, s, fp: str, report: SyncReport) -> None:
        sid = s.session_id
        existing = self.central.find(sid)
        if existing is not None and existing.cart != self.cart:
            raise SessionRefused(
                f"session id {sid} is already in the central registry from cart {existing.cart} (site "
                f"{existing.site}); session ids are random and should never repeat — check that the two carts do not "
                "share a data directory copy, and tell the registry's administrator")
        if s.patient_token is not None:
            other = self.central._one("SELECT cart, site FROM sessions WHERE patient_token = :t AND cart <> :c",
                                      {"t": s.patient_token, "c": self.cart})
            if other is not None:
                raise SessionRefused(
                    f"session {sid}'s patient token is already used by cart {other['cart']} (site {other['site']}); "
                    "tokens are random per cart and must not repeat — a pseudonym map was copied between carts? "
                    "Tell the registry's administrator; nothing was pushed")
        analysis = self._archive(sid, report)
        self._rows(s, analysis)

    def _archive(self, sid: str, report: SyncReport):
        """The verified destination copy's analysis (copying it first unless a verified copy is there)."""
        src = session_path(self.data_dir, sid)
        dest = self.root / "sessions" / sid
        if not src.is_dir():
            raise SessionRefused(f"session {sid} is closed in the registry but has no archive at {src}; "
                                 "nothing was pushed (`amrwatch verify` tells more)")
        if dest.is_dir():  # a run killed after the rename, before its commit; or someone else's copy
            a = analyse(dest)
            try:
                mine = read_checkpoint(src)
            except CheckpointError:
                mine = None
            if not a.corruption and a.closed and mine is not None and mine.record_count == a.record_count \
                    and mine.chain_head == a.chain_head.hex():
                return a
            aside = self.root / ".damaged" / f"{sid}.{utc_now_iso().replace(':', '')}"
            aside.parent.mkdir(exist_ok=True, mode=0o700)
            os.rename(dest, aside)  # a damaged central copy is kept for inspection, never trusted
        holder = self.root / ".incoming" / f"{self.cart}.{sid}.tmp"
        stage = holder / sid  # verification checks the directory's name against the session's
        shutil.rmtree(holder, ignore_errors=True)
        holder.mkdir(mode=0o700)
        try:
            report.archive_bytes += _copy_tree(src, stage)
        except OSError as err:
            shutil.rmtree(holder, ignore_errors=True)
            raise SessionRefused(f"session {sid}: copying the archive to {self.root} failed: "
                                 f"{err.strerror or err}; it stays on the cart and the next sync retries") from None
        a = analyse(stage)
        if a.corruption or not a.closed:
            shutil.rmtree(holder, ignore_errors=True)
            what = _problems_text(a.corruption) if a.corruption else "the archive has no close record"
            raise SessionRefused(
                f"session {sid}: the archive copy failed verification at the destination ({what}); it was not "
                f"accepted. Run `amrwatch verify {sid}` on this cart: if the cart's archive is damaged, mark the "
                "session corrupt; if it verifies, the copy was damaged in transit and the next sync retries")
        os.rename(stage, dest)
        _fsync_dir(dest.parent)
        holder.rmdir()
        report.archives_copied += 1
        return a

    def _rows(self, s, analysis) -> None:
        sid = s.session_id
        try:
            with self.central._tx():
                self._session_row(s)
                self._summaries(sid)
                self._outcomes(sid)
                self._presence(sid)
                self._followups(sid)
                self._audit_rows(sid)
                if self.central._one("SELECT 1 AS x FROM archive_receipts WHERE session_id = :s", {"s": sid}) is None:
                    self.central._exec(
                        "INSERT INTO archive_receipts (session_id, cart, site, path, record_count, chain_head, bytes, "
                        "verified_at) VALUES (:s, :c, :site, :p, :n, :h, :b, :at)",
                        {"s": sid, "c": self.cart, "site": self.site, "p": f"sessions/{sid}",
                         "n": analysis.record_count, "h": analysis.chain_head.hex(),
                         "b": sum(p.stat().st_size for p in (self.root / "sessions" / sid).iterdir()),
                         "at": utc_now_iso()})
                    self.central._audit(self.actor, "archive_verified", "archive_receipts", sid, None,
                                        {"records": analysis.record_count, "chain_head": analysis.chain_head.hex()})
        except RegistryError as err:
            raise SessionRefused(f"session {sid}: {err}") from None

    def _session_row(self, s) -> None:
        sid = s.session_id
        row = s.as_dict()
        if s.replay_of is not None and self.central.find(s.replay_of) is None:
            raise SessionRefused(f"session {sid} replays {s.replay_of}, which is not in the central registry yet; "
                                 "it is pushed once that session is")
        current = self.central._row(sid, lock=True)
        cols = ["session_id", "started_at", "ended_at", "source", "scenario", "replay_of", "montage", "settings",
                "model_sha256", "model_synthetic", "patient_token", "status", "status_reason"]
        values = {c: row[c] for c in cols}
        values["montage"] = json.dumps(values["montage"], sort_keys=True, separators=(",", ":"))
        values["settings"] = json.dumps(values["settings"], sort_keys=True, separators=(",", ":"))
        values["model_synthetic"] = None if s.model_synthetic is None else int(s.model_synthetic)
        if current is None:
            self.central._exec(f"INSERT INTO sessions ({', '.join(cols)}, cart, site) VALUES "
                               f"({', '.join(':' + c for c in cols)}, :cart, :site)",
                               {**values, "cart": self.cart, "site": self.site})
            self.central._audit(self.actor, "sync_create", "sessions", sid, None,
                                {**row, "cart": self.cart, "site": self.site})
            return
        mutable = [c for c in cols if c not in ("session_id", "started_at", "source", "replay_of")]
        changed = {c: values[c] for c in mutable if current[c] != values[c]}
        if changed:
            sets = ", ".join(f"{c} = :{c}" for c in changed)
            self.central._exec(f"UPDATE sessions SET {sets} WHERE session_id = :sid", {**changed, "sid": sid})
            self.central._audit(self.actor, "sync_update", "sessions", sid, {c: current[c] for c in changed}, changed)

    def _central_id(self, table: str, origin_id: int | None) -> int | None:
        if origin_id is None:
            return None
        r = self.central._one(f"SELECT id FROM {table} WHERE origin = :o AND origin_id = :i",
                              {"o": self.cart, "i": origin_id})
        return None if r is None else r["id"]

    def _summaries(self, sid: str) -> None:
        for r in self.local.summary_history(sid):
            if self._central_id("session_summaries", r.id) is not None:
                continue
            new_id = self.central._insert_returning_id(
                "INSERT INTO session_summaries (session_id, summary, recorded_at, actor, supersedes, origin, origin_id) "
                "VALUES (:s, :summary, :at, :actor, :sup, :o, :oid) RETURNING id",
                {"s": sid, "summary": json.dumps(r.summary, sort_keys=True, separators=(",", ":")),
                 "at": r.recorded_at, "actor": r.actor, "sup": self._central_id("session_summaries", r.supersedes),
                 "o": self.cart, "oid": r.id})
            self.central._audit(self.actor, "sync_create", "session_summaries", sid, None,
                                {"id": new_id, "origin": self.cart, "origin_id": r.id})

    def _outcomes(self, sid: str) -> None:
        for r in self.local.outcomes(sid, include_superseded=True):
            if self._central_id("outcomes", r.id) is not None:
                continue
            target = self._central_id("outcomes", r.supersedes)
            cur = self.central._one(
                "SELECT * FROM outcomes o WHERE session_id = :s AND timepoint = :t AND NOT EXISTS "
                "(SELECT 1 FROM outcomes n WHERE n.supersedes = o.id)", {"s": sid, "t": r.timepoint})
            if cur is None or cur["id"] == target:
                self._insert_outcome(r, target, "sync_create" if target is None else "sync_correct")
                continue
            central = _outcome_values(cur)
            decision = self.resolve.get((sid, r.timepoint))
            if central == _outcome_values(r):
                self._insert_outcome(r, cur["id"], "sync_same_as_central")
            elif decision == "cart":
                self._insert_outcome(r, cur["id"], "sync_resolved_cart")
            elif decision == "central":
                cart_id = self._insert_outcome(r, cur["id"], "sync_resolved_central")
                kept = replace(_outcome(cur), supersedes=None, origin=None, origin_id=None)
                self._insert_outcome(kept, cart_id, "sync_kept_central", origin=False)
            else:
                raise SessionRefused(
                    f"conflict: the {r.timepoint} outcome entered on cart {self.cart} (grade {r.cohen_grade}, "
                    f"{r.outcome_class or 'no class'}, by {r.actor}) differs from outcome {cur['id']} entered in the "
                    f"central registry (grade {cur['cohen_grade']}, {cur['outcome_class'] or 'no class'}, by "
                    f"{cur['actor']}); nothing of this session's rows was pushed. Decide which is right and run "
                    f"`amrwatch sync --resolve {sid}:{r.timepoint}=central` (keep the central one) or "
                    f"`--resolve {sid}:{r.timepoint}=cart` (keep the cart's); both stay in the history")

    def _links(self, sid: str) -> list[FollowupRow]:
        """The cart's follow-up links in which the session is the operation or the recording."""
        return [FollowupRow(**dict(r)) for r in self.local._q(
            "SELECT * FROM followup_recordings WHERE operation_session_id = :s OR recording_session_id = :s "
            "ORDER BY id", {"s": sid})]

    def _presence(self, sid: str) -> None:
        """The presence log's closed intervals (a session is pushed once closed, and closing it closes every
        interval). Rows carry no cart id, so an interval is the same when reader, start, end and closer are."""
        for p in self.local.presence(sid):
            if p.until_at is None:
                continue
            cond = ["session_id = :s", "reader = :r", "until_at = :u", "closed_by = :c"]
            args = {"s": sid, "r": p.reader, "u": p.until_at, "c": p.closed_by}
            if p.from_at is None:
                cond.append("from_at IS NULL")
            else:
                cond.append("from_at = :f")
                args["f"] = p.from_at
            if self.central._one(f"SELECT id FROM reader_presence WHERE {' AND '.join(cond)}", args) is not None:
                continue
            new_id = self.central._insert_returning_id(
                "INSERT INTO reader_presence (session_id, reader, from_at, until_at, closed_by) "
                "VALUES (:s, :r, :f, :u, :c) RETURNING id", {**args, "f": p.from_at})
            self.central._audit(self.actor, "sync_create", "reader_presence", str(new_id), None,
                                {**asdict(p), "id": new_id, "cart": self.cart})

    def _followups(self, sid: str) -> None:
        """Follow-up links touching the session, once both of their sessions are central (the second session's
        push carries the link: its fingerprint includes it). A different link already there for the same
        operation and time point, or for the same recording, is refused with both named."""
        for f in self._links(sid):
            other = f.recording_session_id if f.operation_session_id == sid else f.operation_session_id
            if self.central.find(other) is None:
                continue
            taken = self.central._q(
                "SELECT * FROM followup_recordings WHERE (operation_session_id = :o AND timepoint = :t) OR "
                "recording_session_id = :r", {"o": f.operation_session_id, "t": f.timepoint,
                                               "r": f.recording_session_id})
            same = [t for t in taken if (t["operation_session_id"], t["recording_session_id"], t["timepoint"])
                    == (f.operation_session_id, f.recording_session_id, f.timepoint)]
            if same:
                continue
            if taken:
                t = taken[0]
                raise SessionRefused(
                    f"conflict: cart {self.cart} links recording {f.recording_session_id} as the {f.timepoint} "
                    f"follow-up of operation {f.operation_session_id} (by {f.actor}), but the central registry "
                    f"has link {t['id']}: recording {t['recording_session_id']} as the {t['timepoint']} follow-up "
                    f"of {t['operation_session_id']} (by {t['actor']}); links are append-only — decide with the "
                    "registry's administrator which is right")
            new_id = self.central._insert_returning_id(
                "INSERT INTO followup_recordings (operation_session_id, recording_session_id, timepoint, linked_at, "
                "actor) VALUES (:o, :r, :t, :at, :a) RETURNING id",
                {"o": f.operation_session_id, "r": f.recording_session_id, "t": f.timepoint, "at": f.linked_at,
                 "a": f.actor})
            self.central._audit(self.actor, "sync_create", "followup_recordings", str(new_id), None,
                                {**asdict(f), "id": new_id, "cart": self.cart})

    def _insert_outcome(self, r: OutcomeRow, supersedes: int | None, action: str, origin: bool = True) -> int:
        new_id = self.central._insert_returning_id(
            "INSERT INTO outcomes (session_id, timepoint, cohen_grade, outcome_class, relief_date, complications, "
            "recorded_at, actor, supersedes, origin, origin_id) VALUES (:s, :t, :g, :c, :r, :comp, :at, :actor, :sup, "
            ":o, :oid) RETURNING id",
            {"s": r.session_id, "t": r.timepoint, "g": r.cohen_grade, "c": r.outcome_class, "r": r.relief_date,
             "comp": json.dumps(r.complications, sort_keys=True, separators=(",", ":")),
             "at": r.recorded_at if origin else utc_now_iso(), "actor": r.actor, "sup": supersedes,
             "o": self.cart if origin else None, "oid": r.id if origin else None})
        self.central._audit(self.actor, action, "outcomes", str(new_id), None,
                            {**asdict(r), "id": new_id, "supersedes": supersedes,
                             "origin": self.cart if origin else None, "origin_id": r.id if origin else None},
                            history_key=str(supersedes) if supersedes is not None else None)
        return new_id

    def _audit_rows(self, sid: str) -> None:
        """The cart's own audit rows about this session, copied once (keyed by the cart's audit id)."""
        outcome_ids = [str(o.id) for o in self.local.outcomes(sid, include_superseded=True)]
        rows = [a for a in self.local.audit_trail()
                if (a.table_name in ("sessions", "session_summaries") and a.row_key == sid)
                or (a.table_name == "outcomes" and a.row_key in outcome_ids)]
        have = {r["origin_id"] for r in self.central._q(
            "SELECT origin_id FROM audit WHERE origin = :o AND origin_id >= :lo",
            {"o": self.cart, "lo": min((a.id for a in rows), default=0)})}
        for a in rows:
            if a.id in have:
                continue
            self.central._exec(
                "INSERT INTO audit (at, actor, action, table_name, row_key, old, new, supersedes, origin, origin_id) "
                "VALUES (:at, :actor, :action, :t, :k, :old, :new, NULL, :o, :oid)",
                {"at": a.at, "actor": a.actor, "action": a.action, "t": a.table_name,
                 "k": a.row_key if a.table_name != "outcomes" else f"{self.cart}:{a.row_key}",
                 "old": None if a.old is None else json.dumps(a.old, sort_keys=True),
                 "new": None if a.new is None else json.dumps(a.new, sort_keys=True),
                 "o": self.cart, "oid": a.id})


def _outcome_values(r: Any) -> tuple:
    get = (lambda k: r[k]) if not hasattr(r, "cohen_grade") else (lambda k: getattr(r, k))
    comp = get("complications")
    if isinstance(comp, str):
        comp = json.loads(comp)
    return get("timepoint"), get("cohen_grade"), get("outcome_class"), get("relief_date"), json.dumps(comp,
                                                                                                     sort_keys=True)


def reachable(central_target) -> str | None:
    """None if the central registry answers, else why not (store and forward: the cart keeps everything)."""
    try:
        reg = Registry(central_target)
    except RegistryError as err:
        return str(err)
    except Exception as err:  # the driver's: refused connection, DNS, TLS, authentication
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else err!r}"
    reg.close()
    return None


__all__ = ["SessionRefused", "SyncError", "SyncReport", "Syncer", "parse_resolve", "reachable"]
