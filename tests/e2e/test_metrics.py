"""Per-version metrics and `cutover watch` (issue 16, items 1 and 2), end to end.

1. During a canary at weight 30, /metrics counts each version's requests exactly as the client
   received them (cutover_http_requests_total{service,version,code}), the latency histogram is
   cumulative with _count matching, cutover_change_weight says 30, process figures are there,
   and `promtool check metrics` finds nothing (skipped where promtool is not installed).
2. `cutover watch web --until-done` on a pipe prints plain lines with the step and the weight,
   and exits 0 once `promote --all` has completed the change (under wrk load, no errors).

Every test stops what it started by pid; loads are bounded in time.
"""
import http.client
import re
import shutil
import subprocess
import time

import pytest

from conftest import BIN, body_of, free_port, live_name
from progressive_util import progress_of, wait_for

PLAN = "plans:\n  hold:\n    steps: [{weight: 30}, {pause: {}}, {weight: 100}]\n"
STICKY = "    sticky: {header: X-User-Id}\n"


def samples(text, name):
    out = []
    for m in re.finditer(r"^" + re.escape(name) + r"\{([^}]*)\}\s+(\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        out.append((labels, float(m.group(2))))
    return out


def total(text, name, **want):
    return sum(v for l, v in samples(text, name) if all(l.get(k) == x for k, x in want.items()))


def metrics(d):
    st, text = d.api("GET", "/metrics")
    assert st == 200, text
    return text


def canary_at_30(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY, top_extra=PLAN)
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "hold", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: progress_of(d).get("step") == 2, 15, "the plan at its pause")
    assert progress_of(d).get("weight") == 30
    return d


def test_metrics_count_each_version_during_a_canary(backend, daemon):
    d = canary_at_30(backend, daemon)
    before = metrics(d)
    live = d.status()["live"]["name"]
    sent = {"v1\n": 0, "v2\n": 0}
    conns = [http.client.HTTPConnection("127.0.0.1", d.port, timeout=5) for _ in range(4)]
    for i in range(1200):
        c = conns[i % 4]
        c.request("GET", "/", headers={"X-User-Id": f"user{i % 300}"})
        r = c.getresponse()
        assert r.status == 200
        sent[r.read().decode()] += 1
    for c in conns:
        c.close()
    assert sent["v1\n"] > 0 and sent["v2\n"] > 0, sent
    text = metrics(d)

    def delta(version, code="2xx"):
        name = "cutover_http_requests_total"
        return total(text, name, service="web", version=version, code=code) - \
            total(before, name, service="web", version=version, code=code)

    # Exactly what the client got from each version, all 2xx.
    assert delta(live) == sent["v1\n"], (delta(live), sent)
    assert delta("v2") == sent["v2\n"], (delta("v2"), sent)
    for code in ("1xx", "3xx", "4xx", "5xx"):
        assert delta(live, code) == 0 and delta("v2", code) == 0, code

    # The histogram: cumulative, +Inf == _count == the version's answers.
    for version in (live, "v2"):
        bk = [(l["le"], v) for l, v in
              samples(text, "cutover_http_request_duration_seconds_bucket")
              if l.get("service") == "web" and l.get("version") == version]
        assert len(bk) >= 5 and bk[-1][0] == "+Inf", bk
        les = [float(le) for le, _ in bk[:-1]]
        assert les == sorted(les)
        counts = [v for _, v in bk]
        assert counts == sorted(counts), f"buckets not cumulative: {bk}"
        cnt = total(text, "cutover_http_request_duration_seconds_count", service="web",
                    version=version)
        assert counts[-1] == cnt
        assert cnt == total(text, "cutover_http_requests_total", service="web", version=version)
        assert total(text, "cutover_http_request_duration_seconds_sum", service="web",
                     version=version) > 0
    # Loopback answers take well under a second.
    assert total(text, "cutover_http_request_duration_seconds_bucket", service="web",
                 version="v2", le="1") == total(
        text, "cutover_http_request_duration_seconds_count", service="web", version="v2")

    assert 'cutover_change_weight{service="web"} 30' in text
    assert 'cutover_change_step{service="web"} 2' in text
    assert 'cutover_change_state{service="web",state="running"} 1' in text
    assert 'cutover_change_state{service="web",state="idle"} 0' in text
    for name in ("process_open_fds", "process_resident_memory_bytes",
                 "process_start_time_seconds"):
        m = re.search(r"^" + name + r" (\S+)$", text, re.M)
        assert m and float(m.group(1)) > 0, name
    assert re.search(r'^cutover_build_info\{version="[^"]+"\} 1$', text, re.M)
    # One HELP and one TYPE per metric family.
    helps = re.findall(r"^# HELP (\S+)", text, re.M)
    assert len(helps) == len(set(helps)), "a metric has two HELP lines"
    types = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(types) == len(set(types)), "a metric has two TYPE lines"

    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=30)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr

    # After the promote the counts stay with the version that made them.
    assert d.cli("promote", "--all", "web").returncode == 0
    wait_for(lambda: d.status()["live"]["name"] == "v2", 15, "v2 live")
    after = metrics(d)
    name = "cutover_http_requests_total"
    assert total(after, name, service="web", version="v2") == \
        total(text, name, service="web", version="v2")
    assert total(after, name, service="web", version=live) == \
        total(text, name, service="web", version=live)
    assert 'cutover_change_weight{service="web"} 0' in after
    assert 'cutover_change_state{service="web",state="idle"} 1' in after


