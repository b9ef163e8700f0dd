/* amrwatch monitor page: plain JS, no build step, nothing fetched from elsewhere.
 *
 * Live: one server-sent-event stream (/events). Its first message is a
 * snapshot of the session, then numbered increments; a gap in the numbers
 * means something was missed, so the page reconnects and resynchronises
 * from a fresh snapshot rather than show an incomplete picture.
 * Replay (/replay): the same drawing code fed with snapshots of an archived
 * session at the time chosen on the slider; nothing can be changed.
 */
"use strict";

const COLORS = { present: "#3fb950", diminished: "#d29922", disappeared: "#58a6ff", reappeared: "#f0883e" };
const CH_COLORS = ["#58a6ff", "#f778ba", "#7ee787", "#ffa657", "#d2a8ff", "#79c0ff"];
// IEC 60601-1-8 alarm colours: high red, medium yellow, low cyan; the priority is also spelled out
const PRIO = { high: "#ff4040", medium: "#ffd000", low: "#00c8d8", info: "#8b949e" };
const PRIO_MARK = { high: "!!!", medium: "!!", low: "!" };
const PRIO_RANK = { high: 0, medium: 1, low: 2 };
const NA_COLOR = "#f2cc60"; // not assessable: hollow, never the colour of an absent or present sweep
const BG = "#0a0d12";

const page = {
  mode: location.pathname.startsWith("/replay") ? "replay" : "live",
  config: null,
  S: null,            // the session state (a snapshot plus increments)
  status: null,       // the server's status message (bus connection, services)
  connected: false,   // the browser's stream to the monitor is open
  lastN: -1,
  source: null,
  renderPending: false,
  lastRender: 0,
  replay: { sessionId: null, duration: 0, timer: null, inflight: false },
};
window.amrwatch = page; // state, for the browser tests and for debugging

// ---------------------------------------------------------------- helpers
function $(id) { return document.getElementById(id); }
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; // CSSOM, allowed by the page's CSP (style attributes are not)
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function fmtTime(s) {
  if (s == null || !isFinite(s)) return "—";
  s = Math.max(0, s);
  const m = Math.floor(s / 60), r = Math.floor(s % 60);
  return `${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`;
}
function words(s) { return (s || "").replace(/_/g, " "); }
function label(s) { const w = words(s); return w.charAt(0).toUpperCase() + w.slice(1); }
// a measurement from before the per-sweep assessment existed is read from present/rejected
function assessmentAt(t, k) {
  if (t.assessment && t.assessment[k]) return t.assessment[k];
  return t.rejected[k] ? "rejected" : t.present[k] ? "present" : "absent";
}
function counts(a) { return a === "present" || a === "absent"; }
function pct(x) { return x == null ? "—" : `${Math.round(x)} %`; }
function channelColor(name) {
  const chans = channels();
  const i = chans.findIndex((c) => c.name === name);
  return CH_COLORS[(i < 0 ? 0 : i) % CH_COLORS.length];
}
function channels() {
  const s = page.S && page.S.session;
  if (s && s.channels) return s.channels;
  return Object.keys((page.S && page.S.trend) || {}).map((n) => ({ name: n, muscle: "", direction: "" }));
}

// ---------------------------------------------------------------- state
function applySnapshot(snap, n) {
  page.S = snap;
  page.lastN = n;
  schedule();
}

function applyMessage(m) {
  if (m.kind === "snapshot") { applySnapshot(m.snapshot, m.n); return; }
  if (page.lastN >= 0 && m.n !== page.lastN + 1) {
    console.warn(`stream gap: expected ${page.lastN + 1}, got ${m.n}; resynchronising`);
    reconnect();
    return;
  }
  page.lastN = m.n;
  const S = page.S;
  if (m.kind === "status") { page.status = m.status; schedule(); return; }
  if (!S) return;
  if (m.kind === "readout") { S.readout = m.readout; schedule(); return; }
  if (m.kind === "sweep") {
    const sw = m.sweep;
    const list = (S.sweeps[sw.channel] = S.sweeps[sw.channel] || []);
    list.push(sw);
    while (list.length > S.display.waterfall_sweeps) list.shift();
  } else if (m.kind === "baseline_sweep") {
    if (m.sweep) S.baseline_sweeps[m.channel] = m.sweep; else delete S.baseline_sweeps[m.channel];
  } else if (m.kind === "event") {
    applyEvent(S, m.event);
  }
  schedule();
}

