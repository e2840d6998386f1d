"""A like-for-like baseline (issue 18, item 3), end to end: with `analysis: {baseline: true}` a
deploy starts fresh instances of the live version beside the new version's, gives them the
canary's share, and the ratio gate compares the canary with them instead of with the
long-running stable set; the baseline stops when the change ends, and a daemon killed with -9
adopts it with the plan it resumes.

The instances are a copy of backend.py in the test's tmp dir started with `--cold-ms 30
--cold-for 8`: during its first 8 s every answer of a process waits 30 ms more, like a cache that
warms up. So a new version of the same code looks slower than the warm stable set (the unfair
comparison a baseline removes), and only a version that is slower on its own (`--slow-version`)
is slower than a baseline of the same age.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BACKEND, LOAD_GROUP, Procs, free_ports, http_get, live_name, run_cli
from progressive_util import report_json, wait_for

COLD_FOR_S = 8
GATES = "interval: 1s, min_requests: 30, max_p99_latency_ratio: 1.5"
PLANS = f"""plans:
  plain:
    steps: [{{weight: 25}}, {{pause: 6s}}]
    analysis: {{{GATES}}}
  like:
    steps: [{{weight: 25}}, {{pause: 6s}}]
    analysis: {{{GATES}, baseline: true}}
  held:
    steps: [{{weight: 25}}, {{pause: {{}}}}]
    analysis: {{{GATES}, baseline: true}}
"""


COLD = ("--cold-ms", "30", "--cold-for", str(COLD_FOR_S))


def managed_daemon(procs, tmp_path, daemon, extra=(), top="", patch="", run_extra="", args=COLD,
                   plans=PLANS, drain="1s"):
    """A daemon whose service `web` runs 2 instances of the backend copy per version, started
    with `args` and `extra` (with `patch` inserted before its main()), and `plans`."""
    app = tmp_path / "app.py"
    src = BACKEND.read_text()
    assert "\ndef main():" in src
    app.write_text(src.replace("\ndef main():", patch + "\ndef main():", 1))
    lo = free_ports(61)
    cmd = [sys.executable, str(app), "${PORT}", "${VERSION}", *args, *extra]
    run = ("    run:\n"
           f"      command: [{', '.join(json.dumps(c) for c in cmd)}]\n"
           "      instances: 2\n"
           f"      port_range: {lo}-{lo + 60}\n"
           "      stop_timeout: 3s\n" + run_extra)
    d = daemon([], service_extra=run, top_extra=top + plans, drain_timeout=drain,
               deploy_timeout="10s")
    d.app = app
    return d


def app_pids(app):
    """Live processes running this test's backend copy."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if str(app).encode() in argv:
            out.append(int(p))
    return sorted(out)


def kill_all(app):
    for pid in app_pids(app):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def deploy(d, version, plan=None):
    args = ["deploy", "web", version] + (["--plan", plan] if plan else [])
    r = d.cli(*args, timeout=40)
    assert r.returncode == 0, f"deploy {version}: exit {r.returncode}: {r.stdout}{r.stderr}\n" \
                              f"{d.log()[-3000:]}"
    return d.history()[0]["id"]


def change(d, cid):
    return next(c for c in d.history() if c["id"] == cid)


def wait_ended(d, cid, secs):
    return wait_for(lambda: (lambda c: c if c["state"] != "running" else None)(change(d, cid)),
                    secs, f"change {cid} ended")


def detail_of(rep):
    """The change record's detail in `cutover report --format json`."""
    return (rep.get("change") or {}).get("detail") or {}


def gate_steps(rep):
    """The steps of the report's change record that carry a gate verdict."""
    steps = detail_of(rep).get("steps") or []
    return [s for s in steps if isinstance(s, dict) and "gate" in s]


def baseline_pids(d):
    prog = ((d.status().get("change") or {}).get("progress") or {})
    b = prog.get("baseline") or {}
    return sorted(i["pid"] for i in b.get("instances") or [])


