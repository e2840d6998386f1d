"""Hold and maintenance, end to end (issue 17 item 3): `cutover hold SERVICE [--max D]` keeps
requests waiting in cutover (none reaches a backend, none fails) until `cutover release SERVICE`
sends them to the version live then; past --max a held request gets 503 with Retry-After, and
more than limits.hold_max_requests waiting get 503 at once. `deploy --hold` holds around its
switch. `cutover maintenance SERVICE on --message TEXT` answers 503 + Retry-After with a page
naming TEXT (HTML for a browser, plain text otherwise). Both are recorded with their actor, kept
across a restart and a hot upgrade, and shown by `status`.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_hold.py
"""
import http.client
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import BIN, body_of, http_get, wait_body

# ---------------------------------------------------------------------------------- helpers --


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return sorted(int(x) for x in r.stdout.split() if int(x) != os.getpid())


@pytest.fixture(autouse=True)
def reap(procs, tmp_path):
    """A hot upgrade's successor is not this test's child: stop it by pid at teardown."""
    yield
    pids = pgrep(str(tmp_path))
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    for p in pgrep(str(tmp_path)):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cli_as(d, actor, *args, timeout=30):
    """The CLI with $CUTOVER_USER set: the actor recorded."""
    env = dict(os.environ, CUTOVER_USER=actor)
    return subprocess.run([str(BIN), *[str(a) for a in args], "-c", str(d.cfg)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def ok(r, what):
    assert r.returncode == 0, f"{what}: exit {r.returncode}: {r.stdout}{r.stderr}"
    return r


class Held:
    """Requests sent in threads (each on its own connection, or on conn): status, body, seconds."""

    def __init__(self, port, n, headers=None, conn=None):
        self.res = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.one, args=(port, headers, conn))
                        for _ in range(n)]
        for t in self.threads:
            t.start()

    def one(self, port, headers, conn):
        t0 = time.monotonic()
        try:
            c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/", headers=headers or {})
            r = c.getresponse()
            out = (r.status, r.read().decode(), time.monotonic() - t0,
                   {k.lower(): v for k, v in r.getheaders()})
        except Exception as e:  # noqa: BLE001 -- a failure is a result here
            out = (0, repr(e), time.monotonic() - t0, {})
        with self.lock:
            self.res.append(out)

    def answered(self):
        with self.lock:
            return len(self.res)

    def join(self, secs=30):
        for t in self.threads:
            t.join(secs)
        return self.res


def metric(d, name):
    st, text = d.api("GET", "/metrics")
    assert st == 200, (st, text)
    m = re.search(rf'^{name}{{service="web"}} (\d+)$', text, re.M)
    assert m, f"{name} missing from /metrics"
    return int(m.group(1))


def get(port, headers=None):
    """GET / -> (status, body text, lower-cased headers)."""
    st, body, hdrs = http_get(port, "/", headers=headers)
    return st, body.decode(), hdrs


def actions(d):
    db = sqlite3.connect(str(d.state_dir / "cutover.db"))
    try:
        return db.execute("SELECT kind, actor, detail FROM actions WHERE service = 'web' "
                          "ORDER BY id").fetchall()
    finally:
        db.close()


def set_limit(d, text):
    """Adds text to the service's limits: map (write_config writes one)."""
    cfg = d.cfg.read_text()
    cfg = re.sub(r"limits: \{([^}]*)\}", lambda m: f"limits: {{{m.group(1)}, {text}}}", cfg)
    d.cfg.write_text(cfg)


# ------------------------------------------------------------------------------------ cases --