function applyEvent(S, e) {
  switch (e.type) {
    case "stage":
      S.stage = e.stage;
      S.stages.push({ stage: e.stage, t_s: e.t_s, source: e.source });
      break;
    case "amr_measurement": {
      const t = (S.trend[e.channel] = S.trend[e.channel]
        || { i: [], t: [], p2p: [], pct: [], present: [], rejected: [], assessment: [], reason: [] });
      t.i.push(e.stimulus_index); t.t.push(e.stim_time_s); t.p2p.push(e.p2p_uv);
      t.pct.push(e.pct_of_baseline); t.present.push(e.present); t.rejected.push(e.rejected);
      (t.assessment = t.assessment || []).push(e.assessment); (t.reason = t.reason || []).push(e.assessment_reason);
      S.now_s = Math.max(S.now_s, e.stim_time_s);
      for (const sw of S.sweeps[e.channel] || []) {
        if (sw.stimulus_index === e.stimulus_index) {
          sw.m = { p2p_uv: e.p2p_uv, peak_latency_ms: e.peak_latency_ms, onset_latency_ms: e.onset_latency_ms,
                   present: e.present, rejected: e.rejected, assessment: e.assessment,
                   assessment_reason: e.assessment_reason, detection_limit_uv: e.detection_limit_uv,
                   stimulus_confirmed: e.stimulus_confirmed };
        }
      }
      break;
    }
    case "amr_state":
      S.states[e.channel] = e;
      S.transitions.push({ channel: e.channel, state: e.state, previous_state: e.previous_state,
                           stimulus_index: e.stimulus_index, stage: e.stage, t_s: e.t_s });
      break;
    case "baseline": S.baselines[e.channel] = e; break;
    case "factors":
      for (const [k, v] of Object.entries(e.factors)) if (v !== null) S.factors[k] = v;
      break;
    case "prediction":
      S.prediction = Object.assign({}, e, { t_s: S.now_s });
      S.predictions.push({ t_s: S.now_s, probability: e.probability, band: e.band });
      break;
    case "decision":
      S.decisions.push(Object.assign({}, e, { t_s: S.now_s }));
      break;
    case "amr_course": S.course = e; break;
    case "alarm": {
      const i = S.alarms.findIndex((a) => a.alarm_key === e.alarm_key);
      if (e.state === "raised") {
        const a = Object.assign({}, e, { ack: null });
        if (i >= 0) S.alarms[i] = a; else S.alarms.push(a);
      } else if (i >= 0) {
        S.alarms.splice(i, 1);
      }
      break;
    }
    case "alarm_ack": {
      const a = S.alarms.find((x) => x.alarm_key === e.alarm_key);
      if (a) a.ack = { operator: e.operator, note: e.note, ts_utc: e.ts_utc };
      break;
    }
    case "reader_note":
      (S.reader_notes = S.reader_notes || []).push(e);
      while (S.reader_notes.length > 50) S.reader_notes.shift();
      break;
    case "session_end":
      if (S.session) S.session.ended = { ended_at: e.ended_at, reason: e.reason };
      break;
    default: break;
  }
}