@pytest.mark.xdist_group(LOAD_GROUP)
def test_baseline_judges_a_new_version_against_fresh_instances_of_the_live_one(
        procs, tmp_path, daemon, wrk):
    d = managed_daemon(procs, tmp_path, daemon, extra=("--slow-version", "v4:40"))
    try:
        d.start()
        t_v1 = time.monotonic()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        load = wrk(d.port, 90, conns=8)
        # v1 warms up: from here on it answers at once, a new process does not.
        time.sleep(max(0.0, COLD_FOR_S + 0.5 - (time.monotonic() - t_v1)))

        # 1. Against the warm stable set, the same code freshly started fails the ratio gate.
        c2 = deploy(d, "v2", "plain")
        end2 = wait_ended(d, c2, 30)
        assert end2["state"] == "rolled_back", end2
        rep2 = report_json(d, c2)
        failure = detail_of(rep2).get("failure") or {}
        assert failure.get("gate") == "max_p99_latency_ratio", json.dumps(rep2)[:3000]
        assert failure.get("compared_with") == "stable", failure
        assert "stable's" in failure.get("detail", ""), failure

        # 2. Against a baseline of v1 as fresh as the canary, it passes and goes live.
        c3 = deploy(d, "v3", "like")
        pids = wait_for(lambda: baseline_pids(d), 15, "the baseline's instances")
        assert len(pids) == 2, pids
        end3 = wait_ended(d, c3, 40)
        assert end3["state"] == "completed", f"{end3}\n{d.log()[-4000:]}"
        rep3 = report_json(d, c3)
        judged = gate_steps(rep3)
        assert judged, json.dumps(rep3)[:3000]
        for st in judged:
            assert st["gate"]["compared_with"] == "baseline", st
        step = judged[-1]
        # The baseline had the canary's share: about as many requests (25 % each).
        b, c = step["baseline"]["requests"], step["canary"]["requests"]
        assert b > 30 and c > 30 and 0.6 < b / c < 1.6, step
        assert live_name(d.status()) == "v3"
        md = d.cli("report", str(c3), "--format", "md")
        assert md.returncode == 0 and "| baseline |" in md.stdout, md.stdout[-3000:]
        # It stops with the change: its processes are gone after the drain (1 s) and stop.
        wait_for(lambda: not set(pids) & set(app_pids(d.app)), 15, "the baseline stopped")

        # 3. A version slower on its own still fails against a baseline of the same age.
        c4 = deploy(d, "v4", "like")
        end4 = wait_ended(d, c4, 30)
        assert end4["state"] == "rolled_back", end4
        failure = detail_of(report_json(d, c4)).get("failure") or {}
        assert failure.get("gate") == "max_p99_latency_ratio", failure
        assert failure.get("compared_with") == "baseline", failure
        assert "baseline's" in failure.get("detail", ""), failure
        assert live_name(d.status()) == "v3"

        res = load.stop()
        assert res["requests"] > 1000, res["text"]
        assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
        m = d.cli("status", "web", "--json")
        assert m.returncode == 0
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)


def test_baseline_is_adopted_after_kill9_and_stops_with_an_abort(procs, tmp_path, daemon):
    d = managed_daemon(procs, tmp_path, daemon)
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        cid = deploy(d, "v2", "held")
        pids = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(baseline_pids(d)), 15,
                        "the baseline's instances")
        prog = wait_for(lambda: (lambda p: p if all(t["healthy"] for t in p["baseline"]["targets"])
                                 else None)(d.status()["change"]["progress"]), 15,
                        "the baseline healthy")
        assert prog["baseline"]["name"] == "v1" and prog["baseline"]["share_percent"] == 25, prog
        text = d.cli("status", "web").stdout
        assert "baseline: 25% to fresh instances of v1 (2, 2 healthy)" in text, text
        plan = d.cli("plan", "web", "v3", "--plan", "held").stdout
        assert "2 fresh ones of v1 as its baseline" in plan, plan
        # The metrics name it by its role.
        code, metrics = d.api("GET", "/metrics")
        assert code == 200 and \
            'cutover_version_info{service="web",version="v1",role="baseline"} 1' in metrics, \
            metrics[:2000]
        d.kill9()
        assert set(pids) <= set(app_pids(d.app)), "kill -9 of the daemon stopped the baseline"
        d.start()
        prog = wait_for(lambda: d.status()["change"]["progress"], 15, "the resumed plan")
        assert baseline_pids(d) == pids, "the restarted daemon did not adopt the baseline"
        assert "instance adopted" in d.log() and "v1+baseline" in d.log(), d.log()[-3000:]
        from conftest import BIN
        w = procs.start([BIN, "watch", "web", "--until-done", "-c", d.cfg], name="watch")
        wait_for(lambda: "baseline 25% (v1)" in w.log_path.read_text(), 10, "watch's line")
        r = d.cli("abort", "web")
        assert r.returncode == 0, f"abort: {r.stdout}{r.stderr}"
        assert wait_ended(d, cid, 15)["state"] == "aborted"
        assert w.wait(10) == 1 and "ended: aborted" in w.log_path.read_text()  # not completed
        wait_for(lambda: not set(pids) & set(app_pids(d.app)), 15, "the baseline stopped")
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)


