"""Zero-downtime switch, end to end: deploy and rollback under keep-alive load lose nothing, a
deploy to an unhealthy target never moves traffic, and state survives kill -9.

Each case: scripted backends (backend.py) for v1/v2/v3 on loopback, the real daemon in front,
wrk as the users, the real CLI as the operator.
"""
import http.client
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import body_of, http_get, live_name, wait_body


def live_addrs(svc):
    return [t["address"] for t in (svc.get("live") or {}).get("targets", [])]


def assert_no_errors(res, min_requests=1000):
    assert res["requests"] > min_requests, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']} " \
        f"of {res['requests']}\n{res['text']}"


@pytest.mark.xdist_group("load")
def test_deploy_under_load_loses_no_request(backend, daemon, wrk):
    # v1 is live; 16 users keep their connections open and hammer the service for 12 s.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    load = wrk(d.port, 12, conns=16)
    time.sleep(3)
    # In the middle of it, the operator deploys v2.
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--reason", "e2e", timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    time.sleep(0.5)
    assert body_of(d.port) == "v2\n", "v2 not live after deploy"
    assert load.running(), "load ended before the deploy was done: make the load longer"
    # Not one user noticed.
    assert_no_errors(load.result())
    assert body_of(d.port) == "v2\n"
    assert live_name(d.status()) == "v2"
    # The change is on record as completed.
    last = d.history()[0]
    assert last["to"] == "v2" and last["state"] == "completed", last


def naps_taken(d):
    st, text = d.api("GET", "/metrics")
    assert st == 200, text
    m = re.search(r"^cutover_worker_naps_total (\d+)$", text, re.M)
    assert m, "no cutover_worker_naps_total in /metrics"
    return int(m.group(1))


@pytest.mark.xdist_group("load")
@pytest.mark.parametrize("coalesce", [100, 0])
def test_switch_rollback_and_stop_under_64_connections(backend, daemon, wrk, coalesce):
    # 64 users on one worker: enough active clients that the busy worker naps before blocking
    # (io_coalesce_us: 100, proxy/nap.h); with 0 it blocks at once. Either loop must switch
    # and roll back without a user noticing, and stop promptly under load.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=f"workers: 1\nio_coalesce_us: {coalesce}\n").start(expect="v1\n")
    load = wrk(d.port, 10, conns=64)
    time.sleep(2.5)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)
    time.sleep(1)
    r = d.cli("rollback", "web", timeout=20)
    assert r.returncode == 0, f"rollback exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v1\n", secs=5)
    assert load.running(), "load ended before the rollback was done: make the load longer"
    assert_no_errors(load.result())
    hist = d.history()
    assert [(h["kind"], h["state"]) for h in hist[:2]] == [("rollback", "completed"),
                                                           ("deploy", "completed")], hist[:2]
    # The nap was taken when on, and never when off.
    naps = naps_taken(d)
    assert (naps > 0) if coalesce else (naps == 0), f"{naps} naps with io_coalesce_us {coalesce}"
    # A stop under load (a worker napping or blocked) drains and exits cleanly.
    wrk(d.port, 4, conns=64)
    time.sleep(1)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(15)
    assert rc == 0, f"exit {rc} after SIGTERM:\n{d.log()[-2000:]}"
    assert time.monotonic() - t0 < 8, "stop took longer than the 5 s drain allows"


@pytest.mark.xdist_group("load")
def test_deploy_to_unhealthy_target_fails_and_traffic_never_moves(backend, daemon, wrk):
    # v3's health check answers 503: the deploy must wait out deploy_timeout (3 s), fail with
    # exit 1, and no user may ever be answered by v3.
    v1, v3 = backend("v1"), backend("v3", unhealthy=True)
    d = daemon([v1], deploy_timeout="3s").start(expect="v1\n")
    before = len(d.history())
    t0 = time.monotonic()
    deploy = d.cli_bg("deploy", "web", "v3", "--target", v3.addr)
    answers = {}
    while deploy.poll() is None and time.monotonic() - t0 < 20:
        got = body_of(d.port, timeout=2)
        answers[got] = answers.get(got, 0) + 1
        time.sleep(0.05)
    if deploy.poll() is None:
        deploy.kill()
        raise AssertionError("deploy to an unhealthy target still running after 20 s")
    took = time.monotonic() - t0
    assert deploy.returncode == 1, f"deploy exit {deploy.returncode}, want 1: " \
                                   f"{deploy.log_path.read_text()}"
    assert 2.5 <= took <= 10, f"deploy failed after {took:.1f}s, deploy_timeout is 3s"
    assert deploy.log_path.read_text().strip(), "a failed deploy must say why"
    assert set(answers) == {"v1\n"}, f"answers during the failed deploy: {answers}"
    assert sum(answers.values()) >= 20
    assert v3.requests() == [], "a user request reached the unhealthy v3"
    assert body_of(d.port) == "v1\n"
    # Status still shows v1 live and nothing running; history records the change as failed.
    svc = d.status()
    assert live_name(svc) != "v3", svc
    assert not svc.get("change"), f"a change is still shown in progress: {svc.get('change')}"
    hist = d.history()
    assert len(hist) == before + 1, hist
    assert hist[0]["to"] == "v3" and hist[0]["state"] == "failed", hist[0]


