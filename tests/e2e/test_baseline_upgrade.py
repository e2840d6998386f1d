"""A like-for-like baseline (issue 18, item 3) across a hot upgrade, end to end: a plan with
`analysis: {baseline: true}` runs at weight 25 under wrk when `cutover upgrade` hands the daemon
over; the successor adopts the same baseline processes (not fresh ones), routes them their
share, carries the plan on to its end, and then stops them; users see no error throughout.

The instances are a copy of backend.py in the test's tmp dir that answers every request after
a fixed 20 ms (`--delay-ms 20`), so canary and baseline have about the same p99 whatever the
machine's load and the ratio gate passes. The successor is a child of the first daemon, not of
this test: it is stopped by pid at the end, and every instance by pid too.
"""
import os
import re
import signal
import time

import pytest

from conftest import LOAD_GROUP, Procs, live_name
from progressive_util import report_json, wait_for
from test_baseline import (app_pids, baseline_pids, change, deploy, gate_steps, managed_daemon,
                           wait_ended)

PLANS = """plans:
  like:
    steps: [{weight: 25}, {pause: 12s}]
    analysis: {interval: 1s, min_requests: 30, max_p99_latency_ratio: 3, baseline: true}
"""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid, secs=10):
    """SIGTERM, then SIGKILL after secs: a process that is not this test's child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def progress(d):
    return (d.status().get("change") or {}).get("progress") or {}


@pytest.mark.xdist_group(LOAD_GROUP)
def test_baseline_is_adopted_by_the_successor_of_a_hot_upgrade(procs, tmp_path, daemon, wrk):
    d = managed_daemon(procs, tmp_path, daemon, args=("--delay-ms", "20"), plans=PLANS)
    successor = None
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        v1_pids = app_pids(d.app)
        assert len(v1_pids) == 2, v1_pids
        load = wrk(d.port, 60, conns=8)
        cid = deploy(d, "v2", "like")
        pids = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(baseline_pids(d)), 15,
                        "the baseline's instances")
        assert not set(pids) & set(v1_pids), (pids, v1_pids)
        wait_for(lambda: progress(d).get("step") == 2, 15, "the plan in its pause")
        assert progress(d)["baseline"]["share_percent"] == 25, progress(d)
        time.sleep(1.5)  # some windows judged by the first daemon

        r = d.cli("upgrade", timeout=20)
        assert r.returncode == 0, f"upgrade: exit {r.returncode}: {r.stdout}{r.stderr}"
        m = re.search(r"handed over to pid (\d+)", r.stdout)
        assert m, r.stdout
        successor = int(m.group(1))
        assert successor != d.pid and alive(successor)

        # The successor resumed the plan with the same baseline processes, routed as before.
        prog = wait_for(lambda: (lambda p: p if p.get("baseline") else None)(progress(d)), 15,
                        "the resumed plan's baseline")
        assert prog["step"] == 2 and prog["weight"] == 25, prog
        assert baseline_pids(d) == pids, "the successor did not adopt the baseline"
        assert prog["baseline"]["share_percent"] == 25, prog
        assert "v1+baseline" in d.log() and "instance adopted" in d.log(), d.log()[-3000:]
        assert set(pids) <= set(app_pids(d.app)), "the hand-over stopped the baseline"

        end = wait_ended(d, cid, 40)
        assert end["state"] == "completed", f"{end}\n{d.log()[-4000:]}"
        assert live_name(d.status()) == "v2"
        # The successor judged the canary against the baseline, in every judged step.
        steps = gate_steps(report_json(d, cid))
        assert steps, "no judged step in the record"
        for st in steps:
            assert st["gate"]["compared_with"] == "baseline", st
        assert steps[-1]["baseline"]["requests"] > 30, steps[-1]
        # It stops with the change: gone after the drain (1 s) and the stop.
        wait_for(lambda: not set(pids) & set(app_pids(d.app)), 15, "the baseline stopped")

        res = load.stop()
        assert res["requests"] > 1000, res["text"]
        assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
        # The first daemon drained and exited; only the successor serves.
        wait_for(lambda: not alive(d.pid), 10, "the first daemon exited")
    finally:
        if successor is not None:
            stop_pid(successor)
        if d.proc is not None:
            Procs.stop(d.proc)
        for pid in app_pids(d.app):
            stop_pid(pid, 3)


ABORTABLE = """plans:
  held:
    steps: [{weight: 25}, {pause: {}}]
    analysis: {interval: 1s, min_requests: 30, max_p99_latency_ratio: 3, baseline: true}
