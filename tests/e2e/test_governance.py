"""Change governance (issue 15, items 2 and 3), end to end: freeze windows and the written plan.

- A deploy inside a freeze window is refused (CLI exit 1, API 409) naming the window and when it
  ends, and traffic does not move; `--emergency --reason` goes through and the change record
  (audit and Markdown report) names the emergency, the window and the reason.
- A rollback is never blocked by a freeze.
- A recurring window (cron line, UTC) freezes as a fixed one does; one that is not in force
  does not.
- Bad windows are config errors naming file:line, from `check` and from a reload, which then
  changes nothing.
- `cutover plan` prints the milestones with traffic, owner, who is told and Plan B, the time
  to full traffic and to roll back, and the windows on the way; it changes nothing.

Traffic-moving tests run under wrk (bounded) and assert 0 socket errors and 0 non-2xx.
"""
import datetime
import json
import os
import time

import pytest

from conftest import body_of, live_name, run_cli, wait_body

UTC = datetime.timezone.utc


def rfc3339(delta_s):
    t = datetime.datetime.now(UTC) + datetime.timedelta(seconds=delta_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def freeze(*windows):
    return "freeze:\n" + "".join(f"  - {w}\n" for w in windows)


PLAN = """plans:
  canary:
    owner: lead
    steps: [{weight: 10}, {pause: 60s}, {weight: 50, owner: ops}, {pause: 120s}, {weight: 100}]
    analysis: {interval: 10s, min_requests: 100, max_error_rate: 0.01}
    on_failure: rollback
"""


def assert_clean(res, min_requests=200):
    assert res["requests"] > min_requests, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']}\n{res['text']}"


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def report(d, change_id, fmt):
    r = d.cli("report", str(change_id), "--format", fmt)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.xdist_group("load")
def test_freeze_refuses_a_deploy_and_traffic_stays(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=freeze(
        f'{{name: year-end, from: "{rfc3339(-3600)}", to: "{rfc3339(7200)}"}}'))
    d.start(expect="v1\n")
    load = wrk(d.port, 3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "year-end" in out and "until " in out and "--emergency" in out, out
    # The API says 409 with the same words.
    st, body = d.api("POST", "/api/v1/services/web/deploy",
                     {"version": "v2", "targets": [v2.addr]})
    assert st == 409 and "year-end" in body["error"], (st, body)
    assert_clean(load.result())
    assert {body_of(d.port) for _ in range(20)} == {"v1\n"}
    assert v2.requests() == [] or all("/healthz" in e["line"] for e in v2.requests())
    assert d.history() == []
    assert "deploy refused: freeze window" in d.log()


@pytest.mark.xdist_group("load")
def test_emergency_goes_through_and_the_record_says_so(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=freeze(
        f'{{name: year-end, from: "{rfc3339(-3600)}", to: "{rfc3339(7200)}", services: [web]}}'))
    d.start(expect="v1\n")
    # An emergency needs a reason: the CLI refuses without one (usage), and so does the API.
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--emergency")
    assert r.returncode == 2 and "--reason" in r.stderr, r.stdout + r.stderr
    st, body = d.api("POST", "/api/v1/services/web/deploy",
                     {"version": "v2", "targets": [v2.addr], "emergency": True})
    assert st == 400 and "reason" in body["error"], (st, body)
    load = wrk(d.port, 3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--emergency", "--reason",
              "sev1: checkout down", "--ticket", "INC-42", "--risk", "high", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v2\n")
    assert_clean(load.result())
    ch = d.history()[0]
    rep = json.loads(report(d, ch["id"], "json"))["change"]
    created = next(e for e in rep["events"] if e["type"] == "created")
    assert "emergency during freeze year-end" in created["message"], rep["events"]
    audit = rep["detail"]["audit"]
    assert audit["emergency"] is True and audit["freeze"] == "year-end", audit
    assert audit["reason"] == "sev1: checkout down"
    assert audit["ticket"] == "INC-42" and audit["risk"] == "high"
    md = report(d, ch["id"], "md")
    line = next(ln for ln in md.splitlines() if ln.startswith("| emergency |"))
    assert "year-end" in line and "sev1: checkout down" in line, md
    assert "ticket INC-42, risk high" in md


@pytest.mark.xdist_group("load")
def test_a_rollback_is_never_blocked_by_a_freeze(backend, daemon, wrk):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    # The window starts a few seconds from now: v2 goes out before it, the rollback inside it.
    start = datetime.datetime.now(UTC) + datetime.timedelta(seconds=6)
    d = daemon([v1], top_extra=freeze(
        f'{{name: soon, from: "{start.strftime("%Y-%m-%dT%H:%M:%SZ")}", to: "{rfc3339(3600)}"}}'))
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v2\n")
    time.sleep(max(0.0, (start - datetime.datetime.now(UTC)).total_seconds() + 1))
    r = d.cli("deploy", "web", "v3", "--target", v3.addr, timeout=20)
    assert r.returncode == 1 and "soon" in r.stdout + r.stderr, r.stdout + r.stderr
    load = wrk(d.port, 3)
    r = d.cli("rollback", "web", "--reason", "v2 is wrong", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v1\n")
    assert_clean(load.result())
    assert d.history()[0]["kind"] == "rollback"


def test_recurring_window_freezes_and_one_not_in_force_does_not(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    now = datetime.datetime.now(UTC)
    other_month = (now.month % 12) + 1
    d = daemon([v1], top_extra=freeze(
        # Every minute of every day: in force now, whatever the time.
        '{name: always, cron: "* * * * *", duration: 1m, services: [web]}',
        # Only in another month: not in force.
        f'{{name: elsewhen, cron: "0 0 1 {other_month} *", duration: 1h}}'))
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "always" in out and "elsewhen" not in out, out
    # Back-to-back occurrences make one freeze: it ends at the end of the scan, not in a minute.
    until = out.split("until ")[1][:20]
    ends = datetime.datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert ends - now > datetime.timedelta(days=1), out
    assert body_of(d.port) == "v1\n"
    r = d.cli("check")
    assert r.returncode == 0 and 'freeze always: cron "* * * * *" (UTC) for 1m (web)' in r.stdout, \
        r.stdout + r.stderr


BAD = {
    "inverted": ('{name: a, from: "2026-12-27T00:00:00Z", to: "2026-12-24T00:00:00Z"}',
                 "freeze[0].to: expected a time after from"),
    "bad_cron": ('{name: a, cron: "61 * * * *", duration: 1h}',
                 "freeze[0].cron: minute field '61'"),
    "no_duration": ('{name: a, cron: "0 * * * *"}', "freeze[0].duration: missing"),
    "bad_time": ('{name: a, from: "tomorrow", to: "2026-12-24T00:00:00Z"}',
                 "freeze[0].from: expected an RFC 3339 time"),
    "unknown_service": ('{name: a, cron: "0 * * * *", duration: 1h, services: [nope]}',
                        "freeze[0].services: expected names of services, got 'nope'"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_windows_are_refused_by_check(tmp_path, name):
    window, words = BAD[name]
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"state_dir: {tmp_path}/var\n" + freeze(window) +
                   "services:\n  web: {listen: 127.0.0.1:1, targets: [127.0.0.1:2]}\n")
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2 and f"c.yml:3: {words}" in r.stderr, r.stdout + r.stderr


def test_duplicate_and_overlapping_windows_are_refused(tmp_path):
    for windows, words in [
        (['{name: a, cron: "0 1 * * *", duration: 1h}',
          '{name: a, cron: "0 2 * * *", duration: 1h}'], "c.yml:4: freeze[1].name: 'a' is already"),
        (['{name: a, from: "2026-12-24T00:00:00Z", to: "2026-12-26T00:00:00Z"}',
          '{name: b, from: "2026-12-25T00:00:00Z", to: "2026-12-27T00:00:00Z"}'],
         "c.yml:4: freeze[1]: overlaps window 'a'")]:
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"state_dir: {tmp_path}/var\n" + freeze(*windows) +
                       "services:\n  web: {listen: 127.0.0.1:1, targets: [127.0.0.1:2]}\n")
        r = run_cli("check", "-c", cfg)
        assert r.returncode == 2 and words in r.stderr, r.stdout + r.stderr


def test_a_reload_with_a_bad_window_changes_nothing(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    good = freeze(f'{{name: year-end, from: "{rfc3339(-60)}", to: "{rfc3339(3600)}"}}')
    d = daemon([v1], top_extra=good)
    d.start(expect="v1\n")
    text = d.cfg.read_text()
    write_atomic(d.cfg, text.replace(good, freeze(
        f'{{name: year-end, from: "{rfc3339(3600)}", to: "{rfc3339(-60)}"}}')))
    r = run_cli("reload", "--admin", f"unix:{d.sock}", timeout=20)
    assert r.returncode == 2 and "cutover.yml:3: freeze[0].to" in r.stdout + r.stderr, \
        r.stdout + r.stderr
    assert d.alive()
    # The window in force is still the old one (the CLI cannot read the bad file either: it is
    # told where the daemon is).
    r = run_cli("deploy", "web", "v2", "--target", v2.addr, "--admin", f"unix:{d.sock}",
                timeout=20)
    assert r.returncode == 1 and "year-end" in r.stdout + r.stderr, r.stdout + r.stderr
    assert body_of(d.port) == "v1\n"


def test_plan_prints_the_written_plan_and_changes_nothing(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = daemon([v1], deploy_timeout="5s", drain_timeout="1s",
               service_extra="    plan: canary\n",
               top_extra=freeze(f'{{name: year-end, from: "{rfc3339(60)}", to: "{rfc3339(7200)}"}}',
                                '{name: elsewhen, cron: "0 0 1 1 *", duration: 1h}')
               + "notify:\n  webhooks:\n    - {url: \"http://127.0.0.1:9/hook/SECRET\"}\n"
               + PLAN)
    d.start(expect="v1\n")
    r = d.cli("plan", "web", "v2", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    p = json.loads(r.stdout)
    assert [s["traffic"] for s in p["steps"]] == [10, 10, 50, 50, 100]
    assert [s["owner"] for s in p["steps"]] == ["lead", "lead", "ops", "lead", "lead"]
    assert all(s["notify"] == ["webhook http://127.0.0.1:9"] for s in p["steps"]), p["steps"]
    assert "SECRET" not in r.stdout
    # The targets of the config are the version "v1" (the default name).
    assert "users back on v1 at once" in p["steps"][0]["plan_b"], p["steps"][0]
    assert "drained in drain_timeout 1s" in p["steps"][0]["plan_b"]
    assert "cutover rollback" in p["after"]["plan_b"]
    t = p["time_to_full_s"]
    assert 180 <= t["fastest"] <= t["expected"] <= t["worst"], t
    assert t["worst"] == 185, t  # 60 s + 120 s of pauses, deploy_timeout 5 s for the health
    assert p["time_to_rollback_worst_s"] == 6  # deploy_timeout 5 s + drain 1 s
    assert [w["name"] for w in p["freeze_windows"]] == ["year-end"]  # starts in 60 s
    assert p["frozen_now"] is None and p["from"] == "v1" and p["plan"] == "canary"
    # Text and Markdown carry the same plan.
    r = d.cli("plan", "web", "v2")
    assert r.returncode == 0 and "Plan B: abort" in r.stdout and "owner ops" in r.stdout, r.stdout
    assert "time to full traffic: 3m at best" in r.stdout and "year-end" in r.stdout, r.stdout
    r = d.cli("plan", "web", "v2", "--format", "md", "--plan", "canary")
    assert r.returncode == 0 and "| 3 | weight 50% | 50% | ops |" in r.stdout, r.stdout
    # Unknown plan or service: the daemon's 404, exit 2.
    r = d.cli("plan", "web", "v2", "--plan", "nope")
    assert r.returncode == 2 and "no plan named 'nope'" in r.stderr, r.stdout + r.stderr
    # Nothing changed: no change recorded, v1 serves, nothing deployed.
    assert d.history() == []
    assert body_of(d.port) == "v1\n"
    assert d.status().get("change") is None


def test_plan_route_of_the_api(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1], deploy_timeout="4s", drain_timeout="2s")
    d.start(expect="v1\n")
    # No plan on the service: an instant switch once healthy; no steps, times of the health.
    st, p = d.api("GET", "/api/v1/services/web/plan?version=v2")
    assert st == 200 and p["plan"] is None and p["steps"] == [], (st, p)
    assert p["time_to_full_s"]["worst"] == 4 and p["time_to_rollback_worst_s"] == 6, p
    assert p["freeze_windows"] == [] and p["notify"] == [], p
    st, body = d.api("GET", "/api/v1/services/web/plan")
    assert st == 400 and "version" in body["error"], (st, body)
    st, body = d.api("GET", "/api/v1/services/web/plan?version=bad%20name")
    assert st == 400, (st, body)
    st, body = d.api("GET", "/api/v1/services/nope/plan?version=v2")
    assert st == 404, (st, body)
    st, body = d.api("POST", "/api/v1/services/web/plan?version=v2", {})
    assert st == 405, (st, body)
    assert d.history() == []


@pytest.mark.xdist_group("load")
def test_a_deploy_keeps_its_written_plan_in_the_record(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], deploy_timeout="5s", drain_timeout="1s", top_extra=PLAN)
    d.start(expect="v1\n")
    r = d.cli("plan", "web", "v2", "--plan", "canary", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    promised = json.loads(r.stdout)
    load = wrk(d.port, 3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "canary", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    ch = d.history()[0]
    wp = json.loads(report(d, ch["id"], "json"))["change"]["detail"]["audit"]["written_plan"]
    assert wp["time_to_full_s"] == promised["time_to_full_s"], (wp, promised)
    assert [s["owner"] for s in wp["steps"]] == ["lead", "lead", "ops", "lead", "lead"]
    assert "| written plan | time to full traffic 180s at best" in report(d, ch["id"], "md")
    assert d.cli("abort", "web").returncode == 0
    wait_body(d.port, "v1\n")
    assert_clean(load.result())


def test_risk_policy_refuses_what_it_asks_for_and_changes_nothing(backend, daemon):
    """risk_policy: every deploy states its risk; medium and high name a ticket; high needs an
    approval before the first step that moves users' traffic."""
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra="    risk_policy: {require: true, medium: {ticket: true}, "
               "high: {ticket: true, approval_first: true}}\n",
               top_extra="plans:\n  fast: {steps: [{weight: 10}, {weight: 100}]}\n"
               "  careful: {steps: [{approval: {approvers: [lead]}}, {weight: 10}, "
               "{weight: 100}]}\n")
    d.start(expect="v1\n")
    dep = ["deploy", "web", "v2", "--target", v2.addr]
    for extra, needle in [([], "state its risk"),
                          (["--risk", "medium"], "--ticket"),
                          (["--risk", "high", "--ticket", "CHG-9"], "instant switch"),
                          (["--risk", "high", "--ticket", "CHG-9", "--plan", "fast"],
                           "plan fast moves traffic at step 1")]:
        r = d.cli(*dep, *extra)
        assert r.returncode == 2 and needle in r.stderr, (extra, r.stdout + r.stderr)
    assert d.history() == [] and live_name(d.status()) == "v1"
    r = d.cli(*dep, "--risk", "high", "--ticket", "CHG-9", "--plan", "careful", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    c = json.loads(r.stdout)
    assert c["state"] == "running", c
    d.cli("abort", "web")
    r = d.cli(*dep, "--risk", "low")
    assert r.returncode == 0, r.stdout + r.stderr
    assert live_name(d.status()) == "v2"
