"""Data plane strength, end to end (issue 6): long-lived connections handed over at a switch,
a switch under 256 keep-alive connections with 2 workers, slow clients, request limits, and
memory per idle keep-alive connection.

Backends: wsutil.py (WebSocket echo + SSE, versioned) and backend.py; the real daemon in front;
wrk and slowhttptest from Debian; raw sockets for everything else. Loopback only, every process
started through `procs` and stopped by pid.
"""
import json
import re
import resource
import selectors
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Wrk, body_of, free_port, http_get, rss_kib, wait_body, wait_port

from wsutil import SSEClient, Ticker, WSClient

WSUTIL = Path(__file__).resolve().parent / "wsutil.py"
DRAIN = 3.0  # drain_timeout of the long-lived tests, seconds


# ---------------------------------------------------------------------------------- helpers

class NginxBackend:
    """nginx (Debian) answering GET / with "VERSION\\n" and /healthz with "ok": a backend fast
    enough that a load test measures the proxy, not a python server."""

    def __init__(self, procs, tmp, version):
        self.version = version
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        root = tmp / f"nginx-{version}"
        root.mkdir()
        (root / "nginx.conf").write_text(
            "daemon off; master_process off; worker_processes 1; pid nginx.pid;\n"
            "error_log stderr warn;\n"
            "events { worker_connections 4096; }\n"
            "http { access_log off; client_body_temp_path tmp; proxy_temp_path tmp;\n"
            "  fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;\n"
            "  keepalive_requests 1000000;\n"
            f"  server {{ listen 127.0.0.1:{self.port};\n"
            "    location = /healthz { return 200 \"ok\\n\"; }\n"
            f"    location / {{ add_header X-Version {version}; return 200 \"{version}\\n\"; }} }} }}\n")
        (root / "tmp").mkdir()
        self.proc = procs.start(["nginx", "-p", root, "-c", root / "nginx.conf", "-e", "stderr"],
                                name=f"nginx-{version}")
        assert wait_port(self.port, 10, self.proc), \
            f"nginx {version} did not start: {self.proc.log_path.read_text()}"


class WSBackend:
    """wsutil.py PORT VERSION: WebSocket echo and SSE, answers tagged with VERSION."""

    def __init__(self, procs, version):
        self.version = version
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = procs.start([sys.executable, WSUTIL, self.port, version],
                                name=f"wsbackend-{version}")
        assert wait_port(self.port, 10, self.proc), f"wsutil backend {version} did not start"


def configure(d, backends, drain="3s", workers=None, timeouts=None, limits=None, health=None):
    """Rewrites the daemon's config (one service `web`) with the timeouts and limits given."""
    # Lenient enough that a loaded machine does not flap the single target to unhealthy (a 503
    # for the users), quick enough that a deploy switches within a few hundred ms.
    h = {"path": "/healthz", "interval": "200ms", "timeout": "2s", "healthy_threshold": 1,
         "unhealthy_threshold": 3}
    h.update(health or {})
    t = {"client_header": "10s", "client_idle": "60s", "upstream_connect": "5s",
         "upstream_response": "60s"}
    t.update(timeouts or {})
    lim = {"max_header_bytes": 65536}
    lim.update(limits or {})
    text = (f"state_dir: {d.state_dir}\n"
            + (f"workers: {workers}\n" if workers else "")
            + "services:\n"
              "  web:\n"
              f"    listen: 127.0.0.1:{d.port}\n"
              f"    health_check: {{{', '.join(f'{k}: {v}' for k, v in h.items())}}}\n"
              f"    drain_timeout: {drain}\n"
              "    deploy_timeout: 5s\n"
              f"    timeouts: {{{', '.join(f'{k}: {v}' for k, v in t.items())}}}\n"
              f"    limits: {{{', '.join(f'{k}: {v}' for k, v in lim.items())}}}\n"
              f"    targets: [{', '.join(b.addr for b in backends)}]\n")
    d.cfg.write_text(text)
    return d


def change_events(d, change_id):
    st, doc = d.api("GET", f"/api/v1/changes/{change_id}")
    assert st == 200, (st, doc)
    if isinstance(doc, dict) and "change" in doc and "events" not in doc:
        doc = doc["change"]
    return doc.get("events") or []


