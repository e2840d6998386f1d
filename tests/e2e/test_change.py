"""One owner for a change (issue 12), end to end: the behaviours the change machine brought.

a. A test step and the preview listener reach the new version from the moment it is healthy,
   before any weight step.
b. A live version that fails after its switch (every target unhealthy, or its instances crash in
   a loop) while the previous one can still serve is rolled back by cutover itself, as a
   recorded change (kind rollback, actor cutover, reason naming the failure); with
   on_live_failure: alert, or nothing to go back to, status and /metrics say the service is down
   and why.
f. SIGTERM leaves managed instances running and the next daemon adopts them.
g. `rollback` while a plan runs says to use `cutover abort`.
h. Time in a step is exact across a hot upgrade: a pause never ends earlier than written.
j. A step the store refuses to record is not taken: the plan holds, says why, and takes the step
   once the store takes its record.

Every test stops what it started by pid; loads are bounded in time.
"""
import signal
import sqlite3
import sys
import threading
import time

import pytest

from conftest import body_of, free_port, live_name, wait_body, wait_port
from progressive_util import change_of, progress_of, wait_for
from test_managed import Managed, managed  # noqa: F401  (the fixture)
from test_selfupgrade import handover_pid, kill_tree_of


def plans(**named):
    out = "plans:\n"
    for name, body in named.items():
        out += f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())
    return out


def assert_clean(res, min_requests=500):
    assert res["requests"] > min_requests, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']} " \
        f"of {res['requests']}\n{res['text']}"


def metrics(d):
    st, text = d.api("GET", "/metrics")
    assert st == 200, text
    return text


# a ------------------------------------------------------------------------------------------

def test_test_step_and_preview_reach_the_new_version_before_any_weight(backend, daemon,
                                                                        tmp_path):
    out = tmp_path / "smoke.out"
    script = tmp_path / "smoke.sh"
    script.write_text(f'#!/bin/sh\ncurl -s -m 5 "$CUTOVER_TARGET_URL/" > {out}\n')
    script.chmod(0o755)
    v1, v2 = backend("v1"), backend("v2")
    pp = free_port()
    d = daemon([v1], service_extra=f"    preview_listen: 127.0.0.1:{pp}\n",
               top_extra=plans(smoke=f"steps: [{{test: {{command: [{script}], timeout: 10s}}}}, "
                                     f"{{pause: {{}}}}, {{weight: 100}}]"))
    d.start(expect="v1\n")
    assert wait_port(pp, 5)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "smoke", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: progress_of(d).get("step") == 2, 15, "the plan past its test step")
    # The test ran through the preview listener and met v2, not v1, although no step has given
    # v2 any user yet.
    assert out.read_text() == "v2\n", f"the test step reached {out.read_text()!r}"
    assert progress_of(d).get("weight") == 0
    assert body_of(pp) == "v2\n"
    assert {body_of(d.port) for _ in range(10)} == {"v1\n"}
    assert d.cli("abort", "web").returncode == 0


# b ------------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_live_version_turning_unhealthy_is_rolled_back_under_load(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v2\n")
    load = wrk(d.port, 6, conns=8)
    time.sleep(1.5)
    v2.set_healthy(False)  # its health checks fail; the previous version still serves

    def rolled_back():
        c = d.history()[0]
        return c if c["kind"] == "rollback" and c["state"] == "completed" else None
    ch = wait_for(rolled_back, 10, "cutover to roll back on its own")
    assert ch["actor"] == "cutover", ch
    assert ch["from"] == "v2" and ch["to"] == "v1", ch  # v1 is the configured targets
    assert "v2" in (ch.get("reason") or "") and "failed" in ch["reason"], ch
    assert live_name(d.status()) == "v1"
    assert_clean(load.result())
    assert body_of(d.port) == "v1\n"
    # It does not ping-pong: v2 healthy again stays previous, v1 stays live.
    v2.set_healthy(True)
    time.sleep(1)
    assert live_name(d.status()) == "v1" and d.history()[0]["id"] == ch["id"]


