"""The store is guarded (issue 14 item 4), end to end: the real daemon, real backends, the real
CLI, and the daemon's own var/cutover.db deleted, replaced or corrupted by this test.

- While the daemon runs, a store whose path no longer names the file the daemon holds (deleted,
  or replaced by another file) is noticed within seconds: deploys and rollbacks are refused with
  503 naming the store, traffic stays as it is, /metrics says cutover_store_ok 0, the Service
  says why (store_problem), the log says so once.
- After every ended change the store is backed up (var/cutover.db.backup, SQLite's backup API).
- At start, a missing or corrupt store is restored from that backup, loudly (a corrupt file is
  kept as cutover.db.corrupt-TIMESTAMP); the live version is the one last recorded, never the
  config's first. A corrupt store without a backup: the config's targets are served and changes
  are refused.
- `cutover check --store` runs SQLite's integrity check: ok (exit 0) or the problems (exit 1).
"""
import os
import re
import signal
import sqlite3
import time

import pytest

from conftest import Procs, body_of, live_name
from progressive_util import change_of, split_users, wait_for

STICKY_HEADER = "    sticky: {header: X-User-Id}\n"
PLAN = "plans:\n  half:\n    steps: [{weight: 50}, {pause: {}}]\n"
USERS = [f"user-{i}" for i in range(200)]


def store_ok(d):
    """cutover_store_ok from /metrics (0 or 1)."""
    st, text = d.api("GET", "/metrics")
    assert st == 200, text
    m = re.search(r"^cutover_store_ok (\d)$", text, re.M)
    assert m, f"no cutover_store_ok in /metrics:\n{text[-2000:]}"
    return int(m.group(1))


def deploy(d, version, addr):
    r = d.cli("deploy", "web", version, "--target", addr, "--reason", "e2e", timeout=30)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}\n{d.log()[-3000:]}"
    wait_for(lambda: live_name(d.status()) == version, 10, f"{version} live")


def backup_live(path):
    """(live, previous) of web as recorded in a backup file, read outside the daemon."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT live, previous FROM services WHERE name = 'web'").fetchone()
    finally:
        db.close()


def assert_changes_refused(d, other_addr, *words):
    """A deploy and a rollback are refused with 503, the answer naming the store and what
    happened; the CLI fails too."""
    code, body = d.api("POST", "/api/v1/services/web/deploy",
                       {"version": "v9", "targets": [other_addr], "actor": "t"})
    assert code == 503, (code, body)
    err = body["error"]
    assert str(d.state_dir / "cutover.db") in err, err
    for w in words:
        assert w in err, (w, err)
    code, body = d.api("POST", "/api/v1/services/web/rollback", {"actor": "t"})
    assert code == 503, (code, body)
    r = d.cli("deploy", "web", "v9", "--target", other_addr)
    assert r.returncode != 0 and "no changes are taken" in r.stdout + r.stderr, r


def stop(d):
    Procs.stop(d.proc, signal.SIGTERM)
    assert d.proc.returncode == 0, f"exit {d.proc.returncode}\n{d.log()[-3000:]}"


def corrupt_header(path):
    """Overwrites SQLite's 16-byte magic header: the file is no database any more."""
    with open(path, "r+b") as f:
        f.write(b"this is no sqlite")


