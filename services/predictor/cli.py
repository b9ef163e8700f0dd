"""`amrwatch predictor` (`amrwatch train` is the study's: study/cli.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from ... import config
from ...cli.common import add_service_endpoints, fail


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