@pytest.mark.xdist_group("load")
def test_live_target_killed_is_rolled_back_and_requests_go_to_the_previous(backend, daemon, wrk):
    """kill -9 of the only live target under load: idempotent requests that meet it dead are
    sent to the previous version, which takes over as a recorded rollback."""
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait").returncode == 0
    wait_body(d.port, "v2\n")
    load = wrk(d.port, 5, conns=8)
    time.sleep(1.5)
    v2.kill()

    def rolled_back():
        c = d.history()[0]
        return c if c["kind"] == "rollback" and c["state"] == "completed" else None
    ch = wait_for(rolled_back, 10, "cutover to roll back on its own")
    res = load.result()
    print(f"\nlive target killed under wrk: {res['requests']} requests, socket errors "
          f"{res['socket_errors']}, non-2xx {res['non2xx']}; rollback {ch['reason']}")
    assert ch["actor"] == "cutover", ch
    assert_clean(res)
    assert body_of(d.port) == "v1\n"


def test_live_failure_with_alert_or_nothing_to_go_back_to_says_down(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra="    on_live_failure: alert\n")
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait").returncode == 0
    v2.set_healthy(False)
    svc = wait_for(lambda: (lambda s: s if s.get("down") else None)(d.status()), 10,
                   "status to say the service is down")
    assert "v2" in svc["down"] and "alert" in svc["down"], svc
    assert d.history()[0]["kind"] == "deploy", "on_live_failure: alert rolled back"
    assert 'cutover_service_down{service="web"} 1' in metrics(d)
    text = d.cli("status", "web").stdout
    assert "DOWN:" in text and "alert" in text, text
    st, evs = d.api("GET", f"/api/v1/changes/{d.history()[0]['id']}")
    assert st == 200 and any(e["type"] == "service_down" for e in evs["events"]), evs
    v2.set_healthy(True)
    wait_for(lambda: d.status().get("down") is None, 10, "the service to serve again")
    assert 'cutover_service_down{service="web"} 0' in metrics(d)


