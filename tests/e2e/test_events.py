"""GET /api/v1/events, end to end: the server-sent event stream of every change, live, filtered
by service, resumed with Last-Event-ID, on the unix socket and on admin.listen with a token.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_events.py
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

from conftest import free_port, wait_body

VIEW = "view-0123456789abcdef00"


class Stream:
    """A raw event-stream client (unix socket path or TCP port), parsing events as they come."""

    def __init__(self, where, path="/api/v1/events", headers=None):
        if isinstance(where, int):
            self.s = socket.create_connection(("127.0.0.1", where), timeout=10)
        else:
            self.s = socket.socket(socket.AF_UNIX)
            self.s.settimeout(10)
            self.s.connect(str(where))
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            assert chunk, f"closed before the head: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.head = head.decode()

    def body_rest(self):
        """For an error answer: its body (Content-Length bytes)."""
        n = int(next(l.split(":", 1)[1] for l in self.head.split("\r\n")
                     if l.lower().startswith("content-length:")))
        while len(self.buf) < n:
            chunk = self.s.recv(4096)
            assert chunk, "closed inside the body"
            self.buf += chunk
        return self.buf[:n].decode()

    def events(self, n, secs=10):
        """The next n events as dicts (id, event, data), skipping comments."""
        out = []
        deadline = time.monotonic() + secs
        while len(out) < n:
            while b"\n\n" not in self.buf:
                self.s.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = self.s.recv(4096)
                assert chunk, f"stream closed after {len(out)} events"
                self.buf += chunk
            block, self.buf = self.buf.split(b"\n\n", 1)
            ev = {}
            for line in block.decode().split("\n"):
                if line.startswith(":") or not line:
                    continue
                k, _, v = line.partition(": ")
                ev[k] = v
            if ev:
                ev["data"] = json.loads(ev["data"])
                out.append(ev)
        return out

    def until(self, pred, most=50):
        """Reads events until one satisfies pred (a change's late events may come first)."""
        for _ in range(most):
            e = self.events(1)[0]
            if pred(e):
                return e
        raise AssertionError(f"no such event in the next {most}")

    def close(self):
        self.s.close()


def events_of(d, cid):
    st, ch = d.api("GET", f"/api/v1/changes/{cid}")
    assert st == 200, ch
    return ch["events"]


def test_a_deploy_streams_each_event_as_it_is_recorded(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    s = Stream(d.sock)
    assert s.status == 200 and "text/event-stream" in s.head, s.head
    try:
        r = d.cli("deploy", "web", "v2", "--target", v2.addr)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_body(d.port, "v2\n")
        cid = d.history()[0]["id"]
        want = events_of(d, cid)
        got = s.events(len(want))
        # The same events, in the same order, with the change and service they belong to.
        assert [e["event"] for e in got] == [e["type"] for e in want], (got, want)
        assert [e["data"]["message"] for e in got] == [e["message"] for e in want]
        assert all(e["data"]["change"] == cid and e["data"]["service"] == "web" for e in got), got
        ids = [int(e["id"]) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
        assert all(e["data"]["id"] == int(e["id"]) for e in got)
        print(f"\nevents of a deploy on the stream: {[e['event'] for e in got]}")

        # A client that comes back with the first id gets the rest at once, then live ones.
        s2 = Stream(d.sock, headers={"Last-Event-ID": ids[0]})
        replay = s2.events(len(ids) - 1)
        assert [int(e["id"]) for e in replay] == ids[1:], replay
        r = d.cli("rollback", "web")
        assert r.returncode == 0, r.stdout + r.stderr
        s2.until(lambda e: e["data"]["change"] == cid + 1 and e["event"] == "created")
        s2.close()
    finally:
        s.close()


def test_a_stream_for_one_service_and_bad_requests(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    # A second service, so that the filter has something to leave out.
    other = free_port()
    d.cfg.write_text(d.cfg.read_text() + f"  api:\n    listen: 127.0.0.1:{other}\n"
                     f"    targets: [{v1.addr}]\n")
    d.start(expect="v1\n")

    s = Stream(d.sock, "/api/v1/events?service=api")
    all_ = Stream(d.sock)
    try:
        r = d.cli("deploy", "web", "v2", "--target", v2.addr)
        assert r.returncode == 0, r.stdout + r.stderr
        r = d.cli("deploy", "api", "v2", "--target", v2.addr)
        assert r.returncode == 0, r.stdout + r.stderr
        got = s.events(2)
        assert all(e["data"]["service"] == "api" for e in got), got
        first = all_.events(1)
        assert first[0]["data"]["service"] == "web", first
        all_.until(lambda e: e["data"]["service"] == "api")
    finally:
        s.close()
        all_.close()

    bad = Stream(d.sock, "/api/v1/events?service=nope")
    assert bad.status == 404 and "unknown service" in bad.body_rest()
    bad.close()
    # Anything sent on a stream after its request is ignored, and the stream goes on.
    s = Stream(d.sock)
    s.s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    r = d.cli("rollback", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    s.until(lambda e: e["data"]["service"] == "web" and e["event"] == "created")
    s.close()
    st, _ = d.api("GET", "/api/v1/health")
    assert st == 200, "the daemon stopped answering after a stream"


def test_the_stream_over_admin_listen_needs_a_token(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    tokens = tmp_path / "tokens.yml"
    tokens.write_text(f"tokens:\n  watcher: {{role: viewer, token: {VIEW}}}\n")
    os.chmod(tokens, 0o600)
    port = free_port()
    d = daemon([v1], top_extra=f"admin: {{listen: 127.0.0.1:{port}, tokens_file: tokens.yml}}\n")
    d.start(expect="v1\n")
    s = Stream(port)
    assert s.status == 401
    s.close()
    s = Stream(port, headers={"Authorization": f"Bearer {VIEW}"})
    assert s.status == 200
    try:
        r = d.cli("deploy", "web", "v2", "--target", v2.addr)
        assert r.returncode == 0, r.stdout + r.stderr
        got = s.events(2)
        assert got[0]["event"] == "created" and got[0]["data"]["service"] == "web", got
    finally:
        s.close()


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return sorted(int(x) for x in r.stdout.split() if int(x) != os.getpid())


def wait_text(path, pred, secs=10):
    deadline = time.monotonic() + secs
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if pred(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"not within {secs}s; output so far:\n{text}")


def test_cli_events_follows_changes_across_a_daemon_upgrade(backend, daemon, procs, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    try:
        js = d.cli_bg("events", "--json")
        text = d.cli_bg("events", "web")
        time.sleep(0.5)
        r = d.cli("deploy", "web", "v2", "--target", v2.addr)
        assert r.returncode == 0, r.stdout + r.stderr
        out = wait_text(js.log_path, lambda t: '"switched"' in t)
        first = [json.loads(line) for line in out.splitlines()]
        assert first[0]["type"] == "created" and first[0]["service"] == "web", first
        wait_text(text.log_path, lambda t: re.search(r"web  #1  switched  ", t))

        # The daemon is replaced; the followers reconnect with Last-Event-ID and go on.
        r = d.cli("upgrade", timeout=20)
        assert r.returncode == 0, r.stdout + r.stderr
        r = d.cli("rollback", "web")
        assert r.returncode == 0, r.stdout + r.stderr
        out = wait_text(js.log_path, lambda t: '"change":2' in t and '"switched"' in t)
        evs = [json.loads(line) for line in out.splitlines()]
        ids = [e["id"] for e in evs]
        assert ids == sorted(set(ids)), f"an event printed twice or out of order: {ids}"
        assert js.poll() is None and text.poll() is None, "a follower stopped at the upgrade"
        print(f"\n`cutover events` across an upgrade: {len(evs)} events, ids {ids}")
    finally:
        for p in pgrep(f"serve -c {d.cfg}"):
            os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pgrep(f"serve -c {d.cfg}") and time.monotonic() < deadline:
            time.sleep(0.05)
    # With the daemon gone, a follower gives up (after 30 s) with exit 1; not waited for here:
    # procs stops it.


def test_cli_events_errors(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1])
    r = d.cli("events")
    assert r.returncode == 1 and "cannot reach the daemon" in r.stderr, (r.returncode, r.stderr)
    d.start(expect="v1\n")
    r = d.cli("events", "nope")
    assert r.returncode != 0 and "unknown service" in r.stderr, (r.returncode, r.stderr)
    r = d.cli("events", "a", "b")
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_a_long_absence_is_replayed_in_full_and_filtered_by_service(backend, daemon):
    """More events were missed than one replay holds (1,000): the stream ends after them and
    the client, coming back from the last one it got, gets the rest; nothing is skipped."""
    import sqlite3
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    first = d.history()[0]["id"]
    first_ev = events_of(d, first)
    # 1,200 events of another service's change, written straight into the store meanwhile.
    db = sqlite3.connect(str(d.state_dir / "cutover.db"), timeout=10)
    cols = [c[1] for c in db.execute("PRAGMA table_info(changes)")]
    row = {"service": "api", "kind": "deploy", "to_version": "a2", "actor": "bob",
           "state": "completed", "created_ms": 1, "updated_ms": 1, "ended_ms": 1}
    row = {k: v for k, v in row.items() if k in cols}
    cur = db.execute(f"INSERT INTO changes ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                     list(row.values()))
    other = cur.lastrowid
    db.executemany("INSERT INTO events (change_id, ts_ms, type, message) VALUES (?, ?, ?, ?)",
                   [(other, 1, "health", f"e{i}") for i in range(1200)])
    db.commit()
    db.close()
    r = d.cli("rollback", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    st, last = d.api("GET", f"/api/v1/changes/{d.history()[0]['id']}")
    assert st == 200 and last["service"] == "web", last
    want_web = [e["type"] for e in last["events"]]

    # Filtered: web's later events only, none of the other 1,200.
    s = Stream(d.sock, "/api/v1/events?service=web", headers={"Last-Event-ID": 1})
    got = s.events(len(first_ev) - 1 + len(want_web))
    s.close()
    assert all(e["data"]["service"] == "web" for e in got), got[:3]
    assert [e["event"] for e in got][-len(want_web):] == want_web

    # Unfiltered: 1,000, then the stream ends; from the last id, the rest.
    s = Stream(d.sock, headers={"Last-Event-ID": 1})
    part1 = s.events(1000)
    try:
        s.events(1, secs=3)
        raise AssertionError("the stream went on after a full replay")
    except AssertionError as e:
        assert "closed" in str(e), e
    s.close()
    s = Stream(d.sock, headers={"Last-Event-ID": part1[-1]["id"]})
    total = len(first_ev) - 1 + 1200 + len(want_web)
    part2 = s.events(total - 1000)
    s.close()
    ids = [int(e["id"]) for e in part1 + part2]
    assert ids == sorted(set(ids)) and len(ids) == total, (len(ids), total)
    assert [e["event"] for e in part2][-len(want_web):] == want_web
