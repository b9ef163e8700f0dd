"""The multi-room page in headless Chromium (Debian's package driven by Playwright; no browser downloaded):
tiles update as the carts publish, a room whose cart goes quiet is drawn stale (never live), a click opens the
room through the hub. Two light carts on loopback (bus + acquirer each, CURVE on)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from amrwatch import security

from ..conftest import free_port
from .polling import wait_for
from .wan import ROOT

pytestmark = pytest.mark.slow  # real carts and a hub, 20-40 s

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _cart(tmp_path: Path, name: str, keys: Path, sweeps: bool = False) -> tuple[dict, list[subprocess.Popen]]:
    p_in, p_out, p_ctl = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", AMRWATCH_KEYS=str(keys),
               AMRWATCH_BUS_IN=f"tcp://127.0.0.1:{p_in}", AMRWATCH_BUS_BIND_IN=f"tcp://127.0.0.1:{p_in}",
               AMRWATCH_BUS_OUT=f"tcp://127.0.0.1:{p_out}", AMRWATCH_BUS_BIND_OUT=f"tcp://127.0.0.1:{p_out}",
               AMRWATCH_CONTROL=f"tcp://127.0.0.1:{p_ctl}", AMRWATCH_CONTROL_BIND=f"tcp://127.0.0.1:{p_ctl}",
               AMRWATCH_DATA=str(tmp_path / name), AMRWATCH_MONITOR_PORT=str(free_port()))
    for svc in ("bus", "acquirer", "monitor"):
        env[f"AMRWATCH_METRICS_PORT_{svc.upper()}"] = "0"
    out = []
    services = [("bus",), ("acquirer", "--speed", "1", "--loop")]
    if sweeps:  # the cart's monitor publishes display-ready sweeps for the hub
        services.insert(1, ("monitor", "--publish-sweeps"))
    for args in services:
        out.append(subprocess.Popen([sys.executable, "-m", "amrwatch", *args], env=env, cwd=ROOT,
                                    stdout=open(tmp_path / f"{name}-{args[0]}.log", "wb"),  # noqa: SIM115
                                    stderr=subprocess.STDOUT))
    return env, out


def test_grid_updates_shows_a_stale_room_and_opens_a_room(tmp_path):
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium; `make test` installs it)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    keys = tmp_path / "keys"
    security.generate(keys, clients=("client", "reader-anna"))
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token)
    procs: list[subprocess.Popen] = []
    try:
        env_a, pa = _cart(tmp_path, "OR-A", keys, sweeps=True)
        env_b, pb = _cart(tmp_path, "OR-B", keys)
        procs += pa + pb
        port = free_port()
        proxy_base = free_port()  # room A (index 0) gets its monitor through the hub here
        monitor_a = f"http://127.0.0.1:{env_a['AMRWATCH_MONITOR_PORT']}"
        rooms = "".join(f'[[room]]\nname = "{n}"\nbus = "{e["AMRWATCH_BUS_OUT"]}"\ncontrol = "{e["AMRWATCH_CONTROL"]}"\n'
                        f'server_key = "{keys / "server.key"}"\n{extra}\n'
                        for n, e, extra in (("OR-A", env_a, f'monitor = "{monitor_a}"\n'), ("OR-B", env_b, "")))
        cfg = tmp_path / "rooms.toml"
        cfg.write_text(f'[hub]\nkey = "{keys / "reader-anna.key_secret"}"\nport = {port}\n'
                       f'token_file = "{tmp_path / "token"}"\nstale_after_s = 2\nmonitor_proxy_port = {proxy_base}\n\n'
                       f'{rooms}')
        hub_env = {k: v for k, v in os.environ.items() if not k.startswith("AMRWATCH_")}
        procs.append(subprocess.Popen([sys.executable, "-m", "amrwatch", "hub", "--config", str(cfg)], env=hub_env,
                                      cwd=ROOT, stdout=open(tmp_path / "hub.log", "wb"),  # noqa: SIM115
                                      stderr=subprocess.STDOUT))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                wait_for("the hub page", lambda: _loads(page, f"http://127.0.0.1:{port}/?token={token}"), 30)
                tile = 'document.querySelector(\'.tile[data-room="{}"]\')'
                page.wait_for_function(f"{tile.format('OR-A')} && {tile.format('OR-B')}", timeout=30_000)
                # Tiles update: the stage each acquirer's scenario marks, stimuli counted, and live.
                page.wait_for_function(
                    "[...document.querySelectorAll('.tile')].every(t => t.dataset.stale === 'false' && "
                    "t.querySelector('.stage').textContent !== '—')", timeout=60_000)
                first = page.evaluate(f"{tile.format('OR-A')}.textContent")
                page.wait_for_function(f"{tile.format('OR-A')}.textContent !== {first!r}", timeout=20_000)
                # The first change may be the event count alone; wait for the tile to show a stimulus.
                page.wait_for_function(f"!{tile.format('OR-A')}.textContent.includes('no stimulus yet')",
                                       timeout=30_000)
                # Room A's cart publishes display sweeps: its tile draws the newest one per channel (ink on the
                # canvas); room B's does not, and shows none.
                page.wait_for_function(
                    f"""(() => {{ const c = {tile.format('OR-A')}.querySelector('canvas.sweep'); if (!c) return false;
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    for (let i = 1; i < d.length; i += 4) if (d[i] > 100) return true; return false; }})()""",
                    timeout=30_000)
                assert page.evaluate(f"{tile.format('OR-B')}.querySelectorAll('canvas.sweep').length") == 0
                # Cart B goes quiet: its tile turns stale (striped, its age shown), A stays live.
                for p in pb:
                    p.send_signal(signal.SIGSTOP)
                page.wait_for_function(f"{tile.format('OR-B')}.dataset.stale === 'true'", timeout=20_000)
                b_text = page.evaluate(f"{tile.format('OR-B')}.textContent")
                assert "link_stale" in b_text and "not live" in b_text
                assert page.evaluate(f"{tile.format('OR-A')}.dataset.stale") == "false"
                page.screenshot(path=str(tmp_path / "grid.png"))
                for p in pb:
                    p.send_signal(signal.SIGCONT)
                page.wait_for_function(f"{tile.format('OR-B')}.dataset.stale === 'false'", timeout=30_000)
                # One click opens the room through the hub, with the link to the room's full monitor.
                page.click('.tile[data-room="OR-A"]')
                page.wait_for_url("**/rooms/OR-A", timeout=10_000)
                page.wait_for_function("document.getElementById('detail').textContent.includes('\"room\": \"OR-A\"')",
                                       timeout=10_000)
                assert page.get_attribute("#monitor", "href") == f"http://127.0.0.1:{proxy_base}/"
                # The room's full monitor through the hub: without the hub's token nothing; with it (the hub's
                # cookie is sent to every port of the host) the live monitor page, its stream flowing.
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(f"http://127.0.0.1:{proxy_base}/api/status", timeout=10)
                assert refused.value.code == 401
                room_url = page.url
                page.click("#monitor")
                page.wait_for_url(f"http://127.0.0.1:{proxy_base}/", timeout=15_000)
                page.wait_for_function("() => { const S = window.amrwatch && window.amrwatch.S; "
                                       "return S && S.session && Object.keys(S.sweeps).length > 0; }", timeout=60_000)
                page.goto(room_url)
                # The reader writes to the room from there: sent to the cart, published, shown back under the
                # reader's key name (the cart attributes it, not the page).
                page.fill("#notetext", "AMR looks stable from here")
                page.click("#noteform button")
                page.wait_for_function("document.getElementById('result').textContent.startsWith('sent')",
                                       timeout=30_000)
                page.wait_for_function("document.getElementById('notes').textContent.includes("
                                       "'reader-anna: AMR looks stable from here')", timeout=30_000)
                # The two-way note channel: the room's own monitor shows the reader's note, and a note written there
                # reaches the reader's room page.
                page.goto(f"http://127.0.0.1:{env_a['AMRWATCH_MONITOR_PORT']}/")
                page.wait_for_function("() => document.getElementById('reader-notes').textContent.includes("
                                       "'reader-anna: AMR looks stable from here')", timeout=30_000)
                page.fill("#reader-note-text", "decompression done, please confirm")
                page.click("#reader-note-form button")
                page.wait_for_function("() => document.getElementById('control-result').textContent"
                                       ".startsWith('note sent')", timeout=15_000)
                page.goto(room_url)
                page.wait_for_function("document.getElementById('notes').textContent.includes("
                                       "'room: decompression done, please confirm')", timeout=30_000)
                page.fill("#notetext", "patient 12345678")
                page.click("#noteform button")
                page.wait_for_function("document.getElementById('result').textContent.includes('hospital record')",
                                       timeout=10_000)
                assert not errors, errors
            finally:
                browser.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _loads(page, url: str) -> bool:
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.goto(url, timeout=5000)
    except PlaywrightError:  # the hub is not listening yet
        return False
    return page.evaluate("document.title") == "amrwatch hub"
