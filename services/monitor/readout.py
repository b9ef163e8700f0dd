"""The words the page shows from 3 m: per channel, what the newest sweep can
tell about the AMR; for the decision, whether it is a verdict or only status.

Pure functions of the view's state (no sockets, no clock), so the live page,
the replay view and the tests read the same words; the page only draws them.

The rules (README, "The monitor page"):

- A sweep that *cannot tell* says so in the headline, with its reason
  (NOT ASSESSABLE: NOISE / NO STIMULUS / DIRECT RESPONSE), and the last AMR
  state is shown beneath it as not updated: a noisy stretch, a silent
  stimulator or a direct response must never read as a disappearance.
  "Cannot tell" beats a confident wrong answer (docs/domain.md, "What a
  neurophysiologist checks before believing a disappearance").
- An absent sweep is not a disappearance: until the analyzer's course says
  `disappeared`, the word is ABSENT… with the number of absent sweeps in a row.
- A decision that is provisional (`provisional: true`, or kind `evaluating`,
  which is status by definition) is never styled as a verdict; only a final
  decision goes into the verdict banner.
- Every decision from the synthetic model carries its notice.
"""

from __future__ import annotations

from typing import Any

#: The headline of a not-assessable sweep, by the analyzer's reason (proto's NOT_ASSESSABLE_REASONS, every one).
NOT_ASSESSABLE_WORDS = {
    "noise_too_high": "NOT ASSESSABLE: NOISE",
    "stimulus_unconfirmed": "NOT ASSESSABLE: NO STIMULUS",
    "direct_response": "NOT ASSESSABLE: DIRECT RESPONSE",
    "intensity_below_baseline": "NOT ASSESSABLE: WEAKER STIMULUS",
}

#: What each not-assessable reason means, for the line under the headline.
NOT_ASSESSABLE_WHY = {
    "noise_too_high": "noise too high to see a baseline-size AMR",
    "stimulus_unconfirmed": "stimulus not confirmed delivered (no artifact, no direct response)",
    "direct_response": "a direct response from current spread reaches the AMR window",
    "intensity_below_baseline": "the stimulus is weaker than at baseline: its amplitude is not comparable",
}

#: The decision's headline. Anything not listed is spelled from its kind.
DECISION_WORDS = {
    "decompression_confirmed": "DECOMPRESSION CONFIRMED",
    "explore_further": "EXPLORE FURTHER",
    "termination_acceptable": "TERMINATION ACCEPTABLE",
    "check_decompression": "CHECK DECOMPRESSION",
    "amr_reappeared": "AMR REAPPEARED",
    "evaluating": "EVALUATING — not a verdict",
    "indeterminate": "INDETERMINATE",
    "early_disappearance": "EARLY DISAPPEARANCE",
    "amr_not_monitorable": "AMR NOT MONITORABLE",
    "prognosis": "PROGNOSIS",
}

#: Shown with every synthetic decision whose notice is missing.
SYNTHETIC_NOTICE = "synthetic model — not for clinical use"


def words(s: str | None) -> str:
    return (s or "").replace("_", " ")


def _uv(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} µV"


def _pct(x: float | None) -> str:
    return "" if x is None else f" · {x:.0f} % of baseline"


def _sweeps(n: int) -> str:
    return f"{n} sweep" + ("" if n == 1 else "s")


def assessment_of(m: dict) -> str:
    """The sweep's assessment; a measurement from before the field existed is
    read from `rejected` and `present` (absent is then as far as it goes)."""
    a = m.get("assessment")
    if a:
        return a
    if m.get("rejected"):
        return "rejected"
    return "present" if m.get("present") else "absent"


def run_key(m: dict) -> tuple[str, str | None]:
    """Sweeps in a row with the same key are counted together on the tile."""
    a = assessment_of(m)
    return (a, m.get("assessment_reason") if a in ("not_assessable", "rejected") else None)


