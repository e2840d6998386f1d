"""The dashboard's side of the admin API on admin.listen, end to end without a browser: the
page and its files with a strict Content-Security-Policy, login with a token to a session
cookie, CSRF on every action, logout, a session that outlives a hot upgrade, actions that
refuse a change that moved on (409), and the per-version series behind the charts, which outlive
a hot upgrade and a stop and start. The browser itself is driven by test_dashboard_browser.py.

    /usr/bin/python3 -m pytest -q tests/e2e/test_dashboard_api.py
"""
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

from conftest import free_port, http_get, wait_port
from test_tls import Certs
from test_admin_tcp import ALICE, LEAD, ROOT, VIEW, admin_daemon, call, reap, tcli  # noqa: F401

PLAN = """plans:
  hold:
    steps: [{weight: 30}, {pause: 10m}, {weight: 100}]
"""


def login(d, token, headers=None):
    """POST /api/v1/session -> (status, JSON, cookie value or None, Set-Cookie header)."""
    st, doc, hdr = call(d, "POST", "/api/v1/session", body={"token": token}, headers=headers)
    sc = hdr.get("set-cookie", "")
    m = re.match(r"cutover_session=([^;]*)", sc)
    return st, doc, (m.group(1) if m else None), sc


def as_session(d, method, path, cookie, csrf=None, body=None, headers=None):
    h = {"Cookie": f"cutover_session={cookie}"}
    if csrf:
        h["X-CSRF-Token"] = csrf
    h.update(headers or {})
    return call(d, method, path, body=body, headers=h)


def refused_total(d):
    _, text, _ = call(d, "GET", "/metrics", token=VIEW)
    return int(re.search(r"^cutover_admin_refused_total (\d+)$", text, re.M).group(1))


