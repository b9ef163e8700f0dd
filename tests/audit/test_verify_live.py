"""`amrwatch verify` on sessions recorded live: identical for every simulator scenario; a single
changed byte anywhere fails it with the record named; a forged archive (CRCs and chain recomputed)
passes the integrity check but not the re-run."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from amrwatch.services.acquirer.sim.scenario import scenario_names
from amrwatch.archive.writer import ArchiveReader, ArchiveWriter, session_path
from amrwatch.archive.bodies import Gap, decode_message
from amrwatch.archive.index import ArchiveIndex
from amrwatch.archive.segment import SEGMENT_HEADER_SIZE, Kind, record_size
from amrwatch.audit.verify import verify_session

from ..conftest import Procs
from ..archive.sessions import Span, snapshot
from ..recorder.stack import cli, json_lines, private_env, wait_closed

FULL = os.environ.get("AMRWATCH_FULL") == "1"
#: Every scenario runs 40x faster than real time (the 2000-stimulus calibration run included).
SPEED = "40"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scenarios")
    env = private_env(tmp)
    (tmp / "logs").mkdir()
    procs = Procs(env, tmp / "logs")
    data = Path(env["AMRWATCH_DATA"])
    names = scenario_names()
    try:
        for svc in ("bus", "recorder", "analyzer", "predictor"):
            procs.start(svc)
        for i, name in enumerate(names):
            acq = procs.start("acquirer", "--scenario", name, "--speed", SPEED, "--time-scale",
                              "0.1", "--seed", str(i), "--wait-for", "recorder,analyzer,predictor")
            assert acq.wait(timeout=120) == 0, procs.log("acquirer")[-2000:]
            wait_closed(data, i + 1, procs=procs)
        yield env, data, {r.scenario: r.session_id for r in wait_closed(data, len(names))}
    finally:
        procs.stop_all()


def test_verify_passes_on_every_scenario(scenarios):
    env, _data, by_scenario = scenarios
    assert set(by_scenario) == set(scenario_names()) and len(by_scenario) >= 6
    for scenario, sid in by_scenario.items():
        r = cli(env, "verify", sid, "--json")
        rep = json_lines(r.stdout)[0]
        assert r.returncode == 0 and rep["ok"], (scenario, rep["differences"][:5], rep["problems"][:5], rep["notes"])
        assert rep["compared"]["amr_measurement"] > 0 and rep["compared"]["decision"] >= 1, (scenario, rep)
        print(f"\nverify {scenario}: {rep['compared']} in {rep['seconds']} s")


def spans(d: Path) -> list[tuple[Span, int | None]]:
    """Where every byte of every segment belongs, with the record's kind (None: the segment header)."""
    out = []
    for rec in ArchiveReader(d).records():
        name = f"seg-{rec.segment:06d}.amrlog"
        if rec.offset == SEGMENT_HEADER_SIZE:
            out.append((Span(name, 0, SEGMENT_HEADER_SIZE, None), None))
        out.append((Span(name, rec.offset, rec.offset + record_size(len(rec.body)), rec.record_no), rec.kind))
    return out


def _copy(data: Path, sid: str, to: Path) -> Path:
    d = session_path(to, sid)
    shutil.copytree(session_path(data, sid), d)
    return d


