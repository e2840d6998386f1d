"""Progressive delivery, end to end: plans with weights, sticky clients, pilots, tests,
approvals, analysis gates and automatic rollback, through the real daemon, the real CLI,
scripted backends (backend.py, or progressive_util.py's wrapper of it that fails a share of
its answers) and wrk on loopback.

Figures measured here (weight share, rollback time, false-positive rate) are printed: run with
`-s` to see them.
"""
import http.client
import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from conftest import body_of, free_port, live_name, run_cli, wait_body, wait_port, write_config
from progressive_util import (Client, ErrBackend, change_of, progress_of, report_json,
                              split_users, start_wrk_users, user_requests, wait_for, wrk_result)

STICKY_HEADER = "    sticky: {header: X-User-Id}\n"


def plans(**named):
    """plans(name="steps: [...]\\nanalysis: {...}") -> the top-level `plans:` YAML text."""
    out = "plans:\n"
    for name, body in named.items():
        out += f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())
    return out


def deploy(d, version, target, plan, *extra, timeout=30):
    return d.cli("deploy", "web", version, "--target", target, "--plan", plan, *extra,
                 timeout=timeout)


def deploy_ok(d, version, target, plan):
    r = deploy(d, version, target, plan)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}\n{d.log()[-3000:]}"
    return change_of(d)


def wait_step(d, step, weight=None, secs=10):
    """Waits until the running change is at 1-based `step` (and `weight`); -> progress."""
    def at():
        p = progress_of(d)
        if p.get("step") == step and (weight is None or p.get("weight") == weight):
            return p
        return None
    return wait_for(at, secs, f"change at step {step} weight {weight}")


def last_change(d):
    return d.history()[0]


def wait_ended(d, secs=10):
    def ended():
        c = last_change(d)
        return c if c["state"] != "running" else None
    return wait_for(ended, secs, "the change ended")


def share(split, version="v2"):
    return sum(1 for v in split.values() if v == version) / len(split)


# 1 ---------------------------------------------------------------------------------------