// ---------------------------------------------------------------- live stream
function connect() {
  if (page.source) page.source.close();
  page.lastN = -1;
  const src = new EventSource("/events");
  page.source = src;
  src.onopen = () => { page.connected = true; schedule(); };
  src.onmessage = (ev) => {
    page.connected = true;
    applyMessage(JSON.parse(ev.data));
  };
  src.addEventListener("resync", (ev) => {
    console.warn("server asked to resynchronise:", JSON.parse(ev.data).reason);
    reconnect();
  });
  src.onerror = () => {
    page.connected = false;
    schedule();
    if (src.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
}
function reconnect() {
  if (page.source) { page.source.close(); page.source = null; } // nothing more from the stale stream
  page.connected = false;
  schedule();
  setTimeout(connect, 200);
}

// ---------------------------------------------------------------- rendering
function schedule() {
  if (page.renderPending) return;
  page.renderPending = true;
  const wait = Math.max(0, 100 - (performance.now() - page.lastRender));
  setTimeout(() => requestAnimationFrame(render), wait);
}

function render() {
  page.renderPending = false;
  page.lastRender = performance.now();
  renderBanners();
  renderAlarmStrip();
  renderVerdict();
  renderHeader();
  renderStates();
  renderPrediction();
  renderDecision();
  renderSweeps();
  renderTrend();
  renderAlarms();
  renderStageButtons();
  renderFactorsCurrent();
  renderServices();
  renderReaderNotes();
}

// notes between the room and its remote readers (amrwatch hub), and the readers' presence
function renderReaderNotes() {
  const notes = (page.S && page.S.reader_notes) || [];
  const PRESENCE = {watching: "is watching this room", left: "stopped watching",
                    link_restored: "heard again: watching"};
  const text = (n) => n.kind === "note" ? n.text
    : n.kind === "link_lost" ? `cut off: not heard by this cart since ${(n.last_heard_utc || "?").slice(11, 19)} UTC`
    : (PRESENCE[n.kind] || n.kind);
  $("reader-notes").replaceChildren(...(notes.length ? notes.slice(-8).map((n) => el("div", {
    class: `reader-note ${n.direction}`, text: `${(n.ts_utc || "").slice(11, 19)} ${n.direction === "to_reader" ? "room → reader" : n.reader}: ${text(n)}` }))
    : [el("div", { class: "reader-note", text: "no remote reader yet" })]));
}

async function sendReaderNote(ev) {
  ev.preventDefault();
  const r = await post("/api/note", { text: $("reader-note-text").value });
  showResult(r.ok, r.ok ? "note sent to the remote reader (published and archived)" : `note refused: ${r.error}`);
  if (r.ok) $("reader-note-text").value = "";
}

function renderBanners() {
  const S = page.S, st = page.status, out = [];
  if (page.mode === "live" && !page.connected) {
    out.push(["conn", "CONNECTION TO THE MONITOR LOST — reconnecting… (the display is not live)"]);
  } else if (page.mode === "live" && st && !st.bus_ok) {
    const since = st.bus_silent_s == null ? "" : ` for ${st.bus_silent_s.toFixed(0)} s`;
    out.push(["conn", `NO DATA FROM THE BUS${since} — the display is frozen; check the stack`]);
  }
  const sess = S && S.session;
  if (page.mode === "replay") {
    out.push(["replay", `REPLAY of an archived session${sess ? " " + sess.session_id : ""} — read-only, not live`]);
  } else if (sess && (sess.replay_of || (sess.source || "").startsWith("replay"))) {
    out.push(["replay", `REPLAY of session ${sess.replay_of || sess.source.slice(7)} — not a live patient`]);
  }
  if (S && S.prediction && S.prediction.synthetic) {
    out.push(["synthetic", `Prediction model: ${S.prediction.notice || "synthetic"} (trained on a synthetic cohort)`]);
  }
  if (sess && sess.source === "sim") {
    out.push(["synthetic", `Simulated signal — scenario ${sess.scenario || "?"}`]);
  }
  if (sess && sess.joined_late) out.push(["note", "The monitor joined this session after it began: earlier events are not shown."]);
  if (st && st.exposed_without_token) out.push(["note", "This page is reachable from the network without a token."]);
  const box = $("banners");
  box.replaceChildren(...out.map(([cls, text]) => el("div", { class: `banner ${cls}`, text })));
}

function renderHeader() {
  const S = page.S, sess = S && S.session;
  $("mode").textContent = page.mode;
  $("nav-live").classList.toggle("active", page.mode === "live");
  $("nav-replay").classList.toggle("active", page.mode === "replay");
  if (!sess) { $("session").textContent = page.mode === "replay" ? "choose an archived session" : "waiting for a session…"; }
  else {
    const bits = [`session ${sess.session_id}`];
    if (sess.source) bits.push(`source ${sess.source}`);
    if (sess.ended) bits.push(`ended (${words(sess.ended.reason)})`);
    if (S.course) bits.push(`AMR course: ${words(S.course.course)}`);
    $("session").textContent = bits.join(" · ");
  }
  $("stage-now").textContent = S && S.stage ? words(S.stage) : "—";
  $("clock").textContent = fmtTime(S ? S.now_s : null);
}

function renderStates() {
  const S = page.S, box = $("states");
  const ro = (S && S.readout && S.readout.channels) || {};
  const tiles = channels().map((c) => {
    const r = ro[c.name];
    if (!r) {
      return el("div", { class: "tile tone-none", "data-channel": c.name, "data-tone": "none" },
        el("div", { class: "ch", text: `${c.name} · ${words(c.muscle)} · ${c.direction || ""}` }),
        el("div", { class: "state", text: "—" }),
        el("div", { class: "pct", text: "no measurement yet" }));
    }
    return el("div", { class: `tile tone-${r.tone}`, "data-channel": c.name, "data-tone": r.tone },
      el("div", { class: "ch", text: `${c.name} · ${words(c.muscle)} · ${c.direction || ""}` }),
      stateWord(r.word),
      el("div", { class: "pct", text: r.detail }),
      r.state_line ? el("div", { class: "course", text: r.state_line }) : null);
  });
  box.replaceChildren(...tiles);
}

// "NOT ASSESSABLE: NOISE" on two lines, the reason on its own, so neither word breaks
function stateWord(word) {
  const i = word.indexOf(": ");
  if (i < 0) return el("div", { class: "state", text: word });
  return el("div", { class: "state" }, el("span", { class: "lead", text: word.slice(0, i + 1) }),
    el("span", { class: "reason", text: word.slice(i + 2) }));
}

function renderPrediction() {
  const box = $("prediction"), S = page.S, p = S && S.prediction;
  if (!p) {
    box.replaceChildren(el("h2", { text: "Predicted persistence" }), el("div", { class: "small", text: "no prediction yet (needs the factors)" }));
    return;
  }
  const bar = el("div", { class: "bandbar" },
    el("div", { style: `width:${p.cutoff_low * 100}%;background:#1f6f3f` }),
    el("div", { style: `width:${(p.cutoff_high - p.cutoff_low) * 100}%;background:#7d5a00` }),
    el("div", { style: `width:${(1 - p.cutoff_high) * 100}%;background:#8e1519` }),
    el("div", { class: "marker", style: `left:calc(${p.probability * 100}% - 2px)` }));
  // inputs outside the training range: the band is not trusted, and the page says so instead of showing it
  const ex = p.extrapolated || [];
  box.classList.toggle("extrapolated", ex.length > 0);
  box.replaceChildren(
    el("h2", { text: "Predicted persistence" }),
    el("div", { class: "prob", id: "probability", text: probText(p.probability) }),
    ex.length ? el("span", { class: "band untrusted", id: "band", text: "band not trusted" })
      : el("span", { class: `band ${p.band}`, id: "band", text: p.band }),
    ex.length ? el("div", { class: "extrapolated-why", id: "extrapolated",
      text: `outside the training range: ${ex.map(words).join(", ")}` }) : null,
    bar,
    el("div", { class: "small", text: `low below ${(p.cutoff_low * 100).toFixed(0)} % · high from ${(p.cutoff_high * 100).toFixed(0)} % · model ${p.model_sha256.slice(0, 10)}…` }),
    p.notice ? el("div", { class: "notice", text: p.notice }) : null);
}

function probText(p) {
  if (p >= 0.995) return "> 99 %";
  if (p >= 0.1) return `${(p * 100).toFixed(0)} %`;
  if (p >= 0.01) return `${(p * 100).toFixed(1)} %`;
  return "< 1 %";
}

function renderDecision() {
  const box = $("decision"), S = page.S;
  const ds = (S && S.decisions) || [];
  const superseded = new Set(ds.map((d) => d.supersedes).filter((x) => x != null));
  const r = S && S.readout && S.readout.decision && S.readout.decision.current;
  if (!r) {
    box.className = "panel decision";
    box.replaceChildren(el("h2", { text: "Decision" }), el("div", { class: "small", text: "no decision yet" }));
  } else if (r.provisional) {
    // status while the surgeon is still working: grey, outlined, never the look of a verdict
    box.className = "panel decision provisional";
    box.replaceChildren(
      el("h2", { text: `Status · provisional · ${fmtTime(r.t_s)}` }),
      el("div", { class: "kind", id: "decision-kind", "data-kind": r.kind, "data-provisional": "true", text: r.headline }),
      el("div", { class: "rationale", text: r.rationale }),
      r.notice ? el("div", { class: "notice", id: "decision-notice", text: r.notice.toUpperCase() }) : null);
  } else {
    box.className = `panel decision final prio-${r.priority}`;
    box.replaceChildren(
      el("h2", { text: `Decision · ${r.priority} priority · ${fmtTime(r.t_s)}` }),
      el("div", { class: "kind", id: "decision-kind", "data-kind": r.kind, "data-provisional": "false", text: r.headline }),
      el("div", { class: "rationale", text: r.rationale }),
      r.notice ? el("div", { class: "notice", id: "decision-notice", text: r.notice.toUpperCase() }) : null);
  }
  const list = $("decisions");
  list.replaceChildren(...ds.slice().reverse().map((x) => {
    const prov = x.provisional || x.kind === "evaluating";
    const cls = [superseded.has(x.decision_id) ? "superseded" : "", prov ? "provisional" : ""].join(" ").trim();
    return el("li", { class: cls, "data-kind": x.kind },
      `${fmtTime(x.t_s)} ${words(x.kind)} (${prov ? "provisional" : x.priority})${x.synthetic ? " · synthetic" : ""}`);
  }));
}

// the final verdict, across the page: provisional status never gets here
function renderVerdict() {
  const box = $("verdict"), S = page.S;
  const v = S && S.readout && S.readout.decision && S.readout.decision.verdict;
  if (!v) { box.hidden = true; box.replaceChildren(); box.className = "verdict"; return; }
  box.hidden = false;
  box.className = `verdict prio-${v.priority}`;
  box.dataset.kind = v.kind;
  box.replaceChildren(
    el("div", { class: "verdict-head" },
      el("span", { class: "verdict-label", text: `VERDICT · ${v.priority.toUpperCase()} PRIORITY` }),
      el("span", { class: "verdict-word", id: "verdict-word", text: v.headline }),
      el("span", { class: "verdict-time", text: fmtTime(v.t_s) })),
    el("div", { class: "verdict-why", text: v.rationale }),
    v.notice ? el("div", { class: "verdict-notice", id: "verdict-notice", text: v.notice.toUpperCase() }) : null);
}

// -- canvases
function fitCanvas(c, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, c.clientWidth), h = cssHeight || c.clientHeight || Number(c.getAttribute("height"));
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    c.style.height = h + "px";
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = BG; g.fillRect(0, 0, w, h);
  return { g, w, h };
}

function sweepBoxes() {
  const box = $("sweeps");
  const want = channels().map((c) => c.name);
  const have = [...box.children].map((x) => x.dataset.channel);
  if (want.join("|") !== have.join("|")) {
    box.replaceChildren(...channels().map((c) =>
      el("div", { class: "panel sweep-box", "data-channel": c.name },
        el("h3", {}, el("span", { text: `${c.name} · ${words(c.muscle)} · ${c.direction || ""}` }),
          el("span", { class: "fig", id: `fig-${c.name}` })),
        el("canvas", { id: `sweeps-${c.name}`, height: "420", "aria-label": `sweeps of ${c.name}` }))));
  }
  return want;
}

function windowP2p(sw, lo, hi) {
  let mn = Infinity, mx = -Infinity;
  for (let k = 0; k < sw.values.length; k++) {
    const t = sw.t0_ms + k * sw.dt_ms, v = sw.values[k];
    if (t < lo || t >= hi || v == null) continue;
    if (v < mn) mn = v; if (v > mx) mx = v;
  }
  return mx > mn ? mx - mn : 0;
}

function drawTrace(g, sw, x, y0, uvPerPx, top, bottom) {
  g.beginPath();
  let pen = false;
  for (let k = 0; k < sw.values.length; k++) {
    const v = sw.values[k];
    if (v == null) { pen = false; continue; }
    const px = x(sw.t0_ms + k * sw.dt_ms);
    const py = Math.min(bottom, Math.max(top, y0 - v / uvPerPx));
    if (pen) g.lineTo(px, py); else { g.moveTo(px, py); pen = true; }
  }
  g.stroke();
}

function valueAt(sw, tMs) {
  const k = Math.round((tMs - sw.t0_ms) / sw.dt_ms);
  let best = null;
  for (let j = Math.max(0, k - 2); j <= Math.min(sw.values.length - 1, k + 2); j++) {
    const v = sw.values[j];
    if (v != null && (best == null || Math.abs(v) > Math.abs(best))) best = v;
  }
  return best;
}

function renderSweeps() {
  const S = page.S;
  if (!S) return;
  const disp = S.display, [wlo, whi] = disp.analysis_window_ms;
  for (const name of sweepBoxes()) {
    const c = $(`sweeps-${name}`);
    const { g, w, h } = fitCanvas(c, 420);
    const L = 46, R = 10, T = 10, B = 24;
    const x = (ms) => L + ((ms + disp.pre_ms) / (disp.pre_ms + disp.post_ms)) * (w - L - R);
    // analysis window and artifact blank
    g.fillStyle = "rgba(88,166,255,0.13)"; g.fillRect(x(wlo), T, x(whi) - x(wlo), h - T - B);
    g.fillStyle = "rgba(139,148,158,0.16)"; g.fillRect(x(0), T, x(disp.blank_ms) - x(0), h - T - B);
    g.strokeStyle = "#30363d"; g.lineWidth = 1;
    g.fillStyle = "#8b949e"; g.font = "12px system-ui, sans-serif"; g.textAlign = "center";
    for (let ms = 0; ms <= disp.post_ms; ms += 10) {
      g.beginPath(); g.moveTo(x(ms), T); g.lineTo(x(ms), h - B); g.stroke();
      g.fillText(`${ms} ms`, x(ms), h - 8);
    }
    g.fillStyle = "#58a6ff"; g.textAlign = "left";
    g.fillText(`analysis ${wlo}–${whi} ms`, x(wlo) + 3, h - B - 6);
    const sweeps = S.sweeps[name] || [];
    const base = S.baseline_sweeps[name];
    const n = disp.waterfall_sweeps, lane = (h - T - B) / (n + 2);
    // one gain for the whole waterfall: the baseline's size, or the typical sweep's
    // (the median, so a few diathermy sweeps do not squash the others)
    const sizes = sweeps.filter((s) => !(s.m && s.m.rejected)).map((s) => windowP2p(s, wlo, whi)).sort((a, b) => a - b);
    const typical = sizes.length ? sizes[Math.floor(sizes.length / 2)] : 0;
    const ref = Math.max(20, base ? windowP2p(base, wlo, whi) : typical);
    const uvPerPx = ref / (lane * 3);
    // newest on top: lane 0 is the newest sweep
    for (let j = sweeps.length - 1, laneNo = 0; j >= 0; j--, laneNo++) {
      const sw = sweeps[j];
      const y0 = T + lane * (laneNo + 1.5);
      // each trace stays within a few lanes of its own, however large (diathermy)
      const top = Math.max(T, y0 - lane * 3), bottom = Math.min(h - B, y0 + lane * 3);
      if (laneNo === 0 && base) {
        g.strokeStyle = "rgba(200,200,200,0.55)"; g.lineWidth = 3;
        drawTrace(g, base, x, y0, uvPerPx, top, bottom);
      }
      const rejected = sw.m && sw.m.rejected;
      const na = sw.m && sw.m.assessment === "not_assessable";
      const age = laneNo / Math.max(1, n - 1);
      g.strokeStyle = rejected ? "rgba(248,81,73,0.35)" : na ? `rgba(242,204,96,${laneNo === 0 ? 0.9 : 0.55})`
        : laneNo === 0 ? "#ffffff" : `rgba(230,237,243,${0.85 - 0.6 * age})`;
      g.lineWidth = laneNo === 0 ? 2 : 1;
      // a sweep that cannot tell is dashed and tagged, so it is never read as a flat (absent) one
      if (na) g.setLineDash([5, 3]);
      // a rejected sweep (diathermy, saturation) is drawn squeezed into its own lane
      drawTrace(g, sw, x, y0, uvPerPx, rejected ? y0 - lane * 0.45 : top, rejected ? y0 + lane * 0.45 : bottom);
      g.setLineDash([]);
      if (na) {
        g.fillStyle = NA_COLOR; g.textAlign = "right"; g.font = laneNo === 0 ? "bold 13px system-ui, sans-serif" : "11px system-ui, sans-serif";
        g.fillText(`N/A ${words(sw.m.assessment_reason || "")}`, w - R - 4, y0 - 3);
      }
      if (sw.m && sw.m.present && !rejected && !na && sw.m.peak_latency_ms != null) {
        const v = valueAt(sw, sw.m.peak_latency_ms);
        if (v != null) {
          g.fillStyle = "#f0883e";
          g.beginPath(); g.arc(x(sw.m.peak_latency_ms), Math.min(bottom, Math.max(top, y0 - v / uvPerPx)), laneNo === 0 ? 5 : 3, 0, 2 * Math.PI); g.fill();
        }
      }
    }
    // scale bar and the newest sweep's figures
    const bar = niceUv(ref);
    g.strokeStyle = "#e6edf3"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(12, T + 20); g.lineTo(12, T + 20 + bar / uvPerPx); g.stroke();
    g.fillStyle = "#e6edf3"; g.textAlign = "left"; g.font = "12px system-ui, sans-serif";
    g.fillText(`${bar} µV`, 16, T + 24 + bar / uvPerPx / 2);
    const newest = sweeps[sweeps.length - 1], fig = $(`fig-${name}`);
    if (newest && newest.m) {
      const m = newest.m;
      const na = m.assessment === "not_assessable";
      fig.className = `fig${m.rejected ? " rejected" : na ? " na" : ""}`;
      fig.textContent = m.rejected ? "newest sweep rejected"
        : na ? `newest sweep NOT ASSESSABLE: ${words(m.assessment_reason) || "cannot tell"}`
        : `p2p ${Math.round(m.p2p_uv)} µV${m.present && m.peak_latency_ms != null ? ` · peak ${m.peak_latency_ms.toFixed(1)} ms`
          : ` · no AMR${m.detection_limit_uv != null ? ` (≥ ${Math.round(m.detection_limit_uv)} µV would show)` : ""}`}`;
    } else {
      fig.textContent = "";
    }
    g.textAlign = "right"; g.fillStyle = "#9aa0a6"; g.font = "12px system-ui, sans-serif";
    g.fillText(base ? "grey: baseline sweep" : "baseline sweep: not yet", w - R - 4, h - B - 6);
  }
}

function niceUv(ref) {
  for (const v of [10, 20, 50, 100, 200, 500, 1000, 2000, 5000]) if (v >= ref * 0.5) return v;
  return 10000;
}

function renderTrend() {
  const S = page.S;
  drawTrend($("trend-p2p"), 230, "peak-to-peak (µV)", "p2p", null);
  drawTrend($("trend-pct"), 190, "percent of baseline", "pct", 100);
}

function drawTrend(c, height, title, key, refLine) {
  const S = page.S;
  const { g, w, h } = fitCanvas(c, height);
  const L = 56, R = 14, T = 22, B = 24;
  g.fillStyle = "#8b949e"; g.font = "13px system-ui, sans-serif"; g.textAlign = "left";
  g.fillText(title, L, 14);
  if (!S) return;
  // live: the axis grows with the session; replay: it spans the whole archive, with a cursor at the slider
  const tMax = page.mode === "replay" && page.replay.duration ? page.replay.duration
    : Math.max(10, S.now_s || 0, ...Object.values(S.trend).map((t) => (t.t.length ? t.t[t.t.length - 1] : 0)));
  let yMax = refLine ? 130 : 50;
  // the scale follows the sweeps that count: a noisy or rejected sweep does not squash the others
  for (const t of Object.values(S.trend)) {
    for (let k = 0; k < t[key].length; k++) if (counts(assessmentAt(t, k)) && t[key][k] != null) yMax = Math.max(yMax, t[key][k] * 1.1);
  }
  const x = (s) => L + (s / tMax) * (w - L - R);
  const y = (v) => h - B - (v / yMax) * (h - T - B);
  // axes
  g.strokeStyle = "#30363d"; g.lineWidth = 1; g.fillStyle = "#8b949e"; g.textAlign = "right";
  const step = niceStep(yMax / 4);
  for (let v = 0; v <= yMax; v += step) {
    g.beginPath(); g.moveTo(L, y(v)); g.lineTo(w - R, y(v)); g.stroke();
    g.fillText(String(Math.round(v)), L - 6, y(v) + 4);
  }
  g.textAlign = "center";
  const tStep = niceStep(tMax / 8);
  for (let s = 0; s <= tMax; s += tStep) g.fillText(fmtTime(s), x(s), h - 6);
  if (refLine) {
    g.strokeStyle = "#8b949e"; g.setLineDash([2, 4]);
    g.beginPath(); g.moveTo(L, y(refLine)); g.lineTo(w - R, y(refLine)); g.stroke(); g.setLineDash([]);
  }
  // stage markers along the time axis
  g.font = "12px system-ui, sans-serif"; g.textAlign = "left";
  S.stages.forEach((st, k) => {
    const px = x(st.t_s);
    g.strokeStyle = "#6e7681"; g.setLineDash([4, 4]);
    g.beginPath(); g.moveTo(px, T); g.lineTo(px, h - B); g.stroke(); g.setLineDash([]);
    g.fillStyle = "#c9d1d9";
    const label = words(st.stage), lw = g.measureText(label).width;
    g.fillText(label, Math.min(px + 3, w - R - lw), T + 11 + (k % 2) * 13); // the newest stage stays readable
  });
  // stretches where sweeps could not tell: shaded across the plot, so they never read as a disappearance
  // (a run of them is one band, from its first sweep to the sweep after its last)
  g.fillStyle = "rgba(242,204,96,0.07)";
  for (const t of Object.values(S.trend)) {
    for (let k = 0; k < t.t.length; k++) {
      if (assessmentAt(t, k) !== "not_assessable") continue;
      let j = k;
      while (j + 1 < t.t.length && assessmentAt(t, j + 1) === "not_assessable") j++;
      const x0 = x(t.t[k]) - 4, x1 = j + 1 < t.t.length ? x(t.t[j + 1]) - 4 : x(t.t[j]) + 4;
      g.fillRect(x0, T, Math.max(8, x1 - x0), h - T - B);
      k = j;
    }
  }
  // measurements per channel: the line joins only sweeps that count (present, absent)
  channels().forEach((ch) => {
    const t = S.trend[ch.name];
    if (!t) return;
    const col = channelColor(ch.name);
    g.strokeStyle = col; g.lineWidth = 1.5; g.beginPath();
    let pen = false;
    for (let k = 0; k < t.t.length; k++) {
      const v = t[key][k];
      if (!counts(assessmentAt(t, k)) || v == null) { pen = false; continue; }
      if (pen) g.lineTo(x(t.t[k]), y(v)); else { g.moveTo(x(t.t[k]), y(v)); pen = true; }
    }
    g.stroke();
    for (let k = 0; k < t.t.length; k++) {
      const v = t[key][k];
      if (v == null) continue;
      const a = assessmentAt(t, k), px = x(t.t[k]), py = y(Math.min(v, yMax));
      if (a === "rejected") { // ×, dim
        g.strokeStyle = "#6e7681"; g.lineWidth = 1;
        g.beginPath(); g.moveTo(px - 3, py - 3); g.lineTo(px + 3, py + 3); g.moveTo(px + 3, py - 3); g.lineTo(px - 3, py + 3); g.stroke();
      } else if (a === "not_assessable") { // hollow ring
        g.strokeStyle = NA_COLOR; g.lineWidth = 1.5;
        g.beginPath(); g.arc(px, py, 4.5, 0, 2 * Math.PI); g.stroke();
      } else if (a === "present") { // filled dot in the channel's colour
        g.fillStyle = col; g.beginPath(); g.arc(px, py, 2.5, 0, 2 * Math.PI); g.fill();
      } else { // absent: filled grey square
        g.fillStyle = "#9aa0a6"; g.fillRect(px - 2.5, py - 2.5, 5, 5);
      }
    }
  });
  // disappearance (and reappearance) points
  const chIndex = Object.fromEntries(channels().map((c, i) => [c.name, i]));
  for (const tr of S.transitions) {
    if (tr.state !== "disappeared" && tr.state !== "reappeared") continue;
    const px = x(tr.t_s), col = COLORS[tr.state];
    g.strokeStyle = col; g.lineWidth = 2;
    g.beginPath(); g.moveTo(px, T); g.lineTo(px, h - B); g.stroke();
    g.fillStyle = col; g.font = "bold 13px system-ui, sans-serif"; g.textAlign = "right";
    // one line per channel, so two channels changing together stay readable
    g.fillText(`${tr.channel} ${tr.state}`, px - 4, h - B - 6 - 15 * (chIndex[tr.channel] || 0));
  }
  if (page.mode === "replay") {
    g.strokeStyle = "#d2a8ff"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(x(S.now_s), T); g.lineTo(x(S.now_s), h - B); g.stroke();
  }
  // legend: the markers' shapes, then the channels
  g.font = "13px system-ui, sans-serif"; g.textAlign = "left";
  let mx = L + g.measureText(title).width + 24;
  const mark = (draw, text) => { draw(mx + 5, 10); g.fillStyle = "#c9d1d9"; g.fillText(text, mx + 14, 14); mx += 14 + g.measureText(text).width + 16; };
  mark((px, py) => { g.fillStyle = "#c9d1d9"; g.beginPath(); g.arc(px, py, 3, 0, 2 * Math.PI); g.fill(); }, "present");
  mark((px, py) => { g.fillStyle = "#9aa0a6"; g.fillRect(px - 3, py - 3, 6, 6); }, "absent");
  mark((px, py) => { g.strokeStyle = NA_COLOR; g.lineWidth = 1.5; g.beginPath(); g.arc(px, py, 4.5, 0, 2 * Math.PI); g.stroke(); }, "not assessable");
  mark((px, py) => { g.strokeStyle = "#6e7681"; g.lineWidth = 1; g.beginPath(); g.moveTo(px - 3, py - 3); g.lineTo(px + 3, py + 3); g.moveTo(px + 3, py - 3); g.lineTo(px - 3, py + 3); g.stroke(); }, "rejected");
  g.textAlign = "right"; g.font = "13px system-ui, sans-serif";
  let lx = w - R;
  channels().slice().reverse().forEach((ch) => {
    g.fillStyle = channelColor(ch.name);
    g.fillText(ch.name, lx, 14);
    lx -= g.measureText(ch.name).width + 14;
  });
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function sortedAlarms() {
  const S = page.S;
  return ((S && S.alarms) || []).slice().sort((a, b) => (PRIO_RANK[a.priority] ?? 3) - (PRIO_RANK[b.priority] ?? 3));
}
function alarmHead(a) {
  return el("div", { class: "alarm-head" },
    el("span", { class: "prio-mark", text: `${PRIO_MARK[a.priority] || ""} ${a.priority.toUpperCase()}` }),
    el("span", { class: "alarm-kind", text: words(a.kind).toUpperCase() }));
}

function renderAlarms() {
  const box = $("alarms");
  const alarms = sortedAlarms();
  // Rebuilt only when what it shows changes: the page renders up to 10 times a second, and a button replaced
  // between the operator's mousedown and mouseup loses the click (an acknowledgement that silently never left).
  const shown = JSON.stringify([page.mode, alarms.map((a) => [a.alarm_key, a.kind, a.priority, a.message, a.source,
    a.ack ? a.ack.operator || "" : null])]);
  if (shown === page.alarmsShown) return;
  page.alarmsShown = shown;
  if (!alarms.length) { box.replaceChildren(el("div", { class: "small", text: "no active alarm" })); return; }
  box.replaceChildren(...alarms.map((a) => el("div", { class: `alarm ${a.priority}`, "data-key": a.alarm_key, "data-kind": a.kind },
    alarmHead(a),
    el("div", { class: "msg", text: a.message }),
    el("div", { class: "small", text: `from ${a.source}` }),
    a.ack ? el("div", { class: "acked", text: `acknowledged${a.ack.operator ? " by " + a.ack.operator : ""}` })
      : page.mode === "live" ? el("button", { class: "ack", onclick: () => acknowledge(a.alarm_key), text: "Acknowledge" }) : null)));
}

// active alarms at the top of the page, where they are seen from 3 m (the panel below acknowledges them)
function renderAlarmStrip() {
  const box = $("alarm-strip");
  const alarms = sortedAlarms();
  box.replaceChildren(...alarms.map((a) => el("div", { class: `strip-alarm ${a.priority}${a.ack ? " acked" : ""}`, "data-key": a.alarm_key, "data-kind": a.kind },
    alarmHead(a),
    el("span", { class: "strip-msg", text: a.message }),
    a.ack ? el("span", { class: "strip-acked", text: "acknowledged" }) : null)));
}

function renderStageButtons() {
  const S = page.S;
  for (const b of $("stage-buttons").children) b.classList.toggle("current", !!S && S.stage === b.dataset.stage);
}

function renderFactorsCurrent() {
  const S = page.S;
  const measured = S ? Object.values(S.baselines).map((b) => b.amr_amplitude_uv) : [];
  for (const span of document.querySelectorAll(".factor-fields .current")) {
    const v = S && S.factors[span.dataset.field];
    if (v != null) span.textContent = `current: ${v === true ? "yes" : v === false ? "no" : v}`;
    else if (span.dataset.field === "amr_amplitude_uv" && measured.length) {
      span.textContent = `measured by the analyzer: ${Math.round(Math.max(...measured))} µV`;
    } else span.textContent = "not entered";
  }
}

function renderServices() {
  const st = page.status, box = $("services");
  if (page.mode === "replay") { box.textContent = "— (archived session)"; return; }
  if (!st) { box.textContent = "—"; return; }
  box.replaceChildren(...Object.entries(st.services).sort().map(([name, s]) =>
    el("span", { class: s.status === "ok" ? "" : "bad", text: `${name}: ${s.status}` })));
}

// ---------------------------------------------------------------- operator controls
async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  let data = {};
  try { data = await r.json(); } catch (e) { data = { ok: false, error: `HTTP ${r.status}` }; }
  return data;
}

function showResult(ok, text) {
  const box = $("control-result");
  box.className = `control-result ${ok ? "ok" : "err"}`;
  box.textContent = text;
}

function operatorName() { return $("operator").value.trim() || null; }

async function markStage(stage) {
  const r = await post("/api/mark", { stage });
  showResult(r.ok, r.ok ? `stage "${label(stage)}" published (seq ${r.seq})` : `stage refused: ${r.error}`);
}

async function acknowledge(key) {
  const r = await post("/api/ack", { alarm_key: key, operator: operatorName(), note: null });
  showResult(r.ok, r.ok ? "alarm acknowledged (published and archived)" : `acknowledgement failed: ${r.error}`);
}

async function submitFactors(ev) {
  ev.preventDefault();
  const body = {};
  for (const f of page.config.factors) {
    const v = $(`factor-${f.name}`).value.trim();
    if (v !== "") body[f.name] = v;
  }
  const r = await post("/api/factors", body);
  if (r.ok) {
    showResult(true, `factors published (seq ${r.seq}); the predictor answers with a new prediction`);
    for (const f of page.config.factors) $(`factor-${f.name}`).value = "";
  } else {
    showResult(false, `factors refused, nothing published: ${r.error}`);
  }
}

function buildControls() {
  const cfg = page.config;
  // decompression_complete starts the window the verdict is given over: set apart so it is not hit for another
  $("stage-buttons").replaceChildren(...cfg.stages.map((s) =>
    el("button", { type: "button", "data-stage": s, onclick: () => markStage(s), text: label(s),
                   class: s === "decompression_complete" ? "key-stage" : "",
                   title: s === "decompression_complete" ? "The surgeon says the decompression is done: the verdict is given from here" : label(s) })));
  $("factor-fields").replaceChildren(...cfg.factors.map((f) => {
    const range = f.kind === "bool" ? "yes / no" : `${f.min}–${f.max}${f.unit ? " " + f.unit : ""}`;
    const input = f.kind === "bool"
      ? el("select", { id: `factor-${f.name}`, name: f.name },
          el("option", { value: "", text: "—" }), el("option", { value: "yes", text: "yes" }), el("option", { value: "no", text: "no" }))
      : el("input", { id: `factor-${f.name}`, name: f.name, inputmode: "decimal", autocomplete: "off", placeholder: range });
    return el("label", { for: `factor-${f.name}` },
      `${f.label}${f.unit ? " (" + f.unit + ")" : ""}`, input,
      el("span", { class: "hint", text: `${range} · ${f.help}` }), " ",
      el("span", { class: "current", "data-field": f.name }));
  }));
  $("factors-form").addEventListener("submit", submitFactors);
  $("reader-note-form").addEventListener("submit", sendReaderNote);
  const saved = localStorage.getItem("amrwatch.operator");
  if (saved) $("operator").value = saved;
  $("operator").addEventListener("change", () => localStorage.setItem("amrwatch.operator", $("operator").value.trim()));
}

// ---------------------------------------------------------------- replay
async function loadSessions() {
  const r = await fetch("/api/sessions");
  const data = await r.json();
  const sel = $("replay-session");
  if (!data.ok) { $("replay-error").textContent = data.error; return; }
  for (const s of data.sessions) {
    sel.append(el("option", { value: s.session_id, text: `${s.session_id} · ${s.source}${s.scenario ? " · " + s.scenario : ""} · ${s.status}` }));
  }
  const wanted = new URLSearchParams(location.search).get("session");
  if (wanted) { sel.value = wanted; openReplay(wanted); }
}

async function openReplay(id) {
  $("replay-error").textContent = "";
  page.replay.sessionId = id;
  if (!id) return;
  history.replaceState(null, "", `/replay?session=${encodeURIComponent(id)}`);
  $("replay-time").textContent = "loading…";
  const r = await fetch(`/api/replay/${encodeURIComponent(id)}`);
  const info = await r.json();
  if (!info.ok) { $("replay-error").textContent = info.error; $("replay-time").textContent = "—"; return; }
  page.replay.duration = info.duration_s;
  const slider = $("replay-slider");
  slider.max = String(info.duration_s); slider.disabled = false; slider.value = String(info.duration_s);
  await replayAt(info.duration_s);
}

async function replayAt(t) {
  if (page.replay.inflight) { page.replay.pending = t; return; }
  page.replay.inflight = true;
  try {
    const r = await fetch(`/api/replay/${encodeURIComponent(page.replay.sessionId)}/at?t=${t}`);
    const data = await r.json();
    if (!data.ok) { $("replay-error").textContent = data.error; return; }
    applySnapshot(data.snapshot, -1);
    $("replay-time").textContent = `${fmtTime(t)} / ${fmtTime(page.replay.duration)}`;
  } finally {
    page.replay.inflight = false;
    if (page.replay.pending != null) { const p = page.replay.pending; page.replay.pending = null; replayAt(p); }
  }
}

function setupReplay() {
  document.body.classList.add("readonly");
  $("replay-bar").hidden = false;
  $("replay-session").addEventListener("change", (e) => openReplay(e.target.value));
  $("replay-slider").addEventListener("input", (e) => {
    clearTimeout(page.replay.timer);
    const t = Number(e.target.value);
    $("replay-time").textContent = `${fmtTime(t)} / ${fmtTime(page.replay.duration)}`;
    page.replay.timer = setTimeout(() => replayAt(t), 120);
  });
  loadSessions();
}

// ---------------------------------------------------------------- start
async function main() {
  const r = await fetch("/api/config");
  page.config = await r.json();
  buildControls();
  window.addEventListener("resize", schedule);
  if (page.mode === "replay") setupReplay(); else connect();
  render();
}
main();