DRAINED = re.compile(r"(\d+) long-lived connections? closed at the drain deadline")


def wait_drained_event(d, change_id, until):
    """Polls the change's events for the "drained" note; -> (number closed, message)."""
    evs = []
    while time.monotonic() < until:
        evs = change_events(d, change_id)
        for ev in evs:
            if ev.get("type") == "drained":
                m = DRAINED.search(ev.get("message", ""))
                assert m, f"drained event without the count: {ev}"
                return int(m.group(1)), ev["message"]
        time.sleep(0.2)
    raise AssertionError(f"no 'drained' event on change {change_id}; events: "
                         f"{json.dumps(evs, indent=1)}")


def longlived_of(svc, addr):
    """longlived of the version (live or previous) whose target is `addr`; None if neither.
    (The config's targets form a version the daemon names itself, "v1" unless `version:` says otherwise.)"""
    for key in ("live", "previous"):
        v = svc.get(key) or {}
        if addr in [t.get("address") for t in v.get("targets", [])]:
            return v.get("longlived")
    return None


def switch_setup(procs, daemon, kind):
    """v1 and v2 backends and a daemon; for kind 'rollback', v2 is already live (deployed over
    v1), so that the switch under test is the rollback v2 -> v1. -> (d, old, new, do_switch)."""
    v1, v2 = WSBackend(procs, "v1"), WSBackend(procs, "v2")
    d = configure(daemon([v1]), [v1], drain=f"{DRAIN:g}s").start(expect="v1\n")
    if kind == "deploy":
        return d, (v1, v2), lambda: d.cli("deploy", "web", "v2", "--target", v2.addr,
                                            timeout=20)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)
    return d, (v2, v1), lambda: d.cli("rollback", "web", timeout=20)


def check_drain_record(d, kind, old, t1):
    """After the drain: the change's events carry the drained note with >= 1 closed, and the
    old version holds no long-lived connection any more."""
    ch = d.history()[0]
    assert ch["kind"] == kind and ch["state"] == "completed", ch
    n, msg = wait_drained_event(d, ch["id"], t1 + DRAIN + 5)
    assert n >= 1, f"drained event says {n} closed, want >= 1: {msg!r}"
    ll = longlived_of(d.status(), old.addr)
    assert ll in (None, 0), f"{old.version} still shows longlived={ll} after the drain"
    return n, msg


# ------------------------------------------------------------------ 1. WebSocket at a switch