@pytest.mark.xdist_group("load")
def test_hold_through_a_switch_under_load_then_release(backend, daemon, wrk):
    # wrk's 16 keep-alive connections run when the hold starts: each one's next request waits.
    # A deploy of v2 switches while held (health checks go on); no backend sees a request until
    # the release, which sends them all to v2. wrk sees no error and no non-2xx.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    load = wrk(d.port, 30, conns=16)
    time.sleep(1.5)
    ok(cli_as(d, "alice", "hold", "web", "--max", "20s"), "hold")
    time.sleep(0.3)  # requests already at v1 when the hold began finish
    v1.clear()
    v2.clear()
    waiting = metric(d, "cutover_hold_waiting")
    ok(d.cli("deploy", "web", "v2", "--target", v2.addr), "deploy during the hold")
    assert live_is(d, "v2")
    time.sleep(1)
    seen = (len(v1.requests()), len(v2.requests()))
    waiting_before_release = metric(d, "cutover_hold_waiting")
    t0 = time.monotonic()
    ok(cli_as(d, "alice", "release", "web"), "release")
    time.sleep(1.5)
    res = load.stop()
    print(f"\nhold through a switch under wrk -c16: {res['requests']} requests, socket errors "
          f"{res['socket_errors']}, non-2xx {res['non2xx']}; waiting at the hold {waiting}, "
          f"before the release {waiting_before_release}; v1/v2 requests while held {seen}; "
          f"v2 after the release {len(v2.requests())} in {time.monotonic() - t0:.1f}s")
    assert seen == (0, 0), f"backends got requests while held: v1 {seen[0]}, v2 {seen[1]}"
    assert waiting_before_release == 16, "each of wrk's 16 connections should have one waiting"
    assert len(v2.requests()) > 100, "the released requests and the load after them go to v2"
    assert v1.requests() == [], "nothing goes to v1 after the switch"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert metric(d, "cutover_hold_waiting") == 0
    assert metric(d, "cutover_hold_requests_total") >= 16
    assert [(k, a) for k, a, _ in actions(d)] == [("hold", "alice"), ("release", "alice")]


def live_is(d, version):
    return (d.status().get("live") or {}).get("name") == version


def test_next_request_on_a_keepalive_connection_is_held(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"v1\n")
    ok(d.cli("hold", "web"), "hold")
    v1.clear()
    h = Held(d.port, 1, conn=conn)
    time.sleep(1)
    assert h.answered() == 0, f"the keep-alive connection's next request was not held: {h.res}"
    assert v1.requests() == []
    svc = d.status()
    assert svc["hold"]["max_ms"] == 30000 and svc["hold"]["change"] is None, svc["hold"]
    out = ok(d.cli("status", "web"), "status").stdout
    assert "HELD:" in out and "at most 30s" in out, out
    ok(d.cli("release", "web"), "release")
    (st, body, secs, _), = h.join()
    assert (st, body) == (200, "v1\n") and secs >= 1, (st, body, secs)
    assert d.status()["hold"] is None


def test_held_past_max_gets_503_with_retry_after(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    ok(d.cli("hold", "web", "--max", "1s"), "hold --max 1s")
    v1.clear()
    (st, body, secs, hdrs), = Held(d.port, 1).join()
    print(f"\nheld past --max 1s: {st} after {secs:.2f}s, Retry-After {hdrs.get('retry-after')}")
    assert st == 503 and "retry-after" in hdrs, (st, body, hdrs)
    assert 0.9 <= secs < 3, secs
    assert v1.requests() == [], "an expired request must not reach a backend"
    assert metric(d, "cutover_hold_expired_total") == 1
    ok(d.cli("release", "web"), "release")
    assert body_of(d.port) == "v1\n"


def test_hold_max_requests_overflow_gets_503_at_once(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1])
    set_limit(d, "hold_max_requests: 2")
    d.start(expect="v1\n")
    ok(d.cli("hold", "web", "--max", "20s"), "hold")
    first = Held(d.port, 2)
    time.sleep(0.5)
    t0 = time.monotonic()
    st, body, hdrs = get(d.port)
    took = time.monotonic() - t0
    assert st == 503 and took < 1, (st, body, took)
    assert "too many requests held" in body
    assert metric(d, "cutover_hold_refused_total") == 1
    assert metric(d, "cutover_hold_waiting") == 2
    ok(d.cli("release", "web"), "release")
    res = first.join()
    assert sorted(r[:2] for r in res) == [(200, "v1\n")] * 2, res