def test_a_changed_byte_anywhere_fails_verify_and_names_the_record(scenarios, tmp_path):
    env, data, by_scenario = scenarios
    sid = by_scenario["persists-unexpected"]
    d = _copy(data, sid, tmp_path / "data")
    assert verify_session(tmp_path / "data", sid, parallel=False).ok
    layout = spans(d)
    snap = snapshot(d)
    rng = random.Random(11)
    # Every kind of record (bytes anywhere in it), the segment header, checkpoint.json.
    by_kind: dict[int, list] = {}
    for sp, kind in layout:
        if kind is not None:
            by_kind.setdefault(kind, []).append(sp)
    picks = []
    for _kind, lst in sorted(by_kind.items()):
        for sp in rng.sample(lst, min(len(lst), 6 if FULL else 2)):
            picks.append((sp.file, rng.randrange(sp.start, sp.end), sp))
    picks.append((layout[0][0].file, 3, None))
    cp = len(snap["checkpoint.json"])
    picks += [("checkpoint.json", rng.randrange(cp - 1), None) for _ in range(3 if FULL else 1)]
    assert {Kind.SEGMENT, Kind.OPEN, Kind.MESSAGE, Kind.CHECKPOINT, Kind.CLOSE} <= set(by_kind)
    for name, pos, sp in picks:
        changed = bytearray(snap[name])
        changed[pos] ^= 1 << rng.randrange(8)
        (d / name).write_bytes(bytes(changed))
        rep = verify_session(tmp_path / "data", sid, parallel=False)
        assert not rep.ok, (name, pos)
        if sp is not None:
            assert any(p.file == name and p.record_no == sp.record_no for p in rep.problems), (name, pos, sp,
                                                                                             rep.problems)
        else:
            assert rep.problems, (name, pos)
        (d / name).write_bytes(snap[name])
    name, pos, sp = picks[len(picks) // 2]
    changed = bytearray(snap[name])
    changed[pos] ^= 0x10
    (d / name).write_bytes(bytes(changed))
    r = cli(dict(env, AMRWATCH_DATA=str(tmp_path / "data")), "verify", sid)
    assert r.returncode == 1 and "FAILED" in r.stdout and f"record {sp.record_no}" in r.stdout


def forge(src: Path, dst: Path, change, gaps=()) -> dict:
    """Rewrite an archive as a forger would: every message through `change(topic, header)` (True: changed,
    None: left out), CRCs, chain and checkpoint recomputed; `gaps` (Gap bodies) appended. Returns
    {record_no: header} of the changed messages."""
    w = ArchiveWriter(dst, meta={"forged": True})
    changed = {}
    for rec in ArchiveReader(src).records():
        if rec.kind == Kind.MESSAGE:
            frames = decode_message(rec.body)
            head = json.loads(frames[1])
            hit = change(frames[0].decode(), head)
            if hit is None:
                continue
            if hit:
                frames[1] = json.dumps(head).encode()
            no = w.append_message(frames)
            if hit:
                changed[no] = head
        elif rec.kind == Kind.GAP:
            w.append(Kind.GAP, rec.body)
    for g in gaps:
        w.append(Kind.GAP, g.encode())
    w.close()
    return changed


def test_a_forged_measurement_passes_integrity_but_not_the_rerun(scenarios, tmp_path):
    _env, data, by_scenario = scenarios
    sid = by_scenario["disappears-after-decompression"]

    def bigger_amr(topic: str, head: dict) -> bool:
        if topic != "amr_measurement" or not head["present"] or bigger_amr.done:
            return False
        head["p2p_uv"] = round(head["p2p_uv"] * 1.5, 3)  # a bigger AMR than the signal holds
        bigger_amr.done = True
        return True

    bigger_amr.done = False
    [(no, head)] = forge(session_path(data, sid), session_path(tmp_path / "data", sid), bigger_amr).items()
    rep = verify_session(tmp_path / "data", sid, parallel=False)
    assert rep.problems == []  # CRCs, chain and checkpoint were recomputed: integrity alone cannot tell
    assert not rep.ok
    [diff] = [x for x in rep.differences if x.field == "p2p_uv"]
    assert diff.record_no == no and diff.what == f"stimulus {head['stimulus_index']} {head['channel']}"
    assert diff.archived == pytest.approx(diff.recomputed * 1.5, abs=0.002)


def test_verify_refuses_a_session_predicted_with_another_model(scenarios, tmp_path):
    env, data, by_scenario = scenarios
    sid = by_scenario["persists-expected"]
    other = "ab" * 32

    def other_model(topic: str, head: dict) -> bool:
        if topic == "prediction":
            head["model_sha256"] = other
            return True
        return False

    assert forge(session_path(data, sid), session_path(tmp_path / "data", sid), other_model)
    r = cli(dict(env, AMRWATCH_DATA=str(tmp_path / "data")), "verify", sid)
    assert r.returncode == 1 and r.stdout == ""
    assert f"predicted with model {other}" in r.stderr and "--model DIR" in r.stderr


def test_events_a_gap_record_says_were_lost_are_recomputed_and_unrecorded_losses_are_differences(scenarios,
                                                                                                 tmp_path):
    _env, data, by_scenario = scenarios
    sid = by_scenario["early-disappearance"]
    with ArchiveIndex.build(session_path(data, sid)) as idx:
        ms = sorted((e for e in idx.events_of("amr_measurement")), key=lambda e: e.seq)
    lost = ms[20:26]  # six measurements the recorder never got (and said so)
    unsaid = ms[40]  # one it never got and did not say

    def drop(topic: str, head: dict):
        return None if topic == "amr_measurement" and head["seq"] in {e.seq for e in lost} | {unsaid.seq} else False

    gap = Gap("analyzer", lost[0].instance, lost[0].seq, lost[-1].seq, "lost on the bus", "amr_measurement")
    forge(session_path(data, sid), session_path(tmp_path / "data", sid), drop, gaps=[gap])
    rep = verify_session(tmp_path / "data", sid, parallel=False)
    assert rep.problems == [] and rep.stood_in["amr_measurement"] == 6
    [diff] = rep.differences
    assert diff.what == f"stimulus {unsaid.header['stimulus_index']} {unsaid.header['channel']}"
    assert diff.record_no is None and diff.archived == "missing from the archive"


def test_verify_and_analyze_use_the_settings_the_session_ran_with(procs, stack_env, tmp_path):
    """An analyzer started with `--set` and a predictor with another evaluation window measure and
    decide differently from the defaults; their `service_settings` are archived, and the audit
    re-runs (verify, analyze of the archive) use them rather than today's defaults."""
    from amrwatch import provenance
    from amrwatch.services.analyzer.settings import AnalyzerSettings
    from amrwatch.services.predictor.decision import DecisionSettings

    data = Path(stack_env["AMRWATCH_DATA"])
    for svc in ("bus", "recorder"):
        procs.start(svc)
    procs.start("analyzer", "--set", "disappear_k=3", "--set", "present_noise_factor=7")
    procs.start("predictor", "--evaluation-sweeps", "8")
    acq = procs.start("acquirer", "--scenario", "disappears-after-decompression", "--speed", SPEED, "--time-scale",
                      "0.1", "--seed", "3", "--wait-for", "recorder,analyzer,predictor")
    assert acq.wait(timeout=120) == 0, procs.log("acquirer")[-2000:]
    sid = wait_closed(data, 1, procs=procs)[0].session_id

    with ArchiveIndex.build(session_path(data, sid)) as idx:
        announced = {e.publisher: e.body["settings"] for e in idx.events_of("service_settings")}
        platforms = {e.publisher: e.body["platform"] for e in idx.events_of("service_settings")}
        archived = sorted((e.body for e in idx.events_of("amr_measurement")),
                          key=lambda b: (b["stimulus_index"], b["channel"]))
    assert announced["analyzer"]["disappear_k"] == 3 and announced["analyzer"]["present_noise_factor"] == 7
    assert announced["predictor"]["evaluation_sweeps"] == 8
    assert platforms["analyzer"] == platforms["predictor"] == provenance.platform()

    r = cli(stack_env, "verify", sid, "--json")
    rep = json_lines(r.stdout)[0]
    assert r.returncode == 0 and rep["ok"], (rep["differences"][:5], rep["notes"])
    assert rep["settings"]["analyzer"].startswith("archived") and rep["settings"]["predictor"].startswith("archived")
    assert not any("another platform" in n for n in rep["notes"]), rep["notes"]  # recorded and re-run here
    # The same archive re-run with the defaults differs: the archived settings are what made it identical.
    with_defaults = verify_session(data, sid, analyzer_settings=AnalyzerSettings(),
                                   decision_settings=DecisionSettings(), parallel=False)
    assert not with_defaults.ok and with_defaults.differences

    r = cli(stack_env, "analyze", str(session_path(data, sid)), "--json")
    assert r.returncode == 0, r.stderr
    assert "using the analyzer settings archived with the session" in r.stderr
    offline = sorted(json_lines(r.stdout), key=lambda b: (b["stimulus_index"], b["channel"]))
    assert offline == [{k: b[k] for k in offline[0]} for b in archived]


def test_settings_from_another_platform_are_used_and_the_move_is_named(tmp_path):
    """An archive analysed on another CPU with other library versions: its settings still apply, and
    the report says where it was computed, so a last-digit difference is not read as tampering."""
    import datetime as dt

    from amrwatch import provenance
    from amrwatch.proto.codec import encode
    from amrwatch.proto.messages import ServiceSettings
    from amrwatch.services.analyzer.settings import AnalyzerSettings
    from amrwatch.archive.settings import ArchiveSettings
    from amrwatch.audit.verify import VerifyReport, _archived_settings

    elsewhere = {**provenance.platform(), "cpu": "Intel(R) Xeon(R) Gold 6130", "numpy": "2.3.5"}
    settings = AnalyzerSettings(disappear_k=4).model_dump(mode="json")
    msg = ServiceSettings(type="service_settings", schema_version=1, session_id="S1", seq=0, publisher="analyzer",
                          instance="0123abcd", ts_utc=dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
                          **ServiceSettings.body_for("analyzer", settings, elsewhere))
    d = tmp_path / "sessions" / "S1"
    w = ArchiveWriter(d, ArchiveSettings())
    w.append_message(encode(msg))
    w.close()
    report = VerifyReport("S1")
    from amrwatch.archive.session import open_session

    with open_session(d) as session:
        got = _archived_settings(session, "analyzer", AnalyzerSettings.model_validate, report)
    assert got == AnalyzerSettings(disappear_k=4)
    assert report.settings["analyzer"] == f"archived {ServiceSettings.digest(settings)[:12]}"
    moved = [n for n in report.notes if "another platform" in n]
    assert len(moved) == 1 and "cpu Intel(R) Xeon(R) Gold 6130 → " in moved[0] and "numpy 2.3.5 → " in moved[0]


def test_verify_with_the_index_on_several_cores_reports_what_one_process_reports(scenarios, tmp_path, monkeypatch):
    """`amrwatch verify` builds the index with forked workers (issue #18): on a session whose segments roll
    every few hundred records, an intact archive is identical and a byte changed in a later segment (a
    worker's part) fails with the record named, exactly as the one-process run reports it."""
    from amrwatch.archive import index as index_mod
    from amrwatch.archive.settings import ArchiveSettings

    monkeypatch.setattr(index_mod, "_MIN_CHUNK_BYTES", 1)  # parts of any size (small sessions stay in one)
    _env, data, by_scenario = scenarios
    sid = by_scenario["persists-unexpected"]
    d = session_path(tmp_path / "data", sid)
    w = ArchiveWriter(d, ArchiveSettings(segment_bytes=1 << 18), meta={"rolled": True})
    for rec in ArchiveReader(session_path(data, sid)).records():
        if rec.kind in (Kind.MESSAGE, Kind.GAP):
            w.append(rec.kind, rec.body)
    w.close()
    segments = sorted(d.glob("seg-*.amrlog"))
    assert len(segments) >= 4

    def report(workers: int):
        rep = verify_session(tmp_path / "data", sid, index_workers=workers)
        return rep, [ln for ln in rep.lines() if "verified in" not in ln]

    one, lines = report(1)
    many, many_lines = report(3)
    assert one.ok and many.ok and many_lines == lines
    late = [(sp, kind) for sp, kind in spans(d) if kind == Kind.MESSAGE and sp.file == segments[-2].name]
    sp, _kind = late[len(late) // 2]
    snap = snapshot(d)
    changed = bytearray(snap[sp.file])
    changed[(sp.start + sp.end) // 2] ^= 0x04
    (d / sp.file).write_bytes(bytes(changed))
    one, lines = report(1)
    many, many_lines = report(3)
    assert not many.ok and many_lines == lines
    assert any(p.file == sp.file and p.record_no == sp.record_no for p in many.problems), many.problems


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_that_cannot_be_loaded_is_refused_however_early_it_is_loaded(scenarios, tmp_path, workers):
    """With the index on every core verify loads the model while the workers index (issue #18); a model that
    cannot be loaded still ends verify with the same error."""
    from amrwatch.audit.verify import VerifyError

    _env, data, by_scenario = scenarios
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    (broken / "model_card.json").write_text("{}")
    with pytest.raises(VerifyError, match="cannot load the model"):
        verify_session(data, by_scenario["persists-expected"], model_dir=str(broken), parallel=False,
                       index_workers=workers)