@pytest.mark.xdist_group("load")
@pytest.mark.parametrize("kind", ["deploy", "rollback"])
def test_websocket_kept_on_old_version_until_drain_timeout_then_closed(procs, daemon, kind):
    d, (ob, nb), switch = switch_setup(procs, daemon, kind)
    old, new = ob.version, nb.version
    ws = WSClient(d.port)
    ws.send("hello")
    assert ws.echo_of("hello", time.monotonic() + 3) == f"{old}:hello", ws.msgs
    tick = Ticker(ws, 0.1)
    tick.start()
    time.sleep(0.5)

    t0 = time.monotonic()
    r = switch()
    t1 = time.monotonic()
    assert r.returncode == 0, f"{kind} exit {r.returncode}: {r.stdout}{r.stderr}"
    assert t1 - t0 < DRAIN - 1, f"the {kind} took {t1 - t0:.1f}s: too long for this test"

    # New connections go to the new version at once.
    time.sleep(0.3)
    ws2 = WSClient(d.port)
    ws2.send("probe")
    assert ws2.echo_of("probe", time.monotonic() + 3) == f"{new}:probe", ws2.msgs
    ws2.close()
    assert body_of(d.port) == f"{new}\n"

    # During the drain, status counts the tunnel on the old version.
    svc = d.status()
    during = time.monotonic() - t1
    assert during < DRAIN - 0.5, f"status took until {during:.1f}s after the switch"
    assert nb.addr in [t["address"] for t in (svc.get("live") or {}).get("targets", [])], svc
    ll = longlived_of(svc, ob.addr)
    assert ll is not None and ll >= 1, \
        f"status {during:.1f}s after the {kind}: longlived on {old} is {ll}, want >= 1: {svc}"
    assert ws.closed_at is None, f"WebSocket closed {ws.closed_at - t1:+.1f}s after the " \
                                 f"{kind} ({ws.how}), before drain_timeout"

    closed = ws.wait_closed(t1 + DRAIN + 3)
    tick.stop.set()
    tick.join(2)
    assert closed is not None, \
        f"WebSocket still open {DRAIN + 3:g}s after the {kind} (drain_timeout {DRAIN:g}s)\n{d.log()}"
    assert closed >= t0 + DRAIN - 0.25, \
        f"WebSocket closed {closed - t1:+.2f}s after the {kind} ({ws.how}): cut before drain_timeout"
    assert closed <= t1 + DRAIN + 1.0, \
        f"WebSocket closed {closed - t1:+.2f}s after the {kind}: later than drain_timeout + 1 s"

    # It kept working on the old version the whole time: every echo from `old`, in order, and
    # every message sent up to 0.3 s before the close echoed within 1 s.
    echoes = [m for _, m in ws.msgs]
    assert echoes[0] == f"{old}:hello"
    want = [f"{old}:m{i}" for i in range(len(echoes) - 1)]
    assert echoes[1:] == want, f"echoes not {old}:m0.. in order: {echoes[:5]}... {echoes[-5:]}"
    stalled = []
    for i, (t, text) in enumerate(ws.sent[1:]):
        if t > closed - 0.3:
            break
        if i + 1 >= len(ws.msgs) or ws.msgs[i + 1][0] - t > 1.0:
            stalled.append(f"{text} sent {t - t1:+.2f}s")
    assert not stalled, f"messages without an echo within 1 s: {stalled[:10]}"
    late = [t for t, _ in ws.msgs if t > t1 + DRAIN - 1.0]
    assert len(late) >= 5, f"only {len(late)} echoes in the last second before the deadline"
    print(f"\nws[{kind}]: {len(ws.sent)} sent, {len(ws.msgs)} echoed on {old}, closed "
          f"{closed - t1:.2f}s after the switch ({ws.how}); {kind} took {t1 - t0:.2f}s")

    n, msg = check_drain_record(d, kind, ob, t1)
    print(f"ws[{kind}]: change event: {msg}")


# ------------------------------------------------------------------------ 2. SSE at a switch

@pytest.mark.xdist_group("load")
@pytest.mark.parametrize("kind", ["deploy", "rollback"])
def test_sse_stream_kept_on_old_version_until_drain_timeout_then_closed(procs, daemon, kind):
    d, (ob, nb), switch = switch_setup(procs, daemon, kind)
    old, new = ob.version, nb.version
    sse = SSEClient(d.port)
    deadline = time.monotonic() + 3
    while len(sse.msgs) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sse.msgs) >= 3, f"SSE gave {len(sse.msgs)} events in 3 s (buffered?): {sse.how}"
    time.sleep(0.3)

    t0 = time.monotonic()
    r = switch()
    t1 = time.monotonic()
    assert r.returncode == 0, f"{kind} exit {r.returncode}: {r.stdout}{r.stderr}"
    assert t1 - t0 < DRAIN - 1, f"the {kind} took {t1 - t0:.1f}s: too long for this test"

    time.sleep(0.3)
    s2 = SSEClient(d.port)
    deadline = time.monotonic() + 3
    while not s2.msgs and time.monotonic() < deadline:
        time.sleep(0.02)
    s2.close()
    assert s2.msgs and s2.msgs[0][1] == f"{new} 0", f"new SSE stream gave {s2.msgs[:3]}"

    svc = d.status()
    during = time.monotonic() - t1
    assert during < DRAIN - 0.5
    ll = longlived_of(svc, ob.addr)
    assert ll is not None and ll >= 1, \
        f"status {during:.1f}s after the {kind}: longlived on {old} is {ll}, want >= 1: {svc}"
    assert sse.closed_at is None, f"SSE closed {sse.closed_at - t1:+.1f}s after the {kind} " \
                                  f"({sse.how}), before drain_timeout"

    closed = sse.wait_closed(t1 + DRAIN + 3)
    assert closed is not None, \
        f"SSE still open {DRAIN + 3:g}s after the {kind} (drain_timeout {DRAIN:g}s)\n{d.log()}"
    assert closed >= t0 + DRAIN - 0.25, \
        f"SSE closed {closed - t1:+.2f}s after the {kind} ({sse.how}): cut before drain_timeout"
    assert closed <= t1 + DRAIN + 1.0, \
        f"SSE closed {closed - t1:+.2f}s after the {kind}: later than drain_timeout + 1 s"
    assert sse.how != "last chunk", "the proxy ended the stream with a last chunk: a " \
                                    "cut stream must not look complete"

    data = [m for _, m in sse.msgs]
    assert data == [f"{old} {i}" for i in range(len(data))], \
        f"events not '{old} 0..' in order: {data[:5]}... {data[-5:]}"
    times = [sse.asked] + [t for t, _ in sse.msgs if t <= closed]
    end = min(closed, t0 + DRAIN)
    gaps = [(b - a, a) for a, b in zip(times, times[1:] + [end]) if a < end]
    gap, at = max(gaps)
    assert gap <= 1.0, f"SSE stalled {gap:.2f}s from {at - t1:+.2f}s after the {kind}"
    late = [t for t, _ in sse.msgs if t > t1 + DRAIN - 1.0]
    assert len(late) >= 5, f"only {len(late)} events in the last second before the deadline"
    print(f"\nsse[{kind}]: {len(data)} events on {old}, largest gap {gap:.2f}s, closed "
          f"{closed - t1:.2f}s after the switch ({sse.how})")

    n, msg = check_drain_record(d, kind, ob, t1)
    print(f"sse[{kind}]: change event: {msg}")


