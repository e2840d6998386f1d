"""The end of a change when the store refuses to record it, end to end: the real daemon, real
backends, the real CLI, and a real write lock on the daemon's var/cutover.db taken by this test
with python's sqlite3 (`BEGIN EXCLUSIVE`, as a backup script or a stray `sqlite3` shell would
hold it). The daemon waits its busy timeout (5 s) for the lock, so the lock is held for longer
than that and every step of the story polls with a generous deadline.

The story: a plan is at its last step; the lock is taken; the plan ends (promote, or abort).
The end stands in memory (traffic follows it at once), the API and the CLI say the record cannot
be saved and is retried, deploys, rollbacks and hand-overs are refused with a clear message;
the lock goes; the record is saved (with a `saved_late` event) and the service takes changes
again.
"""
import sqlite3
from collections import Counter

from conftest import live_name
from progressive_util import change_of, split_users, wait_for

STICKY_HEADER = "    sticky: {header: X-User-Id}\n"
PLAN = "plans:\n  half:\n    steps: [{weight: 50}, {pause: {}}]\n"
# While the lock is held, each of the daemon's own writes waits the 5 s busy timeout on its
# control loop, which can make a health probe miss its 500 ms timeout: a few misses must not
# take a version out of rotation in this test (that is not what it is about).
HEALTH = {"unhealthy_threshold": 100}
USERS = [f"user-{i}" for i in range(300)]


class StoreLock:
    """A write lock on the daemon's database, held by this process until release()."""

    def __init__(self, path):
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self):
        if self.db is not None:
            self.db.execute("ROLLBACK")
            self.db.close()
            self.db = None


def stored(d, change_id):
    """(state, live) as the database itself records them, read outside the daemon."""
    db = sqlite3.connect(f"file:{d.state_dir / 'cutover.db'}?mode=ro", uri=True, timeout=30)
    try:
        state = db.execute("SELECT state FROM changes WHERE id = ?", (change_id,)).fetchone()[0]
        live = db.execute("SELECT live FROM services WHERE name = 'web'").fetchone()[0]
        return state, live
    finally:
        db.close()


def start_at_last_step(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=PLAN, health=HEALTH)
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "half")
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    ch = change_of(d)
    wait_for(lambda: ((change_of(d) or {}).get("progress") or {}).get("step") == 2, 15,
             "the plan at its last step (pause at weight 50)")
    assert set(split_users(d.port, USERS).values()) == {"v1", "v2"}
    return d, v1, v2, ch["id"]


def wait_unsaved(d, state):
    def seen():
        u = d.status().get("unsaved")
        return u if u and u.get("state") == state else None
    return wait_for(seen, 60, f"status reporting an unsaved {state} end")


def wait_all_on(d, version):
    def all_on():
        split = split_users(d.port, USERS)
        return split if set(split.values()) == {version} else None
    return wait_for(all_on, 60, f"every user on {version}", interval=0.5)


def refused_meanwhile(d, other_addr):
    """A deploy and a rollback are refused (409) with a message that says why."""
    r = d.cli("deploy", "web", "v3", "--target", other_addr, timeout=90)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"a deploy was accepted while the last end is unsaved: {out}"
    assert "cannot save to the store" in out and "no new change on web" in out, out
    code, body = d.api("POST", "/api/v1/services/web/rollback", {"actor": "t"})
    assert code == 409, (code, body)
    assert "cannot save to the store" in body["error"], body


def wait_saved(d, change_id, state, live):
    wait_for(lambda: d.status().get("unsaved") is None, 60, "the end saved to the store")
    assert stored(d, change_id) == (state, live)
    code, ch = d.api("GET", f"/api/v1/changes/{change_id}")
    assert code == 200, (code, ch)
    assert ch["state"] == state and "unsaved" not in ch, ch
    types = [e["type"] for e in ch["events"]]
    assert "saved_late" in types, types
    late = next(e for e in ch["events"] if e["type"] == "saved_late")
    assert "database is locked" in late["message"], late


def test_plan_end_with_the_store_locked_switches_now_and_saves_later(backend, daemon, tmp_path):
    d, v1, v2, cid = start_at_last_step(backend, daemon)
    lock = StoreLock(d.state_dir / "cutover.db")
    try:
        # The person promotes the last step: the plan ends although nothing can be written.
        r = d.cli("promote", "web", timeout=90)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"promote exit {r.returncode}: {out}\n{d.log()[-3000:]}"
        assert "completed" in out and "cannot save to the store" in out, out

        u = wait_unsaved(d, "completed")
        assert u["change"] == cid, u
        assert u["error"] == "database is locked", u
        assert "cannot save to the store: database is locked; retrying" in u["message"], u
        svc = d.status()
        assert live_name(svc) == "v2" and not svc.get("change"), svc
        wait_all_on(d, "v2")

        # Nobody is left guessing: status, history and the log say what is going on.
        text = d.cli("status", "web").stdout
        assert "store:" in text and "database is locked; retrying" in text, text
        last = d.history()[0]
        assert last["id"] == cid and last["state"] == "completed", last
        assert "database is locked" in last["unsaved"]["message"], last
        assert "completed (unsaved)" in d.cli("history", "web").stdout
        assert "database is locked" in d.log()
        code, metrics = d.api("GET", "/metrics")
        assert code == 200 and 'cutover_change_unsaved{service="web"} 1' in metrics, metrics

        # Meanwhile no other change, and no hand-over (the successor would resume the plan).
        refused_meanwhile(d, v1.addr)
        r = d.cli("reload", timeout=90)
        assert r.returncode != 0 and "not saved yet" in r.stdout + r.stderr, r
        # The change already ended: acting on it again says so.
        code, body = d.api("POST", f"/api/v1/changes/{cid}/promote", {"actor": "t"})
        assert code == 409 and "has ended (completed)" in body["error"], (code, body)
        # The store is still what it was: the plan's last recorded step.
        assert stored(d, cid) == ("running", "v1")
    finally:
        lock.release()

    wait_saved(d, cid, "completed", "v2")
    assert Counter(split_users(d.port, USERS).values()) == {"v2": len(USERS)}

    # The service takes changes again: an instant switch back to v1's backend as v3.
    r = d.cli("deploy", "web", "v3", "--target", v1.addr, timeout=60)
    assert r.returncode == 0, f"deploy after the save exit {r.returncode}: {r.stdout}{r.stderr}"
    assert live_name(d.status()) == "v3"
    assert d.alive()


def test_abort_with_the_store_locked_moves_users_back_now_and_saves_later(backend, daemon):
    d, v1, v2, cid = start_at_last_step(backend, daemon)
    lock = StoreLock(d.state_dir / "cutover.db")
    try:
        r = d.cli("abort", "web", timeout=90)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"abort exit {r.returncode}: {out}\n{d.log()[-3000:]}"
        assert "aborted" in out and "cannot save to the store" in out, out

        u = wait_unsaved(d, "aborted")
        assert u["change"] == cid, u
        wait_all_on(d, "v1")
        assert live_name(d.status()) == "v1"  # the configured targets
        refused_meanwhile(d, v2.addr)
        assert stored(d, cid) == ("running", "v1")
    finally:
        lock.release()

    wait_saved(d, cid, "aborted", "v1")
    assert Counter(split_users(d.port, USERS).values()) == {"v1": len(USERS)}
    assert d.alive()