@pytest.mark.xdist_group("load")
def test_watch_prints_plain_lines_and_exits_when_the_change_completes(backend, daemon, procs,
                                                                      wrk, tmp_path):
    d = canary_at_30(backend, daemon)
    w = procs.start([BIN, "watch", "web", "--until-done", "-c", d.cfg], name="watch")
    out = w.log_path

    def shows_step():
        t = out.read_text()
        return "step 2/3" in t and "weight 30%" in t and "v2:" in t
    wait_for(shows_step, 10, "watch showing step 2/3 at weight 30%")
    assert w.poll() is None, out.read_text()
    text = out.read_text()
    assert "\033" not in text, "escape sequences on a pipe"
    line = [ln for ln in text.splitlines() if "step 2/3" in ln][-1]
    assert line.split()[1] == "web" and "req/s" in line and "p99" in line, line

    load = wrk(d.port, 3)
    time.sleep(1)
    assert d.cli("promote", "--all", "web").returncode == 0
    w.wait(15)
    res = load.result()
    assert w.returncode == 0, out.read_text()
    assert re.search(r"change \d+ ended: completed", out.read_text()), out.read_text()
    assert res["requests"] > 100 and res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    # A rate was measured while the load ran.
    rates = [float(x) for x in re.findall(r"v2: ([\d.]+) req/s", out.read_text())]
    assert max(rates) > 0, out.read_text()


def test_watch_until_done_without_a_change_exits_at_once(backend, daemon):
    d = daemon([backend("v1")])
    d.start(expect="v1\n")
    t0 = time.monotonic()
    r = d.cli("watch", "web", "--until-done", timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no change in progress" in r.stdout and time.monotonic() - t0 < 5
    r = d.cli("watch", "nosuch", "--until-done", timeout=15)
    assert r.returncode == 2, r.stdout + r.stderr


def test_watch_names_the_approvers_still_awaited(backend, daemon, procs):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra="plans:\n  appr:\n    steps: [{weight: 10}, {approval: "
               "{approvers: [alice, bob, carol], count: 2}}, {weight: 100}]\n")
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "appr", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: progress_of(d).get("step") == 2, 15, "the plan at its approval")
    w = procs.start([BIN, "watch", "web", "-c", d.cfg], name="watch")
    out = w.log_path
    wait_for(lambda: "(2 more of: alice bob carol)" in out.read_text(), 10,
             "watch naming the three approvers")
    cid = str((d.status()["change"] or {})["id"])
    assert d.cli("approve", cid, "--as", "bob").returncode == 0
    wait_for(lambda: "(1 more of: alice carol); approved by bob" in out.read_text(), 10,
             "watch naming who is still awaited")
    assert w.poll() is None
    assert d.cli("abort", "web").returncode == 0


def test_the_configured_targets_are_v1_unless_version_names_them(backend, daemon):
    """The first version takes the service's `version` key as its name, v1 by default: the
    name /metrics, status and the change records carry."""
    v = backend("blue")
    d = daemon([v], service_extra="    version: blue\n")
    d.start(expect="blue\n")
    assert live_name(d.status()) == "blue"
    for _ in range(5):
        assert body_of(d.port) == "blue\n"
    text = metrics(d)
    got = {l["version"] for l, _ in samples(text, "cutover_http_requests_total")
           if l.get("service") == "web"}
    n = total(text, "cutover_http_requests_total", service="web", version="blue", code="2xx")
    assert n >= 5 and got == {"blue"}, (n, got)


