"""The replay view's endpoints over a real archive (the recorder's format)."""

from __future__ import annotations

import pytest

from amrwatch.services.monitor.timeline import ReplayError, ReplayIndex, archived_messages, list_archived

from .archive import write_archive
from .build import FS, Stream, session_messages, session_signal
from .conftest import base_url, http, wait_http

N = 40


def disappearing_session() -> tuple[Stream, list, list]:
    """MENT/OORIS 150 µV until stimulus 20, then gone; decompression marked at stimulus 16."""
    amps = {"MENT": [150.0 if k < 20 else 0.0 for k in range(N)], "OORIS": [120.0 if k < 20 else 0.0 for k in range(N)],
            "OOCUL": [90.0] * N}
    st = Stream()
    x, stims = session_signal(N, amplitudes=amps, noise_uv=2.0)
    msgs = session_messages(st, x, stims, end=True)
    msgs.insert(1, st.stage("baseline", 0))
    at = {m.stimulus_index: i for i, m in enumerate(msgs) if m.type == "stimulus"}
    extra: dict[int, list] = {}
    for k, s, d in stims:
        for ch in (("MENT", "OORIS") if d == "ZYG" else ("OOCUL",)):
            p2p = amps[ch][k] or 4.0
            extra.setdefault(at[k], []).append(st.measurement(k, ch, d, s / FS, p2p, pct=100 * p2p / amps[ch][0],
                                                              present=amps[ch][k] > 0))
    extra.setdefault(at[16], []).insert(0, st.stage("decompression", stims[16][1]))
    extra.setdefault(at[22], []).append(st.msg("amr_state", channel="MENT", direction="ZYG", state="disappeared",
                                               previous_state="present", stage="decompression", stimulus_index=22,
                                               pct_of_baseline=2.7))
    out = []
    for i, m in enumerate(msgs):
        out.append(m)
        out.extend(extra.get(i, []))
    return st, out, stims


def test_an_archived_session_reads_back_into_the_same_picture(tmp_path):
    _, msgs, stims = disappearing_session()
    sid = write_archive(tmp_path, msgs)
    assert [r["session_id"] for r in list_archived(tmp_path)] == [sid]
    idx = ReplayIndex(archived_messages(tmp_path, sid))
    assert idx.n_messages == len(msgs)
    direct = ReplayIndex(msgs)
    assert idx.snapshot_at(12.0) == direct.snapshot_at(12.0)
    with pytest.raises(ReplayError, match="no archived session 'nope'"):
        list(archived_messages(tmp_path, "nope"))
    with pytest.raises(ReplayError):
        list(archived_messages(tmp_path, "../etc"))


def test_the_replay_endpoints_serve_the_session_at_any_time(procs, monitor_env, tmp_path):
    _, msgs, stims = disappearing_session()
    sid = write_archive(tmp_path / "data", msgs)
    procs.start("monitor", "--data", str(tmp_path / "data"))  # no bus needed to replay
    url = base_url(monitor_env)
    wait_http(url + "/api/config")
    listed = http("GET", url + "/api/sessions").json()
    assert [s["session_id"] for s in listed["sessions"]] == [sid] and listed["sessions"][0]["status"] == "closed"
    info = http("GET", url + f"/api/replay/{sid}").json()
    assert info["ok"] and [s["stage"] for s in info["stages"]] == ["baseline", "decompression"]
    assert info["duration_s"] == pytest.approx(0.25 + N * 0.5 + 0.1, abs=0.01)
    t_before = stims[14][1] / FS + 0.1  # stimulus 14 measured, before decompression
    before = http("GET", url + f"/api/replay/{sid}/at?t={t_before}").json()["snapshot"]
    assert before["stage"] == "baseline" and "MENT" not in before["states"]
    assert before["trend"]["MENT"]["i"] == list(range(0, 15, 2))
    assert before["sweeps"]["MENT"][-1]["stimulus_index"] == 14
    assert before["replay"]["t_s"] == pytest.approx(t_before)
    end = http("GET", url + f"/api/replay/{sid}/at?t={info['duration_s']}").json()["snapshot"]
    assert end["states"]["MENT"]["state"] == "disappeared" and end["stage"] == "decompression"
    assert end["transitions"][0]["t_s"] == pytest.approx(stims[22][1] / FS)
    assert len(end["trend"]["MENT"]["i"]) == N // 2 and end["session"]["ended"]["reason"] == "scenario_end"
    bad = http("GET", url + f"/api/replay/{sid}/at?t=9999")
    assert bad.status == 422 and "t: must be between 0 and" in bad.json()["error"]
    assert http("GET", url + f"/api/replay/{sid}/at?t=soon").status == 422
    missing = http("GET", url + "/api/replay/20990101T000000Z-000000")
    assert missing.status == 404 and "no archived session" in missing.json()["error"]