def test_weight_share_is_accurate_and_sticky_users_never_go_back(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(
        steps="steps: [{weight: 10}, {pause: {}}, {weight: 50}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "steps")
    wait_step(d, 2, weight=10)

    # 5,000 distinct users at weight 10.
    split = split_users(d.port, [f"user-{i}" for i in range(5000)])
    assert set(split.values()) <= {"v1", "v2"}, Counter(split.values())
    s10 = share(split)
    print(f"\nweight 10: share of v2 over 5000 distinct users = {s10:.2%}")
    assert 0.08 <= s10 <= 0.12, f"weight 10 gave a share of {s10:.2%}"
    # The same users asked again land where they landed before.
    again = split_users(d.port, [f"user-{i}" for i in range(2000)])
    moved = [u for u in again if again[u] != split[u]]
    assert not moved, f"{len(moved)} users changed version at a constant weight: {moved[:5]}"

    # 10 -> 50: nobody on v2 goes back to v1.
    at10 = {u: split[u] for u in again}
    r = d.cli("promote", "web")
    assert r.returncode == 0, f"promote exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_step(d, 4, weight=50)
    at50 = split_users(d.port, list(at10))
    back = [u for u in at10 if at10[u] == "v2" and at50[u] != "v2"]
    assert not back, f"{len(back)} users went back from v2 to v1 at 10 -> 50: {back[:5]}"
    s50 = share(at50)
    print(f"weight 50: share of v2 over 2000 users = {s50:.2%}")
    assert 0.45 <= s50 <= 0.55, f"weight 50 gave a share of {s50:.2%}"

    # 50 -> 100: everyone on v2, the change completes.
    r = d.cli("promote", "web")
    assert r.returncode == 0, f"promote exit {r.returncode}: {r.stdout}{r.stderr}"
    c = wait_ended(d)
    assert c["id"] == ch["id"] and c["state"] == "completed", c
    at100 = split_users(d.port, list(at10))
    assert set(at100.values()) == {"v2"}, Counter(at100.values())
    assert live_name(d.status()) == "v2"


# 2 ---------------------------------------------------------------------------------------

def test_sticky_cookie_is_set_and_keeps_the_version(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra="    sticky: {cookie: cid}\n", top_extra=plans(
        half="steps: [{weight: 50}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    deploy_ok(d, "v2", v2.addr, "half")
    wait_step(d, 2, weight=50)
    seen = Counter()
    for user in range(20):
        c = Client(d.port)
        try:
            st, body, _, raw = c.get("/")
            assert st == 200, (st, body)
            cookies = [v for k, v in raw if k.lower() == "set-cookie"]
            cid = [v.split(";")[0] for v in cookies if v.strip().startswith("cid=")]
            assert len(cid) == 1, f"no (or more than one) Set-Cookie cid=... without a cookie: {raw}"
            value = cid[0][len("cid="):]
            assert value, f"empty cookie value: {cookies}"
            first = body.strip()
            got = []
            for _ in range(20):
                st, body, hdrs, raw = c.get("/", {"Cookie": f"other=1; {cid[0]}"})
                assert st == 200, (st, body)
                got.append(body.strip())
                reset = [v for k, v in raw if k.lower() == "set-cookie" and
                         v.strip().startswith("cid=") and v.split(";")[0] != cid[0]]
                assert not reset, f"the cookie was replaced although it was sent: {reset}"
            assert set(got) == {got[0]}, f"user {user} (cid={value}) flipped versions: {got}"
            assert got[0] == first, \
                f"user {user} (cid={value}): first answer {first} (cookie set), then {got[0]}"
            seen[got[0]] += 1
        finally:
            c.close()
    print(f"\nsticky cookie at weight 50, 20 new users: {dict(seen)}")
    assert set(seen) == {"v1", "v2"}, f"at weight 50, 20 new users all landed on {seen}"


# 3 ---------------------------------------------------------------------------------------

def test_pilot_routing_is_exact_for_header_and_cookie(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(
        ph='steps: [{pilot: {header: "X-Cohort: pilot", duration: 60s}}, {weight: 100}]',
        pc='steps: [{pilot: {cookie: "cohort=pilot", duration: 60s}}, {weight: 100}]'))
    d.start(expect="v1\n")
    deploy_ok(d, "v2", v2.addr, "ph")
    p = wait_step(d, 1)
    assert p.get("pilot") is True, p
    v2.clear()
    c = Client(d.port)
    with_h = Counter(c.version({"X-Cohort": "pilot"}) for _ in range(200))
    without = Counter(c.version() for _ in range(200))
    other = Counter(c.version({"X-Cohort": "pilots"}) for _ in range(50))
    c.close()
    assert with_h == {"v2": 200}, f"with X-Cohort: pilot: {with_h}"
    assert without == {"v1": 200}, f"without the header: {without}"
    assert other == {"v1": 50}, f"with X-Cohort: pilots: {other}"
    got = user_requests(v2)
    assert len(got) == 200 and all(
        ["X-Cohort", "pilot"] in r["headers"] for r in got), f"v2 saw {len(got)} requests"

    r = d.cli("abort", "web")
    assert r.returncode == 0, f"abort exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v1\n", secs=5)

    deploy_ok(d, "v2", v2.addr, "pc")
    wait_step(d, 1)
    c = Client(d.port)
    cases = {"cohort=pilot": "v2", "a=1; cohort=pilot": "v2", "cohort=pilot; b=2": "v2",
             "cohort=other": "v1", "xcohort=pilot": "v1", None: "v1"}
    for cookie, want in cases.items():
        hdrs = {"Cookie": cookie} if cookie else {}
        got = Counter(c.version(hdrs) for _ in range(100 if cookie in ("cohort=pilot", None)
                                                      else 20))
        assert set(got) == {want}, f"Cookie {cookie!r}: {got}, want all {want}"
    c.close()
    r = d.cli("abort", "web")
    assert r.returncode == 0


# 4 ---------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_bad_version_is_rolled_back_quickly_and_clients_see_only_its_errors(procs, backend,
                                                                          daemon, tmp_path):
    v1 = backend("v1")
    v3 = ErrBackend(procs, "v3", error_rate=0.3)
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(canary="""
steps: [{weight: 50}, {pause: 30s}, {weight: 100}]
analysis: {interval: 1s, min_requests: 50, max_error_rate: 0.05}
on_failure: rollback"""))
    d.start(expect="v1\n")
    load = start_wrk_users(procs, tmp_path, d.port, 12)
    time.sleep(1.5)
    t0 = time.monotonic()
    r = deploy(d, "v3", v3.addr, "canary", "--wait", timeout=30)
    took = time.monotonic() - t0
    print(f"\nbad version: deploy --wait exit {r.returncode} after {took:.2f}s\n{r.stdout}{r.stderr}")
    assert r.returncode == 1, f"deploy --wait exit {r.returncode}, want 1: {r.stdout}{r.stderr}"
    assert took <= 5, f"rolled back only after {took:.1f}s (interval 1s)"
    assert (r.stdout + r.stderr).strip(), "a rolled back deploy must say why"
    # Traffic is back on v1 at once.
    c = Client(d.port)
    after = Counter(c.version({"X-User-Id": f"after-{i}"}) for i in range(200))
    c.close()
    assert after == {"v1": 200}, f"after the rollback: {after}"
    assert load.poll() is None, "the load ended before the rollback: make it longer"
    res = wrk_result(load, 12)

    sent = v3.errors_sent()
    print(f"wrk: {res['requests']} requests, {res['non2xx']} non-2xx, "
          f"{res['socket_errors']} socket errors; v3 sent {sent} 500s")
    # No error to clients that v3 did not send itself: no socket error, and as many non-2xx as
    # v3 sent 500s (none from v1, none made by cutover).
    assert res["socket_errors"] == 0, res["text"]
    assert res["non2xx"] > 0, res["text"]
    assert res["non2xx"] == sent, \
        f"clients saw {res['non2xx']} non-2xx, v3 sent {sent} 500s: only v3's 500s may reach them"

    ch = last_change(d)
    assert ch["to"] == "v3" and ch["state"] in ("rolled_back", "failed"), ch
    rep = report_json(d, ch["id"])
    assert rep.get("report_version") == 1, rep
    det = rep["change"]["detail"]
    fail = det.get("failure") or {}
    print(f"failure: {json.dumps(fail)}")
    assert fail.get("gate") == "max_error_rate", f"failure: {fail}"
    assert fail.get("detail"), fail
    # The failure names the step it happened in: step 2 (1-based), the 30 s pause.
    assert fail.get("step") == 2, fail
    steps = det["steps"]
    rec = next((s for s in steps if s.get("index") == 1), None)
    assert rec is not None and rec.get("kind") == "pause", steps
    # That step's record is complete: start, end, outcome, figures per version.
    assert rec.get("ended") and rec.get("outcome") not in (None, "done", "passed"), \
        f"the failed step's record has no end or outcome: {rec}"
    assert "canary" in rec and "stable" in rec, f"the failed step's record has no figures: {rec}"
    cut_err = sum(s.get(side, {}).get("cutover_errors", 0) for s in steps
                  for side in ("stable", "canary"))
    stable_5xx = sum(s.get("stable", {}).get("errors_5xx", 0) for s in steps)
    canary_5xx = sum(s.get("canary", {}).get("errors_5xx", 0) for s in steps)
    canary_req = sum(s.get("canary", {}).get("requests", 0) for s in steps)
    print(f"report: canary {canary_req} requests {canary_5xx} 5xx, stable 5xx {stable_5xx}, "
          f"cutover errors {cut_err}")
    assert cut_err == 0, f"cutover itself failed {cut_err} requests: {steps}"
    assert stable_5xx == 0, steps
    assert canary_req >= 50, f"the report counts only {canary_req} requests on v3"
    assert 0 < canary_5xx <= sent, f"the report counts {canary_5xx} 5xx, v3 sent {sent}"


# 5 ---------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_good_version_is_not_rolled_back_in_20_runs(procs, daemon, tmp_path):
    a = ErrBackend(procs, "a", error_rate=0.01)
    b = ErrBackend(procs, "b", error_rate=0.01)
    d = daemon([a], service_extra=STICKY_HEADER, top_extra=plans(good="""
steps: [{weight: 50}, {pause: 3s}, {weight: 100}]
analysis: {interval: 1s, min_requests: 50, max_error_rate: 0.05}
on_failure: rollback"""))
    d.start(expect="a\n")
    load = start_wrk_users(procs, tmp_path, d.port, 120)
    time.sleep(1)
    outcomes = []
    t_all = time.monotonic()
    for i in range(20):
        target = b if i % 2 == 0 else a
        t0 = time.monotonic()
        try:
            r = deploy(d, f"good{i}", target.addr, "good", "--wait", timeout=20)
            rc, out = r.returncode, (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            rc, out = "timeout", f"deploy --wait still running after 20 s: {change_of(d)}"
        took = time.monotonic() - t0
        outcomes.append((i, rc, round(took, 1), out))
        if rc != 0:
            print(f"\nrun {i}: {outcomes[-1]}\nreport: "
                  f"{json.dumps(report_json(d, last_change(d)['id'])['change'].get('detail'))}"
                  f"\nlog: {d.log()[-2000:]}")
            # Still running (e.g. holding as inconclusive)? Don't let it block the next run.
            if change_of(d):
                d.cli("abort", "web")
        assert time.monotonic() - t_all < 150, f"20 runs take too long: {outcomes}"
    load.send_signal(signal.SIGINT)
    res = wrk_result(load, 5)
    fp = [o for o in outcomes if o[1] != 0]
    print(f"\ngood version, 20 runs in {time.monotonic() - t_all:.0f}s: "
          f"{len(fp)} rolled back/failed -> false-positive rate {len(fp) / 20:.0%}; "
          f"times {[o[2] for o in outcomes]}; wrk {res['requests']} requests, "
          f"{res['non2xx']} non-2xx ({res['non2xx'] / max(res['requests'], 1):.2%}), "
          f"{res['socket_errors']} socket errors")
    assert not fp, f"a good version was not completed: {fp}"
    assert res["socket_errors"] == 0, res["text"]
    # Only the backends' own 1 % noise.
    assert res["non2xx"] <= 0.02 * res["requests"], res["text"]


# 6 ---------------------------------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_failing_test_step_stops_before_any_user_reaches_new_version(procs, backend, daemon,
                                                                   tmp_path):
    script = tmp_path / "smoke.sh"
    script.write_text('#!/bin/sh\necho "smoke test against $CUTOVER_TARGET_URL for '
                      '$CUTOVER_SERVICE $CUTOVER_VERSION"\necho "SMOKE-FAILED-7f3a: '
                      'login page missing" >&2\nexit 3\n')
    script.chmod(0o755)
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(tested=f"""
steps: [{{test: {{command: [{script}], timeout: 10s}}}}, {{weight: 50}}, {{weight: 100}}]"""))
    d.start(expect="v1\n")
    load = start_wrk_users(procs, tmp_path, d.port, 6, conns=4)
    time.sleep(1)
    r = deploy(d, "v2", v2.addr, "tested", "--wait", timeout=30)
    assert r.returncode == 1, f"deploy --wait exit {r.returncode}, want 1: {r.stdout}{r.stderr}"
    ch = last_change(d)
    assert ch["to"] == "v2" and ch["state"] == "failed", ch
    res = wrk_result(load, 6)
    assert res["requests"] > 100 and res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert user_requests(v2) == [], f"user requests reached v2: {user_requests(v2)[:3]}"
    assert body_of(d.port) == "v1\n"
    assert not change_of(d)
    rep = report_json(d, ch["id"])
    text = json.dumps(rep)
    assert "SMOKE-FAILED-7f3a" in text, f"the test's output is not in the report: {text[:3000]}"
    assert "smoke test against http" in text, f"stdout / CUTOVER_TARGET_URL missing: {text[:3000]}"
    det = rep["change"]["detail"]
    assert det.get("tests") and det["tests"][0].get("passed") is False, det.get("tests")
    rec = det["steps"][0]
    assert rec.get("kind") == "test" and rec.get("outcome") == "failed" and rec.get("ended"), \
        f"the test step's record: {rec}"
    md = d.cli("report", str(ch["id"]), "--format", "md")
    assert md.returncode == 0 and "SMOKE-FAILED-7f3a" in md.stdout, md.stdout[:3000]


