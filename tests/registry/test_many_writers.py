"""Many writers: 8 clinic workstations adding outcomes to the central registry while 3 carts sync into it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from amrwatch.registry.store import Registry

from .carts import ROOT, make_cart, sync, sync_cmd

TIMEPOINTS = ("3m", "6m", "1y")

WRITER = r"""
import json, sys
from amrwatch.registry.store import Registry, RegistryError
url, actor, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with Registry(url) as reg:
    for sid, tp, grade in plan:
        try:
            row = reg.add_outcome(sid, actor=actor, timepoint=tp, cohen_grade=grade,
                                  outcome_class="cured" if grade == 0 else "improved")
            print(json.dumps({"ok": row.id, "sid": sid, "tp": tp, "grade": grade}), flush=True)
        except RegistryError as err:
            print(json.dumps({"refused": str(err), "sid": sid, "tp": tp}), flush=True)
"""


@pytest.mark.slow
def test_eight_writers_and_three_syncing_carts_lose_nothing(migrated_url: str, tmp_path: Path):
    root = tmp_path / "central-archive"
    root.mkdir()
    seed = make_cart(tmp_path, "seed", "north", 8, kib=16)
    assert sync(seed, migrated_url, root).returncode == 0
    carts = [make_cart(tmp_path, f"cart{c}", site, 4, kib=256) for c, site in (("A", "north"), ("B", "south"),
                                                                                  ("C", "east"))]
    # writer w enters, for each seed session j, the follow-up point (w + j) % 3: each of the 24 slots is
    # wanted by 2 or 3 writers at once — the contention a busy clinic produces
    plans = {f"dr_{w}": [(sid, TIMEPOINTS[(w + j) % 3], (w + j) % 3) for j, sid in enumerate(seed.sessions)]
             for w in range(8)}
    procs = [subprocess.Popen(sync_cmd(c, migrated_url, root), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in carts]
    procs += [subprocess.Popen([sys.executable, "-c", WRITER, migrated_url, actor, json.dumps(plan)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for actor, plan in plans.items()]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(line) for out, _ in outs[3:] for line in out.splitlines()]
    assert len(results) == 64
    won = [r for r in results if "ok" in r]
    lost = [r for r in results if "refused" in r]
    # every slot was taken exactly once; every refusal says what happened and what to do
    assert sorted((r["sid"], r["tp"]) for r in won) == sorted({(s, tp) for s in seed.sessions for tp in TIMEPOINTS})
    assert lost, "no two writers collided: the test did not exercise contention"
    for r in lost:
        assert "outcome edit" in r["refused"] and r["tp"] in r["refused"], r["refused"]

    with Registry(migrated_url) as reg:
        for r in won:  # nothing lost: each acknowledged row is there, with the writer's values
            row = reg._one("SELECT * FROM outcomes WHERE id = :i", {"i": r["ok"]})
            assert (row["session_id"], row["timepoint"], row["cohen_grade"]) == (r["sid"], r["tp"], r["grade"])
        # audit complete: one central audit row per outcome row, naming it
        n_out = reg._one("SELECT count(*) AS n FROM outcomes")["n"]
        assert n_out == len(won) + 8 + 12  # the writers', the seed cart's 1w, the three carts' 1w
        missing = reg._q("SELECT o.id FROM outcomes o WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE "
                         "a.table_name = 'outcomes' AND a.row_key = CAST(o.id AS TEXT) AND a.origin IS NULL)")
        assert missing == []
        assert {s.cart for s in reg.list()} == {"seed", "cartA", "cartB", "cartC"}
        assert reg._one("SELECT count(*) AS n FROM archive_receipts")["n"] == 8 + 12


OPENER = r"""
import sys, time
from pathlib import Path
from amrwatch.registry.store import Registry
path, go = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < go:  # all openers start their first transaction at the same instant
    pass
try:
    Registry(path).engine.dispose()
    print("ok")
except Exception as err:
    print(repr(err))
"""


def test_processes_opening_a_new_registry_at_once_all_get_it(tmp_path: Path):
    """The recorder creating the cart's registry while `amrwatch session list` opens it: before, 15 of 40
    such openers failed with "database is locked" (each read the empty version table, then both tried to
    write)."""
    import time

    failures = []
    for round_ in range(6):
        path = tmp_path / f"r{round_}" / "registry.sqlite"
        path.parent.mkdir()
        go = time.time() + 1.5  # the interpreters start and import first
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), repr(go)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(4)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            if out.strip() != "ok":
                failures.append((round_, out.strip() or err[-300:]))
        with Registry(path) as reg:
            assert reg.list() == []
    assert not failures, failures