# ------------------------------------------- 3. a switch under 256 keep-alive connections

@pytest.mark.xdist_group("load")
def test_switch_and_rollback_under_256_keepalive_connections_with_2_workers(procs, backend,
                                                                             daemon, tmp_path):
    # nginx as the backends when it is installed: backend.py (a python thread per connection)
    # would be the bottleneck at 256 connections.
    if shutil.which("nginx"):
        v1, v2 = NginxBackend(procs, tmp_path, "v1"), NginxBackend(procs, tmp_path, "v2")
    else:
        v1, v2 = backend("v1"), backend("v2")
    d = configure(daemon([v1]), [v1], drain="2s", workers=2).start(expect="v1\n")
    threads = len(list(Path(f"/proc/{d.pid}/task").iterdir()))
    load = Wrk(procs, d.port, 12, conns=256, threads=2)
    time.sleep(3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--reason", "e2e-256", timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    time.sleep(3)
    assert body_of(d.port) == "v2\n", "v2 not live after the deploy"
    r = d.cli("rollback", "web", timeout=20)
    assert r.returncode == 0, f"rollback exit {r.returncode}: {r.stdout}{r.stderr}"
    time.sleep(0.5)
    assert body_of(d.port) == "v1\n", "v1 not live after the rollback"
    assert load.running(), "wrk ended before the rollback: make the load longer"
    res = load.result()
    print(f"\n256 conns, 2 workers ({threads} daemon threads): {res['requests']} requests, "
          f"{res['rps']:.0f}/s, socket errors {res['socket_errors']}, non-2xx {res['non2xx']}")
    assert res["requests"] > 5000, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']} of " \
        f"{res['requests']}\n{res['text']}\ndaemon log:\n{d.log()[-3000:]}"
    hist = d.history()
    assert hist[0]["kind"] == "rollback" and hist[0]["state"] == "completed", hist[0]
    assert d.alive()


# -------------------------------------------------------------------------------- 4. slowloris

class NormalClient(threading.Thread):
    """GET / on a fresh connection every 50 ms; counts answers and failures."""

    def __init__(self, port, want):
        super().__init__(daemon=True)
        self.port, self.want = port, want
        self.ok, self.errors, self.worst = 0, [], 0.0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                st, body, _ = http_get(self.port, timeout=3)
                if st == 200 and body.decode() == self.want:
                    self.ok += 1
                else:
                    self.errors.append(f"{st} {body[:60]!r}")
            except OSError as e:
                self.errors.append(repr(e))
            self.worst = max(self.worst, time.monotonic() - t)
            self.stop.wait(0.05)


def python_slowloris(port, n, header_s):
    """n sockets each sending the request line, then one header byte per second. -> list of
    (seconds from connect to close, what was received) per socket; None for never closed."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.setblocking(False)
        s.send(b"GET /slowloris-%d HTTP/1.1\r\nHost: t\r\nX-Slow: " % i)
        socks.append({"s": s, "t0": time.monotonic(), "got": b"", "closed": None})
        sel.register(s, selectors.EVENT_READ, socks[-1])
    limit = time.monotonic() + header_s + 4
    next_byte = time.monotonic() + 1
    open_ = n
    while open_ and time.monotonic() < limit:
        now = time.monotonic()
        if now >= next_byte:
            for c in socks:
                if c["closed"] is None:
                    try:
                        c["s"].send(b"a")
                    except OSError:
                        pass
            next_byte += 1
        for key, _ in sel.select(timeout=max(0.0, min(next_byte, limit) - time.monotonic())):
            c = key.data
            try:
                data = c["s"].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                c["got"] += data
                continue
            c["closed"] = time.monotonic() - c["t0"]
            sel.unregister(c["s"])
            c["s"].close()
            open_ -= 1
    out = []
    for c in socks:
        if c["closed"] is None:
            sel.unregister(c["s"])
            c["s"].close()
        out.append((c["closed"], c["got"]))
    sel.close()
    return out


@pytest.mark.xdist_group("load")
def test_slowloris_connections_closed_while_normal_clients_served(procs, backend, daemon, tmp_path):
    v1 = backend("v1")
    d = configure(daemon([v1]), [v1], timeouts={"client_header": "2s"}).start(expect="v1\n")
    normal = NormalClient(d.port, "v1\n")
    normal.start()
    try:
        # slowhttptest (Debian): 200 slow-header connections, a follow-up header every second,
        # 15 s, statistics to CSV.
        prefix = tmp_path / "slowhttp"
        p = procs.start(["timeout", "-k", "5", "40", "slowhttptest", "-c", "200", "-H", "-i", "1",
                         "-r", "100", "-t", "GET", "-u", f"http://127.0.0.1:{d.port}/",
                         "-x", "24", "-p", "3", "-l", "15", "-g", "-o", prefix],
                        name="slowhttptest")
        p.wait(50)
        out = p.log_path.read_text(errors="replace")
        csv = Path(f"{prefix}.csv")
        assert csv.exists(), f"slowhttptest wrote no CSV (exit {p.returncode}):\n{out[-2000:]}"
        rows = []
        for ln in csv.read_text().splitlines()[1:]:
            f = ln.split(",")
            if len(f) >= 5 and f[0].isdigit():
                rows.append([int(x) for x in f[:5]])
        assert rows, csv.read_text()
        closed = max(r[1] for r in rows)
        peak_connected = max(r[3] for r in rows)
        # The server closes each connection ~2 s after it opened; slowhttptest's own probe
        # ("Service Available") saw the service up in every sample after the first.
        unavailable = [r[0] for r in rows[1:] if r[4] == 0]
        print(f"\nslowhttptest: {closed} of 200 closed by the server, peak connected "
              f"{peak_connected}, last row {rows[-1]}, samples without service: {unavailable}")
        # slowhttptest stops early once the server has closed every connection; its last CSV
        # sample may be taken a moment before the last closes, so its exit status is the proof.
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out)
        exit_status = re.search(r"Exit status: ([^\n]*)", text)
        exit_status = exit_status.group(1).strip() if exit_status else "(none)"
        ended = re.search(r"Test ended on (\d+)", text)
        print(f"slowhttptest exit status: {exit_status!r}, ended on second "
              f"{ended.group(1) if ended else '?'}")
        assert exit_status == "No open connections left", \
            f"slowhttptest's connections were not all closed by the server ({exit_status!r}):\n" \
            f"{csv.read_text()}"
        assert ended and int(ended.group(1)) <= 8, f"slowhttptest ran past 8 s:\n{text[-1500:]}"
        last = rows[-1]
        assert last[1] + last[2] + last[3] == 200, \
            f"slowhttptest did not open all 200 connections:\n{csv.read_text()}"
        assert not unavailable, f"slowhttptest found the service unavailable at seconds " \
                                f"{unavailable}:\n{csv.read_text()}"

        # Our own slowloris: 100 sockets, one header byte per second; each one closed (408 or a
        # bare close) within client_header + 1 s.
        res = python_slowloris(d.port, 100, 2.0)
        never = [i for i, (c, _) in enumerate(res) if c is None]
        assert not never, f"{len(never)} slowloris sockets never closed"
        late = [(i, round(c, 2)) for i, (c, _) in enumerate(res) if c > 3.0]
        early = [(i, round(c, 2)) for i, (c, _) in enumerate(res) if c < 1.8]
        assert not late, f"slowloris sockets closed later than client_header + 1 s: {late[:10]}"
        assert not early, f"slowloris sockets closed before client_header: {early[:10]}"
        answers = {g.split(b"\r\n", 1)[0].decode("latin-1") if g else "(bare close)"
                   for _, g in res}
        assert answers <= {"HTTP/1.1 408 Request Timeout", "(bare close)"}, answers
        print(f"python slowloris: 100 closed after {min(c for c, _ in res):.2f}.."
              f"{max(c for c, _ in res):.2f}s, answers {answers}")
        assert v1.requests() == [] or not any("slowloris" in r["line"] for r in v1.requests()), \
            "a slowloris request reached the backend"
    finally:
        normal.stop.set()
        normal.join(5)
    print(f"normal client: {normal.ok} answered, {len(normal.errors)} errors, slowest "
          f"{normal.worst * 1000:.0f} ms")
    assert normal.ok >= 100, f"normal client got only {normal.ok} answers"
    assert not normal.errors, f"normal client errors: {normal.errors[:10]}"
    assert d.alive()


# ---------------------------------------------------------------------------------- 5. limits

def exchange(port, data, wait=3.0):
    """Sends raw bytes, reads until the server closes or `wait` s pass -> (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    got, closed = b"", False
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        s.close()
    return got, closed


def status_of(resp):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", resp)
    return int(m.group(1)) if m else None


def head_of(resp):
    head = resp.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])}


