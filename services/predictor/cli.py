"""`amrwatch predictor` and `amrwatch train`."""

from __future__ import annotations

import argparse
import logging
import sys

from ... import config
from ...cli import SERVICE_COMMANDS, add_service_endpoints, fail


def cmd_predictor(args: argparse.Namespace) -> int:
    import zmq

    from ...bus import Publisher
    from ...proto.messages import Alarm
    from ...service import setup_logging
    from .decision import DecisionSettings
    from .service import EXIT_MODEL_INVALID, ModelInvalid, Predictor, load_or_explain

    setup_logging("predictor", args.log_level)
    log = logging.getLogger("amrwatch.predictor")
    model_dir = args.model or config.model_dir()
    try:
        model = load_or_explain(model_dir)
    except ModelInvalid as err:
        log.critical("refusing to start: %s", err)
        # Say it on the bus too, so the OR sees why there will be no predictions.
        ctx = zmq.Context()
        pub = Publisher(ctx, args.bus_in or __import__("amrwatch.config").config.get("bus_in"), "predictor")
        pub.wait_ready(3.0, ("alarm",))
        pub.publish(Alarm, None, kind="model_invalid", priority="high", state="raised",
                    message=f"predictor refused its model: {str(err)[:900]}", source="predictor",
                    alarm_key="model_invalid")
        pub.close()
        ctx.term()
        print(f"amrwatch: predictor refused to start: {err}", file=sys.stderr)
        return EXIT_MODEL_INVALID
    log.info("%s", model.describe())
    if model.synthetic:
        log.warning("THIS MODEL IS %s: it was fitted on a synthetic cohort and must not guide clinical decisions",
                    (model.notice or "synthetic").upper())
    try:
        settings = DecisionSettings(evaluation_sweeps=args.evaluation_sweeps,
                                    reduction_criterion_pct=args.reduction_criterion_pct,
                                    counterfactual_displacement=args.counterfactual_displacement,
                                    counterfactual_retraction_mm=args.counterfactual_retraction_mm)
    except ValueError as err:
        return fail(f"predictor setting refused: {err}")
    svc = Predictor(model, settings, control=args.control, bus_in=args.bus_in, bus_out=args.bus_out,
                    metrics_port=args.metrics_port)
    return svc.run()


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


def register(sub) -> None:
    p = sub.add_parser("predictor", help="run the predictor in the foreground")
    add_service_endpoints(p)
    p.add_argument("--model", metavar="DIR", help="directory with model.onnx + model_card.json "
                   "(default: the shipped synthetic model; env AMRWATCH_MODEL_DIR)")
    p.add_argument("--evaluation-sweeps", type=int, default=20,
                   help="assessable sweeps after the decompression_complete mark before the AMR is judged (default 20)")
    p.add_argument("--reduction-criterion-pct", type=float, default=None, metavar="PCT",
                   help="also confirm the decompression on a reduction of at least PCT %% from baseline "
                   "(80-100, e.g. 86.5; default: complete disappearance only)")
    p.add_argument("--counterfactual-displacement", type=int, default=3, metavar="GRADE",
                   help="displacement grade (2-3) the stop advice must survive (default 3, marked)")
    p.add_argument("--counterfactual-retraction-mm", type=float, default=9.0, metavar="MM",
                   help="retraction depth (3-9 mm) the stop advice must survive (default 9)")
    p.add_argument("--control", metavar="ENDPOINT",
                   help="acquirer control socket, asked for the session's state when the predictor restarts "
                   "mid-session (env AMRWATCH_CONTROL)")
    p.set_defaults(func=cmd_predictor)
    SERVICE_COMMANDS["predictor"] = cmd_predictor

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
