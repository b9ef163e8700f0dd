"""`amrwatch sessions`, `session show` and `outcome add|edit|list|link-recording`: the registry after the operation.

(`export cohort`, `report` and `registry synthetic` are the study's: study/cli.py.)

Nothing here prints a patient token or any identifier other than the random
session id, and nothing opens the pseudonym map.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amrwatch import config
from amrwatch.cli.common import EXIT_OK, add_data, fail
from amrwatch.cli.common import data_dir as _data_dir

_ACTOR = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def _default_actor() -> str:
    from amrwatch.freetext import identifier_problem

    for candidate in (config.actor(), _user()):
        if candidate and _ACTOR.match(candidate) and identifier_problem("actor", candidate) is None:
            return candidate
    return "cli"


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="URL", default=None,
                   help="a registry other than the data directory's SQLite file, e.g. "
                        "postgresql://ROLE@HOST/DB?sslmode=verify-full (default $AMRWATCH_REGISTRY)")


def _open(args: argparse.Namespace):
    from amrwatch.registry.store import Registry

    return Registry.open(getattr(args, "registry", None), _data_dir(args))


def _add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=None, metavar="NAME",
                   help="who records this, for the audit trail (default $AMRWATCH_ACTOR, else the login name)")




# --------------------------------------------------------------------------- #
# sessions / session show

_LIST_FIELDS = ("session_id", "started_at", "ended_at", "status", "source", "scenario", "replay_of",
                "model_sha256", "model_synthetic", "patient_token", "status_reason")


def _registry(args: argparse.Namespace):
    from amrwatch.registry.store import REGISTRY_FILE, Registry

    d = _data_dir(args)
    if not (d / REGISTRY_FILE).exists():
        raise FileNotFoundError(f"no registry at {d / REGISTRY_FILE}: nothing was recorded in {d} "
                                "(give --data DIR, or set AMRWATCH_DATA)")
    return Registry.in_data_dir(d)


def cmd_sessions(args: argparse.Namespace) -> int:
    try:
        reg = _registry(args)
    except FileNotFoundError as err:
        return fail(str(err))
    with reg:
        rows = reg.list()
    try:
        if args.json:
            for r in rows:
                d = r.as_dict()
                print(json.dumps({k: d[k] for k in _LIST_FIELDS}))
            return EXIT_OK
        if not rows:
            print("no sessions recorded yet")
            return EXIT_OK
        print(f"{'session':<28} {'started (UTC)':<20} {'status':<9} {'source':<18} {'scenario':<32} replay of")
        for r in rows:
            print(f"{r.session_id:<28} {r.started_at[:19].replace('T', ' '):<20} {r.status:<9} {r.source[:18]:<18} "
                  f"{(r.scenario or '—')[:32]:<32} {r.replay_of or '—'}")
    except BrokenPipeError:  # `amrwatch sessions | head`
        sys.stderr.close()
    return EXIT_OK


def session_summary(data_dir: Path, session_id: str) -> dict[str, Any]:
    """What `session show` prints: the registry row and what the archive holds."""
    from amrwatch.archive.writer import session_path
    from amrwatch.archive.session import ArchivedSession
    from amrwatch.registry.store import Registry

    with Registry.in_data_dir(data_dir) as reg:
        row = reg.get(session_id)
        replays = [r.session_id for r in reg.list() if r.replay_of == session_id]
        presence = reg.presence(session_id)
        followups = reg.followup_recordings(session_id)
        follow_up_of = [f for f in reg.followup_recordings() if f.recording_session_id == session_id]
    out: dict[str, Any] = {k: v for k, v in row.as_dict().items() if k not in ("montage", "settings")}
    out["channels"] = [c["name"] for c in row.montage.get("channels", [])]
    out["sampling_rate_hz"] = row.montage.get("sampling_rate_hz")
    out["replays"] = replays
    # The presence log (issue #19): who watched this session from the hub, from when to when.
    out["presence"] = [{"reader": p.reader, "from": p.from_at, "until": p.until_at, "closed_by": p.closed_by}
                       for p in presence]
    out["followup_recordings"] = [{"timepoint": f.timepoint, "session_id": f.recording_session_id,
                                   "linked_by": f.actor} for f in followups]
    if follow_up_of:
        f = follow_up_of[0]
        out["follow_up_of"] = {"operation": f.operation_session_id, "timepoint": f.timepoint}
    d = session_path(data_dir, session_id)
    out["archive"] = str(d)
    if not d.is_dir():
        out["archive_state"] = "missing"
        return out
    with ArchivedSession(d) as session:  # the directory exists; an empty one reads as empty
        idx = session.index
        counts: dict[str, int] = {"emg_frame": len(idx.frames)} if len(idx.frames) else {}
        for e in idx.events:
            counts[e.type] = counts.get(e.type, 0) + 1
        sig = session.signal()
        fs = row.montage.get("sampling_rate_hz") or 0
        out["records"] = idx.record_count
        out["messages"] = dict(sorted(counts.items()))
        out["samples"] = int(sig.hi[-1]) if sig.hi.size else 0
        out["duration_s"] = round(out["samples"] / fs, 3) if fs else None
        out["missing_samples"] = sum(b - a for a, b in sig.missing_samples())
        out["stages"] = [e.header["stage"] for e in idx.events_of("stage") if e.session_id == session_id]
        out["gaps"] = [{"record": no, "publisher": g.publisher, "type": g.type, "from_seq": g.from_seq,
                        "to_seq": g.to_seq, "reason": g.reason} for no, g in idx.gaps]
        out["resumes"] = len(idx.resumes)
        course = [e.header["course"] for e in idx.events_of("amr_course") if e.session_id == session_id]
        out["course"] = course[-1] if course else None
        decisions = [f"{e.header['kind']} ({e.header['priority']})" for e in idx.events_of("decision")
                     if e.session_id == session_id]
        out["decisions"] = decisions
        out["closed"] = idx.close is not None
        out["torn"] = idx.stopped_at is not None
    return out


def cmd_session_show(args: argparse.Namespace) -> int:
    from amrwatch.registry.store import UnknownSession

    try:
        _registry(args).close()
        info = session_summary(_data_dir(args), args.id)
    except (FileNotFoundError, UnknownSession) as err:
        return fail(str(err))
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k == "presence":
            v = "; ".join(_presence_text(p) for p in v) or "no remote reader"
        elif k == "followup_recordings":
            v = ", ".join(f"{f['timepoint']} {f['session_id']}" for f in v) or "—"
        elif k == "follow_up_of":
            v = f"{v['timepoint']} follow-up recording of operation {v['operation']}"
        elif isinstance(v, list):
            v = ", ".join(v if all(isinstance(x, str) for x in v) else [json.dumps(x) for x in v]) or "—"
        elif isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items()) or "—"
        print(f"{k:<{width}}  {'—' if v is None else v}")
    return EXIT_OK


def _presence_text(p: dict) -> str:
    """One presence interval as a person reads it: who, from, until, and who ended it."""
    def t(x: str | None) -> str:
        return x[:19].replace("T", " ") if x else "?"
    if p["until"] is None:
        return f"{p['reader']} watching since {t(p['from'])}"
    by = {"reader": "left", "session_end": "until the session end",
          "link_lost": "link lost: not heard by the cart after this"}.get(p["closed_by"], p["closed_by"])
    start = t(p["from"]) if p["from"] else "? (its 'watching' was not received)"
    return f"{p['reader']} {start} – {t(p['until'])} ({by})"


# --------------------------------------------------------------------------- #
# outcome


def _print_outcome(row, note: str | None, what: str) -> None:
    comp = ", ".join(sorted(row.complications)) or "none"
    print(f"{what} outcome {row.id} for session {row.session_id}: {row.timepoint} Cohen grade {row.cohen_grade} "
          f"({row.outcome_class}), spasm-free date {row.relief_date or '—'}, complications {comp}"
          + (f"; supersedes outcome {row.supersedes}" if row.supersedes else ""))
    if note:
        print(note, file=sys.stderr)


@contextmanager
def writer_lock(args: argparse.Namespace, what: str, *, create: bool = False):
    """The data directory's writer lock (datalock.py) for this command; yields 0, or the exit code if refused.
    Unless `create`, a data directory that does not exist is not created here: the command itself says so."""
    from amrwatch.archive.datalock import lock_or_exit

    data = _data_dir(args)
    if create:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not data.is_dir():
        yield 0
        return
    lock = lock_or_exit(data, what)
    if isinstance(lock, int):
        yield lock
        return
    try:
        yield 0
    finally:
        lock.release()


def cmd_outcome_add(args: argparse.Namespace) -> int:
    from amrwatch.registry.outcomes import OutcomeInputError, add_outcome
    from amrwatch.registry.store import RegistryError

    # No data-directory lock: that lock is the archive writer's (datalock.py). An outcome is one registry
    # transaction, safe next to a recording cart and next to other clinicians' writes.
    try:
        with _open(args) as reg:
            row, note = add_outcome(reg, args.session_id, actor=args.actor or _default_actor(),
                                    timepoint=args.timepoint, cohen_grade=args.cohen_grade,
                                    outcome_class=args.outcome_class, spasm_free_date=args.spasm_free_date,
                                    complications=args.complication)
    except (OutcomeInputError, RegistryError) as err:
        return fail(f"outcome refused, nothing written: {err}")
    _print_outcome(row, note, "recorded")
    return EXIT_OK


def cmd_outcome_edit(args: argparse.Namespace) -> int:
    from amrwatch.registry.outcomes import KEEP, OutcomeInputError, edit_outcome
    from amrwatch.registry.store import RegistryError

    kw = {
        "cohen_grade": KEEP if args.cohen_grade is None else args.cohen_grade,
        "outcome_class": KEEP if args.outcome_class is None else args.outcome_class,
        "spasm_free_date": None if args.no_spasm_free_date else (
            KEEP if args.spasm_free_date is None else args.spasm_free_date),
        "complications": [] if args.no_complications else (KEEP if args.complication is None else args.complication),
    }
    if args.no_spasm_free_date and args.spasm_free_date is not None:
        return fail("give --spasm-free-date or --no-spasm-free-date, not both", 2)
    if args.no_complications and args.complication:
        return fail("give --complication or --no-complications, not both", 2)
    try:
        with _open(args) as reg:
            row, note = edit_outcome(reg, args.session_id, actor=args.actor or _default_actor(),
                                     timepoint=args.timepoint, **kw)
    except (OutcomeInputError, RegistryError) as err:
        return fail(f"edit refused, nothing written: {err}")
    _print_outcome(row, note, "corrected:")
    return EXIT_OK


def cmd_outcome_link_recording(args: argparse.Namespace) -> int:
    """A postoperative AMR recording (its own session) linked to the operation's session (issue #17)."""
    from amrwatch.registry.store import RegistryError

    try:
        with _open(args) as reg:
            row = reg.link_recording(args.operation_id, args.recording_id, timepoint=args.timepoint,
                                     actor=args.actor or _default_actor())
            summary = reg.summary(args.recording_id)
    except RegistryError as err:
        return fail(f"link refused, nothing written: {err}")
    print(f"linked: session {row.recording_session_id} is the {row.timepoint} follow-up recording of operation "
          f"{row.operation_session_id} (link {row.id}, by {row.actor})")
    if summary is None or (summary.summary.get("course") is None):
        print(f"note: recording {row.recording_session_id} has no AMR course in the registry yet; the report "
              "counts it once its summary is stored", file=sys.stderr)
    return EXIT_OK