@pytest.mark.xdist_group("load")
def test_rollback_under_load_loses_no_request(backend, daemon, wrk):
    # v2 went live and turned out bad: under load, the operator rolls back to v1.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)
    load = wrk(d.port, 12, conns=16)
    time.sleep(3)
    r = d.cli("rollback", "web", timeout=20)
    assert r.returncode == 0, f"rollback exit {r.returncode}: {r.stdout}{r.stderr}"
    time.sleep(0.5)
    assert body_of(d.port) == "v1\n", "v1 not live after rollback"
    assert load.running(), "load ended before the rollback was done: make the load longer"
    assert_no_errors(load.result())
    assert body_of(d.port) == "v1\n"
    # v1 came from the config's targets (the daemon names that version itself).
    assert live_addrs(d.status()) == [v1.addr]
    last = d.history()[0]
    assert last["kind"] == "rollback" and last["state"] == "completed", last


def test_rollback_with_nothing_to_return_to_fails_cleanly(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    r = d.cli("rollback", "web", timeout=20)
    assert r.returncode == 1, f"rollback without a previous version: exit {r.returncode}"
    assert (r.stdout + r.stderr).strip()
    assert body_of(d.port) == "v1\n"


def test_kill9_after_deploy_restart_serves_live_version(backend, daemon):
    # After v2 went live, the daemon dies hard. On restart it serves v2, not the config's v1.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)
    d.kill9()
    assert body_of(d.port, timeout=1) is None
    d.start()
    wait_body(d.port, "v2\n", secs=10)
    # Give v1 a chance to sneak back in (e.g. a late re-read of the config's targets).
    seen = {body_of(d.port) for _ in range(30)}
    assert seen == {"v2\n"}, f"after restart the service answered {seen}"
    svc = d.status()
    assert live_name(svc) == "v2", svc
    assert (svc.get("previous") or {}).get("name") not in (None, "v2"), \
        f"previous version lost across restart: {svc.get('previous')}"
    # And the rollback that was ready before the crash is still ready after it.
    r = d.cli("rollback", "web", timeout=20)
    assert r.returncode == 0, f"rollback after restart exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v1\n", secs=5)


def test_kill9_during_deploy_marks_change_interrupted(backend, daemon):
    # A deploy waits for v2, whose health check fails for now; the daemon is killed -9 while it
    # waits. After restart v1 still serves, the change shows as interrupted, and a new deploy
    # (v2 healthy by then) goes through.
    v1, v2 = backend("v1"), backend("v2", unhealthy=True)
    d = daemon([v1], deploy_timeout="60s").start(expect="v1\n")
    deploy = d.cli_bg("deploy", "web", "v2", "--target", v2.addr)
    deadline = time.monotonic() + 5
    running = None
    while time.monotonic() < deadline:
        hist = d.history()
        if hist and hist[0]["state"] == "running":
            running = hist[0]
            break
        time.sleep(0.1)
    assert running is not None, "the deploy never showed up as running"
    d.kill9()
    try:
        deploy.wait(5)
    except subprocess.TimeoutExpired:
        raise AssertionError("the CLI kept waiting after the daemon died")
    assert deploy.returncode != 0, "the CLI said the deploy succeeded though the daemon died"
    d.start()
    wait_body(d.port, "v1\n", secs=10)
    hist = d.history()
    ch = next((c for c in hist if c["id"] == running["id"]), None)
    assert ch is not None, f"change {running['id']} lost across restart: {hist}"
    assert ch["state"] == "interrupted", ch
    svc = d.status()
    assert live_name(svc) != "v2"
    assert not svc.get("change"), f"interrupted change still shown in progress: {svc['change']}"
    seen = {body_of(d.port) for _ in range(20)}
    assert seen == {"v1\n"}, seen
    # Nothing is stuck: once v2 is healthy, deploying it works.
    v2.set_healthy(True)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=30)
    assert r.returncode == 0, f"deploy after restart exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)


def test_deploy_lets_in_flight_requests_finish_and_moves_open_connections(backend, daemon):
    # A user is in the middle of a 2 s request on v1 and another holds an idle keep-alive
    # connection when v2 is deployed: the first gets v1's full answer, the second's next
    # request on the same connection is answered by v2.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], drain_timeout="10s").start(expect="v1\n")
    idle = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    idle.request("GET", "/")
    assert idle.getresponse().read() == b"v1\n"
    slow = {}

    def slow_request():
        try:
            slow["answer"] = http_get(d.port, "/slow?ms=2000", timeout=10)
        except Exception as e:  # reported below
            slow["answer"] = e

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    t.join(15)
    st, body, hdrs = slow["answer"]
    assert (st, body, hdrs.get("x-version")) == (200, b"slept 2000\n", "v1"), slow["answer"]
    idle.request("GET", "/")
    resp = idle.getresponse()
    assert (resp.status, resp.read()) == (200, b"v2\n")
    assert resp.getheader("Connection", "").lower() != "close", \
        "the drain closed a client connection instead of moving it to v2"
    idle.close()


def test_second_deploy_while_one_runs_is_refused(backend, daemon):
    # While a deploy waits for an unhealthy v3, another deploy on the service is a conflict:
    # exit 1, and it does not disturb the first or the live version.
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3", unhealthy=True)
    d = daemon([v1], deploy_timeout="3s").start(expect="v1\n")
    first = d.cli_bg("deploy", "web", "v3", "--target", v3.addr)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not d.status().get("change"):
        time.sleep(0.1)
    assert d.status().get("change"), "the first deploy never showed as in progress"
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 1, f"concurrent deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    assert r.stderr.strip()
    assert body_of(d.port) == "v1\n"
    assert first.wait(15) == 1
    assert body_of(d.port) == "v1\n"
    assert v2.requests() == []