LIMITS = {"max_header_bytes": 2048, "max_headers": 20, "max_uri_bytes": 256,
          "max_body_bytes": 1000}


@pytest.fixture
def limited(procs, backend, daemon):
    v1 = backend("v1")
    d = configure(daemon([v1]), [v1], limits=LIMITS,
                  timeouts={"client_idle": "2s"}).start(expect="v1\n")
    d.v1 = v1
    return d


def refused(d, req, want, what):
    got, closed = exchange(d.port, req)
    assert status_of(got) == want, f"{what}: sent {req[:120]!r}..., got {got[:300]!r}, want {want}"
    assert closed, f"{what}: {want} but the connection was left open"
    return got


def reached(d, marker):
    return [r for r in d.v1.requests() if marker in r["line"]]


def test_uri_over_max_uri_bytes_gets_414(limited):
    ok = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    got, _ = exchange(limited.port, ok + b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status_of(got) == 200, got[:200]
    refused(limited, b"GET /uri414" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "long URI")
    assert not reached(limited, "uri414")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_max_body_bytes_gets_413(limited, framing):
    def req(path, n):
        body = b"x" * n
        if framing == "content-length":
            return (b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (path, n)) + body
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 400]), body[i:i + 400])
                          for i in range(0, n, 400))
        return (b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % path) + \
            chunks + b"0\r\n\r\n"

    got, _ = exchange(limited.port, req(b"/upload", 1000) + b"GET / HTTP/1.1\r\nHost: t\r\n"
                                                             b"Connection: close\r\n\r\n")
    assert status_of(got) == 200 and b'"length": 1000' in got, got[:300]
    refused(limited, req(b"/upload?c413", 50000), 413, f"{framing} body of 50000 bytes")
    refused(limited, req(b"/upload?b413", 1001), 413, f"{framing} body of 1001 bytes")
    done = [r for r in reached(limited, "413") if r["complete"]]
    assert not done, f"an oversized body was forwarded complete: {done}"