def test_passing_test_step_runs_against_new_version_then_proceeds(backend, daemon, tmp_path):
    # The counterpart of the failing test: the command runs with the new version's URL in its
    # environment, can reach it, and the plan goes on.
    out = tmp_path / "smoke.out"
    script = tmp_path / "smoke-ok.sh"
    script.write_text(f'#!/bin/sh\necho "url=$CUTOVER_TARGET_URL service=$CUTOVER_SERVICE '
                      f'version=$CUTOVER_VERSION" > {out}\n'
                      f'curl -s -m 5 "$CUTOVER_TARGET_URL/smoke" >> {out}\n'
                      f'echo SMOKE-OK-5c1e\n')
    script.chmod(0o755)
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(tested=f"""
steps: [{{test: {{command: [{script}], timeout: 10s}}}}, {{weight: 100}}]"""))
    d.start(expect="v1\n")
    r = deploy(d, "v2", v2.addr, "tested", "--wait", timeout=30)
    assert r.returncode == 0, f"deploy --wait exit {r.returncode}: {r.stdout}{r.stderr}\n" \
        f"{json.dumps(report_json(d, last_change(d)['id'])['change']['detail'].get('tests'))}"
    text = out.read_text()
    assert "service=web version=v2" in text and "url=http://127.0.0.1:" in text, text
    assert text.strip().endswith("v2"), f"the test did not reach v2: {text}"
    assert [r["line"] for r in user_requests(v2)] == ["GET /smoke HTTP/1.1"], user_requests(v2)
    tests = report_json(d, last_change(d)["id"])["change"]["detail"].get("tests")
    assert tests and tests[0].get("passed") is True and "SMOKE-OK-5c1e" in tests[0]["output"], tests
    wait_body(d.port, "v2\n", secs=5)


