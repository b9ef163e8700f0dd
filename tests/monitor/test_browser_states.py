"""The new states on the page, in headless Chromium, from messages published on
a real bus to a real monitor process: sweeps that cannot tell (noise, no
stimulus, direct response), the alarms that go with them, provisional status
versus the final verdict, a reappearance, the synthetic notice, the
`decompression_complete` button. Screenshots go to artifacts/monitor/states-*.png.

The analyzer and predictor do not emit these yet on this branch, so the test
plays their part: it publishes what they will publish (proto fields as in
proto/messages.py), phase by phase, and waits for the page after each."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from amrwatch.bus import Publisher
from amrwatch.proto.messages import BY_TYPE, Message

from .build import CHANNELS, FS, SID, Stream, response, session_messages
from .conftest import base_url, wait_http
from .test_browser import browser, page, settled, shot, state  # noqa: F401  (fixtures)

PERIOD_S, FIRST_S, N = 0.5, 0.25, 40
#: phases by stimulus index: baseline, decompression (present), cannot tell, absent → disappeared, reappeared
PHASES = [(0, 14), (14, 22), (22, 32), (32, N)]
NA_RGB = (242, 204, 96)

#: Pixels close to a colour in a canvas region (the trend's hollow not-assessable rings).
COLOR_JS = """([id, rgb, tol]) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 30, c.width, c.height - 60).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (Math.abs(d[i] - rgb[0]) < tol && Math.abs(d[i + 1] - rgb[1]) < tol && Math.abs(d[i + 2] - rgb[2]) < tol) n++;
  return n;
}"""


#: Legibility: a 24-inch 1920 x 1080 display (pixel pitch 0.2767 mm), its cap height taken as 0.729 em
#: (DejaVu Sans, the page's font on Debian). ISO 9241-303 asks at least 16 arcmin of character height;
#: IEC 60601-1-8 asks alarm text legible from 1 m (the priority, by colour and !!!, from further).
PITCH_MM, CAP_EM, MIN_ARCMIN = 0.2767, 0.729, 16.0

SIZES_JS = """(sels) => sels.map(sel => [...document.querySelectorAll(sel)].map(e => {
  const cs = getComputedStyle(e);
  return [parseFloat(cs.fontSize), e.scrollWidth <= e.clientWidth + 1, e.textContent];
}))"""


def arcmin(font_px: float, distance_m: float) -> float:
    import math

    return math.degrees(math.atan(font_px * CAP_EM * PITCH_MM / (distance_m * 1000.0))) * 60.0


def legible(page, sel: str, distance_m: float) -> list[float]:
    """Character heights (arcmin at distance_m) of every element matching sel; each must fit its box."""
    found = page.evaluate(SIZES_JS, [sel])[0]
    assert found, f"nothing matches {sel}"
    out = []
    for px, fits, text in found:
        a = arcmin(px, distance_m)
        print(f"{sel} {text!r}: {px:.0f} px = {a:.1f} arcmin at {distance_m:g} m")
        assert fits, f"{sel} {text!r} overflows its box"
        assert a >= MIN_ARCMIN, f"{sel} {text!r}: {a:.1f} arcmin at {distance_m} m (< {MIN_ARCMIN})"
        out.append(a)
    return out


def plan() -> list[tuple[str, int, str]]:
    """(channel, stimulus, what) for every measured sweep; what is the assessment or the reason."""
    out = []
    for k in range(N):
        d = "ZYG" if k % 2 == 0 else "MAR"
        for ch in [c["name"] for c in CHANNELS[:3] if c["direction"] == d]:
            if k < 14:
                what = "present"
            elif k < 22:
                what = {"MENT": "noise_too_high", "OORIS": "stimulus_unconfirmed", "OOCUL": "direct_response"}[ch]
            elif k < 32:
                what = "present" if ch == "OOCUL" else "absent"
            else:
                what = "present"
            out.append((ch, k, what))
    return out


def signal() -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """The signal the analyzer would have measured: 80/60/70 µV AMRs; MENT's
    noise rising to 15 µV, OORIS silent (stimulator dead), OOCUL with a direct
    response at 3.5 ms running into the window; then MENT/OORIS gone and back."""
    rng = np.random.default_rng(13)
    n = int((FIRST_S + N * PERIOD_S + 0.1) * FS)
    x = 2.0 * rng.standard_normal((len(CHANNELS), n))
    x[3] = np.arange(n)
    amp = {"MENT": 80.0, "OORIS": 60.0, "OOCUL": 70.0}
    stims = []
    seg_n = int(0.05 * FS)
    for k in range(N):
        s = int(round((FIRST_S + k * PERIOD_S) * FS))
        stims.append((k, s, "ZYG" if k % 2 == 0 else "MAR"))
    for ch, k, what in plan():
        row = [c["name"] for c in CHANNELS].index(ch)
        s = stims[k][1]
        if what == "present":
            x[row, s:s + seg_n] += response(seg_n, FS, 10.0, amp[ch])
        elif what == "noise_too_high":
            x[row, s - int(0.01 * FS):s + seg_n] += 15.0 * rng.standard_normal(seg_n + int(0.01 * FS))
        elif what == "direct_response":
            x[row, s:s + seg_n] += response(seg_n, FS, 3.5, 400.0, period_ms=8.0)
    return x, stims


def analyzer_messages(an: Stream, stims) -> dict[int, list[Message]]:
    """What the analyzer (and predictor) would publish after each stimulus."""
    by_k: dict[int, list[Message]] = {}
    amp = {"MENT": 80.0, "OORIS": 60.0, "OOCUL": 70.0}
    for ch, k, what in plan():
        d = "ZYG" if k % 2 == 0 else "MAR"
        t = stims[k][1] / FS
        if what == "present":
            m = an.measurement(k, ch, d, t, amp[ch], pct=100.0)
        elif what == "absent":
            m = an.measurement(k, ch, d, t, 5.0, pct=6.0, present=False, detection_limit_uv=20.0)
        elif what == "noise_too_high":
            m = an.measurement(k, ch, d, t, 55.0, pct=69.0, assessment="not_assessable", reason=what, noise_uv=15.0,
                               detection_limit_uv=90.0)
        elif what == "stimulus_unconfirmed":
            m = an.measurement(k, ch, d, t, 4.0, pct=6.0, assessment="not_assessable", reason=what,
                               stimulus_confirmed=False)
        else:
            m = an.measurement(k, ch, d, t, 410.0, pct=580.0, assessment="not_assessable", reason=what, onset_ms=3.5)
        by_k.setdefault(k, []).append(m)

    def state(k, ch, st, prev):
        d = "ZYG" if ch != "OOCUL" else "MAR"
        by_k.setdefault(k, []).append(an.msg("amr_state", channel=ch, direction=d, state=st, previous_state=prev,
                                             stage=None, stimulus_index=k, pct_of_baseline=None))

    for ch, k in (("MENT", 0), ("OORIS", 0), ("OOCUL", 1)):
        state(k, ch, "present", None)
    for ch, k in (("MENT", 12), ("OORIS", 12), ("OOCUL", 13)):
        by_k[k].append(an.msg("baseline", channel=ch, direction="ZYG" if ch != "OOCUL" else "MAR",
                              baseline_uv=amp[ch], n_sweeps=6, amr_amplitude_uv=80.0))
    for ch in ("MENT", "OORIS"):
        state(30, ch, "disappeared", "present")
        state(34, ch, "reappeared", "disappeared")
    return by_k


def republish(pubs: dict[str, Publisher], m: Message) -> None:
    body = {f: getattr(m, f) for f in type(m).body_fields()}
    if m.type == "emg_frame":
        body["samples"] = np.asarray(m.samples)
    pubs[m.publisher].publish(type(m), m.session_id, **body)


def tile_word(page, ch: str) -> str:
    """The tile's headline as one line (the reason of a not-assessable sweep is on a line of its own)."""
    return " ".join(page.inner_text(f'.tile[data-channel="{ch}"] .state').split())