def channel_readout(latest: dict | None, run: int, state: dict | None, baseline: dict | None) -> dict[str, Any]:
    """The tile of one channel.

    latest: the newest measurement of the channel (the event's fields);
    run: how many sweeps in a row share its `run_key`; state: the newest
    `amr_state` event or None; baseline: the channel's `baseline` event or None.
    Returns `word` (the headline), `tone` (its style: present, diminished,
    absent, disappeared, reappeared, not_assessable, rejected, none),
    `detail` (figures of the newest sweep), `state_line` (the AMR course
    state, said to be stale while sweeps cannot tell) and `counts` (whether the
    newest sweep counts for the course)."""
    st = state["state"] if state else None
    base_uv = baseline.get("baseline_uv") if baseline else None
    state_word = st.upper() if st else None
    if latest is None:
        return {"word": "NO MEASUREMENT YET", "tone": "none", "assessment": None, "reason": None, "run": 0,
                "counts": False, "detail": "", "state_line": f"AMR state: {state_word}" if st else "",
                "stimulus_index": None}
    a = assessment_of(latest)
    reason = latest.get("assessment_reason")
    limit = latest.get("detection_limit_uv")
    p2p = latest.get("p2p_uv")
    stim_ok = latest.get("stimulus_confirmed")
    bits: list[str] = []
    if a == "not_assessable":
        word = NOT_ASSESSABLE_WORDS.get(reason or "", "NOT ASSESSABLE")
        tone = "not_assessable"
        why = NOT_ASSESSABLE_WHY.get(reason or "", words(reason) or "the sweep cannot tell")
        bits.append(f"{why} · {_sweeps(run)} in a row")
        if reason == "noise_too_high" and limit is not None:
            bits.append(f"smallest AMR visible {_uv(limit)}" + (f", baseline {_uv(base_uv)}" if base_uv else ""))
        if reason == "direct_response" and latest.get("onset_latency_ms") is not None:
            bits.append(f"onset {latest['onset_latency_ms']:.1f} ms")
    elif a == "rejected":
        word = "REJECTED" + (f": {words(reason).upper()}" if reason else "")
        tone = "rejected"
        bits.append(f"sweep not measured ({words(reason) or 'rejected'}) · {_sweeps(run)} in a row")
    elif a == "absent":
        if st == "disappeared":
            word, tone = "DISAPPEARED", "disappeared"
        else:
            word, tone = "ABSENT…", "absent"
        bits.append(f"{_uv(p2p)}{_pct(latest.get('pct_of_baseline'))} · absent {_sweeps(run)} in a row")
        if limit is not None:
            bits.append(f"would have seen ≥ {_uv(limit)}")
    else:  # present
        if st in ("diminished", "reappeared", "present"):
            word, tone = state_word, st
        else:
            word, tone = "PRESENT", "present"
        bits.append(f"{_uv(p2p)}{_pct(latest.get('pct_of_baseline'))}")
    if stim_ok is False and reason != "stimulus_unconfirmed":
        bits.append("stimulus NOT confirmed")
    counts = a in ("present", "absent")
    if not st:
        state_line = "AMR state: not yet established"
    elif counts:
        state_line = f"AMR state: {state_word}"
    else:
        state_line = f"last AMR state: {state_word} — not updated while sweeps cannot tell"
    return {"word": word, "tone": tone, "assessment": a, "reason": reason, "run": run, "counts": counts,
            "detail": " · ".join(bits), "state_line": state_line, "stimulus_index": latest.get("stimulus_index")}


def decision_readout(d: dict) -> dict[str, Any]:
    """One decision as the page shows it: headline, provisional or final, notice."""
    provisional = bool(d.get("provisional")) or d.get("kind") == "evaluating"
    word = DECISION_WORDS.get(d.get("kind", ""), words(d.get("kind")).upper())
    if provisional and d.get("kind") != "evaluating":
        word = f"{word} — provisional, not a verdict"
    notice = d.get("notice") or (SYNTHETIC_NOTICE if d.get("synthetic") else None)
    return {"decision_id": d.get("decision_id"), "kind": d.get("kind"), "priority": d.get("priority"),
            "headline": word, "provisional": provisional, "final": not provisional,
            "synthetic": bool(d.get("synthetic")), "notice": notice, "rationale": d.get("rationale"),
            "t_s": d.get("t_s")}


def decisions_readout(decisions: list[dict]) -> dict[str, Any]:
    """`current`: the newest decision not superseded (verdict or status);
    `verdict`: the newest final one not superseded, for the banner — a later
    provisional status never hides it, and a provisional one is never in it."""
    superseded = {d.get("supersedes") for d in decisions if d.get("supersedes") is not None}
    live = [d for d in decisions if d.get("decision_id") not in superseded]
    current = decision_readout(live[-1]) if live else None
    finals = [d for d in live if not decision_readout(d)["provisional"]]
    verdict = decision_readout(finals[-1]) if finals else None
    return {"current": current, "verdict": verdict}
