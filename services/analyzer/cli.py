"""`amrwatch analyzer` (the service) and `amrwatch analyze FILE` (offline, same engine)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ...cli import common as base
from ...proto.messages import AlarmBody, AmrCourseBody, AmrMeasurementBody, AmrStateBody, BaselineBody

if TYPE_CHECKING:  # the engine pulls in scipy and numba: every `amrwatch` command would pay ~1 s for it
    from .engine import Output



def _settings(args: argparse.Namespace, base=None):
    from pydantic import ValidationError

    from ...proto.codec import describe
    from .settings import AnalyzerSettings, parse_overrides

    try:
        return parse_overrides(args.set or [], base)
    except ValidationError as err:
        raise ValueError(f"--set refused: {describe(err, AnalyzerSettings)}") from None


def cmd_analyzer(args: argparse.Namespace) -> int:
    from ...service import setup_logging
    from .service import Analyzer

    setup_logging("analyzer", args.log_level)
    try:
        settings = _settings(args)
    except ValueError as err:
        return base.fail(str(err), base.EXIT_USAGE)
    svc = Analyzer(settings=settings, control=args.control, **base.service_kw(args))
    return svc.run()


def _row(f: AmrMeasurementBody) -> str:
    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    state = f"rejected: {f.reject_reason}" if f.rejected else (
        f"not assessable: {f.assessment_reason}" if f.assessment == "not_assessable" else f.assessment)
    return (f"{f.stimulus_index:>6} {f.stim_time_s:>9.3f} {f.direction:<3} {f.channel:<10} "
            f"{f.p2p_uv:>9.1f} {num(f.onset_latency_ms, '>6.2f')} {num(f.peak_latency_ms, '>6.2f')} "
            f"{f.noise_uv:>6.2f} {num(f.snr, '>6.1f')} {num(f.pct_of_baseline, '>6.0f')} "
            f"{(f.stage or '—'):<20} {state}")


HEADER = (f"{'stim':>6} {'time_s':>9} {'dir':<3} {'channel':<10} {'p2p_uV':>9} {'onset':>6} {'peak':>6} "
          f"{'noise':>6} {'snr':>6} {'%base':>6} {'stage':<20} result")


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..acquirer.labels import MontageError
    from ..acquirer.source import SourceError
    from amrwatch.archive.integrity import ArchiveError

    try:
        settings = _settings(args)
    except ValueError as err:
        return base.fail(str(err), base.EXIT_USAGE)
    path = Path(args.file)
    if not path.exists():
        return base.fail(f"analyze: no such file {str(path)!r}; give an EDF/EDF+/BDF recording or an "
                         "archived session's directory (DATA/sessions/ID)", base.EXIT_USAGE)
    if not path.is_dir():
        from ..acquirer.files import reader_name

        try:
            reader_name(path)
        except SourceError as err:
            return base.fail(f"analyze: {err}, or an archived session's directory (DATA/sessions/ID)",
                             base.EXIT_USAGE)
    summary: Counter[str] = Counter()
    others: list[Output] = []
    stack = contextlib.ExitStack()
    try:
        if path.is_dir():
            from amrwatch.archive.index import cores
            from amrwatch.archive.session import open_session

            # A command of its own process (no sockets, no threads): the index is built on every core, its
            # workers started before the analyzer is imported (scipy, numba: ~1.3 s) so that they index
            # segments meanwhile; this process takes the rest from the front (ArchiveIndex.start).
            session = stack.enter_context(open_session(path, index_workers=cores()))
            session.start_index()
            from .offline import analyze_archive

            settings = _archive_settings(session, args)
            outputs = analyze_archive(session, settings)
            for rec, why in session.index.refused:
                print(f"analyze: record {rec} refused and left out: {why}", file=sys.stderr)
        else:
            from ..acquirer.files import open_file
            from ..acquirer.labels import describe_channels, load_montage_file

            montage = load_montage_file(args.montage) if args.montage else None
            src = open_file(str(path), montage=montage)
            # Which reader, and what each channel was taken as, before any number: nothing is silent.
            for line in [*getattr(src, "notes", []), *describe_channels(src.montage)]:
                print(f"# {line}", file=sys.stderr if args.json else sys.stdout)
            from .offline import analyze_edf, analyze_source

            outputs = analyze_source(src, settings) if args.frames else analyze_edf(src, settings)
        if not args.json:
            print(HEADER)
        for out in outputs:
            if not isinstance(out, AmrMeasurementBody):
                others.append(out)
                continue
            summary[out.assessment] += 1
            if args.json:
                print(json.dumps(out.fields()), flush=False)
            else:
                print(_row(out))
    except (SourceError, ArchiveError, MontageError) as err:
        return base.fail(f"analyze: {err}")
    except ValueError as err:  # settings the file cannot honour (e.g. Nyquist)
        return base.fail(f"analyze: {err}")
    except BrokenPipeError:  # `amrwatch analyze x.edf | head`
        sys.stderr.close()
        return base.EXIT_OK
    finally:
        stack.close()
    _summarise(summary, others)
    return base.EXIT_OK


def _archive_settings(session, args: argparse.Namespace):
    """An archived session is re-analysed with the settings it was analysed with live, `--set` on top."""
    from .settings import AnalyzerSettings

    found = session.announced_settings("analyzer")
    if found is None:
        print("analyze: no analyzer settings archived with this session: using the defaults"
              f"{' with --set' if args.set else ''}", file=sys.stderr)
        return _settings(args)
    try:
        archived = AnalyzerSettings.model_validate(found.settings)
    except ValueError as err:
        print(f"analyze: the archived analyzer settings are not accepted by this version ({err}); using the "
              "defaults", file=sys.stderr)
        return _settings(args)
    if found.changed_at is not None:
        print(f"analyze: the analyzer restarted with other settings (record {found.changed_at}); the first ones "
              "are used", file=sys.stderr)
    print(f"analyze: using the analyzer settings archived with the session ({found.sha256[:12]})"
          f"{', with --set on top' if args.set else ''}", file=sys.stderr)
    return _settings(args, archived)


def _summarise(summary: Counter, others: list[Output]) -> None:
    """What is not a measurement goes to stderr, so stdout stays one measurement per line."""
    err = sys.stderr
    n = sum(summary.values())
    alarm_count = Counter((f.alarm_key, f.state) for f in others if isinstance(f, AlarmBody))
    shown: set[tuple[str, str]] = set()
    print(f"analyze: {n} measurements: {summary['present']} present, {summary['absent']} absent, "
          f"{summary['not_assessable']} not assessable, {summary['rejected']} rejected", file=err)
    for f in others:
        if isinstance(f, BaselineBody):
            print(f"analyze: baseline {f.channel} {f.baseline_uv:.1f} µV over {f.n_sweeps} sweeps", file=err)
        elif isinstance(f, AmrStateBody):
            print(f"analyze: {f.channel} {f.previous_state or '—'} → {f.state} at stimulus "
                  f"#{f.stimulus_index} [{f.stage or '—'}]", file=err)
        elif isinstance(f, AmrCourseBody):
            base_uv = "—" if f.baseline_uv is None else f"{f.baseline_uv:.1f} µV"
            final = "—" if f.final_pct_of_baseline is None else f"{f.final_pct_of_baseline:.0f}%"
            print(f"analyze: course {f.course} (baseline {base_uv}, final {final} of baseline"
                  f"{', gone during ' + f.disappeared_at_stage if f.disappeared_at_stage else ''})", file=err)
        elif isinstance(f, AlarmBody) and (f.alarm_key, f.state) not in shown:
            shown.add((f.alarm_key, f.state))
            more = alarm_count[(f.alarm_key, f.state)] - 1
            state = " cleared" if f.state == "cleared" else ""
            print(f"analyze: {f.kind} [{f.priority}]{state}: {f.message}"
                  f"{f' (and {more} more like it)' if more else ''}", file=err)


def register(sub: argparse._SubParsersAction) -> None:
    settings_help = ("override one analysis setting, e.g. --set bandpass_hz=10,2000 --set disappear_k=5 "
                     "(repeatable; pairs as LOW,HIGH; names in services/analyzer/settings.py)")

    a = sub.add_parser("analyzer", help="run the analyzer service in the foreground")
    base.add_service_endpoints(a)
    a.add_argument("--control", metavar="ENDPOINT",
                   help="acquirer control socket, asked for the session when joining late "
                        "(env AMRWATCH_CONTROL)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help=settings_help)
    a.set_defaults(func=cmd_analyzer)

    z = sub.add_parser("analyze", help="analyse a recorded EDF/EDF+/BDF file offline: one measurement "
                                       "per stimulus and channel")
    z.add_argument("file", metavar="FILE", help="EDF/EDF+/BDF with stimulus annotations or trigger channels, "
                                                "or an archived session's directory (DATA/sessions/ID)")
    z.add_argument("--json", action="store_true", help="one JSON object (amr_measurement body) per line")
    z.add_argument("--frames", action="store_true",
                   help="feed the whole signal in 5 ms frames as the live service sees it "
                        "(slower; the numbers are identical)")
    z.add_argument("--set", action="append", metavar="KEY=VALUE", help=settings_help)
    z.add_argument("--montage", metavar="FILE",
                   help="YAML/JSON file stating each channel's muscle, side and what it records "
                        "(schema: proto/schemas/montage_file.json); without it labels are recognised")
    z.set_defaults(func=cmd_analyze)