# 7 ---------------------------------------------------------------------------------------

def test_approval_needs_two_distinct_listed_approvers(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(appr="""
steps: [{weight: 10}, {approval: {approvers: [alice, bob], count: 2}}, {weight: 100}]"""))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "appr")
    cid = str(ch["id"])
    wait_step(d, 2, weight=10)

    def still_waiting(why):
        time.sleep(0.3)
        p = progress_of(d)
        assert p.get("step") == 2 and p.get("weight") == 10 and \
            change_of(d)["state"] == "running", f"after {why}: {p}"

    r = d.cli("approve", cid, "--as", "alice")
    assert r.returncode == 0, f"alice's approval: exit {r.returncode} {r.stdout}{r.stderr}"
    still_waiting("one approval")
    r = d.cli("approve", cid, "--as", "alice")
    assert r.returncode != 0 and r.stderr.strip(), \
        f"alice approving twice: exit {r.returncode} {r.stdout}{r.stderr}"
    still_waiting("alice twice")
    r = d.cli("approve", cid, "--as", "mallory")
    assert r.returncode != 0 and r.stderr.strip(), \
        f"mallory (not an approver): exit {r.returncode} {r.stdout}{r.stderr}"
    still_waiting("mallory")
    d.cli("promote", "--all", "web")
    still_waiting("promote --all")
    r = d.cli("approve", cid, "--as", "bob")
    assert r.returncode == 0, f"bob's approval: exit {r.returncode} {r.stdout}{r.stderr}"
    c = wait_ended(d)
    assert c["state"] == "completed", c
    assert live_name(d.status()) == "v2"
    assert set(split_users(d.port, [f"u{i}" for i in range(100)]).values()) == {"v2"}
    log = report_json(d, cid)["change"]["detail"].get("approval_log")
    text = json.dumps(log)
    assert "alice" in text and "bob" in text, log