def test_deploy_hold_holds_until_the_switch(backend, daemon):
    # v2 starts unhealthy: `deploy --hold` holds at once, its requests wait while v2's health
    # checks go on, and the switch releases them to v2.
    v1, v2 = backend("v1"), backend("v2", unhealthy=True)
    d = daemon([v1], deploy_timeout="20s").start(expect="v1\n")
    dep = d.cli_bg("deploy", "web", "v2", "--target", v2.addr, "--hold")
    deadline = time.monotonic() + 10
    while (d.status().get("hold") or {}).get("change") is None:
        assert time.monotonic() < deadline, "deploy --hold did not hold"
        time.sleep(0.05)
    v1.clear()
    h = Held(d.port, 5)
    time.sleep(1)
    assert h.answered() == 0 and v1.requests() == [], h.res
    v2.set_healthy(True)
    res = h.join()
    assert sorted(r[:2] for r in res) == [(200, "v2\n")] * 5, res
    assert dep.wait(10) == 0
    assert d.status()["hold"] is None
    kinds = [k for k, _, _ in actions(d)]
    assert kinds == ["hold", "release"], kinds
    change = d.history()[0]
    st, doc = d.api("GET", f"/api/v1/changes/{change['id']}")
    assert [e["type"] for e in doc["events"] if e["type"] in ("hold", "release")] == ["hold"], doc
    # With a plan it is refused: a plan moves traffic in steps, not in one switch.
    r = d.cli("deploy", "web", "v3", "--target", v1.addr, "--hold", "--plan", "nope")
    assert r.returncode == 2, r
    # An operator's hold stays theirs: a deploy --hold switches under it and leaves it held.
    ok(d.cli("hold", "web"), "hold")
    v3 = backend("v3")
    ok(d.cli("deploy", "web", "v3", "--target", v3.addr, "--hold"), "deploy --hold while held")
    assert live_is(d, "v3") and d.status()["hold"]["change"] is None, d.status()["hold"]
    ok(d.cli("release", "web"), "release")
    assert body_of(d.port) == "v3\n"