def wait_word(page, ch: str, word: str, timeout: float = 20_000) -> None:
    page.wait_for_function(
        f"() => {{ const r = window.amrwatch.S && window.amrwatch.S.readout; "
        f"return r && r.channels.{ch} && r.channels.{ch}.word === {word!r}; }}", timeout=timeout)


@pytest.mark.slow
def test_the_new_states_read_from_3_m(page, procs, monitor_env):  # noqa: F811
    env = monitor_env
    url = base_url(env)
    procs.start("bus")
    procs.start("monitor")
    wait_http(url + "/api/config")
    page.set_viewport_size({"width": 1920, "height": 1080})  # a common operating-room display
    page.goto(url + "/")
    page.wait_for_function("() => window.amrwatch.config && document.querySelector('#stage-buttons button')")
    # the new stage's button, between Decompression and Closure, reads as a phrase
    buttons = page.eval_on_selector_all("#stage-buttons button", "bs => bs.map(b => [b.dataset.stage, b.textContent])")
    stages = [s for s, _ in buttons]
    assert stages.index("decompression") + 1 == stages.index("decompression_complete") == stages.index("closure") - 1
    assert dict(buttons)["decompression_complete"] == "Decompression complete"
    assert "key-stage" in page.get_attribute('#stage-buttons button[data-stage="decompression_complete"]', "class")

    acq, an, pr = Stream(SID, "acquirer"), Stream(SID, "analyzer"), Stream(SID, "predictor")
    x, stims = signal()
    msgs = session_messages(acq, x, stims, frame_n=2000)
    by_k = analyzer_messages(an, stims)
    stage_at = {0: acq.stage("baseline", 0), 14: acq.stage("decompression", stims[14][1] - 10),
                22: acq.stage("decompression_complete", stims[22][1] - 10)}
    ordered: list[tuple[int, Message]] = []  # (stimulus index the message belongs to, message)
    k_now = 0
    for m in msgs:
        if m.type == "stimulus":
            k_now = m.stimulus_index
            if k_now in stage_at:
                ordered.append((k_now, stage_at[k_now]))
            ordered.append((k_now, m))
            ordered += [(k_now, a) for a in by_k.get(k_now, [])]
        else:
            ordered.append((k_now, m))
    alarms = {
        14: [("stimulation_failure", "high", "stimulation_failure:ZYG",
              "ZYG stimulus not confirmed for 4 sweeps: no artifact, no direct response, no AMR — check the stimulator")],
        15: [("direct_response", "medium", "direct_response:OOCUL",
              "OOCUL: response onset 3.5 ms, a direct response from current spread in the AMR window"),
             ("recording_quality", "low", "recording_quality:MENT",
              "MENT noise 15 µV RMS: an AMR under 90 µV could not be seen")],
    }
    ctx = zmq.Context()
    pubs = {name: Publisher(ctx, env["AMRWATCH_BUS_IN"], name) for name in ("acquirer", "analyzer", "predictor")}
    try:
        for p in pubs.values():
            assert p.wait_ready(15.0), "the monitor's subscription never reached the bus"

        def publish_until(k_end: int, done: set[int] = set()) -> None:  # noqa: B006 (the phases share it)
            for i, (k, m) in enumerate(ordered):
                if i in done or k >= k_end:
                    continue
                republish(pubs, m)
                done.add(i)
            for k, items in alarms.items():
                if k < k_end and ("alarm", k) not in done:
                    for kind, prio, key, text in items:
                        pubs["analyzer"].publish(BY_TYPE["alarm"], SID, kind=kind, priority=prio, state="raised",
                                                 message=text, source="analyzer", alarm_key=key)
                    done.add(("alarm", k))

        # -- decompression under way: present, and the decision is status, not a verdict
        publish_until(14)
        republish(pubs, pr.decision(1, "evaluating", "info", provisional=True,
                                    rationale="Decompression under way: the verdict is given once it is complete."))
        # a prediction from inputs outside the model's training range: its band is not shown as trusted
        pubs["predictor"].publish(BY_TYPE["prediction"], SID, probability=1.0, band="high", cutoff_low=0.2,
                                  cutoff_high=0.6, model_sha256="0" * 64, synthetic=True,
                                  notice="synthetic — not for clinical use", inputs={"displacement": 1},
                                  extrapolated=["displacement"])
        for ch in ("MENT", "OORIS", "OOCUL"):
            wait_word(page, ch, "PRESENT")
        page.wait_for_selector("#extrapolated", timeout=10_000)
        assert page.inner_text("#band").lower() == "band not trusted"
        assert page.inner_text("#extrapolated") == "outside the training range: displacement"
        page.wait_for_selector('#decision-kind[data-kind="evaluating"]', timeout=10_000)
        settled(page)
        assert page.inner_text("#decision-kind") == "EVALUATING — NOT A VERDICT"  # uppercase on the page
        assert page.get_attribute("#decision-kind", "data-provisional") == "true"
        assert "provisional" in page.get_attribute("#decision", "class")
        assert page.is_hidden("#verdict"), "provisional status must not be shown as a verdict"
        assert "SYNTHETIC" in page.inner_text("#decision-notice")
        shot(page, "states-evaluating")

        # -- the sweeps cannot tell: noise, dead stimulator, direct response; the alarms go up
        publish_until(22)
        wait_word(page, "MENT", "NOT ASSESSABLE: NOISE")
        wait_word(page, "OORIS", "NOT ASSESSABLE: NO STIMULUS")
        wait_word(page, "OOCUL", "NOT ASSESSABLE: DIRECT RESPONSE")
        page.wait_for_selector('#alarm-strip .strip-alarm[data-kind="recording_quality"]', timeout=10_000)
        settled(page)
        for ch, word in (("MENT", "NOT ASSESSABLE: NOISE"), ("OORIS", "NOT ASSESSABLE: NO STIMULUS"),
                         ("OOCUL", "NOT ASSESSABLE: DIRECT RESPONSE")):
            assert tile_word(page, ch).upper() == word
            assert page.get_attribute(f'.tile[data-channel="{ch}"]', "data-tone") == "not_assessable"
            course = page.inner_text(f'.tile[data-channel="{ch}"] .course')
            assert course.startswith("last AMR state: PRESENT — not updated"), course
        assert "smallest AMR visible 90 µV, baseline 80 µV" in page.inner_text('.tile[data-channel="MENT"] .pct')
        # never "absent" nor "disappeared" anywhere in a tile while the sweeps cannot tell
        assert not any(w in page.inner_text("#states").upper() for w in ("ABSENT", "DISAPPEARED"))
        strip = page.eval_on_selector_all("#alarm-strip .strip-alarm",
                                          "xs => xs.map(x => [x.dataset.kind, x.querySelector('.prio-mark').textContent])")
        assert strip == [["stimulation_failure", "!!! HIGH"], ["direct_response", "!! MEDIUM"],
                         ["recording_quality", "! LOW"]]  # high first, each priority spelled out
        colors = page.eval_on_selector_all("#alarm-strip .prio-mark", "xs => xs.map(x => getComputedStyle(x).backgroundColor)")
        assert colors == ["rgb(255, 64, 64)", "rgb(255, 208, 0)", "rgb(0, 200, 216)"]  # IEC red, yellow, cyan
        assert "STIMULATION FAILURE" in page.inner_text("#alarm-strip")
        # the trend marks the noisy stretch with hollow rings of its own colour
        assert page.evaluate(COLOR_JS, ["trend-p2p", list(NA_RGB), 30]) > 50, "no not-assessable marks on the trend"
        assert "NOT ASSESSABLE" in page.inner_text("#fig-MENT")
        legible(page, ".tile .state .reason", 3.0)
        legible(page, ".strip-alarm .alarm-kind", 1.0)
        legible(page, ".strip-alarm .strip-msg", 1.0)
        shot(page, "states-not-assessable")

        # -- decompression complete, sweeps absent: ABSENT… first, then the analyzer's disappearance and a verdict
        for key in ("stimulation_failure:ZYG", "direct_response:OOCUL", "recording_quality:MENT"):
            pubs["analyzer"].publish(BY_TYPE["alarm"], SID, kind=key.split(":")[0], priority="low", state="cleared",
                                     message="cleared", source="analyzer", alarm_key=key)
        publish_until(28)
        wait_word(page, "MENT", "ABSENT…")
        page.wait_for_function("() => window.amrwatch.S.readout.channels.MENT.run === 3", timeout=20_000)  # 22, 24, 26
        page.wait_for_function("() => window.amrwatch.S.stage === 'decompression_complete'")
        settled(page)
        assert page.inner_text("#stage-now") == "DECOMPRESSION COMPLETE"
        assert "absent 3 sweeps in a row" in page.inner_text('.tile[data-channel="MENT"] .pct')
        assert page.inner_text("#alarm-strip") == ""
        publish_until(32)
        republish(pubs, pr.decision(2, "decompression_confirmed", "low", supersedes=1,
                                    rationale="The AMR disappeared on both ZYG channels after the decompression was "
                                              "complete, with the noise low enough to have seen it."))
        wait_word(page, "MENT", "DISAPPEARED")
        page.wait_for_selector('#verdict[data-kind="decompression_confirmed"]', timeout=10_000)
        settled(page)
        assert page.inner_text("#verdict-word") == "DECOMPRESSION CONFIRMED"
        legible(page, "#verdict-word", 3.0)
        legible(page, ".tile .state", 3.0)  # DISAPPEARED, DISAPPEARED, PRESENT
        assert page.inner_text("#verdict-notice") == "SYNTHETIC — NOT FOR CLINICAL USE"
        assert page.get_attribute("#decision-kind", "data-provisional") == "false"
        assert tile_word(page, "OOCUL") == "PRESENT"
        shot(page, "states-verdict")

        # -- the AMR comes back after the verdict: high priority, in red, replacing it
        publish_until(N)
        republish(pubs, pr.decision(3, "amr_reappeared", "high", supersedes=2,
                                    rationale="The AMR is back on MENT and OORIS after the decompression was confirmed: "
                                              "the vessel or the prosthesis may have moved."))
        page.wait_for_selector('#verdict[data-kind="amr_reappeared"]', timeout=10_000)
        wait_word(page, "MENT", "REAPPEARED")
        settled(page)
        assert page.inner_text("#verdict-word") == "AMR REAPPEARED"
        assert "prio-high" in page.get_attribute("#verdict", "class")
        assert page.evaluate("() => getComputedStyle(document.querySelector('#verdict')).borderTopColor") \
            == "rgb(255, 64, 64)"
        history = page.inner_text("#decisions")
        assert "amr reappeared (high) · synthetic" in history and "evaluating (provisional)" in history
        shot(page, "states-amr-reappeared")
        assert page.errors == []
    finally:
        for p in pubs.values():
            p.close()
        ctx.term()
