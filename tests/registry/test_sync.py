"""`amrwatch sync`: three carts into one central registry and archive root, resumable, idempotent, verified."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from amrwatch.archive.integrity import analyse, list_segments
from amrwatch.archive.writer import session_path
from amrwatch.registry.store import Registry

from .carts import ROOT, make_cart, sync, sync_cmd


def counts(url: str) -> dict[str, int]:
    with Registry(url) as reg:
        return {t: reg._one(f"SELECT count(*) AS n FROM {t}")["n"]
                for t in ("sessions", "outcomes", "session_summaries", "audit", "archive_receipts")}


def assert_central_complete(url: str, root: Path, carts) -> None:
    """Every closed session of every cart present once, with its cart and site, rows, and a verified archive."""
    with Registry(url) as reg:
        rows = {s.session_id: s for s in reg.list()}
        receipts = {r["session_id"]: r for r in reg._q("SELECT * FROM archive_receipts")}
        for cart in carts:
            with Registry.in_data_dir(cart.data) as local:
                for sid in cart.sessions:
                    assert sid in rows, f"{sid} of {cart.name} missing centrally"
                    assert (rows[sid].cart, rows[sid].site) == (cart.name, cart.site)
                    assert rows[sid].patient_token == local.get(sid).patient_token
                    assert sorted((o.timepoint, o.cohen_grade, o.actor) for o in reg.outcomes(sid)) == \
                        sorted((o.timepoint, o.cohen_grade, o.actor) for o in local.outcomes(sid))
                    assert reg.summary(sid).summary == local.summary(sid).summary
                    a = analyse(root / "sessions" / sid)
                    assert a.closed and not a.corruption
                    assert receipts[sid]["chain_head"] == a.chain_head.hex() == analyse(
                        session_path(cart.data, sid)).chain_head.hex()
                for sid in cart.recording:
                    assert sid not in rows and not (root / "sessions" / sid).exists()
        assert len(rows) == sum(len(c.sessions) for c in carts)


def test_three_carts_sync_into_one_registry_idempotently(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    carts = [make_cart(tmp_path, "cartA", "north", 3, open_sessions=1, day=2),
             make_cart(tmp_path, "cartB", "north", 3, day=2),
             make_cart(tmp_path, "cartC", "south", 2, day=3)]
    out = sync(carts[0], migrated_url, root)
    assert out.returncode == 0, out.stderr
    assert "3 pushed (3 archives" in out.stdout and "1 still recording" in out.stdout, out.stdout
    # overlapping activity: cart A gains an outcome and a correction after its first push, B and C push meanwhile
    with Registry.in_data_dir(carts[0].data) as local:
        sid = carts[0].sessions[0]
        local.add_outcome(sid, actor="dr_cart", timepoint="3m", cohen_grade=0, outcome_class="cured")
        first = local.outcomes(sid)[0]
        local.add_outcome(sid, actor="dr_cart", timepoint="1w", cohen_grade=2, outcome_class="improved",
                          supersedes=first.id)
    for cart in carts[1:]:
        out = sync(cart, migrated_url, root)
        assert out.returncode == 0, out.stderr
    out = sync(carts[0], migrated_url, root)
    assert out.returncode == 0 and "1 pushed (0 archives" in out.stdout and "2 already there" in out.stdout, out.stdout
    assert_central_complete(migrated_url, root, carts)
    with Registry(migrated_url) as reg:
        hist = reg.outcomes(sid, include_superseded=True)
        assert [(o.timepoint, o.cohen_grade, o.origin) for o in hist] == \
            [("1w", 0, "cartA"), ("3m", 0, "cartA"), ("1w", 2, "cartA")]
        assert hist[2].supersedes == hist[0].id  # the cart's correction points at the central copy of its row
        # the cart's audit rows came along, once each, and every central row was audited on arrival
        assert [a.action for a in reg.audit_trail() if a.origin == "cartA" and a.table_name == "outcomes"
                and a.new and a.new.get("session_id") == sid] == ["create", "create", "correct"]
        for o in hist:
            assert reg.audit_trail("outcomes", str(o.id)), f"central outcome {o.id} has no audit row"

    # pushing again changes nothing, for every cart
    before = counts(migrated_url)
    for cart in carts:
        out = sync(cart, migrated_url, root)
        assert out.returncode == 0 and " 0 pushed" in out.stdout, out.stdout
    assert counts(migrated_url) == before
    assert list((root / ".incoming").iterdir()) == []


def test_a_damaged_archive_is_refused_at_the_destination_and_the_cart_says_so(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    cart = make_cart(tmp_path, "cartA", "north", 3)
    bad = cart.sessions[1]
    seg = list_segments(session_path(cart.data, bad))[0][1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit in the middle of a record
    seg.write_bytes(bytes(data))
    out = sync(cart, migrated_url, root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"session {bad} NOT pushed" in out.stderr and "failed verification at the destination" in out.stderr
    assert f"amrwatch verify {bad}" in out.stderr
    assert "2 pushed" in out.stdout and "1 refused" in out.stdout
    with Registry(migrated_url) as reg:
        assert reg.find(bad) is None and {s.session_id for s in reg.list()} == set(cart.sessions) - {bad}
    assert not (root / "sessions" / bad).exists() and list((root / ".incoming").iterdir()) == []
    with Registry.in_data_dir(cart.data) as local:
        err = local._one("SELECT last_error FROM sync_state WHERE session_id = :s", {"s": bad})["last_error"]
        assert "failed verification at the destination" in err
    # still refused on the next run: a damaged session never becomes "synced"
    out = sync(cart, migrated_url, root)
    assert out.returncode == 1 and f"session {bad} NOT pushed" in out.stderr


def test_session_id_and_patient_token_collisions_are_refused(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    a = make_cart(tmp_path, "cartA", "north", 1, seed_ids=["00aa00aa00aa00aa"])
    b = make_cart(tmp_path, "cartB", "south", 1, seed_ids=["00aa00aa00aa00aa"])
    assert sync(a, migrated_url, root).returncode == 0
    out = sync(b, migrated_url, root)
    assert out.returncode == 1
    assert "session id 00aa00aa00aa00aa is already in the central registry from cart cartA (site north)" in out.stderr
    with Registry(migrated_url) as reg:
        assert reg.get("00aa00aa00aa00aa").cart == "cartA"
    assert analyse(root / "sessions" / "00aa00aa00aa00aa").chain_head == analyse(
        session_path(a.data, "00aa00aa00aa00aa")).chain_head


def test_an_outcome_conflict_names_both_and_the_resolution(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    cart = make_cart(tmp_path, "cartA", "north", 2)
    assert sync(cart, migrated_url, root).returncode == 0
    sid = cart.sessions[0]
    with Registry.in_data_dir(cart.data) as local:  # entered on the cart...
        local.add_outcome(sid, actor="dr_cart", timepoint="3m", cohen_grade=2, outcome_class="improved")
    with Registry(migrated_url) as reg:  # ...and, differently, at a clinic workstation
        central = reg.add_outcome(sid, actor="dr_clinic", timepoint="3m", cohen_grade=1, outcome_class="improved")
    out = sync(cart, migrated_url, root)
    assert out.returncode == 1
    assert f"--resolve {sid}:3m=central" in out.stderr and f"outcome {central.id} entered in the central" in out.stderr
    assert "grade 2" in out.stderr and "dr_clinic" in out.stderr
    out = sync(cart, migrated_url, root, "--resolve", f"{sid}:3m=central")
    assert out.returncode == 0, out.stderr
    with Registry(migrated_url) as reg:
        current = [o for o in reg.outcomes(sid) if o.timepoint == "3m"]
        assert [(o.cohen_grade, o.actor) for o in current] == [(1, "dr_clinic")]
        hist = [(o.cohen_grade, o.actor, o.origin) for o in reg.outcomes(sid, include_superseded=True)
                if o.timepoint == "3m"]
        assert hist == [(1, "dr_clinic", None), (2, "dr_cart", "cartA"), (1, "dr_clinic", None)]
    assert " 0 pushed" in sync(cart, migrated_url, root).stdout


def test_presence_log_and_follow_up_links_reach_the_centre_once(migrated_url: str, tmp_path: Path):
    """The presence log and the follow-up links go with the sessions (before, sync copied neither: the
    centre's cohort had no follow-up column and no record of who read remotely)."""
    root = tmp_path / "central-archive"
    root.mkdir()
    cart = make_cart(tmp_path, "cartA", "north", 3)
    op, rec_1m, rec_3m = cart.sessions  # started 08:00, 09:01, 10:02: the recordings after the operation
    with Registry.in_data_dir(cart.data) as local:
        local.reader_watching(op, "reader-anna", "2026-03-02T08:05:00Z", actor="recorder")
        local.reader_left(op, "reader-anna", "2026-03-02T08:20:00Z", actor="recorder")
        local.reader_left(op, "reader-bob", "2026-03-02T08:30:00Z", actor="recorder")  # its `watching` never came
        local.link_recording(op, rec_1m, timepoint="1m", actor="dr_cart")
        want_presence = [(p.reader, p.from_at, p.until_at, p.closed_by) for p in local.presence(op)]
    assert len(want_presence) == 2 and want_presence[1][1] is None
    out = sync(cart, migrated_url, root)
    assert out.returncode == 0, out.stderr

    def central() -> tuple[list, list]:
        with Registry(migrated_url) as reg:
            return ([(p.reader, p.from_at, p.until_at, p.closed_by) for p in reg.presence(op)],
                    [(f.operation_session_id, f.recording_session_id, f.timepoint, f.actor)
                     for f in reg.followup_recordings(op)])  # this test's: the database is shared

    presence, links = central()
    assert presence == want_presence
    assert links == [(op, rec_1m, "1m", "dr_cart")]
    # a link made after the push goes on the next run, once; a run with nothing new adds nothing
    with Registry.in_data_dir(cart.data) as local:
        local.link_recording(op, rec_3m, timepoint="3m", actor="dr_cart")
    out = sync(cart, migrated_url, root)
    assert out.returncode == 0 and "2 pushed (0 archives" in out.stdout, out.stdout
    presence, links = central()
    assert presence == want_presence
    assert sorted(links) == sorted([(op, rec_1m, "1m", "dr_cart"), (op, rec_3m, "3m", "dr_cart")])
    assert " 0 pushed" in sync(cart, migrated_url, root).stdout
    assert central() == (presence, links)
    with Registry(migrated_url) as reg:
        assert [a.action for a in reg.audit_trail() if a.table_name == "followup_recordings"
                and a.new and a.new.get("operation_session_id") == op] == ["sync_create", "sync_create"]

    # a different link for the same recording entered at the centre: the cart's is refused, both named
    other = make_cart(tmp_path, "cartB", "north", 2, day=4)
    op_b, rec_b = other.sessions
    assert sync(other, migrated_url, root).returncode == 0
    with Registry(migrated_url) as reg:
        reg.link_recording(op_b, rec_b, timepoint="1m", actor="dr_clinic")
    with Registry.in_data_dir(other.data) as local:
        local.link_recording(op_b, rec_b, timepoint="3m", actor="dr_cart")
    out = sync(other, migrated_url, root)
    assert out.returncode == 1
    assert "conflict" in out.stderr and "dr_clinic" in out.stderr and "dr_cart" in out.stderr, out.stderr
    assert f"as the 3m follow-up of operation {op_b}" in out.stderr, out.stderr


#: AMRWATCH_FULL=1: more sessions, bigger archives, more kills
FULL = os.environ.get("AMRWATCH_FULL") == "1"
N_KILL, KIB_KILL, KILLS = (8, 1024, 8) if FULL else (5, 512, 4)


@pytest.mark.slow
def test_a_sync_killed_at_random_points_resumes_to_every_session_once_verified(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    cart = make_cart(tmp_path, "cartA", "north", N_KILL, kib=KIB_KILL)
    probe = make_cart(tmp_path / "probe", "cartP", "north", N_KILL, kib=KIB_KILL)
    t0 = time.monotonic()
    full = sync(probe, migrated_url, root)
    assert full.returncode == 0, full.stderr
    span = time.monotonic() - t0  # one whole run, start-up included: the kills land anywhere in it
    rng = random.Random(20)
    landed = 0
    for k in range(KILLS):
        proc = subprocess.Popen(sync_cmd(cart, migrated_url, root), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        # The fault: kill -9 if still running. The first kill waits for the event that proves the run is mid-copy
        # (its staging file in .incoming), so it always lands: random times alone left none landing when a run
        # was faster than the probe's (CI, three workers). The others fall at random times in a whole run.
        if k == 0:
            staging = root / ".incoming"
            deadline = time.monotonic() + 60
            while proc.poll() is None and not any(staging.glob("cartA.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.002)  # polling for the staging file, with a deadline
            if proc.poll() is None:
                proc.kill()
                landed += 1
        else:
            try:
                proc.wait(timeout=rng.uniform(0.2, span))
            except subprocess.TimeoutExpired:
                proc.kill()
                landed += 1
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    out = sync(cart, migrated_url, root)
    assert out.returncode == 0, out.stderr
    assert landed >= 1, "no kill landed while sync was running"
    print(f"{landed} of {KILLS} kills landed mid-run")
    assert_central_complete(migrated_url, root, [cart, probe])
    with Registry(migrated_url) as reg:
        assert reg._one("SELECT count(*) AS n FROM archive_receipts WHERE cart = 'cartA'")["n"] == N_KILL
        assert reg._one("SELECT count(*) AS n FROM outcomes WHERE origin = 'cartA'")["n"] == N_KILL
    assert list((root / ".incoming").iterdir()) == []


def test_an_unreachable_centre_leaves_everything_on_the_cart(tmp_path: Path):
    from tests.conftest import free_port

    cart = make_cart(tmp_path, "cartA", "north", 1)
    root = tmp_path / "central-archive"
    root.mkdir()
    out = sync(cart, f"postgresql://amrwatch@127.0.0.1:{free_port()}/registry?connect_timeout=3", root)
    assert out.returncode == 69 and "central registry not reachable" in out.stderr and "wait on the cart" in out.stderr
    out = sync(cart, "sqlite:///" + str(tmp_path / "c.sqlite"), tmp_path / "not-mounted")
    assert out.returncode == 69 and "not a directory (not mounted?)" in out.stderr
    assert list(root.iterdir()) == []