def test_metrics_keep_the_last_eight_versions_of_a_service(backend, daemon):
    v = backend("vx")
    d = daemon([v])
    d.start(expect="vx\n")
    names = [f"r{i}" for i in range(10)]
    for name in names:
        r = d.cli("deploy", "web", name, "--target", v.addr, "--wait", timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert body_of(d.port) == "vx\n"
        metrics(d)  # a scrape between deploys, as Prometheus would
    text = metrics(d)
    seen = {l["version"] for l, _ in samples(text, "cutover_http_requests_total")
            if l.get("service") == "web"}
    assert len(seen) == 8 and "r9" in seen and "v1" not in seen, seen
    assert seen == set(names[2:]), seen


def test_gate_verdicts_and_waiting_notifications_are_gauges(backend, daemon):
    """The last verdict of each gate the running plan checks, and the webhook deliveries still
    waiting (here to a receiver that is down), both pass promtool."""
    v1, v2 = backend("v1"), backend("v2")
    dead = free_port()
    d = daemon([v1], service_extra=STICKY, top_extra=(
        f"notify: {{webhooks: [{{url: 'http://127.0.0.1:{dead}/'}}]}}\n"
        "plans:\n  gated:\n    steps: [{weight: 50}, {pause: 1m}, {weight: 100}]\n"
        "    analysis: {interval: 300ms, min_requests: 20, max_error_rate: 0.2}\n"))
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "gated", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr

    def gate():
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        for i in range(60):
            c.request("GET", "/", headers={"X-User-Id": f"u{i}"})
            c.getresponse().read()
        c.close()
        return {(l["gate"], l["verdict"]): v for l, v in
                samples(metrics(d), "cutover_change_gate") if l.get("service") == "web"}
    wait_for(lambda: gate().get(("max_error_rate", "pass")) == 1, 15, "a passing error gate")
    g = gate()
    assert g[("max_error_rate", "fail")] == 0 and ("max_p99_latency_ms", "pass") not in g, g
    text = metrics(d)
    m = re.search(r"^cutover_notify_pending (\d+)$", text, re.M)
    assert m and int(m.group(1)) >= 1, text
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
        assert p.returncode == 0, p.stdout + p.stderr
    d.cli("abort", "web")


def test_upstream_failures_by_reason_and_long_lived_connections(backend, daemon, procs):
    """A target killed behind the live version's back: its connect failures are counted by
    reason (here saved by a retry on the other target), and the open WebSocket and event
    stream of the live version show as long-lived connections until they close."""
    import socket
    import sys
    from pathlib import Path
    from conftest import wait_port
    from wsutil import SSEClient, WSClient
    ws_port = free_port()
    wsb = procs.start([sys.executable, Path(__file__).resolve().parent / "wsutil.py",
                       ws_port, "v1"], name="wsbackend")
    assert wait_port(ws_port, 10, wsb)
    dead = backend("v1")
    d = daemon([dead, type("T", (), {"addr": f"127.0.0.1:{ws_port}"})()],
               health={"interval": "30s", "unhealthy_threshold": 10})
    d.start()
    wait_for(lambda: body_of(d.port) == "v1\n", 10, "v1 served")
    dead.kill()
    fails = 0
    for _ in range(20):
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        fails += r.status != 200
        c.close()
    assert fails == 0, "a retry on the other target should answer every request"
    text = metrics(d)
    got = {l["reason"]: v for l, v in samples(text, "cutover_upstream_failures_total")
           if l.get("service") == "web" and l.get("role") == "stable"}
    assert got["connect"] >= 1 and set(got) == {"connect", "connect_timeout", "connection_lost",
                                                "response_timeout", "bad_response"}, got
    ws, sse = WSClient(d.port), SSEClient(d.port)

    def longlived():
        return total(metrics(d), "cutover_long_lived_connections", service="web", role="stable")
    wait_for(lambda: longlived() == 2, 10, "two long-lived connections counted")
    ws.close()
    sse.close()
    wait_for(lambda: longlived() == 0, 10, "both gone")