# 8 ---------------------------------------------------------------------------------------

def test_kill9_mid_rollout_resumes_step_split_and_sticky_assignment(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(p30="""
steps: [{weight: 30}, {pause: 60s}, {weight: 100}]"""))
    d.start(expect="v1\n")
    deploy_ok(d, "v2", v2.addr, "p30")
    wait_step(d, 2, weight=30)
    t_step = time.monotonic()
    users = [f"k9-{i}" for i in range(1000)]
    before = split_users(d.port, users)
    s = share(before)
    print(f"\nweight 30 before kill -9: share {s:.2%}")
    assert 0.26 <= s <= 0.34, s
    p1 = progress_of(d)
    left1 = p1.get("step_remaining_ms")
    assert isinstance(left1, int) and 0 < left1 <= 60000, p1

    # Users keep asking through the crash and the restart.
    seen, stop = [], threading.Event()

    def users_loop():
        i = 0
        while not stop.is_set():
            u = users[i % len(users)]
            i += 1
            try:
                st, body, _ = http_get_user(d.port, u)
                seen.append((u, st, body))
            except (OSError, http.client.HTTPException):
                seen.append((u, None, None))
                time.sleep(0.01)

    t = threading.Thread(target=users_loop)
    t.start()
    try:
        # Killed 2 s into the pause (a kill in its first second: the next test).
        time.sleep(max(0.5, t_step + 2 - time.monotonic()))
        d.kill9()
        t_kill = time.monotonic()
        time.sleep(0.5)
        d.start()
        wait_for(lambda: progress_of(d).get("step") == 2, 10, "the plan back at step 2",
                 tolerate=True)
        time.sleep(1.5)
    finally:
        stop.set()
        t.join(10)
    p2 = progress_of(d)
    left2 = p2.get("step_remaining_ms")
    print(f"remaining pause: {left1} ms before, {left2} ms after restart "
          f"({time.monotonic() - t_kill:.1f}s after the kill)")
    assert change_of(d)["state"] == "running", change_of(d)
    assert p2.get("step") == 2 and p2.get("weight") == 30, p2
    assert isinstance(left2, int) and 0 < left2 < left1, (left1, left2)
    assert left2 > left1 - 30000, f"pause timer jumped: {left1} -> {left2}"
    after = split_users(d.port, users)
    moved = {u: (before[u], after[u]) for u in users if before[u] != after[u]}
    assert not moved, f"{len(moved)} users changed version across the restart: " \
                      f"{list(moved.items())[:5]}"
    wrong = [(u, st, b) for u, st, b in seen if st == 200 and b.strip() != before[u]]
    answered = [x for x in seen if x[1] is not None]
    not200 = Counter(x[1] for x in answered if x[1] != 200)
    print(f"during the restart window: {len(seen)} requests, {len(answered)} answered, "
          f"{len(seen) - len(answered)} not connected, non-200: {dict(not200)}")
    assert not wrong, f"{len(wrong)} answers from an unexpected version: {wrong[:5]}"
    assert not not200, f"answers other than 200 around the restart: {not200}"


