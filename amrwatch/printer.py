"""How events look on a terminal: one readable line each, or JSON lines."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .proto.messages import Message


def _fmt(v, unit: str = "", nd: int = 1) -> str:
    return "—" if v is None else f"{v:.{nd}f}{unit}"


def line(msg: Message) -> str:
    t = msg.ts_utc.strftime("%H:%M:%S")
    d = msg.model_dump()
    head = f"{t} {msg.type:<16}"
    k = msg.type
    if k == "amr_measurement":
        if d["rejected"]:
            return f"{head} {d['channel']:<6} #{d['stimulus_index']:<5} rejected ({d['reject_reason']})"
        return (f"{head} {d['channel']:<6} #{d['stimulus_index']:<5} p2p {d['p2p_uv']:7.1f} µV  "
                f"onset {_fmt(d['onset_latency_ms'], ' ms')}  {'present' if d['present'] else 'absent '}  "
                f"{_fmt(d['pct_of_baseline'], '%', 0)} of baseline  [{d['stage']}]")
    if k == "amr_state":
        return (f"{head} {d['channel']:<6} {d['previous_state'] or '—'} → {d['state'].upper()}  "
                f"at stimulus #{d['stimulus_index']} [{d['stage']}]")
    if k == "stage":
        return f"{head} ── {d['stage'].upper()} ── ({d['source']})"
    if k == "factors":
        given = {a: b for a, b in d["factors"].items() if b is not None}
        return f"{head} {given} ({d['source']})"
    if k == "prediction":
        note = f"  [{d['notice']}]" if d["notice"] else ""
        return f"{head} P(persist) = {d['probability']:.3f}  band {d['band'].upper()}{note}"
    if k == "decision":
        prov = " (provisional)" if d.get("provisional") else ""
        note = f"  [{d['notice']}]" if d.get("notice") else ""
        return f"{head} [{d['priority'].upper()}] {d['kind']}{prov}: {d['rationale']}{note}"
    if k == "alarm":
        return f"{head} [{d['priority'].upper()}] {d['kind']} {d['state']}: {d['message']}"
    if k == "session_start":
        return (f"{head} session {d['session_id']} from {d['source']}"
                f"{' scenario ' + d['scenario'] if d['scenario'] else ''}"
                f"{' (REPLAY of ' + d['replay_of'] + ')' if d['replay_of'] else ''}")
    if k == "session_end":
        return f"{head} session {d['session_id']} ended ({d['reason']}): {d['n_stimuli']} stimuli"
    if k == "amr_course":
        return (f"{head} course {d['course'].upper()}  baseline {_fmt(d['baseline_uv'], ' µV')}  "
                f"final {_fmt(d['final_pct_of_baseline'], '%', 0)} of baseline")
    if k == "baseline":
        return f"{head} {d['channel']:<6} baseline {d['baseline_uv']:.1f} µV over {d['n_sweeps']} sweeps"
    if k == "service_settings":
        return f"{head} {d['service']} settings {d['settings_sha256'][:12]} ({len(d['settings'])} values)"
    if k == "stimulus":
        return f"{head} #{d['stimulus_index']} {d['direction']} at {d['stim_time_s']:.3f} s"
    body = {a: b for a, b in d.items() if a not in ("type", "schema_version", "seq", "publisher", "instance", "ts_utc")}
    return f"{head} {body}"


def make_printer(
    *, json_lines: bool = False, quiet_measurements: bool = False, show_all: bool = False
) -> Callable[[Message], bool]:
    """`show_all`: print every type received (the caller filtered already). The printer returns whether it
    printed the message (`events --count N` counts only what it shows)."""
    hidden = set() if show_all else {"emg_frame", "heartbeat", "sim_truth", "stimulus"}
    if quiet_measurements:
        hidden.add("amr_measurement")

    def show(msg: Message) -> bool:
        if msg.type in hidden:
            return False
        text = msg.model_dump_json() if json_lines else line(msg)
        try:
            print(text, flush=True)
        except BrokenPipeError:  # `amrwatch events | head`
            sys.stderr.close()
            raise SystemExit(0) from None
        return True

    return show