"""


def test_a_restart_stops_a_retiring_baseline_once(procs, tmp_path, daemon):
    # An aborted change's baseline waits out the drain before it stops; a daemon killed in that
    # wait leaves it recorded, and the next start stops it: once, by one adopter per process
    # (the leftovers' reaper), not a second time by the baseline's own reaper as well.
    d = managed_daemon(procs, tmp_path, daemon, args=(), plans=ABORTABLE, drain="3s")
    app = d.app
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        cid = deploy(d, "v2", "held")
        pids = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(baseline_pids(d)), 15,
                        "the baseline's instances")
        # Its output is where `cutover logs` finds it, under its own name.
        logs = d.cli("logs", "web", "v1+baseline", "-n", "1")
        assert logs.returncode == 0 and "v1+baseline-0.log" in logs.stdout and \
            "v1+baseline-1.log" in logs.stdout, f"{logs.stdout}{logs.stderr}"
        r = d.cli("abort", "web")
        assert r.returncode == 0, f"abort: {r.stdout}{r.stderr}"
        state = change(d, cid)["state"]
        d.kill9()  # within the baseline's drain (3 s): it still runs, still recorded
        assert state == "aborted", state
        assert set(pids) <= set(app_pids(app)), "the baseline stopped before its drain"
        d.start()
        wait_for(lambda: not set(pids) & set(app_pids(app)), 15, "the baseline stopped")
        time.sleep(0.5)
        log = d.log()
        reaped = [ln for ln in log.splitlines()
                  if "stopping an interrupted change's instance" in ln and "v1+baseline" in ln]
        assert len(reaped) == 2, "\n".join(reaped) or log[-3000:]
        assert live_name(d.status()) == "v1"
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        for pid in app_pids(app):
            stop_pid(pid, 3)


def slow_post(port, ms, out, i):
    """POST /slow?ms=MS on a connection of its own (not idempotent: never retried)."""
    import http.client
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        c.request("POST", f"/slow?ms={ms}", body=b"")
        r = c.getresponse()
        r.read()
        out[i] = r.status
        c.close()
    except Exception as e:  # noqa: BLE001 - any failure is what the test counts
        out[i] = type(e).__name__


def test_an_upgrade_just_after_the_end_lets_the_baseline_finish_its_requests(procs, tmp_path,
                                                                             daemon):
    # The change completes while slow requests are in flight on every version, and the daemon
    # is upgraded at once: the first daemon still drains them (drain_timeout 5 s), so the
    # baseline's processes must outlive that drain under the successor too, as the previous
    # version's do, instead of being stopped as an interrupted change's leftovers.
    import threading
    d = managed_daemon(procs, tmp_path, daemon, args=(), plans=ABORTABLE, drain="5s")
    app = d.app
    successor = None
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        cid = deploy(d, "v2", "held")
        wait_for(lambda: (lambda b: b and len(b.get("targets") or []) == 2 and
                          all(t["healthy"] for t in b["targets"]))(progress(d).get("baseline")),
                 15, "the baseline healthy")
        pids = baseline_pids(d)
        wait_for(lambda: progress(d).get("step") == 2, 15, "the plan in its pause")
        n = 40
        out = [None] * n
        threads = [threading.Thread(target=slow_post, args=(d.port, 3000, out, i))
                   for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # every request is at its version now
        r = d.cli("promote", "--all", "web")
        assert r.returncode == 0, f"promote: {r.stdout}{r.stderr}"
        r = d.cli("upgrade", timeout=20)
        assert r.returncode == 0, f"upgrade: exit {r.returncode}: {r.stdout}{r.stderr}"
        successor = int(re.search(r"handed over to pid (\d+)", r.stdout).group(1))
        for t in threads:
            t.join(30)
        assert change(d, cid)["state"] == "completed"
        assert out == [200] * n, out
        wait_for(lambda: not set(pids) & set(app_pids(app)), 15, "the baseline stopped")
    finally:
        if successor is not None:
            stop_pid(successor)
        if d.proc is not None:
            Procs.stop(d.proc)
        for pid in app_pids(app):
            stop_pid(pid, 3)
