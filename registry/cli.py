"""`amrwatch outcome add|edit|list`, `amrwatch export cohort`, `amrwatch report`,
`amrwatch registry synthetic`: the registry after the operation.

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

from amrwatch import config
from amrwatch.cli import EXIT_OK, add_data, fail

_ACTOR = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def _data_dir(args: argparse.Namespace) -> Path:
    from amrwatch import config

    return Path(args.data) if args.data else config.data_dir()


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


def _add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=None, metavar="NAME",
                   help="who records this, for the audit trail (default $AMRWATCH_ACTOR, else the login name)")


def _subcommands(sub, name: str, help_text: str):
    """The sub-command group `name`, shared with another module that may have created it first."""
    existing = sub.choices.get(name)
    if existing is None:
        return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_what", required=True, metavar="WHAT")
    for action in existing._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


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
def _writer_lock(args: argparse.Namespace, what: str, *, create: bool = False):
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
    from amrwatch.registry.store import Registry, RegistryError

    with _writer_lock(args, "amrwatch outcome add") as locked:
        if locked:
            return locked
        try:
            with Registry.existing(_data_dir(args)) as reg:
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
    from amrwatch.registry.store import Registry, RegistryError

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
    with _writer_lock(args, "amrwatch outcome edit") as locked:
        if locked:
            return locked
        try:
            with Registry.existing(_data_dir(args)) as reg:
                row, note = edit_outcome(reg, args.session_id, actor=args.actor or _default_actor(),
                                         timepoint=args.timepoint, **kw)
        except (OutcomeInputError, RegistryError) as err:
            return fail(f"edit refused, nothing written: {err}")
    _print_outcome(row, note, "corrected:")
    return EXIT_OK


def cmd_outcome_list(args: argparse.Namespace) -> int:
    from amrwatch.registry.outcomes import outcome_dict
    from amrwatch.registry.store import Registry, RegistryError

    try:
        with Registry.existing(_data_dir(args)) as reg:
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


# --------------------------------------------------------------------------- #
# export cohort, report, registry synthetic


def cmd_export_cohort(args: argparse.Namespace) -> int:
    from amrwatch.study.cohort_table import Cohort, build_cohort, write_csv
    from amrwatch.registry.store import Registry, RegistryError

    data = _data_dir(args)
    try:
        with Registry.existing(data) as reg:
            cohort = build_cohort(reg, data)
    except RegistryError as err:
        return fail(str(err))
    incomplete = [r for r in cohort.labelled() if not r.complete]
    if args.complete_only and incomplete:
        dropped = {r.session_id for r in incomplete}
        cohort = Cohort(rows=[r for r in cohort.rows if r.session_id not in dropped],
                        excluded=cohort.excluded + [(s, "a factor is missing (--complete-only)") for s in dropped],
                        from_archive=cohort.from_archive, synthetic_settings=cohort.synthetic_settings)
        incomplete = []
    try:
        sha = write_csv(cohort, Path(args.out))
    except OSError as err:
        return fail(f"cannot write {args.out}: {err.strerror or err}")
    labelled = cohort.labelled()
    print(f"wrote {args.out}: {len(cohort.rows)} patients, {len(labelled)} with a persistence label "
          f"({sum(r.label for r in labelled)} persisted); sha256 {sha}")
    if cohort.synthetic:
        print("note: this registry is SYNTHETIC (amrwatch registry synthetic) — not patient data", file=sys.stderr)
    if cohort.excluded:
        reasons: dict[str, int] = {}
        for _, why in cohort.excluded:
            reasons[why.split(":")[0]] = reasons.get(why.split(":")[0], 0) + 1
        print("not exported: " + "; ".join(f"{k} ({v})" for k, v in reasons.items()), file=sys.stderr)
    if incomplete:
        print(f"warning: {len(incomplete)} labelled patients lack a factor, and `amrwatch train --csv` refuses "
              "missing values: enter the factors, or export with --complete-only", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from amrwatch.registry.store import RegistryError
    from amrwatch.study.report import make_report

    data = _data_dir(args)
    out = Path(args.out) if args.out else data / "reports" / dt.datetime.now(dt.timezone.utc).strftime(
        "report-%Y%m%dT%H%M%SZ")
    try:
        res = make_report(data, out, model_dir=args.model or config.model_dir(), compare_dir=args.compare)
    except RegistryError as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"cannot write the report into {out}: {err.strerror or err}")
    if res.synthetic:
        print("*** SYNTHETIC REGISTRY — not patient data ***", file=sys.stderr)
    print(f"report of {res.patients} patients written to {res.html} ({len(res.figures)} figures, "
          f"{res.seconds:.1f} s); numbers in {res.json}")
    return EXIT_OK


def cmd_registry_synthetic(args: argparse.Namespace) -> int:
    with _writer_lock(args, "amrwatch registry synthetic", create=True) as locked:
        return locked or _registry_synthetic(args)


def _registry_synthetic(args: argparse.Namespace) -> int:
    from amrwatch.registry.store import Registry
    from amrwatch.study.synthetic_registry import SOURCE, generate

    data = Path(args.data)
    if (data / "registry.sqlite").exists():
        with Registry.in_data_dir(data) as reg:
            real = [s for s in reg.list() if s.source != SOURCE]
        if real:
            return fail(f"{data} holds {len(real)} real (non-synthetic) sessions; synthetic sessions are never mixed "
                        "into a real registry — give another --data DIR")
    try:
        res = generate(data, args.n, seed=args.seed)
    except ValueError as err:
        return fail(str(err))
    courses = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(res.courses.items()))
    print(f"wrote {res.n} SYNTHETIC sessions to {data} (seed {res.seed}): {courses}; "
          f"{res.outcomes_written} follow-up outcomes")
    return EXIT_OK


# --------------------------------------------------------------------------- #


def register(sub) -> None:
    from amrwatch.registry.store import COMPLICATIONS, OUTCOME_CLASSES, TIMEPOINTS

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
    li.set_defaults(func=cmd_outcome_list)

    ex = _subcommands(sub, "export", "export a session or the registry")
    target = ex if ex is not None else sub
    c = target.add_parser("cohort" if ex is not None else "export-cohort",
                          help="the registry as a training/analysis table (what `amrwatch train --csv` reads)")
    c.add_argument("out", metavar="OUT.csv")
    c.add_argument("--complete-only", action="store_true",
                   help="leave out labelled patients with a missing factor (so `train --csv` accepts the file)")
    add_data(c)
    c.set_defaults(func=cmd_export_cohort)

    r = sub.add_parser("report", help="the cohort analysis of the registry (HTML with figures, JSON numbers)")
    r.add_argument("--out", metavar="DIR", help="output directory (default DATA_DIR/reports/report-<time>)")
    r.add_argument("--model", metavar="DIR", help="model to validate (default $AMRWATCH_MODEL_DIR, else the "
                   "shipped model)")
    r.add_argument("--compare", metavar="MODEL_DIR", help="a second model to put beside it on the same patients "
                   "(AUC difference by DeLong's test, calibration, net benefit)")
    add_data(r)
    r.set_defaults(func=cmd_report)

    rg = _subcommands(sub, "registry", "the session registry")
    s = (rg if rg is not None else sub).add_parser(
        "synthetic" if rg is not None else "registry-synthetic",
        help="write N synthetic sessions with outcomes (for demos and tests; never mixed with real ones)")
    s.add_argument("n", type=int, metavar="N")
    s.add_argument("--data", required=True, metavar="DIR", help="data directory to write into")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_registry_synthetic)


__all__ = ["register"]