def test_kill9_in_the_first_second_of_a_timed_pause_keeps_the_pause(backend, daemon):
    # The same, killed at once after the pause began (before any periodic save of the timer).
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(p30="""
steps: [{weight: 30}, {pause: 60s}, {weight: 100}]"""))
    d.start(expect="v1\n")
    deploy_ok(d, "v2", v2.addr, "p30")
    p1 = wait_step(d, 2, weight=30)
    d.kill9()
    d.start()
    time.sleep(0.5)
    wait_for(lambda: d.status(), 5, "status after the restart", tolerate=True)
    ch = change_of(d)
    p2 = progress_of(d)
    print(f"\nkilled with {p1.get('step_remaining_ms')} ms of the pause left; after restart: "
          f"{p2 or last_change(d)['message']}")
    assert ch and ch["state"] == "running", \
        f"after the restart the change is not running: {last_change(d)}\n{d.log()}"
    assert p2.get("step") == 2 and p2.get("weight") == 30, p2
    assert 55000 < p2.get("step_remaining_ms", 0) <= 60000, p2
    s = share(split_users(d.port, [f"e{i}" for i in range(500)]))
    assert 0.24 <= s <= 0.36, f"after the restart the share of v2 is {s:.0%}, want 30%"


def http_get_user(port, user):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        c.request("GET", "/", headers={"X-User-Id": user})
        r = c.getresponse()
        return r.status, r.read().decode("latin-1"), None
    finally:
        c.close()


# 9 ---------------------------------------------------------------------------------------

