"""`amrwatch verify`: is the archive intact, and does the analysis give today what it gave live?

Two independent checks, run side by side on two cores:

1. integrity — every record's CRCs, the SHA-256 chain, the structure and
   checkpoint.json (integrity.analyse, in a child process);
2. re-run — the archived signal, stimuli and stage markers go through the
   analyzer's own AnalyzerEngine in the order the acquirer published them;
   the archived factors, stage markers and analyzer events go through the
   predictor's own PredictorCore in the order the bus delivered them; every
   field of every amr_measurement, amr_state, baseline, amr_course,
   prediction and decision is compared with the archived one (compare.py).

Identical, or every difference is listed with its record number.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from amrwatch import provenance
from amrwatch.proto.messages import BY_TYPE, SCHEMA_VERSION, Body
from amrwatch.services.analyzer.settings import AnalyzerSettings
from amrwatch.services.predictor.core import INPUT_TYPES, PredictorCore
from amrwatch.services.predictor.decision import DecisionSettings
from amrwatch.services.predictor.model import ModelInvalid
from amrwatch.audit.compare import Alignment, Difference, align
from amrwatch.archive.index import ArchiveIndex, Event
from amrwatch.archive.integrity import Problem, analyse
from amrwatch.archive.order import bus_order
from amrwatch.archive.session import ArchivedSession, NoSuchSession, open_session
from amrwatch.archive.settings import read_hmac_key
from amrwatch.archive.seqset import SeqSet

ANALYZER_TYPES = ("amr_measurement", "amr_state", "baseline", "amr_course")
PREDICTOR_TYPES = ("prediction", "decision")


class VerifyError(Exception):
    """Verification cannot run as asked (no such session, wrong model...)."""


@dataclass
class VerifyReport:
    session_id: str
    problems: list[Problem] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    compared: dict[str, int] = field(default_factory=dict)
    stood_in: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    """Per service, which settings the re-run used (archived, given, or defaults)."""
    rerun: bool = False
    seconds: float = 0.0
    signal_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.differences and self.rerun

    def lines(self) -> Iterator[str]:
        yield f"session {self.session_id}"
        if self.problems:
            yield f"INTEGRITY: {len(self.problems)} problem(s)"
            for p in self.problems:
                yield f"  {p}"
        else:
            yield "integrity: every record's CRCs, the hash chain and checkpoint.json are intact"
        if self.rerun:
            done = ", ".join(f"{n} {t}" for t, n in self.compared.items())
            yield f"re-run: compared {done}"
            if self.settings:
                yield "  settings: " + ", ".join(f"{k} {v}" for k, v in self.settings.items())
            for t, n in self.stood_in.items():
                if n:
                    yield f"  {n} {t} event(s) recomputed where the archive records them as lost (gap records)"
        for n in self.notes:
            yield f"note: {n}"
        if self.differences:
            yield f"DIFFERENCES: {len(self.differences)}"
            for d in self.differences:
                yield f"  {d}"
        speed = f" ({self.signal_seconds / self.seconds:.0f}x real time)" if self.seconds and self.signal_seconds else ""
        yield (f"{'IDENTICAL' if self.ok else 'FAILED'}: verified in {self.seconds:.1f} s{speed}")

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "ok": self.ok, "rerun": self.rerun,
                "problems": [str(p) for p in self.problems], "differences": [d.as_dict() for d in self.differences],
                "compared": self.compared, "stood_in": self.stood_in, "notes": self.notes, "settings": self.settings,
                "seconds": round(self.seconds, 3), "signal_seconds": self.signal_seconds}


def _integrity(session_dir: str, key: bytes | None) -> list[Problem]:
    return analyse(Path(session_dir), key).problems


def verify_session(data_dir: Path, session_id: str, *, model_dir: str | None = None,
                   hmac_key_file: str | None = None, analyzer_settings: AnalyzerSettings | None = None,
                   decision_settings: DecisionSettings | None = None, parallel: bool = True,
                   index_workers: int = 1) -> VerifyReport:
    t0 = time.perf_counter()
    try:
        session = open_session(Path(data_dir), session_id, index_workers=index_workers)
    except NoSuchSession as err:
        raise VerifyError(str(err)) from None
    d = session.dir
    try:
        key = read_hmac_key(Path(hmac_key_file)) if hmac_key_file else None
    except ValueError as err:
        raise VerifyError(str(err)) from None
    report = VerifyReport(session_id)
    pool = pending = None
    if parallel:
        # The compiled walks (numba, loaded from its cache: ~0.5 s) loaded once, before the fork, for both
        # the integrity check's process and this one's index.
        from amrwatch.archive import kernels  # noqa: F401

        pool = multiprocessing.get_context("fork").Pool(1)
        if index_workers <= 1:
            pending = pool.apply_async(_integrity, (str(d), key))
    try:
        with session:
            # The index's workers (index_workers > 1) index segments while the analyzer is imported here
            # (scipy, numba: ~1.3 s; it is imported on first use, not with this module).
            session.start_index()
            import amrwatch.services.analyzer.offline  # noqa: F401

            # The predictor's model too (onnx, onnxruntime: ~0.9 s) while the workers index, instead of after
            # the index where nothing ran beside it; a model that cannot be loaded is still refused where the
            # re-run needs it (_model).
            loaded_model = _load_model(model_dir) if session.index_workers > 1 else None
            if pool is not None and pending is None:
                # With the index on every core the integrity check starts here, once the analyzer and the model
                # are loaded and this process is about to index, rather than at once or after the index (then it
                # outlasted the re-run by 2-2.5 s). Measured on the 2-hour bench archive, quiet machine, in
                # process, two runs each: 10.4-10.8 s here, 11.0-12.5 s at once, 12.0 s after (issue #18).
                pending = pool.apply_async(_integrity, (str(d), key))
            _rerun(session, report, model_dir, analyzer_settings, decision_settings, loaded_model)
    finally:
        if pool is not None:
            if pending is not None:
                report.problems = pending.get()
            pool.close()
            pool.join()
    if pool is None:
        report.problems = _integrity(str(d), key)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- #
# re-run


def _rerun(session: ArchivedSession, report: VerifyReport, model_dir: str | None,
           analyzer_settings: AnalyzerSettings | None, decision_settings: DecisionSettings | None,
           loaded_model: Any = None) -> None:
    idx = session.index
    sid = idx.session_id
    start = idx.session_start()
    if start is None:
        report.notes.append("the archive holds no session_start for this session: nothing to re-run")
        return
    if idx.stopped_at is not None:
        report.notes.append(f"the log could not be read past {idx.stopped_at[0]} byte {idx.stopped_at[1]}; "
                            "the re-run covers the records before it")
    if idx.unreadable:
        report.notes.append(f"{len(idx.unreadable)} record(s) could not be read and were left out of the re-run "
                            f"(records {', '.join(map(str, idx.unreadable[:10]))}{' ...' if len(idx.unreadable) > 10 else ''})")
    if idx.refused:
        report.notes.append(f"{len(idx.refused)} emg_frame record(s) the frame contract refuses were left out of "
                            f"the re-run (first: record {idx.refused[0][0]}: {idx.refused[0][1]})")
    sig = session.signal()
    report.signal_seconds = session.signal_seconds()
    if sig.duplicates:
        report.notes.append(f"{sig.duplicates} emg_frame(s) archived twice were read once")
    lost = session.lost()
    if analyzer_settings is None:
        analyzer_settings = _archived_settings(session, "analyzer", AnalyzerSettings.model_validate, report)
    else:
        report.settings["analyzer"] = "given by the caller"
    if decision_settings is None:
        decision_settings = _archived_settings(session, "predictor", DecisionSettings.from_wire, report)
    else:
        report.settings["predictor"] = "given by the caller"
    analyzer_out = _run_analyzer(session, analyzer_settings or AnalyzerSettings(), report)
    for t in ANALYZER_TYPES:
        archived = [e for e in idx.events_of(t) if e.session_id == sid and e.publisher == "analyzer"]
        res = _align_streams(t, "analyzer", archived, analyzer_out[t], lost, report,
                             key=(lambda b: (b["stimulus_index"], b["channel"])) if t == "amr_measurement" else None)
        report.compared[t] = res.compared
        report.stood_in[t] = res.stood_in
    model = _model(idx, model_dir, loaded_model)
    predictor_out = _run_predictor(idx, model, decision_settings or DecisionSettings(), analyzer_out, lost)
    for t in PREDICTOR_TYPES:
        archived = [e for e in idx.events_of(t) if e.session_id == sid and e.publisher == "predictor"]
        res = _align_streams(t, "predictor", archived, predictor_out[t], lost, report)
        report.compared[t] = res.compared
        report.stood_in[t] = res.stood_in
    report.rerun = True


def _archived_settings(session: ArchivedSession, service: str, parse, report: VerifyReport):
    """The settings `service` announced for this session (`service_settings`), or None for the defaults.

    The re-run must use what the session ran with: an analyzer started with
    `--set` measures differently from the defaults."""
    found = session.announced_settings(service)
    if found is None:
        report.notes.append(f"no {service} settings archived with this session: the {service} is re-run with "
                            "today's defaults")
        report.settings[service] = "defaults (none archived)"
        return None
    first = {"settings": found.settings, "settings_sha256": found.sha256, "platform": found.platform}
    if found.changed_at is not None:
        report.notes.append(f"the {service} restarted with other settings (record {found.changed_at}); the re-run "
                            f"uses the first ones ({first['settings_sha256'][:12]}), so what followed may differ")
    try:
        settings = parse(first["settings"])
    except ValueError as err:
        report.notes.append(f"the archived {service} settings are not accepted by this version ({err}); the "
                            f"{service} is re-run with today's defaults")
        report.settings[service] = "defaults (archived ones refused)"
        return None
    report.settings[service] = f"archived {first['settings_sha256'][:12]}"
    moved = provenance.differences(first.get("platform", {}))
    if moved:
        report.notes.append(f"the {service} ran on another platform than this re-run ({'; '.join(moved)}): "
                            "BLAS and FFT kernels differ by CPU and version, so a value can then differ in its "
                            "last published digit with the archive unchanged (the integrity check is what "
                            "proves it unaltered)")
    return settings


def _align_streams(type_: str, publisher: str, archived: list[Event], recomputed: list[dict], lost,
                   report: VerifyReport, key=None) -> Alignment:
    instances = list(dict.fromkeys(e.instance for e in sorted(archived, key=lambda e: e.record_no)))
    if not instances:  # every event of the type lost: the gap records still name the stream
        instances = [k[1] for k in lost if k[0] == publisher and k[2] == type_][:1]
    if len(instances) <= 1:
        inst = instances[0] if instances else ""
        return align(type_, archived, recomputed, lost.get((publisher, inst, type_), SeqSet()), report.differences,
                     key)
    report.notes.append(f"{type_}: events from {len(instances)} instances of the {publisher} (it restarted during "
                        "the session); they are compared as one stream in the order they were sent")
    renumbered, seq = [], 0
    for inst in instances:
        for e in sorted((e for e in archived if e.instance == inst), key=lambda e: e.seq):
            renumbered.append(e._replace(seq=seq))
            seq += 1
    return align(type_, renumbered, recomputed, SeqSet(), report.differences, key)


def _run_analyzer(session: ArchivedSession, settings: AnalyzerSettings,
                  report: VerifyReport) -> dict[str, list[dict]]:
    """The analyzer's own engine over the archived signal, fed by the same `analyze_archive` as
    `amrwatch analyze DIR` (so the two cannot disagree)."""
    from amrwatch.services.analyzer.offline import analyze_archive

    out: dict[str, list[dict]] = {t: [] for t in ANALYZER_TYPES}
    for body in analyze_archive(session, settings, source="analyzer", finish=False):
        if body.TOPIC in out:
            out[body.TOPIC].append(body.fields())
    if session.end() is None:
        report.notes.append("the session has no session_end in the archive: the analyzer's end-of-session "
                            "events (pending sweeps, final course) were not recomputed")
    return out


def _load_model(model_dir: str | None) -> Any:
    """The predictor's model, or the exception loading it raised (raised where the re-run needs the model,
    `_model`, so loading it early changes no outcome)."""
    from amrwatch.services.predictor.service import load_or_explain

    try:
        return load_or_explain(model_dir)
    except Exception as err:  # noqa: BLE001 - kept and raised as it was, by _model
        return err


def _model(idx: ArchiveIndex, model_dir: str | None, loaded: Any = None):
    model = _load_model(model_dir) if loaded is None else loaded
    if isinstance(model, ModelInvalid):
        raise VerifyError(f"cannot load the model to re-run the predictions: {model}") from None
    if isinstance(model, BaseException):
        raise model
    used = {e.header["model_sha256"] for e in idx.events_of("prediction") if e.session_id == idx.session_id}
    if used and used != {model.sha256}:
        raise VerifyError(
            f"session {idx.session_id} was predicted with model {', '.join(sorted(used))}, but the model at "
            f"{model.model_path.parent} is {model.sha256}: give the model it used with --model DIR "
            "(model.onnx + model_card.json) to re-run its predictions")
    return model


def _run_predictor(idx: ArchiveIndex, model, settings: DecisionSettings, analyzer_out: dict[str, list[dict]],
                   lost: dict) -> dict[str, list[dict]]:
    sid = idx.session_id
    items: list[tuple[int | None, tuple[str, str, str], int, Any]] = []
    for e in idx.events:
        if e.session_id == sid and e.type in INPUT_TYPES:
            items.append((e.record_no, e.stream, e.seq, e.header))
    # The analyzer's events a recorded gap lost: the recomputed ones take their place (and position).
    for (pub, inst, t), seqs in lost.items():
        if pub != "analyzer" or t not in INPUT_TYPES:
            continue
        archived = [e for e in idx.events_of(t) if e.session_id == sid and e.instance == inst]
        recomputed = analyzer_out.get(t, [])
        if not archived or not recomputed:
            continue
        base = min(min(e.seq for e in archived), seqs.min)
        for a, b in seqs.ranges():
            for seq in range(a, b + 1):
                i = seq - base
                if 0 <= i < len(recomputed):
                    items.append((None, (pub, inst, t), seq, {"type": t, "session_id": sid, "seq": seq,
                                                               "publisher": pub, "instance": inst,
                                                               **recomputed[i]}))
    core = PredictorCore(model, settings)
    out: dict[str, list[dict]] = {t: [] for t in PREDICTOR_TYPES}
    now = dt.datetime.now(dt.UTC).isoformat()
    for header in bus_order(items):
        t = header["type"]
        body = {k: v for k, v in header.items() if k not in ("type", "schema_version", "session_id", "seq",
                                                             "publisher", "instance", "ts_utc")}
        msg = BY_TYPE[t].model_validate_json(json.dumps(
            {"type": t, "schema_version": SCHEMA_VERSION, "session_id": sid, "seq": header["seq"], "publisher": header["publisher"],
             "instance": header["instance"], "ts_utc": header.get("ts_utc", now), **body}))
        for o in core.on_message(msg):
            if isinstance(o, Body) and o.TOPIC in out:
                out[o.TOPIC].append(o.fields())
    return out