def cmd_outcome_list(args: argparse.Namespace) -> int:
    from amrwatch.registry.outcomes import outcome_dict
    from amrwatch.registry.store import RegistryError

    try:
        with _open(args) as reg:
            reg.get(args.session_id)
            rows = reg.outcomes(args.session_id, include_superseded=args.all)
            superseded = {r.supersedes for r in reg.outcomes(args.session_id, include_superseded=True) if r.supersedes}
    except RegistryError as err:
        return fail(str(err))
    if args.json:
        for r in rows:
            print(json.dumps({**outcome_dict(r), "current": r.id not in superseded}, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"session {args.session_id}: no outcomes recorded")
        return EXIT_OK
    print(f"{'id':>5} {'time':<4} {'grade':>5} {'class':<9} {'spasm-free':<10} {'recorded by':<16} complications")
    for r in rows:
        flag = " (superseded)" if r.id in superseded else ""
        print(f"{r.id:>5} {r.timepoint:<4} {r.cohen_grade:>5} {r.outcome_class or '—':<9} {r.relief_date or '—':<10} "
              f"{r.actor:<16} {', '.join(sorted(r.complications)) or '—'}{flag}")
    return EXIT_OK






def cmd_registry_migrate(args: argparse.Namespace) -> int:
    from amrwatch.registry.migrate import SchemaMismatch, migrate_url
    from amrwatch.registry.store import RegistryError, registry_target

    target = registry_target(args.registry, _data_dir(args) if args.data else None)
    shown = target if isinstance(target, Path) else _hide_password(target)
    try:
        before, after = migrate_url(target)
    except (RegistryError, SchemaMismatch) as err:
        return fail(str(err))
    except Exception as err:  # the driver's own error: unreachable server, refused login, lacking privilege
        return fail(f"cannot migrate {shown}: {type(err).__name__}: {str(err).strip().splitlines()[0]}")
    if before == after:
        print(f"registry {shown} is at schema revision {after}; nothing to do")
    else:
        print(f"registry {shown} migrated from {before or 'an empty database'} to schema revision {after}")
    return EXIT_OK


def _hide_password(url: str) -> str:
    import sqlalchemy as sa

    from amrwatch.registry.migrate import display_url

    try:
        return display_url(sa.engine.make_url(url))
    except Exception:
        return "(the registry URL given)"




# --------------------------------------------------------------------------- #


def register(sub) -> None:
    # The vocabularies alone (registry/vocab.py): store.py would import SQLAlchemy for every command.
    from amrwatch.registry.vocab import COMPLICATIONS, OUTCOME_CLASSES, RECORDING_TIMEPOINTS, TIMEPOINTS

    o = sub.add_parser("outcome", help="follow-up outcomes linked to a session (add, edit, list)")
    osub = o.add_subparsers(dest="outcome_what", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("session_id", metavar="ID", help="the session (amrwatch sessions lists them)")
        p.add_argument("--timepoint", required=True, choices=TIMEPOINTS, help="|".join(TIMEPOINTS))
        p.add_argument("--cohen-grade", dest="cohen_grade", type=int, required=required, metavar="N",
                       help="spasm at follow-up, Cohen grade 0 (none) to 4")
        p.add_argument("--class", dest="outcome_class", choices=OUTCOME_CLASSES, metavar="CLASS",
                       help=f"{'|'.join(OUTCOME_CLASSES)} (default: derived from the grade and the preoperative grade)")
        p.add_argument("--spasm-free-date", dest="spasm_free_date", metavar="YYYY-MM-DD",
                       help="the day the spasm stopped (not before the operation, not in the future)")
        p.add_argument("--complication", action="append", metavar="NAME",
                       help=f"repeatable or comma-separated: {', '.join(COMPLICATIONS)}")
        _add_actor(p)
        add_data(p)
        _add_registry(p)

    a = osub.add_parser("add", help="record the outcome at one follow-up point")
    common(a, required=True)
    a.set_defaults(func=cmd_outcome_add)

    e = osub.add_parser("edit", help="correct an outcome: a new audited row supersedes the old one")
    common(e, required=False)
    e.add_argument("--no-spasm-free-date", action="store_true", help="remove the spasm-free date")
    e.add_argument("--no-complications", action="store_true", help="remove every complication")
    e.set_defaults(func=cmd_outcome_edit)

    li = osub.add_parser("list", help="a session's outcomes")
    li.add_argument("session_id", metavar="ID")
    li.add_argument("--json", action="store_true", help="one JSON object per line")
    li.add_argument("--all", action="store_true", help="include superseded rows")
    add_data(li)
    _add_registry(li)
    li.set_defaults(func=cmd_outcome_list)

    lr = osub.add_parser("link-recording", help="link a postoperative AMR recording (its own session) to the "
                                                "operation's session, at a follow-up point")
    lr.add_argument("operation_id", metavar="OPERATION_ID", help="the operation's session")
    lr.add_argument("recording_id", metavar="RECORDING_SESSION_ID",
                    help="the postoperative recording's session (recorded, or `amrwatch analyze FILE`)")
    lr.add_argument("--timepoint", required=True, choices=RECORDING_TIMEPOINTS, help="|".join(RECORDING_TIMEPOINTS))
    _add_actor(lr)
    add_data(lr)
    _add_registry(lr)
    lr.set_defaults(func=cmd_outcome_link_recording)

    data_help = f"archive directory (default {config.data_dir()}, env AMRWATCH_DATA)"
    s = sub.add_parser("sessions", help="list archived sessions (newest last)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--data", metavar="DIR", help=data_help)
    s.set_defaults(func=cmd_sessions)

    sh = sub.add_parser("session", help="one archived session")
    shs = sh.add_subparsers(dest="session_what", required=True, metavar="WHAT")
    show = shs.add_parser("show", help="registry row and archive contents of one session")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.add_argument("--data", metavar="DIR", help=data_help)
    show.set_defaults(func=cmd_session_show)




def add_registry_commands(rg: argparse._SubParsersAction) -> None:
    """`registry migrate` (the `registry` group is made in amrwatch/cli/commands.py)."""
    m = rg.add_parser("migrate", help="bring a registry to the schema this amrwatch reads (Alembic migrations)")
    add_data(m)
    _add_registry(m)
    m.set_defaults(func=cmd_registry_migrate)


__all__ = ["register"]