def test_preview_listener_serves_new_version_during_change_live_otherwise(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    pp = free_port()
    d = daemon([v1], service_extra=STICKY_HEADER + f"    preview_listen: 127.0.0.1:{pp}\n",
               top_extra=plans(w0="steps: [{weight: 0}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    assert wait_port(pp, 5), "preview port not listening"
    wait_body(pp, "v1\n", secs=5)
    assert Counter(split_users(pp, [f"p{i}" for i in range(50)]).values()) == {"v1": 50}
    deploy_ok(d, "v2", v2.addr, "w0")
    wait_step(d, 2, weight=0)
    users = [f"p{i}" for i in range(200)]
    prev = Counter(split_users(pp, users).values())
    main = Counter(split_users(d.port, users).values())
    assert prev == {"v2": 200}, f"preview port during the change: {prev}"
    assert main == {"v1": 200}, f"main port at weight 0: {main}"
    r = d.cli("promote", "--all", "web")
    assert r.returncode == 0, f"promote --all exit {r.returncode}: {r.stdout}{r.stderr}"
    assert wait_ended(d)["state"] == "completed"
    assert Counter(split_users(pp, users).values()) == {"v2": 200}
    assert Counter(split_users(d.port, users).values()) == {"v2": 200}


# 10 --------------------------------------------------------------------------------------

def test_abort_while_waiting_for_approval_and_while_paused(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=STICKY_HEADER, top_extra=plans(
        appr="steps: [{weight: 10}, {approval: {approvers: [alice]}}, {weight: 100}]",
        held="steps: [{weight: 50}, {pause: 60s}, {weight: 100}]"))
    d.start(expect="v1\n")
    users = [f"a{i}" for i in range(300)]

    ch = deploy_ok(d, "v2", v2.addr, "appr")
    wait_step(d, 2, weight=10)
    assert "v2" in split_users(d.port, users).values()
    r = d.cli("abort", "web")
    assert r.returncode == 0, f"abort during approval: exit {r.returncode} {r.stdout}{r.stderr}"
    assert Counter(split_users(d.port, users).values()) == {"v1": 300}
    c = last_change(d)
    assert c["id"] == ch["id"] and c["state"] == "aborted", c
    assert not change_of(d) and live_name(d.status()) != "v2"

    ch = deploy_ok(d, "v2", v2.addr, "held")
    wait_step(d, 2, weight=50)
    r = d.cli("pause", "web")
    assert r.returncode == 0, f"pause exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_for(lambda: progress_of(d).get("state") == "paused", 5, "state paused")
    assert "v2" in split_users(d.port, users).values()
    r = d.cli("abort", "web")
    assert r.returncode == 0, f"abort while paused: exit {r.returncode} {r.stdout}{r.stderr}"
    assert Counter(split_users(d.port, users).values()) == {"v1": 300}
    c = last_change(d)
    assert c["id"] == ch["id"] and c["state"] == "aborted", c
    assert not change_of(d)


# 11 --------------------------------------------------------------------------------------

BAD_PLANS = {
    "unknown step": ("      - weight: 10\n      - deploy: now\n", "deploy: now",
                     "plans.bad.steps[1]"),
    "weight 101": ("      - weight: 101\n", "weight: 101", "plans.bad.steps[0].weight"),
    "approval 3 of 2": ("      - weight: 10\n      - approval:\n          approvers: [a, b]\n"
                        "          count: 3\n", "count: 3", "plans.bad.steps[1].approval.count"),
    "negative pause": ("      - pause: -5s\n", "pause: -5s", "plans.bad.steps[0].pause"),
}


def test_bad_plans_and_bad_commands_are_rejected_and_nothing_starts(backend, daemon, tmp_path):
    for name, (steps, marker, where) in BAD_PLANS.items():
        cfg = write_config(tmp_path / f"bad-{len(where)}-{name.replace(' ', '_')}.yml",
                           free_port(), ["127.0.0.1:1"], tmp_path / "var-bad",
                           top_extra=f"plans:\n  bad:\n    steps:\n{steps}")
        line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1) if marker in l)
        r = run_cli("check", "-c", cfg)
        msg = r.stdout + r.stderr
        assert r.returncode == 2, f"{name}: check exit {r.returncode}: {msg}"
        assert where in msg, f"{name}: the error does not name {where}: {msg}"
        assert re.search(rf"{re.escape(cfg.name)}:{line}\b", msg), \
            f"{name}: the error does not name line {line}: {msg}"

    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=plans(ok="steps: [{weight: 10}, {pause: {}}, {weight: 100}]"))
    d.start(expect="v1\n")
    before = d.history()
    r = deploy(d, "v2", v2.addr, "nosuch")
    assert r.returncode == 2, f"deploy --plan nosuch: exit {r.returncode} {r.stdout}{r.stderr}"
    assert "nosuch" in r.stderr, r.stderr
    r = d.cli("deploy", "nosvc", "v2", "--target", v2.addr, "--plan", "ok")
    assert r.returncode == 2, f"deploy to an unknown service: exit {r.returncode} {r.stderr}"
    assert "nosvc" in r.stderr, r.stderr
    time.sleep(0.5)
    assert d.history() == before, "a rejected deploy left a change on record"
    assert not change_of(d)
    assert user_requests(v2) == []
    assert body_of(d.port) == "v1\n"
    r = d.cli("promote", "web")
    assert r.returncode == 1, f"promote with no change: exit {r.returncode} {r.stdout}{r.stderr}"
    assert r.stderr.strip()
    r = d.cli("approve", "999", "--as", "alice")
    assert r.returncode == 2, f"approve of an unknown change: exit {r.returncode} {r.stderr}"
