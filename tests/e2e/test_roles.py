"""The data plane by version role, end to end (issue 13): a version that still gets traffic
keeps its connections across every route publish, a WebSocket cut at a drain deadline is told
why (close 1001), a weight holds per request whatever the client address (unless the service
asks for stickiness by source), and repeated identical Content-Length fields reach the
upstream as one.

Backends: backend.py (logs what reached it, with a connection id) and wsutil.py (WebSocket
echo); the real daemon and CLI; wrk for load. Loopback only, every process started through
`procs` and stopped by pid.
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import Wrk, free_port, wait_body, wait_port
from progressive_util import Client, change_of, progress_of, user_requests, wait_for
from wsutil import Ticker, WSClient

WSUTIL = Path(__file__).resolve().parent / "wsutil.py"
DRAIN = 2.0  # drain_timeout, seconds
PILOT_PLAN = ("plans:\n  pw:\n    steps: [{pilot: {header: \"X-Cohort: pilot\", duration: 60s}}, "
              "{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]\n")


class WSBackend:
    """wsutil.py PORT VERSION: WebSocket echo, answers tagged with VERSION."""

    def __init__(self, procs, version):
        self.version = version
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = procs.start([sys.executable, WSUTIL, self.port, version],
                                name=f"wsbackend-{version}")
        assert wait_port(self.port, 10, self.proc), f"wsutil backend {version} did not start"


def step_at(d, step, weight):
    def at():
        p = progress_of(d)
        return p if p.get("step") == step and p.get("weight") == weight else None
    return wait_for(at, 15, f"change at step {step} weight {weight}")


def ok(r, what):
    assert r.returncode == 0, f"{what} exit {r.returncode}: {r.stdout}{r.stderr}"


def start_pilot_change(d, v2):
    """Deploys v2 with the pilot plan; -> when the pilot step (step 1) runs."""
    ok(d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "pw", timeout=30), "deploy")
    assert change_of(d) is not None
    return wait_for(lambda: progress_of(d).get("step") == 1, 15, "the pilot step")


def promote_to(d, step, weight):
    ok(d.cli("promote", "web"), "promote")
    step_at(d, step, weight)


# ------------------------------------------------ a. connections of serving versions survive

def test_websockets_of_canary_and_live_survive_publishes_then_get_1001_at_the_drain(procs,
                                                                                     daemon):
    v1, v2 = WSBackend(procs, "v1"), WSBackend(procs, "v2")
    d = daemon([v1], top_extra=PILOT_PLAN, drain_timeout=f"{DRAIN:g}s")
    d.start(expect="v1\n")
    start_pilot_change(d, v2)

    on_canary = WSClient(d.port, headers={"X-Cohort": "pilot"})
    on_live = WSClient(d.port)
    for ws, version in ((on_canary, "v2"), (on_live, "v1")):
        ws.send("hello")
        assert ws.echo_of("hello", time.monotonic() + 3) == f"{version}:hello", ws.msgs
    ticks = [Ticker(on_canary, 0.1), Ticker(on_live, 0.1)]
    for t in ticks:
        t.start()

    # Three publishes while both versions serve: pilot -> weight 10 -> weight 50.
    promote_to(d, 3, 10)
    promote_to(d, 5, 50)
    t_last = time.monotonic()
    time.sleep(DRAIN + 1.5)
    for ws, version in ((on_canary, "v2"), (on_live, "v1")):
        assert ws.closed_at is None, \
            f"the WebSocket on {version} closed ({ws.how}) although {version} still serves"
        recent = [m for t, m in ws.msgs if t > t_last + DRAIN]
        assert recent and all(m.startswith(f"{version}:") for m in recent), \
            f"no echo from {version} after the drain time: {ws.msgs[-5:]}"

    # The change is aborted, the canary goes away: its WebSocket is drained, and told so with 1001 (going away).
    t0 = time.monotonic()
    ok(d.cli("abort", "web", timeout=20), "abort")
    closed = on_canary.wait_closed(t0 + DRAIN + 5)
    for t in ticks:
        t.stop.set()
        t.join(2)
    assert closed is not None, f"canary WebSocket still open {DRAIN + 5:g}s after the abort"
    assert closed >= t0 + DRAIN - 0.25, f"closed {closed - t0:.2f}s after the abort"
    assert on_canary.how == "close frame" and on_canary.close_code == 1001, \
        f"the canary WebSocket ended by {on_canary.how} (code {on_canary.close_code}), " \
        "want a close frame with 1001"
    assert on_live.closed_at is None, f"the live WebSocket closed ({on_live.how})"
    on_live.close()


@pytest.mark.xdist_group("load")
def test_pooled_upstream_connections_of_the_canary_are_reused_across_publishes(procs, backend,
                                                                               daemon):
    v1, v2 = backend("v1"), backend("v2")
    pp = free_port()
    d = daemon([v1], top_extra=PILOT_PLAN, drain_timeout=f"{DRAIN:g}s",
               service_extra=f"    preview_listen: 127.0.0.1:{pp}\n")
    d.start(expect="v1\n")
    assert wait_port(pp, 5), "preview port not listening"
    start_pilot_change(d, v2)

    # wrk on the preview listener: all of it goes to the canary, over a fixed set of client
    # connections, so once warm the canary's pools hold every upstream connection they need.
    # Retiring them at a publish (the old behaviour) replaced every one of them.
    load = Wrk(procs, pp, 8, conns=4)
    time.sleep(1.0)
    conns = {}
    for phase, step, weight in (("pilot", None, None), ("weight 10", 3, 10), ("weight 50", 5, 50)):
        if step is not None:
            promote_to(d, step, weight)
        v2.clear()  # backend.py logs at most 20,000 requests: look at a short window each time
        time.sleep(0.5)
        conns[phase] = {r["conn"] for r in user_requests(v2) if r["line"].startswith("GET / ")}
        assert conns[phase], f"no request reached the canary at {phase}"
    assert load.running(), "wrk ended before the last publish: the test needs a longer run"
    res = load.result()
    assert res["requests"] > 0, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    new = (conns["weight 10"] | conns["weight 50"]) - conns["pilot"]
    print(f"\ncanary upstream connections: {len(conns['pilot'])} before the publishes, "
          f"{len(new)} new after them")
    assert len(new) <= 2, \
        f"{len(new)} new upstream connections to the canary after two publishes " \
        f"({len(conns['pilot'])} before): its pools were dropped"


# ------------------------------------------------------ b. splits hold from one address

@pytest.mark.parametrize("sticky", ["none", "source"])
def test_weight_30_from_one_address(backend, daemon, sticky):
    v1, v2 = backend("v1"), backend("v2")
    extra = "    sticky: {source: true}\n" if sticky == "source" else ""
    d = daemon([v1], service_extra=extra, top_extra=(
        "plans:\n  w30:\n    steps: [{weight: 30}, {pause: {}}, {weight: 100}]\n"))
    d.start(expect="v1\n")
    ok(d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "w30", timeout=30), "deploy")
    step_at(d, 2, 30)
    c = Client(d.port)
    got = Counter(c.version() for _ in range(2000))
    c.close()
    assert set(got) <= {"v1", "v2"}, got
    share = got["v2"] / 2000
    print(f"\nsticky {sticky}: weight 30 from one address sent {share:.1%} to v2")
    if sticky == "none":
        # 2,000 draws at p = 0.3: sd 1.0 %; 5 sd either side.
        assert 0.25 <= share <= 0.35, f"weight 30 from one address gave {share:.1%}: {got}"
    else:
        assert share in (0.0, 1.0), f"sticky by source, one address split {got}"


# ------------------------------------------------------ e. one Content-Length upstream

@pytest.mark.parametrize("fields", [["5", "5"], ["5, 5"], ["5,5", "5"]])
def test_repeated_identical_content_length_reaches_the_upstream_once(backend, daemon, fields):
    v1 = backend("v1")
    d = daemon([v1])
    d.start(expect="v1\n")
    v1.clear()
    head = "POST /upload HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"Content-Length: {f}\r\n" for f in fields) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(head.encode() + b"hello")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["length"] == 5, body
    reqs = [r for r in user_requests(v1) if r["line"].startswith("POST /upload")]
    assert len(reqs) == 1, reqs
    cl = [v for k, v in reqs[0]["headers"] if k.lower() == "content-length"]
    assert cl == ["5"], f"the upstream got Content-Length fields {cl} for {fields}"


# ------------------------------------------------------ c. request loss is measured

def lost_metrics(d):
    """{(role, reason): n} of cutover_proxy_lost_total for service web."""
    out = subprocess.run(["curl", "-s", "--unix-socket", str(d.sock), "http://x/metrics"],
                         capture_output=True, text=True, timeout=10).stdout
    got = {}
    for m in re.finditer(r'^cutover_proxy_lost_total\{service="web",role="(\w+)",'
                         r'reason="(\w+)"\} (\d+)$', out, re.M):
        got[(m.group(1), m.group(2))] = int(m.group(3))
    assert len(got) == 18, f"want 3 roles x 6 reasons, got {got}\n{out}"
    return got


@pytest.mark.xdist_group("load")
def test_a_request_cut_at_the_drain_deadline_counts_1_and_a_clean_switch_under_load_0(
        procs, backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], drain_timeout="1s")
    d.start(expect="v1\n")
    assert set(lost_metrics(d).values()) == {0}

    # A request that outlives the drain, on the version switched away from.
    answer = {}

    def slow():
        with socket.create_connection(("127.0.0.1", d.port), timeout=15) as s:
            s.sendall(b"GET /slow?ms=6000 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            answer["data"] = data

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_for(lambda: any(r["line"].startswith("GET /slow") for r in v1.requests()), 5,
             "the slow request at v1")
    load = Wrk(procs, d.port, 3, conns=8)
    ok(d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20), "deploy")
    res = load.result()
    t.join(15)
    assert not t.is_alive()
    assert answer["data"] == b"", f"the slow request got {answer['data'][:100]!r}, want a cut"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    lost = lost_metrics(d)
    want = {k: 0 for k in lost}
    want[("stable", "drain")] = 1
    assert lost == want, lost