@pytest.mark.xdist_group("load")
def test_store_deleted_while_running_refuses_changes_keeps_traffic(backend, daemon, wrk):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1]).start(expect="v1\n")
    deploy(d, "v2", v2.addr)
    assert store_ok(d) == 1
    load = wrk(d.port, 8, conns=8)
    time.sleep(1)
    t0 = time.monotonic()
    os.unlink(d.state_dir / "cutover.db")
    wait_for(lambda: store_ok(d) == 0, 5, "cutover_store_ok 0 after the store was deleted")
    noticed = time.monotonic() - t0
    assert noticed < 4, f"noticed after {noticed:.1f}s"
    assert_changes_refused(d, v3.addr, "was deleted")
    svc = d.status()
    assert "was deleted" in (svc.get("store_problem") or ""), svc
    assert live_name(svc) == "v2", svc
    assert body_of(d.port) == "v2\n"
    assert load.running(), "the load ended before the checks: make it longer"
    res = load.result()
    assert res["requests"] > 500, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert d.log().count("the store is not trusted") == 1, d.log()[-3000:]
    last = d.history()[0]
    code, ch = d.api("GET", f"/api/v1/changes/{last['id']}")
    assert code == 200, ch
    lost = [e for e in ch["events"] if e["type"] == "store_lost"]
    assert len(lost) == 1 and "was deleted" in lost[0]["message"], ch["events"]

    # The daemon backed the held file up when it noticed: a restart restores v2.
    stop(d)
    assert not (d.state_dir / "cutover.db").exists()
    d.start(expect="v2\n")
    assert "the store was restored from its backup" in d.log(), d.log()[-3000:]
    assert live_name(d.status()) == "v2" and store_ok(d) == 1
    deploy(d, "v3", v3.addr)


def test_plan_running_when_store_deleted_resumes_after_restart(backend, daemon):
    """A plan at weight 50 goes on after the store is deleted (only new changes are refused);
    the stop's last word goes to the backup, and the restart resumes the plan there."""
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=PLAN)
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "half")
    assert r.returncode == 0, r.stdout + r.stderr
    cid = change_of(d)["id"]
    wait_for(lambda: ((change_of(d) or {}).get("progress") or {}).get("step") == 2, 15,
             "the plan at its pause (weight 50)")
    os.unlink(d.state_dir / "cutover.db")
    wait_for(lambda: store_ok(d) == 0, 5, "cutover_store_ok 0")
    assert_changes_refused(d, v3.addr, "was deleted")
    before = split_users(d.port, USERS)
    assert set(before.values()) == {"v1", "v2"}, before
    stop(d)
    d.start()
    assert "the store was restored from its backup" in d.log(), d.log()[-3000:]
    ch = wait_for(lambda: change_of(d), 10, "the change resumed", tolerate=True)
    assert ch["id"] == cid and ch["progress"]["step"] == 2, ch
    assert split_users(d.port, USERS) == before  # the same users on the same versions
    r = d.cli("promote", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: live_name(d.status()) == "v2", 15, "v2 live after the promote")


def test_store_replaced_while_running_refuses_changes(backend, daemon):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1]).start(expect="v1\n")
    deploy(d, "v2", v2.addr)
    other = d.state_dir / "other.db"
    db = sqlite3.connect(str(other))
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    os.replace(other, d.state_dir / "cutover.db")
    wait_for(lambda: store_ok(d) == 0, 5, "cutover_store_ok 0 after the store was replaced")
    assert_changes_refused(d, v3.addr, "was replaced by another file")
    assert body_of(d.port) == "v2\n"
    assert live_name(d.status()) == "v2"
    assert "the store is not trusted" in d.log()
    # A successor would open the new file beside this daemon's -wal: no hand-over.
    r = d.cli("reload")
    assert r.returncode != 0 and "no hand-over while the store is not trusted" in \
        r.stdout + r.stderr, r
    # The file now at the path knows nothing of v2: a restart does not trust it either.
    stop(d)
    d.start(expect="v2\n")
    log = d.log()
    assert "the store was restored from its backup" in log and "older than its backup" in log, \
        log[-3000:]
    assert any(p.name.startswith("cutover.db.older-") for p in d.state_dir.iterdir())
    assert live_name(d.status()) == "v2" and store_ok(d) == 1


def test_backup_written_after_each_ended_change(backend, daemon):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1]).start(expect="v1\n")
    bak = d.state_dir / "cutover.db.backup"
    wait_for(bak.exists, 5, "a first backup at start")
    assert (bak.stat().st_mode & 0o777) == 0o600, oct(bak.stat().st_mode)
    assert backup_live(bak)[0] == "v1"
    deploy(d, "v2", v2.addr)
    wait_for(lambda: backup_live(bak) == ("v2", "v1"), 5, "the backup recording v2 live")
    deploy(d, "v3", v3.addr)
    wait_for(lambda: backup_live(bak) == ("v3", "v2"), 5, "the backup recording v3 live")
    r = d.cli("rollback", "web", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: backup_live(bak) == ("v2", "v3"), 10, "the backup recording the rollback")
    db = sqlite3.connect(f"file:{bak}?mode=ro", uri=True)
    states = [row[0] for row in db.execute("SELECT state FROM changes ORDER BY id")]
    db.close()
    assert states[-3:] == ["completed"] * 3, states
    assert not (d.state_dir / "cutover.db.backup.tmp").exists()