def test_chunked_body_under_max_body_bytes_in_small_chunks_is_accepted(limited):
    # 900 bytes of payload (limit 1000) in 1-byte chunks: 5400 bytes on the wire. The limit is
    # on the body, not on its chunk framing.
    req = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" \
          b"Connection: close\r\n\r\n" + b"1\r\nx\r\n" * 900 + b"0\r\n\r\n"
    got, _ = exchange(limited.port, req)
    assert status_of(got) == 200 and b'"length": 900' in got, \
        f"900-byte chunked body in 1-byte chunks (limit 1000): got {got[:300]!r}, want 200"


def test_head_over_max_header_bytes_gets_431(limited):
    got, _ = exchange(limited.port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1500 +
                      b"\r\nConnection: close\r\n\r\n")
    assert status_of(got) == 200, got[:200]
    refused(limited, b"GET /big431 HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n",
            431, "3000-byte header in a 2048-byte limit")
    assert not reached(limited, "big431")


def test_more_than_max_headers_gets_431(limited):
    def req(path, n):
        return (b"GET %s HTTP/1.1\r\nHost: t\r\n" % path +
                b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(n)) +
                b"Connection: close\r\n\r\n")
    got, _ = exchange(limited.port, req(b"/", 17))  # 19 fields with Host and Connection
    assert status_of(got) == 200, got[:200]
    refused(limited, req(b"/many431", 25), 431, "27 header fields, limit 20")
    assert not reached(limited, "many431")


