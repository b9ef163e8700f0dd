"""`amrwatch train`, `report`, `export cohort` and `registry synthetic`: the study's commands
(study/, the `[train]` extra). The `export` group is made in amrwatch/cli/commands.py, which adds
`cohort` from here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amrwatch import config
from amrwatch.cli.common import EXIT_OK, add_data, fail
from amrwatch.cli.common import data_dir as _data_dir
from amrwatch.registry.cli import _add_registry
from amrwatch.registry.cli import writer_lock as _writer_lock


def cmd_train(args: argparse.Namespace) -> int:
    from amrwatch.study.cohortcsv import CohortCsvError
    from amrwatch.study.training import TrainingError, recalibrate, train

    try:
        if args.recalibrate:
            if not args.csv:
                return fail("--recalibrate needs --csv FILE (the institution's registry export)")
            recalibrate(args.out, csv=args.csv, base_dir=args.model)
        else:
            from amrwatch.study.training import TrainingSettings

            train(args.out, synthetic_n=args.synthetic, csv=args.csv, seed=args.seed,
                  settings=TrainingSettings(comparison_model=args.compare_gbm))
    except (CohortCsvError, TrainingError, ValueError, OSError) as err:
        return fail(f"training failed, nothing written: {err}")
    return 0


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
    out = Path(args.out) if args.out else data / "reports" / dt.datetime.now(dt.UTC).strftime(
        "report-%Y%m%dT%H%M%SZ")
    try:
        res = make_report(data, out, model_dir=args.model or config.model_dir(), compare_dir=args.compare,
                          registry=args.registry)
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
    target = args.registry or (data / "registry.sqlite" if (data / "registry.sqlite").exists() else None)
    if target is not None:
        with Registry(target) as reg:
            real = [s for s in reg.list() if s.source != SOURCE]
        if real:
            return fail(f"{args.registry or data} holds {len(real)} real (non-synthetic) sessions; synthetic "
                        "sessions are never mixed into a real registry — give another --data DIR or --registry")
    try:
        res = generate(data, args.n, seed=args.seed, registry=args.registry, site=args.site)
    except ValueError as err:
        return fail(str(err))
    courses = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(res.courses.items()))
    print(f"wrote {res.n} SYNTHETIC sessions to {data} (seed {res.seed}): {courses}; "
          f"{res.outcomes_written} follow-up outcomes")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="fit the persistence model; export ONNX plus its model card")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", type=int, metavar="N", help="a synthetic cohort of N patients")
    src.add_argument("--csv", metavar="FILE", help="a registry exported by `amrwatch export cohort`")
    t.add_argument("--out", required=True, metavar="DIR")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--recalibrate", action="store_true",
                   help="update the intercept and slope of an existing model (--model, default the shipped one) on "
                   "the registry in --csv instead of refitting")
    t.add_argument("--model", metavar="DIR", help="with --recalibrate: the model to recalibrate")
    t.add_argument("--compare-gbm", action="store_true",
                   help="also validate gradient boosting on the same bootstrap resamples and report it in the card "
                   "beside the logistic model (never shipped)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("report", help="the cohort analysis of the registry (HTML with figures, JSON numbers)")
    r.add_argument("--out", metavar="DIR", help="output directory (default DATA_DIR/reports/report-<time>)")
    r.add_argument("--model", metavar="DIR", help="model to validate (default $AMRWATCH_MODEL_DIR, else the "
                   "shipped model)")
    r.add_argument("--compare", metavar="MODEL_DIR", help="a second model to put beside it on the same patients "
                   "(AUC difference by DeLong's test, calibration, net benefit)")
    add_data(r)
    _add_registry(r)
    r.set_defaults(func=cmd_report)


def add_registry_commands(rg: argparse._SubParsersAction) -> None:
    """`registry synthetic` (the `registry` group is made in amrwatch/cli/commands.py)."""
    s = rg.add_parser("synthetic",
                      help="write N synthetic sessions with outcomes (for demos and tests; never mixed with real ones)")
    s.add_argument("n", type=int, metavar="N")
    s.add_argument("--data", required=True, metavar="DIR", help="data directory to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--site", metavar="NAME", help="mark the sessions as recorded at site NAME (multi-site demos)")
    _add_registry(s)
    s.set_defaults(func=cmd_registry_synthetic)


def add_export(ex: argparse._SubParsersAction) -> None:
    """`export cohort` (the group is made in amrwatch/cli/commands.py)."""
    c = ex.add_parser("cohort", help="the registry as a training/analysis table (what `amrwatch train --csv` reads)")
    c.add_argument("out", metavar="OUT.csv")
    c.add_argument("--complete-only", action="store_true",
                   help="leave out labelled patients with a missing factor (so `train --csv` accepts the file)")
    add_data(c)
    c.set_defaults(func=cmd_export_cohort)