def test_restart_with_store_deleted_restores_backup(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    deploy(d, "v2", v2.addr)
    stop(d)
    for name in ("cutover.db", "cutover.db-wal", "cutover.db-shm"):
        if (d.state_dir / name).exists():
            os.unlink(d.state_dir / name)
    d.start(expect="v2\n")  # not the config's v1
    log = d.log()
    assert "the store was restored from its backup" in log and "was missing" in log, log[-3000:]
    svc = d.status()
    assert live_name(svc) == "v2" and (svc.get("previous") or {}).get("name") == "v1", svc
    assert [c["to"] for c in d.history()][:1] == ["v2"]
    assert store_ok(d) == 1


def test_restart_with_corrupt_store_restores_backup_loudly(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    deploy(d, "v2", v2.addr)
    stop(d)
    corrupt_header(d.state_dir / "cutover.db")
    r = d.cli("check", "--store")
    assert r.returncode == 1 and "store" in r.stdout and "corrupt" in r.stdout, r
    d.start(expect="v2\n")
    log = d.log()
    assert "the store was restored from its backup" in log and "was corrupt" in log, log[-3000:]
    kept = [p.name for p in d.state_dir.iterdir() if p.name.startswith("cutover.db.corrupt-")]
    assert kept and re.fullmatch(r"cutover\.db\.corrupt-\d{8}T\d{6}Z", kept[0]), kept
    assert (d.state_dir / kept[0]).read_bytes().startswith(b"this is no sqlite")
    assert live_name(d.status()) == "v2" and store_ok(d) == 1
    r = d.cli("check", "--store")
    assert r.returncode == 0 and "ok" in r.stdout, r


def test_corrupt_store_without_backup_serves_config_read_only(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    deploy(d, "v2", v2.addr)
    stop(d)
    os.unlink(d.state_dir / "cutover.db.backup")
    corrupt_header(d.state_dir / "cutover.db")
    before = (d.state_dir / "cutover.db").read_bytes()
    d.start(expect="v1\n")  # the config's targets: the only record there is
    assert "the store is corrupt and no backup can replace it" in d.log(), d.log()[-3000:]
    assert store_ok(d) == 0
    svc = d.status()
    assert "is corrupt" in (svc.get("store_problem") or ""), svc
    r = d.cli("status", "web")
    assert "store:" in r.stdout and "deploys and rollbacks are refused" in r.stdout, r.stdout
    assert_changes_refused(d, v2.addr, "is corrupt", "read-only")
    assert body_of(d.port) == "v1\n"
    stop(d)
    # The file is left for a person to repair, and no backup was made from the stand-in.
    assert (d.state_dir / "cutover.db").read_bytes() == before
    assert not (d.state_dir / "cutover.db.backup").exists()


def test_check_store(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1])
    r = d.cli("check", "--store")
    assert r.returncode == 1 and "cannot check" in r.stdout, r  # no store yet
    d.start(expect="v1\n")
    r = d.cli("check", "--store")  # while the daemon runs
    assert r.returncode == 0, r
    assert f"store {d.state_dir / 'cutover.db'}: ok" in r.stdout, r.stdout
    assert f"backup {d.state_dir / 'cutover.db.backup'}: ok" in r.stdout, r.stdout
    stop(d)
    corrupt_header(d.state_dir / "cutover.db.backup")
    r = d.cli("check", "--store")
    assert r.returncode == 1, r
    assert "store" in r.stdout and ": ok" in r.stdout and "backup" in r.stdout, r.stdout
    assert "corrupt: file is not a database" in r.stdout, r.stdout