def test_maintenance_page_html_and_plain_text(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    msg = "database upgrade until 14:00 <b>&</b>"
    ok(cli_as(d, "bob", "maintenance", "web", "on", "--message", msg), "maintenance on")
    v1.clear()
    st, body, hdrs = get(d.port, headers={
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert st == 503 and hdrs.get("retry-after"), (st, hdrs)
    assert hdrs.get("content-type", "").startswith("text/html"), hdrs
    assert "database upgrade until 14:00 &lt;b&gt;&amp;&lt;/b&gt;" in body, body
    st, body, hdrs = get(d.port)
    assert st == 503 and hdrs.get("content-type", "").startswith("text/plain"), hdrs
    assert body == msg + "\n", body
    st, body, hdrs = get(d.port, headers={"Accept": "text/html;q=0, */*"})
    assert hdrs.get("content-type", "").startswith("text/plain"), "q=0 refuses HTML"
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    c.request("HEAD", "/")
    r = c.getresponse()
    assert r.status == 503 and r.read() == b"" and int(r.getheader("Content-Length")) > 0
    assert v1.requests() == [], "no backend sees a request in maintenance"
    out = ok(d.cli("status", "web"), "status").stdout
    assert "MAINTENANCE:" in out and "database upgrade" in out and "(by bob)" in out, out
    assert metric(d, "cutover_service_maintenance") == 1
    assert metric(d, "cutover_maintenance_answers_total") == 4
    ok(cli_as(d, "bob", "maintenance", "web", "off"), "maintenance off")
    assert body_of(d.port) == "v1\n"
    assert [(k, a) for k, a, _ in actions(d)] == [("maintenance_on", "bob"),
                                                  ("maintenance_off", "bob")]
    audit = ok(d.cli("audit"), "audit").stdout
    assert "POST /api/v1/services/web/maintenance 200" in audit, audit
    r = d.cli("maintenance", "web", "off")
    assert r.returncode == 1 and "not in maintenance" in r.stderr, r


def test_hold_and_maintenance_survive_restart_and_upgrade(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="2s").start(expect="v1\n")
    ok(cli_as(d, "carol", "hold", "web", "--max", "20s"), "hold")
    d.procs.stop(d.proc)  # SIGTERM: a clean stop
    d.start()
    v1.clear()
    h = Held(d.port, 1)
    time.sleep(1)
    assert h.answered() == 0, f"not held after a restart: {h.res}"
    assert d.status()["hold"]["actor"] == "carol"
    ok(d.cli("release", "web"), "release")
    assert [r[:2] for r in h.join()] == [(200, "v1\n")]

    ok(d.cli("maintenance", "web", "on", "--message", "moving racks"), "maintenance on")
    old = d.pid
    r = ok(d.cli("upgrade", timeout=20), "upgrade")
    assert str(old) not in r.stdout.split("pid")[-1], r.stdout
    st, body, _ = get(d.port)
    assert st == 503 and "moving racks" in body, (st, body)
    assert d.status()["maintenance"]["message"] == "moving racks"
    ok(d.cli("hold", "web"), "hold")
    ok(d.cli("maintenance", "web", "off"), "maintenance off")
    h = Held(d.port, 1)
    time.sleep(0.5)
    assert h.answered() == 0, "held after the upgrade"
    ok(d.cli("release", "web"), "release")
    assert [r[:2] for r in h.join()] == [(200, "v1\n")]
    wait_body(d.port, "v1\n")


def test_requests_held_across_an_upgrade_get_503_not_a_reset(backend, daemon):
    # A request parked in the old daemon cannot move to the successor: it gets 503 with
    # Retry-After at the old daemon's drain deadline (2 s here, before its --max of 20 s).
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="2s").start(expect="v1\n")
    ok(d.cli("hold", "web", "--max", "20s"), "hold")
    v1.clear()
    h = Held(d.port, 2)
    time.sleep(0.5)
    ok(d.cli("upgrade", timeout=20), "upgrade")
    res = h.join()
    print(f"\nheld across an upgrade: {[(r[0], round(r[2], 2)) for r in res]}")
    for st, body, secs, hdrs in res:
        assert st == 503 and "retry-after" in hdrs, (st, body, hdrs)
        assert secs < 10, secs
    assert v1.requests() == []
    assert d.status()["hold"] is not None, "the successor holds"
    ok(d.cli("release", "web"), "release")
    assert body_of(d.port) == "v1\n"


def test_bad_input_is_refused_clearly(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    r = d.cli("hold", "nosuch")
    assert r.returncode == 2 and "unknown service 'nosuch'" in r.stderr, r
    r = d.cli("hold", "web", "--max", "5parsecs")
    assert r.returncode == 2 and "--max must be a duration" in r.stderr, r
    r = d.cli("hold", "web", "--max", "2h")
    assert r.returncode == 2 and "at most 1h" in r.stderr, r
    r = d.cli("maintenance", "web", "maybe")
    assert r.returncode == 2 and "expected on or off" in r.stderr, r
    r = d.cli("maintenance", "web", "off", "--message", "x")
    assert r.returncode == 2 and "--message goes with on" in r.stderr, r
    r = d.cli("release", "web")
    assert r.returncode == 1 and "web is not held" in r.stderr, r
    st, doc = d.api("POST", "/api/v1/services/web/hold", {"max": "0s"})
    assert st == 400 and "max" in doc["error"], doc
    st, doc = d.api("POST", "/api/v1/services/web/maintenance", {"on": True, "message": "a\x1bb"})
    assert st == 400 and "control character" in doc["error"], doc
    st, doc = d.api("POST", "/api/v1/services/web/maintenance", {"message": "x"})
    assert st == 400 and "on: required" in doc["error"], doc
    assert d.status()["hold"] is None and d.status()["maintenance"] is None
    assert actions(d) == []
    assert body_of(d.port) == "v1\n"
