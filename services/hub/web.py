"""The multi-room page and its JSON, token-protected like the monitor (services/monitor/auth.py).

Thin: state is the `Hub`'s; this only renders it. The page long-polls
/api/rooms?since=VERSION: the answer comes as soon as any tile changes (an
event taken, a link or staleness change; checked every 20 ms) or after 1 s
(so ages move), one JSON for all rooms — simpler than a live stream per room
and as quick. A stale room is drawn greyed and striped with its age, so it never
looks live. Alarm colours follow IEC 60601-1-8: high red, medium yellow,
low cyan.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ...freetext import identifier_problem
from ..monitor.auth import TokenAuth
from .service import Hub

log = logging.getLogger(__name__)

MAX_BODY = 4096
#: Longest a long poll waits for a change before answering anyway (ages move).
LONG_POLL_S = 1.0

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amrwatch hub</title>
<style>
body{font:15px system-ui,sans-serif;background:#111;color:#eee;margin:1em}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.tile{background:#1d232b;border:2px solid #345;border-radius:8px;padding:10px;cursor:pointer}
.tile.stale{background:repeating-linear-gradient(45deg,#222,#222 10px,#2a2a2a 10px,#2a2a2a 20px);
  border-color:#fd0;color:#999}
.tile h2{margin:0 0 4px 0;font-size:20px}.age{float:right;font-size:13px}
.stale .age{color:#fd0;font-weight:bold}
.alarm{padding:2px 6px;margin:2px 0;border-radius:4px;font-size:13px}
.p-high{background:#d00;color:#fff}.p-medium{background:#fd0;color:#000}.p-low{background:#0cc;color:#000}
.ch{display:inline-block;margin-right:8px}canvas.sweep{background:#000;margin:2px 4px 0 0}.verdict{margin:4px 0}.synthetic{font-size:11px;color:#fc6}
.notice{font-size:12px;color:#aaa}
</style></head><body>
<h1>amrwatch hub <span class="notice" id="me"></span></h1>
<p class="notice">Predictions and verdicts come from a model fitted on a synthetic cohort — not for clinical use.</p>
<div id="grid"></div>
<script>
function esc(s){return String(s==null?'':s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
function since(iso){if(!iso)return 'no stimulus yet';const s=(Date.now()-Date.parse(iso))/1000;return s.toFixed(0)+' s since last stimulus'}
function tile(t){
  const age=t.age_s==null?'no data yet':(t.age_s<1?'live':t.age_s.toFixed(1)+' s old');
  const amr=Object.entries(t.amr||{}).map(([c,a])=>`<span class="ch">${esc(c)}: <b>${esc(a.state)}</b></span>`).join('')||'<span class="ch">no AMR state yet</span>';
  const d=t.decision?`<div class="verdict">verdict: <b>${esc(t.decision.kind)}</b> <span class="alarm p-${esc(t.decision.priority)}">${esc(t.decision.priority)}</span>${t.decision.synthetic?' <span class="synthetic">synthetic model</span>':''}</div>`:'<div class="verdict">no verdict yet</div>';
  const al=(t.alarms||[]).map(a=>`<div class="alarm p-${esc(a.priority)}" data-kind="${esc(a.kind)}">${esc(a.kind)}: ${esc(a.message)}</div>`).join('');
  const conn=t.refused?`<div class="alarm p-high">${esc(t.refused)}</div>`:(t.connected?'':'<div class="alarm p-medium">link down; reconnecting</div>');
  const sw=Object.keys(t.sweeps||{}).sort().map(c=>`<canvas class="sweep" width="90" height="40" data-channel="${esc(c)}" title="${esc(c)}: newest sweep"></canvas>`).join('');
  const gaps=t.gap_messages?`<div class="alarm p-low">${t.gap_messages} event(s) could not be got (gap)</div>`:'';
  return `<div class="tile${t.stale?' stale':''}" data-room="${esc(t.room)}" data-stale="${t.stale}">
    <h2>${esc(t.room)} <span class="age">${esc(age)}</span></h2>
    <div>stage: <b class="stage">${esc(t.stage||'—')}</b></div><div>${amr}</div><div>${sw}</div>${d}${conn}${al}${gaps}
    <div class="notice">${since(t.last_stimulus_utc)} · ${t.events} events, ${t.backfilled} backfilled${(t.backfilled_by||{}).archive?' ('+t.backfilled_by.archive+' from the archive)':''}</div></div>`}
function draw(cv,v,stale){const g=cv.getContext('2d');const ok=v.filter(x=>x!=null);if(!ok.length)return;
  let lo=Math.min(...ok),hi=Math.max(...ok);if(hi-lo<1){hi+=0.5;lo-=0.5}
  g.strokeStyle=stale?'#777':'#4f4';g.beginPath();let pen=false;
  v.forEach((x,i)=>{if(x==null){pen=false;return}const X=i*cv.width/v.length,Y=cv.height-(x-lo)/(hi-lo)*cv.height;
    if(pen)g.lineTo(X,Y);else g.moveTo(X,Y);pen=true});g.stroke()}
let version=null;
async function refresh(){
  try{const r=await fetch('api/rooms'+(version==null?'':'?since='+version),{cache:'no-store'});
    if(!r.ok)throw new Error(r.status);const j=await r.json();version=j.version;
    document.getElementById('me').textContent='reader: '+j.reader;
    document.getElementById('grid').innerHTML=j.rooms.map(tile).join('');
    for(const t of j.rooms)for(const [c,s] of Object.entries(t.sweeps||{})){
      const cv=document.querySelector(`.tile[data-room="${CSS.escape(t.room)}"] canvas[data-channel="${CSS.escape(c)}"]`);
      if(cv)draw(cv,s.values,t.stale)}
    for(const el of document.querySelectorAll('.tile'))el.onclick=()=>{location.href='rooms/'+encodeURIComponent(el.dataset.room)};
    document.body.dataset.updated=Date.now();
    if(window.onTiles)window.onTiles(j);
    setTimeout(refresh,0);
  }catch(e){document.getElementById('me').textContent='hub unreachable: '+e;version=null;setTimeout(refresh,1000)}
}
refresh();
</script></body></html>"""