def test_page_is_served_with_a_strict_policy_and_login_gives_a_session(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    # The page and its files need no token; the data behind them does.
    st, html, hdr = call(d, "GET", "/")
    assert st == 200 and hdr["content-type"].startswith("text/html"), (st, hdr)
    assert 'type="password"' in html and "<script src=\"/dash/app.js\"" in html
    assert "<script>" not in html and " style=" not in html, "inline script or style in the page"
    csp = hdr["content-security-policy"]
    for want in ["default-src 'none'", "script-src 'self'", "connect-src 'self'",
                 "frame-ancestors 'none'"]:
        assert want in csp, csp
    assert "http" not in csp and "unsafe" not in csp, csp
    st, js, hdr = call(d, "GET", "/dash/app.js")
    assert st == 200 and hdr["content-type"].startswith("text/javascript") and "EventSource" in js
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", js), "the script names another host"
    st, _, _ = call(d, "GET", "/dash/nothing.js")
    assert st == 404
    st, _, _ = call(d, "GET", "/api/v1/services")
    assert st == 401

    # A wrong token says so and counts as a refused attempt.
    before = refused_total(d)
    st, doc, cookie, _ = login(d, "wrong-0123456789abcdef")
    assert st == 401 and "wrong token" in doc["error"] and cookie is None, (st, doc)
    assert refused_total(d) == before + 1
    assert "dashboard login refused" in d.log()

    # The right one gives a session cookie a script cannot read and another site cannot send.
    st, doc, cookie, sc = login(d, ALICE)
    assert st == 200 and doc["name"] == "alice" and doc["role"] == "operator", (st, doc)
    assert re.fullmatch(r"[0-9a-f]{32}", doc["csrf"]) and doc["expires"] > time.time() + 3600
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"]:
        assert attr in sc, sc
    assert "Secure" not in sc, "Secure on a plain-HTTP cookie: the browser would never send it"
    st, doc, _ = as_session(d, "GET", "/api/v1/services/web", cookie)
    assert st == 200 and doc["name"] == "web"
    st, me, _ = as_session(d, "GET", "/api/v1/session", cookie)
    assert (st, me["name"], me["csrf"]) == (200, "alice", doc_csrf(d, cookie))
    # Logging in again while a session is still open (another token) needs no CSRF token.
    st, doc, _ = as_session(d, "POST", "/api/v1/session", cookie, body={"token": VIEW})
    assert st == 200 and doc["role"] == "viewer", (st, doc)
    # Behind a TLS terminator the cookie is Secure.
    _, _, _, sc = login(d, ALICE, headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in sc, sc
    # A forged or altered cookie is no session.
    st, doc, _ = as_session(d, "GET", "/api/v1/services", cookie[:-1] + ("x" if cookie[-1] != "x" else "y"))
    assert st == 401, (st, doc)
    st, doc, _ = as_session(d, "GET", "/api/v1/services", cookie.replace(":alice", ":root"))
    assert st == 401, (st, doc)


def doc_csrf(d, cookie):
    _, me, _ = as_session(d, "GET", "/api/v1/session", cookie)
    return me["csrf"]


def test_actions_of_a_session_need_its_csrf_token_and_the_role(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path, extra_top=PLAN)
    d.start(expect="v1\n")
    r = tcli(d, LEAD, "deploy", "web", "v2", "--target", v2.addr, "--plan", "hold")
    assert r.returncode == 0, r.stderr
    cid = d.status()["change"]["id"]
    _, me, cookie, _ = login(d, ALICE)
    path = f"/api/v1/changes/{cid}/pause"
    # No CSRF token, a wrong one, or another origin: refused, nothing changes.
    for csrf, hdr in [(None, None), ("0" * 32, None), (me["csrf"], {"Origin": "http://evil.example"})]:
        st, doc, _ = as_session(d, "POST", path, cookie, csrf=csrf, body={}, headers=hdr)
        assert st == 403, (csrf, hdr, st, doc)
        assert d.status()["change"]["progress"]["state"] == "running"
    # With it (and the page's own origin) the action is taken, in the session's name.
    origin = {"Origin": f"http://127.0.0.1:{d.admin_port}"}
    st, doc, _ = as_session(d, "POST", path, cookie, csrf=me["csrf"], body={}, headers=origin)
    assert st == 200 and d.status()["change"]["progress"]["state"] == "paused", (st, doc)
    assert any(e["message"].startswith("paused by alice") for e in doc["events"]), doc["events"]
    # A viewer's session may read but not act.
    _, vme, vcookie, _ = login(d, VIEW)
    assert vme["role"] == "viewer"
    st, doc, _ = as_session(d, "POST", f"/api/v1/changes/{cid}/resume", vcookie, csrf=vme["csrf"],
                            body={})
    assert st == 403 and "needs operator" in doc["error"], (st, doc)
    # The event stream takes the cookie (what the page's EventSource sends).
    c = http.client.HTTPConnection("127.0.0.1", d.admin_port, timeout=5)
    c.request("GET", "/api/v1/events", headers={"Cookie": f"cutover_session={vcookie}"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    c.close()
    # After a logout the cookie is refused, even if a copy of it is sent again.
    st, doc, hdr = as_session(d, "DELETE", "/api/v1/session", cookie, csrf=me["csrf"])
    assert st == 200 and doc["logged_out"] is True and "Max-Age=0" in hdr["set-cookie"]
    st, doc, _ = as_session(d, "GET", "/api/v1/services", cookie)
    assert st == 401 and "log in again" in doc["error"], (st, doc)


def test_an_action_on_a_change_that_moved_on_is_refused_and_says_what_happened(backend, daemon,
                                                                             tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path, extra_top=PLAN)
    d.start(expect="v1\n")
    r = tcli(d, LEAD, "deploy", "web", "v2", "--target", v2.addr, "--plan", "hold")
    assert r.returncode == 0, r.stderr
    ch = d.status()["change"]
    assert ch["progress"]["step"] == 2, ch["progress"]
    # Someone saw step 2 and pauses it, while another promoted it meanwhile.
    st, doc, _ = call(d, "POST", f"/api/v1/changes/{ch['id']}/promote", token=LEAD,
                      body={"expect_step": 2})
    assert st == 200, (st, doc)
    st, doc, _ = call(d, "POST", f"/api/v1/changes/{ch['id']}/pause", token=ALICE,
                      body={"expect_step": 2})
    assert st == 409 and "has ended (completed)" in doc["error"] and "nothing was done" in doc["error"], (st, doc)
    # A rollback names the live version it saw: refused once another version went live.
    st, doc, _ = call(d, "POST", "/api/v1/services/web/rollback", token=ALICE,
                      body={"expect_live": "v1"})
    assert st == 409 and "is v2 now, not v1" in doc["error"], (st, doc)
    assert d.status()["live"]["name"] == "v2"
    # A change still running but at another step than the one seen.
    r = tcli(d, LEAD, "deploy", "web", "v3", "--target", v1.addr, "--plan", "hold")
    assert r.returncode == 0, r.stderr
    cid = d.status()["change"]["id"]
    st, doc, _ = call(d, "POST", f"/api/v1/changes/{cid}/pause", token=ALICE,
                      body={"expect_step": 1})
    assert st == 409 and "moved on: it is at step 2 (pause 10m, running) now, not step 1" in doc["error"], (st, doc)
    assert d.status()["change"]["progress"]["state"] == "running"
    st, doc, _ = call(d, "POST", f"/api/v1/changes/{cid}/pause", token=ALICE,
                      body={"expect_step": "2"})
    assert st == 400 and "expect_step" in doc["error"], (st, doc)


def test_a_session_outlives_a_hot_upgrade(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    _, _, cookie, _ = login(d, ALICE)
    st, before, _ = as_session(d, "GET", "/api/v1/health", cookie)
    assert st == 200
    r = tcli(d, ROOT, "upgrade")
    assert r.returncode == 0, (r.stdout, r.stderr)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st, after, _ = as_session(d, "GET", "/api/v1/health", cookie)
        if st == 200 and after["pid"] != before["pid"]:
            break
        time.sleep(0.1)
    assert st == 200 and after["pid"] != before["pid"], (st, after)


def test_series_give_each_serving_version_its_rate_errors_and_p99(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path, extra_top=PLAN)
    d.start(expect="v1\n")
    r = tcli(d, LEAD, "deploy", "web", "v2", "--target", v2.addr, "--plan", "hold")
    assert r.returncode == 0, r.stderr
    # 5 s of traffic: two samples at least, 2 s apart.
    end = time.monotonic() + 5
    n = 0
    while time.monotonic() < end:
        http_get(d.port, "/")
        n += 1
    st, doc, _ = call(d, "GET", "/api/v1/services/web/series", token=VIEW)
    assert st == 200 and doc["every_s"] == 2 and doc["window_s"] == 900, doc
    lines = {v["version"]: v["points"] for v in doc["versions"]}
    assert set(lines) == {"v1", "v2"}, lines
    for name, pts in lines.items():
        assert len(pts) >= 1, (name, pts)
        t, rps, err, p99 = pts[-1]
        assert abs(t - time.time()) < 10 and rps > 0 and err == 0 and 0 < p99 < 1000, (name, pts)
    total = sum(p[1] * 2 for pts in lines.values() for p in pts)
    assert total <= n * 1.2, (total, n)
    st, doc, _ = call(d, "GET", "/api/v1/services/nope/series", token=VIEW)
    assert st == 404


class Trickle:
    """Light traffic: one GET on a fresh connection every 20 ms until stopped; counts failures."""

    def __init__(self, port):
        self.port, self.ok, self.failed = port, 0, []
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done.is_set():
            try:
                st, _, _ = http_get(self.port, "/")
                if st == 200:
                    self.ok += 1
                else:
                    self.failed.append(st)
            except (OSError, http.client.HTTPException) as e:
                self.failed.append(repr(e))
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.t.join(10)


def v1_points(d):
    st, doc, _ = call(d, "GET", "/api/v1/services/web/series", token=VIEW)
    assert st == 200, (st, doc)
    return next((v["points"] for v in doc["versions"] if v["version"] == "v1"), [])


def wait_points(d, want, secs=20):
    """Polls the series until want(points of v1) is true -> the points."""
    deadline = time.monotonic() + secs
    while True:
        pts = v1_points(d)
        if want(pts) or time.monotonic() > deadline:
            return pts
        time.sleep(0.2)


def daemon_pid(d):
    st, doc, _ = call(d, "GET", "/api/v1/health", token=VIEW)
    assert st == 200, (st, doc)
    return doc["pid"]


def successor_pid(d, old_pid):
    """The pid the admin API answers with once the successor took over from old_pid."""
    deadline = time.monotonic() + 10
    while daemon_pid(d) == old_pid and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = daemon_pid(d)
    assert pid != old_pid
    return pid


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_series_outlive_an_upgrade_a_reload_and_a_stop_and_start(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    kept = d.state_dir / "series.json"
    load = Trickle(d.port)
    try:
        before = wait_points(d, lambda p: len(p) >= 2)
        assert len(before) >= 2 and all(p[1] > 0 for p in before), before
        old_pid = daemon_pid(d)
        t_upgrade = time.time()
        r = tcli(d, ROOT, "upgrade")
        assert r.returncode == 0, (r.stdout, r.stderr)
        new_pid = successor_pid(d, old_pid)
        # The successor shows the points from before the upgrade, then its own after them.
        after = wait_points(d, lambda p: any(x[0] > t_upgrade + 1 for x in p))
        assert after[:len(before)] == before, (before, after)
        assert any(x[0] > t_upgrade + 1 and x[1] > 0 for x in after), after
        assert [x[0] for x in after] == sorted(x[0] for x in after), after
        # It took the file: a later start must not load it again.
        assert not kept.exists()
        assert "the dashboard's series were loaded" in d.log(), d.log()
        # The old daemon drains and exits: it leaves no file behind for a later start.
        d.proc.wait(15)
        assert not kept.exists()
        # A reload is the same hand-over, with the config read again.
        t_reload = time.time()
        r = tcli(d, ROOT, "reload")
        assert r.returncode == 0, (r.stdout, r.stderr)
        upgraded = new_pid
        new_pid = successor_pid(d, upgraded)
        after = wait_points(d, lambda p: any(x[0] > t_reload + 1 for x in p))
        assert after[:len(before)] == before and any(x[0] > t_reload + 1 for x in after), after
        deadline = time.monotonic() + 15
        while pid_alive(upgraded) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(upgraded) and not kept.exists()
    finally:
        load.stop()
    assert load.ok > 100 and load.failed == [], (load.ok, load.failed[:5])

    # A stop for good keeps them (the successor is not this test's child: stop it by pid) ...
    upto = v1_points(d)
    os.kill(new_pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(new_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(new_pid)
    assert kept.exists() and (kept.stat().st_mode & 0o777) == 0o600
    saved = json.loads(kept.read_text())
    saved_pts = [ln["points"] for ln in saved["lines"] if ln["version"] == "v1"][0]
    assert saved_pts[:len(upto)] == upto, (upto, saved_pts)
    # ... and a start shows them, then adds its own.
    d.start(expect="v1\n")
    assert not kept.exists()
    t_start = time.time()
    load = Trickle(d.port)
    try:
        again = wait_points(d, lambda p: any(x[0] > t_start + 1 for x in p))
    finally:
        load.stop()
    assert again[:len(saved_pts)] == saved_pts, (saved_pts, again)
    assert again[:len(before)] == before
    assert any(x[0] > t_start + 1 and x[1] > 0 for x in again), again
    assert load.failed == [], load.failed[:5]


def test_a_failed_hand_over_leaves_no_series_file_and_the_charts_go_on(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path, extra_admin=f", upgrade_dir: {tmp_path}")
    d.start(expect="v1\n")
    bad = tmp_path / "bad-cutover"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    load = Trickle(d.port)
    try:
        before = wait_points(d, lambda p: len(p) >= 1)
        r = tcli(d, ROOT, "upgrade", "--binary", str(bad))
        assert r.returncode == 1 and "keeps serving" in r.stdout + r.stderr, (r.stdout, r.stderr)
        # The file written for the successor is gone: a later start must not load it over
        # what this daemon saves at its own stop.
        assert not (d.state_dir / "series.json").exists()
        after = wait_points(d, lambda p: len(p) > len(before))
    finally:
        load.stop()
    assert d.alive() and after[:len(before)] == before and len(after) > len(before), after


def test_a_bad_series_file_is_refused_with_a_warning_and_removed(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.state_dir.mkdir()
    kept = d.state_dir / "series.json"
    now = time.time()
    kept.write_text(json.dumps({"format": 1, "lines": [
        {"service": "web", "version": "v1", "points": [[now - 10, 5.0, 0.0, 1.0],
                                                        [now - 8, -3.0, 0.0, 1.0]]}]}))
    d.start(expect="v1\n")
    assert not kept.exists()
    assert v1_points(d) == []
    line = [ln for ln in d.log().splitlines() if "series were not loaded" in ln]
    assert line and str(kept) in line[0] and "rps -3 is out of range" in line[0], d.log()


def test_over_admin_tls_the_session_cookie_is_secure(backend, daemon, tmp_path):
    certs = Certs(tmp_path)
    pem, key = certs.make("admin", ["admin.test"], 0x62)
    write = tmp_path / "tokens.yml"
    write.write_text(f"tokens:\n  alice: {{role: operator, token: {ALICE}}}\n")
    os.chmod(write, 0o600)
    aport = free_port()
    daemon([backend("v1")], top_extra=(
        f"admin: {{listen: 127.0.0.1:{aport}, tokens_file: {write}, "
        f"tls: {{cert: {pem}, key: {key}}}}}\n")).start(expect="v1\n")
    assert wait_port(aport, 10)
    r = subprocess.run(["curl", "-s", "-i", "-m", "5", "--cacert", str(certs.ca), "-H",
                        "Content-Type: application/json", "--data", json.dumps({"token": ALICE}),
                        f"https://127.0.0.1:{aport}/api/v1/session"],
                       capture_output=True, text=True, timeout=20)
    head = r.stdout.split("\r\n\r\n")[0]
    assert " 200 " in head.splitlines()[0], r.stdout + r.stderr
    cookie = [ln for ln in head.splitlines() if ln.lower().startswith("set-cookie:")]
    assert cookie and "; Secure" in cookie[0] and "HttpOnly" in cookie[0], head