@pytest.mark.xdist_group("load")
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_stalled_body_closed_after_client_idle(limited, framing):
    if framing == "content-length":
        req = b"POST /upload?stall HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    else:
        req = b"POST /upload?stall HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" \
              b"64\r\n" + b"x" * 10
    t = time.monotonic()
    got, closed = exchange(limited.port, req, wait=6)
    took = time.monotonic() - t
    assert closed, f"a body stalled for 6 s was not closed (client_idle 2s); got {got[:200]!r}"
    assert 1.7 <= took <= 3.5, f"stalled body closed after {took:.2f}s, client_idle is 2s"
    st = status_of(got)
    assert st in (None, 408, 400), f"stalled body answered {got[:200]!r}"
    print(f"\nstalled {framing} body: closed after {took:.2f}s, answer {got[:40]!r}")
    assert not [r for r in reached(limited, "stall") if r["complete"]]
    assert body_of(limited.port) == "v1\n"


def test_max_connections_refuses_with_503_retry_after_then_serves_again(procs, backend, daemon):
    v1 = backend("v1")
    d = configure(daemon([v1]), [v1], limits={"max_connections": 10}).start(expect="v1\n")
    time.sleep(0.3)  # the readiness probe's connection is gone

    def get_on(s):
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"v1\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf

    held = []
    try:
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=3)
            got = get_on(s)
            assert status_of(got) == 200, f"connection {i + 1} of 10 answered {got[:200]!r}"
            held.append(s)
        got, closed = exchange(d.port, b"GET /over HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_of(got) == 503, f"11th connection got {got[:300]!r}, want 503"
        assert head_of(got).get("retry-after") == "1", f"503 without Retry-After: 1: {got!r}"
        assert closed, "the refused connection was left open"
        # The 10 held connections are still served.
        assert status_of(get_on(held[0])) == 200
        for s in held[:3]:
            s.close()
        del held[:3]
        time.sleep(0.3)
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=3)
            got = get_on(s)
            assert status_of(got) == 200, f"after closing 3, new connection {i} got {got[:200]!r}"
            held.append(s)
        got, closed = exchange(d.port, b"GET /over2 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_of(got) == 503 and closed, f"11th connection again: {got[:200]!r}"
    finally:
        for s in held:
            s.close()
    assert not [r for r in v1.requests() if "/over" in r["line"]]


# ------------------------------------------------------------------ 6. memory per idle conn

def open_idle_connections(port, n, batch=500):
    """n keep-alive connections, each after one complete GET /; -> list of sockets."""
    socks = []
    sel = selectors.DefaultSelector()
    req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    for start in range(0, n, batch):
        pending = {}
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            s.sendall(req)
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                if not data:
                    raise AssertionError(f"connection closed before its answer "
                                         f"({len(socks)} open): {pending[s]!r}")
                pending[s] += data
                r = pending[s]
                if b"\r\n\r\n" in r:
                    cl = int(head_of(r).get("content-length", "-1"))
                    if len(r.split(b"\r\n\r\n", 1)[1]) >= cl >= 0:
                        assert status_of(r) == 200 and r.endswith(b"\r\n\r\nv1\n"), \
                            f"GET / on connection {len(socks) - len(pending)} answered {r[:300]!r}"
                        sel.unregister(s)
                        del pending[s]
        assert not pending, f"{len(pending)} answers missing after 20 s ({len(socks)} open)"
    sel.close()
    return socks


def test_memory_per_idle_keepalive_connection(procs, backend, daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10000
    need = want + 500
    if soft < need and (hard == resource.RLIM_INFINITY or hard >= need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(want, soft - 500)
    if n < want:
        print(f"\nRLIMIT_NOFILE hard limit {hard}: scaled down to {n} connections")
    assert n >= 1000, f"cannot open even 1000 connections (RLIMIT_NOFILE {soft})"
    v1 = backend("v1")
    # The daemon is started after the limit was raised, so it inherits it.
    d = configure(daemon([v1]), [v1], workers=2,
                  timeouts={"client_idle": "300s"}).start(expect="v1\n")
    lim = [ln for ln in Path(f"/proc/{d.pid}/limits").read_text().splitlines()
           if ln.startswith("Max open files")][0]
    assert int(lim.split()[3]) >= n + 100, f"daemon's limit too low: {lim}"
    # Warm up a little (first-use allocations), then measure the baseline.
    for s in open_idle_connections(d.port, 200):
        s.close()
    time.sleep(0.5)
    before = rss_kib(d.pid)
    socks = open_idle_connections(d.port, n)
    try:
        time.sleep(1.0)
        after = rss_kib(d.pid)
        # They are still established, served HTTP connections.
        probe = socks[:: max(1, n // 100)]
        for s in probe:
            s.setblocking(True)
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            r = b""
            while not r.endswith(b"\r\n\r\nv1\n"):
                chunk = s.recv(4096)
                assert chunk, "an idle keep-alive connection was closed by the daemon"
                r += chunk
            assert status_of(r) == 200
        per = (after - before) * 1024 / n
        print(f"\n{n} idle keep-alive connections: VmRSS {before} KiB -> {after} KiB, "
              f"{per:.0f} bytes per idle connection")
        # An idle connection holds its struct client only (368 bytes), no buffer, no exchange
        # and no timer; the rest is the loops' per-fd bookkeeping and the pooled buffers of the
        # request bursts above. Measured ~585 here, 2 workers (1,527 when the per-request state
        # and a timer lived in the connection); HAProxy 2.6 takes 1,143 (docs/benchmarks.md).
        # With fewer connections (a low RLIMIT_NOFILE) the fixed costs weigh more: the old,
        # loose bound then.
        bound = 1024 if n >= want else 4096
        assert per < bound, f"{per:.0f} bytes per idle connection, want < {bound} " \
                            f"(VmRSS {before} -> {after} KiB for {n})"
    finally:
        for s in socks:
            s.close()
    time.sleep(1.0)
    assert d.alive()
    assert body_of(d.port) == "v1\n"
    closed = [rss_kib(d.pid)]
    # More rounds of open-then-close-all. Each burst of closes takes a 16 KiB read buffer per
    # closing connection until its close callback; the worker pools keep up to 1024 of them and
    # malloc keeps much of the peak, so RSS after the closes is a high-water mark that wanders
    # (measured: ~30-85 MiB for 10,000, flat over 12 rounds). It must stay below one such
    # buffer per connection of a round; a per-connection leak would pass that within 4 rounds.
    for _ in range(3):
        socks = open_idle_connections(d.port, n)
        for s in socks:
            s.close()
        time.sleep(1.5)
        closed.append(rss_kib(d.pid))
    print(f"VmRSS after closing all, rounds 1-4: {closed} KiB")
    bound = before + n * 16
    assert max(closed) < bound, f"VmRSS after 4 rounds of open/close {n} connections: {closed} " \
                                f"KiB, over {bound} KiB (baseline + 16 KiB per connection)"
    assert body_of(d.port) == "v1\n"