def test_no_previous_version_means_down_not_a_rollback(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait").returncode == 0
    v1.kill()
    time.sleep(1)  # the previous version's checks fail too
    v2.set_healthy(False)
    svc = wait_for(lambda: (lambda s: s if s.get("down") else None)(d.status()), 10,
                   "status to say the service is down")
    assert "cannot serve" in svc["down"], svc
    assert d.history()[0]["kind"] == "deploy"


def test_managed_live_version_crash_looping_is_rolled_back(managed):  # noqa: F811
    d = managed.daemon(env={"MODE_v2": "crash_after"}, drain="1s", rollback_window="60s").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    v1 = managed.pids("v1")
    r = managed.deploy("v2", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    t0 = time.monotonic()

    def rolled_back():
        c = d.history()[0]
        return c if c["kind"] == "rollback" and c["state"] == "completed" else None
    ch = wait_for(rolled_back, 40, "cutover to roll the crash-looping v2 back", interval=0.25)
    took = time.monotonic() - t0
    print(f"\ncrash-looping live version rolled back {took:.1f}s after its switch: "
          f"{ch['reason']}")
    assert ch["actor"] == "cutover" and ch["to"] == "v1", ch
    # Whichever is seen first names the failure: its targets refusing connections, or the
    # supervisor's crash loop.
    assert "v2" in ch["reason"] and ("crash" in ch["reason"] or "unhealthy" in ch["reason"]), ch
    wait_body(d.port, "v1\n")
    assert managed.pids("v1") == v1, "the rollback did not reuse v1's running processes"


# f ------------------------------------------------------------------------------------------

def test_sigterm_leaves_instances_running_and_the_next_daemon_adopts_them(managed):  # noqa
    d = managed.daemon().start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    pids = managed.pids("v1")
    assert len(pids) == 2
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    assert managed.pids("v1") == pids, "SIGTERM stopped the instances"
    assert "instances left running for the next daemon" in d.log()
    d.start(expect="v1\n")
    time.sleep(1)
    assert managed.pids("v1") == pids, f"after the restart: {managed.pids()} (before {pids})"
    assert "instance adopted" in d.log(), d.log()[-3000:]
    managed.deploy_ok("v2")
    wait_for(lambda: managed.pids("v1") == [], 10, "adopted v1 instances to be retired")


# g ------------------------------------------------------------------------------------------

def test_rollback_during_a_plan_says_abort(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(held="steps: [{weight: 10}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "held").returncode == 0
    r = d.cli("rollback", "web")
    assert r.returncode != 0 and "cutover abort" in r.stdout + r.stderr, r
    assert d.cli("abort", "web").returncode == 0


# h ------------------------------------------------------------------------------------------

@pytest.fixture
def reap_successors(procs, tmp_path):
    yield
    kill_tree_of(tmp_path)


@pytest.mark.xdist_group("load")
def test_pause_keeps_its_time_across_a_hot_upgrade(backend, daemon, reap_successors):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], drain_timeout="1s",
               top_extra=plans(p="steps: [{weight: 20}, {pause: 8s}, {weight: 100}]"))
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "p").returncode == 0
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the pause")
    t_pause = time.monotonic()
    time.sleep(4)
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    handover_pid(r.stdout)
    p = progress_of(d)
    left = p.get("step_remaining_ms")
    print(f"\npause of 8 s, upgrade after {time.monotonic() - t_pause:.1f}s: {left} ms left")
    assert p.get("step") == 2 and isinstance(left, int), p
    assert left > 8000 - (time.monotonic() - t_pause) * 1000 - 1500, \
        f"the upgrade ate into the pause: {left} ms left"

    def done():
        c = d.history()[0]
        return c if c["state"] == "completed" else None
    wait_for(done, 15, "the plan to complete")
    took = time.monotonic() - t_pause
    assert took >= 7.5, f"the 8 s pause ended after {took:.1f}s"


# j ------------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_step_refused_by_the_store_is_not_taken(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra="    sticky: {header: X-User-Id}\n",
               top_extra=plans(p="steps: [{weight: 10}, {pause: {}}, {weight: 50}, "
                                 "{pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "p").returncode == 0
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the first pause")
    db = sqlite3.connect(str(d.state_dir / "cutover.db"), timeout=1, isolation_level=None,
                         check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    released = threading.Event()

    def release_later():
        time.sleep(14)
        if not released.is_set():
            db.execute("ROLLBACK")
            released.set()
    threading.Thread(target=release_later, daemon=True).start()
    try:
        d.cli_bg("promote", "web")
        p = wait_for(lambda: (lambda q: q if q.get("state") == "holding" else None)(
            progress_of(d)), 20, "the plan to hold")
        assert "store refused" in p.get("hold_reason", ""), p
        assert p.get("weight") == 10, f"the refused step moved traffic: {p}"
    finally:
        if not released.is_set():
            released.set()
            db.execute("ROLLBACK")
        db.close()
    p = wait_for(lambda: (lambda q: q if q.get("step") == 4 else None)(progress_of(d)), 20,
                 "the step to be taken once the store takes it")
    assert p.get("weight") == 50 and p.get("state") == "running", p
    assert d.cli("abort", "web").returncode == 0


@pytest.mark.xdist_group("load")
def test_abort_while_the_store_is_locked_survives_a_kill9(backend, daemon, wrk):
    """The operator's abort acts at once although another process holds the store's write lock
    (users go back to v1 under load, status answers meanwhile), and a kill -9 before the store
    took the record does not undo it: the restart writes the kept end first and serves v1."""
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(p="steps: [{weight: 50}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "p").returncode == 0
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the pause at 50 %")
    db = sqlite3.connect(str(d.state_dir / "cutover.db"), timeout=1, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        load = wrk(d.port, 4, conns=8)
        time.sleep(0.5)
        t0 = time.monotonic()
        r = d.cli("abort", "web", timeout=10)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        assert took < 2, f"the abort took {took:.1f}s with the store locked"
        assert {body_of(d.port) for _ in range(20)} == {"v1\n"}
        t0 = time.monotonic()
        svc = d.status()
        print(f"\nabort with the store locked: {took * 1000:.0f} ms; status "
              f"{(time.monotonic() - t0) * 1000:.0f} ms; unsaved: {svc.get('unsaved')}")
        assert svc.get("unsaved"), svc
        res = load.result()
        assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
        d.kill9()
    finally:
        db.execute("ROLLBACK")
        db.close()
    d.start(expect="v1\n")
    c = d.history()[0]
    assert c["state"] == "aborted", f"the abort was undone by the kill -9: {c}"
    assert not d.status().get("change"), d.status()
    assert {body_of(d.port) for _ in range(20)} == {"v1\n"}
    assert "journal" in d.log(), d.log()[-2000:]


# loss (issue 13 c) ----------------------------------------------------------------------------

def wait_loss(d, change_id, secs=10):
    def loss():
        st, ch = d.api("GET", f"/api/v1/changes/{change_id}")
        assert st == 200, ch
        return ch.get("loss")
    return wait_for(loss, secs, f"change {change_id}'s loss to be recorded", interval=0.2)


@pytest.mark.xdist_group("load")
def test_clean_switch_records_no_loss_and_a_cut_request_records_one(backend, daemon, wrk):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1], drain_timeout="1s")
    d.start(expect="v1\n")
    load = wrk(d.port, 4, conns=8)
    time.sleep(0.5)
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait").returncode == 0
    assert_clean(load.result())
    first = d.history()[0]
    loss = wait_loss(d, first["id"])
    assert loss["requests"] == 0 and loss["connections"] == 0, loss
    # A 4 s request to v2 is cut when v3 takes over and v2's 1 s drain ends.
    result = {}

    def slow():
        try:
            st, _, _ = __import__("conftest").http_get(d.port, "/slow?ms=4000", timeout=10)
            result["status"] = st
        except Exception as e:  # the cut: a reset or an incomplete answer
            result["error"] = repr(e)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    assert d.cli("deploy", "web", "v3", "--target", v3.addr, "--wait").returncode == 0
    t.join(10)
    second = d.history()[0]
    loss = wait_loss(d, second["id"])
    print(f"\nloss of a clean switch: {first['id']}: 0; of a switch that cut a slow request: "
          f"{loss} ({result})")
    assert loss["requests"] == 1 and loss["by_reason"]["drain"] == 1, loss
    st, md = d.api("GET", f"/api/v1/changes/{second['id']}/report?format=md")
    assert "| requests lost | 1 (drain 1)" in md, md[:800]


# the change record an auditor needs (issue 12, item 3) ----------------------------------------

@pytest.mark.xdist_group("load")
def test_change_record_says_what_was_in_force(backend, daemon, wrk):
    import hashlib
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(g="""
steps: [{weight: 50}, {pause: 2s}, {weight: 100}]
analysis: {interval: 500ms, min_requests: 20, max_error_rate: 0.05, max_p99_latency_ms: 800}
"""))
    d.start(expect="v1\n")
    load = wrk(d.port, 5, conns=4)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "g", "--wait", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    load.result()
    c = d.history()[0]
    st, rep = d.api("GET", f"/api/v1/changes/{c['id']}/report")
    assert st == 200, rep
    ch = rep["change"]
    audit = ch["detail"]["audit"]
    assert audit["cutover"] == d.cli("--version").stdout.split()[-1], audit
    assert audit["config"]["sha256"] == hashlib.sha256(d.cfg.read_bytes()).hexdigest(), audit
    assert audit["plan"]["name"] == "g" and len(audit["plan"]["steps"]) == 3, audit
    assert audit["plan"]["analysis"]["max_error_rate"] == 0.05, audit
    assert "max_p99_latency_ratio" not in audit["plan"]["analysis"], audit
    assert audit["from"] == {"version": "v1", "targets": [v1.addr]}, audit
    assert audit["to"]["version"] == "v2" and audit["to"]["targets"] == [v2.addr], audit
    assert isinstance(ch["duration_ms"], int) and ch["duration_ms"] >= 2000, ch
    gates = [s.get("gate") for s in ch["detail"]["steps"] if s.get("gate")]
    assert gates and all(g["test"] for g in gates), ch["detail"]["steps"]
    st, md = d.api("GET", f"/api/v1/changes/{c['id']}/report?format=md")
    assert "## Audit" in md and audit["config"]["sha256"] in md and "| duration |" in md, md
    assert "Decided by the" in md, md


# a full disk during a canary (issue 14 item 7) --------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for the daemon's state_dir (needs CAP_SYS_ADMIN; skipped without)."""
    import subprocess
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path):
    """Fills the file system of path to the last byte; -> the filler file."""
    import os
    f = path / "filler"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return f


@pytest.mark.xdist_group("load")
def test_full_disk_during_a_canary_takes_no_step_and_keeps_an_abort(backend, daemon, small_disk,
                                                                     wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(p="steps: [{weight: 20}, {pause: {}}, {weight: 60}, "
                                       "{pause: {}}, {weight: 100}]"))
    d.state_dir = small_disk / "var"
    d.cfg.write_text(d.cfg.read_text().replace(str(d.tmp / "var"), str(d.state_dir)))
    d.start(expect="v1\n")
    assert d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "p").returncode == 0
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the first pause")
    # Fill the disk; SQLite may still reuse pages it has, so push writes until one is refused.
    filler = fill(small_disk)
    load = wrk(d.port, 6, conns=8)
    d.cli("promote", "web")
    p = wait_for(lambda: (lambda q: q if q.get("state") == "holding" or q.get("step") == 4
                          else None)(progress_of(d)), 15, "the promote to be acted on or held")
    print(f"\nfull disk, promote: progress {p}")
    assert "store refused" in p.get("hold_reason", ""), p
    assert p.get("weight") == 20, f"the refused step moved traffic: {p}"
    r = d.cli("abort", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {body_of(d.port) for _ in range(20)} == {"v1\n"}
    res = load.result()
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    d.kill9()
    filler.unlink()
    d.start(expect="v1\n")
    c = d.history()[0]
    assert c["state"] == "aborted", f"the abort was undone by the kill -9 on a full disk: {c}"
    assert {body_of(d.port) for _ in range(10)} == {"v1\n"}


# four eyes (issue 15: the requester cannot approve their own change) ---------------------------

def test_the_requester_cannot_approve_their_own_change_unless_the_step_allows_it(backend,
                                                                                  daemon):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1], top_extra=plans(
        strict="steps: [{weight: 10}, {approval: {approvers: [alice, bob]}}, {weight: 100}]",
        lenient="steps: [{weight: 10}, {approval: {approvers: [alice, bob], allow_self: true}},"
                " {weight: 100}]"))
    d.start(expect="v1\n")
    # Over the unix socket the deploy's actor is whoever the API is told (as --as does for the
    # other commands).
    st, body = d.api("POST", "/api/v1/services/web/deploy",
                     {"version": "v2", "targets": [v2.addr], "plan": "strict", "actor": "alice"})
    assert st in (200, 201, 202), (st, body)
    cid = str(body["id"])
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the approval step")
    r = d.cli("approve", cid, "--as", "alice")
    assert r.returncode != 0 and "cannot approve" in r.stdout + r.stderr, r
    assert progress_of(d).get("step") == 2
    r = d.cli("approve", cid, "--as", "bob")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: d.history()[0]["state"] == "completed", 10, "the change to complete")
    st, body = d.api("POST", "/api/v1/services/web/deploy",
                     {"version": "v3", "targets": [v3.addr], "plan": "lenient", "actor": "alice"})
    assert st in (200, 201, 202), (st, body)
    cid = str(body["id"])
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the approval step")
    r = d.cli("approve", cid, "--as", "alice")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: d.history()[0]["state"] == "completed", 10, "the change to complete")