ROOM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amrwatch hub: {room}</title>
<style>body{{font:15px system-ui,sans-serif;background:#111;color:#eee;margin:1em}}pre{{white-space:pre-wrap;font-size:12px}}
a{{color:#6cf}}.alarm{{padding:2px 6px;margin:2px 0;border-radius:4px}}.p-high{{background:#d00;color:#fff}}
.p-medium{{background:#fd0;color:#000}}.p-low{{background:#0cc;color:#000}}button{{margin-left:8px}}
.note{{color:#ccc;font-size:13px}}</style></head><body><p><a href="../">← all rooms</a></p><h1 id="room">{room}</h1>
{monitor}<div id="alarms"></div>
<form id="noteform"><input id="notetext" maxlength="256" size="60" placeholder="note to the room (archived, under your key's name)">
<button>send</button> <span id="result"></span></form><div id="notes"></div>
<p class="note">Predictions and verdicts come from a model fitted on a synthetic cohort — not for clinical use.</p>
<details><summary>everything the hub holds for this room</summary><pre id="detail">loading…</pre></details>
<script>
const R=decodeURIComponent(location.pathname.split('/').pop());
function esc(s){{return String(s==null?'':s).replace(/[&<>"]/g,c=>({{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}}[c]))}}
async function post(what,body){{const r=await fetch('../api/rooms/'+encodeURIComponent(R)+'/'+what,{{method:'POST',
  headers:{{'content-type':'application/json'}},body:JSON.stringify(body)}});const j=await r.json();
  document.getElementById('result').textContent=j.ok?'sent (seq '+j.seq+')':'refused: '+j.error}}
async function r(){{const x=await fetch('../api/rooms/'+encodeURIComponent(R),{{cache:'no-store'}});const d=await x.json();
document.getElementById('detail').textContent=JSON.stringify(d,null,1);
const ah=(d.alarms||[]).map(a=>`<div class="alarm p-${{esc(a.priority)}}">${{esc(a.kind)}}: ${{esc(a.message)}}`+
  (a.source==='hub'?'':`<button data-key="${{esc(a.alarm_key)}}">acknowledge</button>`)+'</div>').join('')||'no active alarm';
/* rebuilt only when it changes: a button replaced between mousedown and mouseup loses the reader's click */
if(ah!==window.alarmsShown){{window.alarmsShown=ah;document.getElementById('alarms').innerHTML=ah;
for(const b of document.querySelectorAll('#alarms button'))b.onclick=()=>post('ack',{{alarm_key:b.dataset.key}})}}
document.getElementById('notes').innerHTML=(d.notes||[]).map(n=>`<div class="note">${{esc(n.ts_utc)}} ${{esc(n.reader||n.operator)}}: ${{esc(n.type==='alarm_ack'?'acknowledged '+n.alarm_key+(n.note?' — '+n.note:''):(n.kind==='note'?n.text:n.kind))}}</div>`).join('')}}
document.getElementById('noteform').onsubmit=(e)=>{{e.preventDefault();post('note',{{text:document.getElementById('notetext').value}})}};
r();setInterval(r,1000)</script>
</body></html>"""


def build_app(hub: Hub, token: str | None):
    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    async def rooms(request: Request) -> Response:
        raw = request.query_params.get("since")
        if raw is not None:
            try:
                since = int(raw)
            except ValueError:
                return JSONResponse({"ok": False, "error": f"since: the version of the last answer (an integer); "
                                     f"got {raw[:40]!r}"}, status_code=422)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LONG_POLL_S
            while hub.version == since and loop.time() < deadline:
                await asyncio.sleep(0.02)
        version = hub.version
        return JSONResponse({"reader": hub.cfg.key_name, "version": version, "rooms": hub.tiles()})

    async def room_page(request: Request) -> Response:
        name = request.path_params["room"]
        if name not in hub.rooms:
            return JSONResponse({"ok": False, "error": f"room: no room {name!r}; known: {sorted(hub.rooms)}"},
                                status_code=404)
        rc = hub.links[name].rc
        if rc.proxy_port:  # through the hub, on the room's own port of the hub's host
            link = (f'<p><a id="monitor" data-port="{rc.proxy_port}" href="/">open the room\'s full monitor through '
                    'the hub (full rate)</a></p><script>{const a=document.getElementById("monitor");'
                    'a.href=location.protocol+"//"+location.hostname+":"+a.dataset.port+"/"}</script>')
        elif rc.monitor:
            link = f'<p><a id="monitor" href="{rc.monitor}">open the room\'s full monitor (on the cart)</a></p>'
        else:
            link = ""
        return HTMLResponse(ROOM_PAGE.format(room=name, monitor=link))

    async def room_json(request: Request) -> Response:
        d = hub.room_detail(request.path_params["room"])
        if d is None:
            return JSONResponse({"ok": False, "error": f"room: no room {request.path_params['room']!r}"},
                                status_code=404)
        return JSONResponse(d)

    async def _body(request: Request) -> dict | Response:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return JSONResponse({"ok": False, "error": f"body: at most {MAX_BODY} bytes"}, status_code=413)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as err:
            return JSONResponse({"ok": False, "error": f"body: not JSON ({err})"}, status_code=422)
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "body: a JSON object"}, status_code=422)
        return body

    async def _forward(name: str, req: dict) -> Response:
        if name not in hub.rooms:
            return JSONResponse({"ok": False, "error": f"room: no room {name!r}"}, status_code=404)
        fut = hub.send(name, req)
        try:
            reply = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=30)
        except TimeoutError:
            return JSONResponse({"ok": False, "error": f"room {name}: the cart did not answer within 30 s (link "
                                 "down?); the request stays queued and is sent when the link is back"},
                                status_code=504)
        return JSONResponse(reply, status_code=200 if reply.get("ok") else 422)

    def _text(where: str, value, required: bool) -> str | None | Response:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= 256:
            return JSONResponse({"ok": False, "error": f"{where}: text of 1-256 characters; got {value!r}"[:400]},
                                status_code=422)
        problem = identifier_problem(where, value)
        if problem:
            return JSONResponse({"ok": False, "error": problem}, status_code=422)
        return value

    async def ack(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        key = _text("alarm_key", body.get("alarm_key"), True)
        note = _text("note", body.get("note"), False)
        for v in (key, note):
            if isinstance(v, Response):
                return v
        return await _forward(request.path_params["room"], {"op": "ack", "alarm_key": key, "note": note})

    async def note(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        text = _text("text", body.get("text"), True)
        if isinstance(text, Response):
            return text
        return await _forward(request.path_params["room"], {"op": "note", "kind": "note", "text": text})

    app = Starlette(routes=[
        Route("/", page),
        Route("/api/rooms", rooms),
        Route("/api/rooms/{room}", room_json),
        Route("/api/rooms/{room}/ack", ack, methods=["POST"]),
        Route("/api/rooms/{room}/note", note, methods=["POST"]),
        Route("/rooms/{room}", room_page),
    ])
    return TokenAuth(app, token)