@pytest.mark.xdist_group(LOAD_GROUP)  # a browser: not beside other loads
def test_dashboard_shows_the_baseline_and_its_share(procs, tmp_path, daemon):
    from test_admin_tcp import LEAD, write_tokens
    repo = Path(__file__).resolve().parents[2]
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), f"{chromium} missing: run scripts/deps.sh"
    shots = repo / "build" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    write_tokens(tmp_path)
    admin = free_ports(1)
    d = managed_daemon(procs, tmp_path, daemon,
                       top=f"admin: {{listen: 127.0.0.1:{admin}, tokens_file: tokens.yml}}\n")
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        deploy(d, "v2", "held")
        wait_for(lambda: all(t["healthy"] for t in
                             d.status()["change"]["progress"]["baseline"]["targets"]), 15,
                 "the baseline healthy")
        r = subprocess.run(["node", str(repo / "tests/browser/baseline.test.js"),
                            f"http://127.0.0.1:{admin}/", LEAD, str(shots)],
                           env=dict(os.environ, CHROMIUM=chromium), capture_output=True,
                           text=True, timeout=60, cwd=repo)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"the browser printed nothing: exit {r.returncode}\n{r.stdout}{r.stderr}"
        res = json.loads(lines[-1])
        assert r.returncode == 0 and res["ok"], (res, r.stderr[-2000:])
        assert res["widths"] == {"live": "50%", "baseline": "25%", "new": "25%"}, res
        assert "baseline: 25% to fresh instances of v1 (2, 2 healthy)" in res["note"], res
        assert "v1 baseline 25%" in res["title"], res
        assert (shots / "baseline.png").stat().st_size > 10000
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)


# New processes of v1 exit at once while the flag file exists: once v1 serves, only its baseline
# starts new ones, so only the baseline crashes (in a loop).
CRASH_PATCH = '''
import os as _os
if VERSION == "v1" and _os.path.exists(_os.path.join(_os.path.dirname(__file__), "crash-v1")):
    sys.exit(3)
'''


def test_a_crashing_baseline_sends_its_users_to_the_live_set_and_the_change_goes_on(
        procs, tmp_path, daemon):
    d = managed_daemon(procs, tmp_path, daemon, patch=CRASH_PATCH)
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        (tmp_path / "crash-v1").write_text("")
        cid = deploy(d, "v2", "held")
        wait_for(lambda: (d.status()["change"] or {}).get("progress", {}).get("step") == 2, 15,
                 "the plan at its pause")
        # Users meanwhile: every answer from v1 (live) or v2, none an error.
        seen = {}
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            r = http_get(d.port, "/", timeout=5)
            seen[r[0]] = seen.get(r[0], 0) + 1
        assert set(seen) == {200}, seen
        ch = change(d, cid)
        assert ch["state"] == "running", ch
        b = d.status()["change"]["progress"]["baseline"]
        assert not any(t["healthy"] for t in b["targets"]), b
        assert "crash" in d.log() or "exited" in d.log()
        r = d.cli("abort", "web")
        assert r.returncode == 0, r.stdout + r.stderr
        assert wait_ended(d, cid, 15)["state"] == "aborted"
        assert live_name(d.status()) == "v1"
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)


