"""The admin API over TCP (admin.listen) with bearer tokens and roles, end to end: the real
daemon, the real CLI (`--admin http://...` with $CUTOVER_TOKEN), curl-like requests from
http.client, and wrk on loopback.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_admin_tcp.py
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, free_port, live_name, run_cli, wait_body

ALICE = "alice-0123456789abcdef"   # operator
LEAD = "lead-0123456789abcdef00"   # operator, the plan's approver
VIEW = "view-0123456789abcdef00"   # viewer
ROOT = "root-0123456789abcdef00"   # admin

TOKENS = f"""tokens:
  alice: {{role: operator, token: {ALICE}}}
  lead: {{role: operator, token: {LEAD}}}
  watcher: {{role: viewer, token: {VIEW}}}
  root: {{role: admin, token: {ROOT}}}
"""


def write_tokens(tmp, text=TOKENS, mode=0o600):
    p = tmp / "tokens.yml"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def admin_daemon(daemon, backends, tmp, extra_top="", extra_admin="", **cfg):
    write_tokens(tmp)
    port = free_port()
    d = daemon(backends, top_extra=f"admin: {{listen: 127.0.0.1:{port}, tokens_file: tokens.yml"
               f"{extra_admin}}}\n" + extra_top, **cfg)
    d.admin_port = port
    d.admin_url = f"http://127.0.0.1:{port}"
    return d


def call(d, method, path, token=None, body=None, headers=None):
    """One request on admin.listen -> (status, JSON or text, headers lower-cased)."""
    c = http.client.HTTPConnection("127.0.0.1", d.admin_port, timeout=10)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        h["Content-Type"] = "application/json"
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read().decode(errors="replace")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def tcli(d, token, *args, timeout=30):
    """The CLI against admin.listen with token (no config file: only --admin)."""
    env = dict(os.environ, CUTOVER_TOKEN=token)
    env.pop("CUTOVER_USER", None)
    return subprocess.run([str(BIN), *args, "--admin", d.admin_url], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return sorted(int(x) for x in r.stdout.split() if int(x) != os.getpid())


@pytest.fixture(autouse=True)
def reap(procs, tmp_path):
    """A hot upgrade's successor is not one of procs': stop every process naming tmp_path."""
    yield
    for p in pgrep(f"serve -c {tmp_path}"):
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pgrep(f"serve -c {tmp_path}"):
        time.sleep(0.05)
    for p in pgrep(f"serve -c {tmp_path}"):
        os.kill(p, signal.SIGKILL)


# ------------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_every_request_needs_a_token_with_the_role_for_it(backend, daemon, tmp_path, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")

    st, body, hdr = call(d, "GET", "/api/v1/services")
    assert st == 401 and "Authorization: Bearer" in body["error"], (st, body)
    assert hdr.get("www-authenticate", "").startswith("Bearer"), hdr
    st, body, _ = call(d, "GET", "/api/v1/services", token="nope-0123456789abcdef00")
    assert (st, body["error"]) == (401, "unknown token"), (st, body)
    # A token differing only in its last byte is as unknown as any other.
    st, _, _ = call(d, "GET", "/api/v1/services", token=VIEW[:-1] + "1")
    assert st == 401
    st, body, _ = call(d, "GET", "/api/v1/services/web", token=VIEW)
    assert st == 200 and live_name(body) == "v1", (st, body)
    st, body, _ = call(d, "GET", "/metrics", token=VIEW)
    assert st == 200 and "cutover_requests_total" in body

    # A viewer cannot deploy; nothing changes.
    st, body, _ = call(d, "POST", "/api/v1/services/web/deploy", token=VIEW,
                       body={"version": "v2", "targets": [v2.addr]})
    assert st == 403 and "viewer" in body["error"] and "operator" in body["error"], (st, body)
    # An operator cannot act under another name; nothing changes.
    st, body, _ = call(d, "POST", "/api/v1/services/web/deploy", token=ALICE,
                       body={"version": "v2", "targets": [v2.addr], "actor": "bob"})
    assert st == 403 and "'alice'" in body["error"] and "'bob'" in body["error"], (st, body)
    # Nor replace the daemon (admin only).
    st, body, _ = call(d, "POST", "/api/v1/upgrade", token=ALICE, body={})
    assert st == 403 and "admin" in body["error"], (st, body)
    assert d.history() == [] and live_name(d.status()) == "v1"

    # The CLI refuses a viewer with the daemon's sentence and a failing exit.
    r = tcli(d, VIEW, "deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode != 0 and "role viewer" in r.stderr, (r.returncode, r.stdout, r.stderr)

    # An operator deploys through the CLI under load: no request fails, and the change records
    # the token's name as its actor.
    load = wrk(d.port, 4)
    time.sleep(0.5)
    r = tcli(d, ALICE, "deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    res = load.result()
    print(f"\ndeploy over admin.listen under wrk -c16: {res['requests']} requests, "
          f"{res['socket_errors']} socket errors, {res['non2xx']} non-2xx")
    assert res["requests"] > 1000 and res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    wait_body(d.port, "v2\n")
    ch = d.history()[0]
    assert (ch["actor"], ch["state"]) == ("alice", "completed"), ch
    r = tcli(d, VIEW, "history", "web")
    assert r.returncode == 0 and "alice" in r.stdout, r.stdout + r.stderr


def test_an_approval_is_given_by_the_token_not_by_a_name_in_the_request(backend, daemon,
                                                                         tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    plan = ("plans:\n  appr:\n    steps: [{weight: 10}, {approval: {approvers: [lead]}}, "
            "{weight: 100}]\n")
    d = admin_daemon(daemon, [v1], tmp_path, extra_top=plan)
    d.start(expect="v1\n")
    r = tcli(d, ALICE, "deploy", "web", "v2", "--target", v2.addr, "--plan", "appr")
    assert r.returncode == 0, r.stdout + r.stderr
    cid = str(d.status()["change"]["id"])

    def waiting():
        ch = d.status()["change"]
        return ch is not None and ch["state"] == "running" and \
            (ch.get("progress") or {}).get("step") == 2

    deadline = time.monotonic() + 10
    while not waiting() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert waiting(), d.status()
    # alice is no approver, and her token cannot claim to be lead's.
    r = tcli(d, ALICE, "approve", cid)
    assert r.returncode != 0 and "alice" in r.stderr, (r.returncode, r.stderr)
    r = tcli(d, ALICE, "approve", cid, "--as", "lead")
    assert r.returncode != 0 and "acts as 'alice'" in r.stderr, (r.returncode, r.stderr)
    time.sleep(0.3)
    assert waiting(), "a refused approval moved the change"
    # lead's token approves without naming anyone.
    r = tcli(d, LEAD, "approve", cid)
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 10
    while d.history()[0]["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.history()[0]["state"] == "completed", d.history()[0]
    st, rep, _ = call(d, "GET", f"/api/v1/changes/{cid}/report", token=VIEW)
    assert st == 200 and "lead" in json.dumps(rep["change"]["detail"].get("approval_log")), rep


def test_admin_port_answers_across_an_upgrade_and_a_reload_reads_new_tokens(backend, daemon,
                                                                              tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")
    pid0 = d.pid

    # Poll the admin port on fresh connections while root upgrades the daemon over it.
    # The CLI, which asks again while the daemon says it is handing over, never fails.
    stop, seen, cli_rcs = threading.Event(), [], []

    def poll():
        while not stop.is_set():
            try:
                st, _, _ = call(d, "GET", "/api/v1/health", token=VIEW)
                seen.append(st)
            except OSError as e:
                seen.append(repr(e))
            time.sleep(0.01)

    def poll_cli():
        while not stop.is_set():
            r = tcli(d, VIEW, "status", "web")
            cli_rcs.append((r.returncode, r.stderr.strip()))

    threads = [threading.Thread(target=poll), threading.Thread(target=poll_cli)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    r = tcli(d, ROOT, "upgrade")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert cli_rcs and all(rc == 0 for rc, _ in cli_rcs), [x for x in cli_rcs if x[0]][:3]
    assert r.returncode == 0, r.stdout + r.stderr
    new_pid = int(re.search(r"handed over to pid (\d+)", r.stdout + r.stderr).group(1))
    assert new_pid != pid0
    refused = [s for s in seen if not isinstance(s, int)]
    # 503 "handing over; retry" is an answer; a refused or reset connection is not.
    print(f"\nadmin port during an upgrade: {len(seen)} requests, {len(refused)} not answered, "
          f"statuses {sorted(set(s for s in seen if isinstance(s, int)))}; "
          f"{len(cli_rcs)} `cutover status` runs, all exit 0")
    assert seen and not refused, refused[:3]
    st, body, _ = call(d, "GET", "/api/v1/health", token=VIEW)
    assert st == 200 and body["pid"] == new_pid, (st, body)

    # Revoke the viewer, add another; a reload over the admin port makes it so.
    write_tokens(tmp_path, TOKENS.replace(f"  watcher: {{role: viewer, token: {VIEW}}}\n",
                                          "  auditor: {role: viewer, token: "
                                          "audit-0123456789abcdef}\n"))
    r = tcli(d, ROOT, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    st, _, _ = call(d, "GET", "/api/v1/services", token=VIEW)
    assert st == 401
    st, _, _ = call(d, "GET", "/api/v1/services", token="audit-0123456789abcdef")
    assert st == 200

    # A reload with a broken tokens file is refused and the tokens in force stay.
    write_tokens(tmp_path, TOKENS, mode=0o644)
    r = tcli(d, ROOT, "reload")
    assert r.returncode != 0 and "tokens.yml" in r.stderr and "0600" in r.stderr, r.stderr
    st, _, _ = call(d, "GET", "/api/v1/services", token="audit-0123456789abcdef")
    assert st == 200


BAD_TOKENS = {
    "readable by others": (TOKENS, 0o644, "admin.tokens_file", "mode 0644"),
    "short token": ("tokens:\n  a: {role: viewer, token: short}\n", 0o600,
                    "tokens.yml:2: tokens.a.token", "16 to 256"),
    "unknown role": (f"tokens:\n  a: {{role: root, token: {ALICE}}}\n", 0o600,
                     "tokens.yml:2: tokens.a.role", "viewer, operator or admin"),
    "shared secret": (f"tokens:\n  a: {{role: viewer, token: {ALICE}}}\n"
                      f"  b: {{role: admin, token: {ALICE}}}\n", 0o600,
                      "tokens.yml:3: tokens.b.token", "of its own"),
    "missing role": (f"tokens:\n  a: {{token: {ALICE}}}\n", 0o600,
                     "tokens.a.role: missing", "viewer, operator or admin"),
    "no tokens": ("tokens: {}\n", 0o600, "tokens.yml:1: tokens", "at least one"),
    "not yaml": ("tokens: [\n", 0o600, "tokens.yml:", "YAML syntax error"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_bad_tokens_file_is_refused_with_its_line_and_nothing_starts(case, backend, daemon,
                                                                       tmp_path):
    text, mode, where, why = BAD_TOKENS[case]
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    write_tokens(tmp_path, text, mode)
    r = run_cli("check", "-c", d.cfg)
    assert r.returncode == 2 and where in r.stderr and why in r.stderr, (r.returncode, r.stderr)
    p = d.procs.start([BIN, "serve", "-c", d.cfg], name="serve-bad")
    assert p.wait(10) == 2, p.log_path.read_text()
    assert why in p.log_path.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.admin_port), timeout=0.5).close()


def health_on(s, token=VIEW):
    """A health request on the open connection s -> the first bytes of the answer."""
    s.sendall(f"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"
              f"Authorization: Bearer {token}\r\n\r\n".encode())
    got = b""
    while not got.endswith(b"}\n"):  # every answer is JSON ending in "}\n"
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_connections_without_a_token_do_not_take_token_holders_slots(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")

    def connect(host):
        return socket.create_connection(("127.0.0.1", d.admin_port), timeout=5,
                                        source_address=(host, 0))

    # Two addresses fill every slot a connection without a token may hold...
    idle = [connect(f"127.0.0.{1 + i % 2}") for i in range(64)]
    try:
        time.sleep(0.2)
        # ...and a token holder from a third one still gets in at once.
        t0 = time.monotonic()
        s = connect("127.0.0.3")
        assert health_on(s).startswith(b"HTTP/1.1 200"), "a token holder was locked out"
        assert time.monotonic() - t0 < 0.5
        s.close()
    finally:
        for s in idle:
            s.close()

    # Connections that never send a token are closed after 1 s.
    s = connect("127.0.0.1")
    s.settimeout(3)
    t0 = time.monotonic()
    assert s.recv(1) == b""
    waited = time.monotonic() - t0
    print(f"\nan idle connection without a token was closed after {waited:.2f} s")
    assert 0.8 <= waited <= 1.8, waited
    s.close()

    # Two addresses that keep reconnecting without a token (the attack) do not keep a
    # token holder out: 30 requests on fresh connections all answered.
    stop = threading.Event()

    def flood(host):
        held = []
        while not stop.is_set():
            try:
                held.append(connect(host))
            except OSError:
                pass
            if len(held) > 40:
                held.pop(0).close()
        for h in held:
            h.close()

    flooders = [threading.Thread(target=flood, args=(h,)) for h in ("127.0.0.1", "127.0.0.2")]
    for f in flooders:
        f.start()
    try:
        time.sleep(0.5)
        codes = []
        for _ in range(30):
            s = connect("127.0.0.3")
            codes.append(health_on(s)[:12])
            s.close()
        assert codes == [b"HTTP/1.1 200"] * 30, codes
    finally:
        stop.set()
        for f in flooders:
            f.join(10)


def test_admin_port_keeps_at_most_64_token_holders_connections(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")
    # From three hosts (loopback addresses), since one host may hold only 32.
    held = []
    try:
        for i in range(64):
            s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5,
                                         source_address=(f"127.0.0.{1 + i % 3}", 0))
            held.append(s)
            assert health_on(s).startswith(b"HTTP/1.1 200"), f"connection {i + 1}"
        extra = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5,
                                         source_address=("127.0.0.4", 0))
        got = health_on(extra)
        assert got.startswith(b"HTTP/1.1 503") and b"too many admin connections" in got, got
        extra.settimeout(2)
        assert extra.recv(1) == b"", "the refused 65th connection was kept"
        extra.close()
        # The held ones still work, and a slot freed is a slot for the next one.
        assert health_on(held[0]).startswith(b"HTTP/1.1 200"), "a held connection stopped"
        held.pop().close()
        time.sleep(0.3)
        st, _, _ = call(d, "GET", "/api/v1/health", token=VIEW)
        assert st == 200
    finally:
        for s in held:
            s.close()


def test_one_host_holds_at_most_32_admin_connections(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")

    def connect(host):
        return socket.create_connection(("127.0.0.1", d.admin_port), timeout=5,
                                        source_address=(host, 0))

    health = health_on
    held = [connect("127.0.0.2") for _ in range(32)]
    try:
        # Token holders' connections (kept for 30 s between requests).
        for s in held:
            assert health(s).startswith(b"HTTP/1.1 200")
        # Refused means closed at once, before the 1 s first-request deadline.
        extra = connect("127.0.0.2")
        extra.settimeout(0.5)
        try:
            assert extra.recv(1) == b"", "a 33rd connection from one host got bytes"
        except socket.timeout:
            raise AssertionError("a 33rd connection from one host was kept")
        extra.close()
        # Another host still gets in, and the held connections still work.
        other = connect("127.0.0.3")
        assert health(other).startswith(b"HTTP/1.1 200"), "another host was locked out"
        other.close()
        assert health(held[-1]).startswith(b"HTTP/1.1 200"), "a held connection stopped working"
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    s = connect("127.0.0.2")
    assert health(s).startswith(b"HTTP/1.1 200"), "the host stayed refused after closing"
    s.close()


def test_no_spelling_of_the_path_lets_an_operator_replace_the_daemon(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")
    pid = d.pid
    for path in ["/api/v1/upgrade?x", "/api/v1/%75pgrade", "/api/%761/upgrade",
                 "/api/v1/upgrade%00", "/api/v1/reload?", "/api/v1/%72eload"]:
        st, body, _ = call(d, "POST", path, token=ALICE, body={})
        assert st in (400, 403), (path, st, body)
    time.sleep(0.5)
    st, body, _ = call(d, "GET", "/api/v1/health", token=VIEW)
    assert st == 200 and body["pid"] == pid, "the daemon was replaced by an operator"


def test_admin_port_stays_usable_when_flooded(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")
    # 64 connections that never send a token are dropped after 1 s.
    idle = [socket.create_connection(("127.0.0.1", d.admin_port), timeout=5,
                                     source_address=(f"127.0.0.{1 + i % 2}", 0))
            for i in range(64)]
    try:
        time.sleep(1.5)
        st, _, _ = call(d, "GET", "/api/v1/health", token=VIEW)
        assert st == 200, "64 idle connections locked the admin port"
    finally:
        for s in idle:
            s.close()
    # Event streams hold at most 16 of the 64 connections.
    streams = []
    try:
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
            s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {VIEW}\r\n\r\n".encode())
            assert s.recv(12) == b"HTTP/1.1 200"
            streams.append(s)
        st, body, _ = call(d, "GET", "/api/v1/events", token=VIEW)
        assert st == 503 and "too many event streams" in body["error"], (st, body)
        st, _, _ = call(d, "GET", "/api/v1/services", token=VIEW)
        assert st == 200
    finally:
        for s in streams:
            s.close()


def test_metrics_while_the_daemon_hands_over_do_not_crash_it(backend, daemon, tmp_path):
    """The successor is slow to start: the old daemon's control plane is suspended for 2 s,
    and a viewer reads /metrics and the services meanwhile."""
    v1 = backend("v1")
    d = admin_daemon(daemon, [v1], tmp_path, extra_admin=f", upgrade_dir: {tmp_path}")
    d.start(expect="v1\n")
    slow = tmp_path / "slow-cutover.sh"
    slow.write_text(f"#!/bin/sh\nsleep 2\nexec {BIN} \"$@\"\n")
    os.chmod(slow, 0o755)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=tcli(d, ROOT, "upgrade", "--binary", str(slow))))
    t.start()
    time.sleep(0.5)
    statuses = []
    while t.is_alive():
        st, _, _ = call(d, "GET", "/metrics", token=VIEW)
        statuses.append(st)
        st, _, _ = call(d, "GET", "/api/v1/services", token=VIEW)
        statuses.append(st)
        time.sleep(0.1)
    t.join()
    r = result["r"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert statuses and set(statuses) <= {200, 503}, statuses
    assert 200 in statuses[:2], f"/metrics did not answer during the hand-over: {statuses}"
