"""Scheduled changes (issue 15, item 2): `deploy --at TIME` records the change now, waits in the
daemon (status shows it, abort cancels it, a kill -9 and restart keep it) and starts at its time
under load with nothing lost; a freeze window in force at that time stops it, and the record says
why."""
import datetime
import json
import time

import pytest

from conftest import live_name, wait_body
from progressive_util import wait_for


def scheduled(d):
    return d.status().get("scheduled")


def change(d, cid):
    st, body = d.api("GET", f"/api/v1/changes/{cid}")
    assert st == 200, body
    return body


@pytest.mark.xdist_group("load")
def test_a_scheduled_deploy_starts_at_its_time_and_survives_a_kill9(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", "+4s", "--reason", "night")
    assert r.returncode == 0 and "scheduled for" in r.stdout, r.stdout + r.stderr
    q = scheduled(d)
    cid = q["id"]
    assert q["version"] == "v2" and q["at"].endswith("Z"), q
    assert change(d, cid)["state"] == "scheduled"
    r = d.cli("status", "web")
    assert f"change {cid}: deploy v2 at" in r.stdout, r.stdout
    # A second one for the same service is refused while the first waits.
    r = d.cli("deploy", "web", "v3", "--target", v2.addr, "--at", "+1h")
    assert r.returncode == 1 and "already has change" in r.stderr, r.stdout + r.stderr
    # kill -9 and restart: the daemon that comes back still has it.
    d.proc.kill()
    d.proc.wait()
    d.start(expect="v1\n")
    assert scheduled(d)["id"] == cid
    load = wrk(d.port, 7, conns=8)
    wait_for(lambda: live_name(d.status()) == "v2", 12, "v2 live at its time")
    res = load.result()
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res
    c = change(d, cid)
    types = [e["type"] for e in c["events"]]
    assert types[:2] == ["scheduled", "started"] and c["state"] == "completed", types
    assert c["reason"] == "night" and scheduled(d) is None
    wait_body(d.port, "v2\n")


def test_abort_cancels_a_scheduled_deploy(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", "+2s", "--json")
    cid = json.loads(r.stdout)["id"]
    r = d.cli("abort", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    c = change(d, cid)
    assert c["state"] == "aborted" and "cancelled by" in c["message"], c
    time.sleep(3)
    assert live_name(d.status()) == "v1" and scheduled(d) is None
    # Only abort applies to a change that has not started.
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", "+1h", "--json")
    cid = json.loads(r.stdout)["id"]
    st, body = d.api("POST", f"/api/v1/changes/{cid}/promote", {})
    assert st == 409 and "only abort applies" in body["error"], body
    d.cli("abort", "web")


def test_a_freeze_at_its_time_stops_a_scheduled_deploy(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    now = datetime.datetime.now(datetime.timezone.utc)
    fr = (now + datetime.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to = (now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    d = daemon([v1], top_extra=f"freeze: [{{name: release-night, from: '{fr}', to: '{to}'}}]\n")
    d.start(expect="v1\n")
    at = (now + datetime.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", at, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    cid = json.loads(r.stdout)["id"]
    wait_for(lambda: change(d, cid)["state"] == "failed", 10, "the scheduled deploy refused")
    assert "release-night" in change(d, cid)["message"], change(d, cid)
    assert live_name(d.status()) == "v1"


@pytest.mark.parametrize("at,needle", [
    ("tomorrow", "RFC 3339"),
    ("2001-01-01T00:00:00Z", "not in the future"),
    ("+0s", "RFC 3339"),
    ("2999-01-01T00:00:00Z", "more than a year ahead"),
])
def test_bad_times_are_refused_and_change_nothing(backend, daemon, at, needle):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", at)
    assert r.returncode in (1, 2) and needle in r.stderr, r.stdout + r.stderr
    assert d.history() == [] and scheduled(d) is None
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--at", "+1m", "--wait")
    assert r.returncode != 0 and "wait" in r.stderr, r.stdout + r.stderr