def test_a_scheduled_deploy_waits_for_an_earlier_changes_processes_to_stop(procs, tmp_path,
                                                                          daemon):
    # v1's processes are kept 4 s after the switch to v2 (rollback_window): a deploy of v1 at
    # +1 s finds them still running and is tried again each second until they stopped, instead
    # of failing for good at its time.
    d = managed_daemon(procs, tmp_path, daemon, run_extra="      rollback_window: 4s\n")
    try:
        d.start()
        deploy(d, "v1")
        wait_for(lambda: live_name(d.status()) == "v1", 15, "v1 live")
        deploy(d, "v2")
        wait_for(lambda: live_name(d.status()) == "v2", 15, "v2 live")
        r = d.cli("deploy", "web", "v1", "--at", "+1s")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: "scheduled deploy waits" in d.log(), 10, "the start retried")
        assert "still running or stopping" in d.log()
        wait_for(lambda: live_name(d.status()) == "v1", 20, "v1 live again")
        ch = d.history()[0]
        assert ch["to"] == "v1" and ch["state"] == "completed", ch
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)


BAD = {
    "baseline without the ratio gate": (
        "plans:\n  p:\n    steps: [{weight: 10}]\n"
        "    analysis: {max_error_rate: 0.1, baseline: true}\n", "", "baseline: true",
        "max_p99_latency_ratio"),
    "baseline not a boolean": (
        "plans:\n  p:\n    steps: [{weight: 10}]\n"
        "    analysis: {max_p99_latency_ratio: 2, baseline: maybe}\n", "", "baseline: maybe",
        "analysis.baseline"),
    "baseline on a service without run": (
        "plans:\n  p:\n    steps: [{weight: 10}]\n"
        "    analysis: {max_p99_latency_ratio: 2, baseline: true}\n", "    plan: p\n",
        "plan: p", "run:"),
    "baseline on a rolling service": (
        "plans:\n  p:\n    steps: [{weight: 10}]\n"
        "    analysis: {max_p99_latency_ratio: 2, baseline: true}\n",
        "    run: {command: [./app, '${PORT}'], instances: 2}\n    strategy: {type: rolling}\n"
        "    plan: p\n", "plan: p", "rolling"),
}


def test_bad_baseline_configs_and_deploys_are_refused(procs, tmp_path, daemon, backend):
    from conftest import write_config
    for name, (top, svc, marker, word) in BAD.items():
        cfg = write_config(tmp_path / f"bad-{len(word)}-{len(marker)}.yml", 1, ["127.0.0.1:1"],
                           tmp_path / "var-bad", top_extra=top, service_extra=svc)
        line = next(i for i, ln in enumerate(cfg.read_text().splitlines(), 1) if marker in ln)
        r = run_cli("check", "-c", cfg)
        msg = r.stdout + r.stderr
        assert r.returncode == 2, f"{name}: check exit {r.returncode}: {msg}"
        assert f"{cfg.name}:{line}" in msg and word in msg, f"{name}: {msg}"

    # The live version is not run by cutover (deployed with --target): no baseline of it can
    # be started, and the deploy is refused before anything starts or is recorded.
    v1 = backend("v1")
    d = managed_daemon(procs, tmp_path, daemon)
    try:
        d.start()
        r = d.cli("deploy", "web", "v1", "--target", v1.addr, "--wait")
        assert r.returncode == 0, f"deploy --target: {r.stdout}{r.stderr}"
        before = d.history()
        r = d.cli("deploy", "web", "v2", "--plan", "like")
        assert r.returncode != 0, f"deploy: {r.stdout}{r.stderr}"
        assert "does not run" in r.stderr and "v1" in r.stderr, r.stderr
        assert d.history() == before
        assert app_pids(d.app) == [], "a refused deploy left instances running"
    finally:
        if d.proc is not None:
            Procs.stop(d.proc)
        kill_all(d.app)
