"""Knowledge from the change records (issue 15, item 4), end to end through the real daemon, CLI
and admin API:

- `cutover note CHANGE TEXT` adds a lessons-learned note to the record: the report shows it, and
  a real webhook receiver filtered on the `note` event type gets it;
- `cutover stats` gives the delivery figures of a known history (a deploy, a manual rollback, a
  bad canary rolled back by its plan, a deploy whose live version fails and that cutover itself
  rolls back, and a live failure that heals by itself);
- `cutover verify` checks each change's hash chain: intact, then an event edited with the
  sqlite3 CLI is named (exit 1), and events recorded before the chain began are not chained but
  do not fail the check;
- bad input changes nothing.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_knowledge.py
"""
import json
import os
import pwd
import subprocess
import time
from datetime import datetime

import pytest

from conftest import wait_body
from progressive_util import wait_for
from test_webhooks import receiver  # noqa: F401  (the fixture: a real HTTP receiver)


def events_of(d, cid):
    st, ch = d.api("GET", f"/api/v1/changes/{cid}")
    assert st == 200, ch
    return ch["events"]


def deploy_ok(d, version, target, *extra):
    r = d.cli("deploy", "web", version, "--target", target, *extra, timeout=30)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}\n{d.log()[-2000:]}"
    return d.history()[0]


def sql(d, statement):
    """Runs statement on the daemon's store with the sqlite3 CLI (as an intruder would)."""
    r = subprocess.run(["sqlite3", str(d.state_dir / "cutover.db"), statement],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# notes ---------------------------------------------------------------------------------------

def test_a_note_is_in_the_report_and_reaches_a_webhook_that_asks_for_notes(
        backend, daemon, receiver, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CUTOVER_USER", "alice")
    v1, v2 = backend("v1"), backend("v2")
    hook = receiver()
    d = daemon([v1], top_extra=f"notify:\n  webhooks:\n    - url: {hook.url}/hook\n"
                               f"      events: [note]\n")
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr)
    wait_body(d.port, "v2\n")
    lesson = "Warm the cache before the switch | next time: 5 min"
    r = d.cli("note", str(ch["id"]), lesson)
    assert r.returncode == 0 and f"change {ch['id']}: note recorded" in r.stdout, r.stdout + r.stderr

    ev = events_of(d, ch["id"])[-1]
    assert ev["type"] == "note" and ev["message"] == f"alice: {lesson}", ev
    md = d.cli("report", str(ch["id"]), "--format", "md")
    assert md.returncode == 0, md.stderr
    assert "## Lessons learned" in md.stdout and "alice: Warm the cache" in md.stdout, md.stdout
    assert "\\| next time" in md.stdout, "the note's | must not open a new table cell"
    rep = json.loads(d.cli("report", str(ch["id"]), "--format", "json").stdout)
    assert [n["message"] for n in rep["notes"]] == [f"alice: {lesson}"], rep["notes"]

    # Only the note reaches the webhook that filters on it: none of the deploy's events.
    got = hook.wait(lambda g: len(g) >= 1)
    time.sleep(0.5)
    got = hook.events()
    assert len(got) == 1, got
    assert got[0]["type"] == "note" and got[0]["change"] == ch["id"], got
    assert got[0]["message"] == f"alice: {lesson}", got
    # The webhook holds the event's link of the chain: an anchor outside the store.
    assert got[0]["hash"] == ev["hash"] and len(ev["hash"]) == 64, (got[0], ev)
    # A note on an ended change does not move its end.
    again = d.history()[0]
    assert again["ended"] == ch["ended"] and again["state"] == "completed", (again, ch)


def test_a_bad_note_is_refused_and_records_nothing(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr)
    before = events_of(d, ch["id"])
    cases = [
        ([str(ch["id"]), ""], "the note is empty"),
        ([str(ch["id"]), "  \n\t "], "the note is empty"),
        ([str(ch["id"]), "x" * 4097], "at most 4096 bytes, got 4097"),
        ([str(ch["id"]), "red \x1b[31malert"], "text:"),
        (["999", "a lesson"], "no change 999"),
        (["abc", "a lesson"], "CHANGE_ID must be a positive whole number"),
        ([str(ch["id"])], "missing TEXT"),
    ]
    for args, want in cases:
        r = d.cli("note", *args)
        assert r.returncode == 2 and want in r.stderr, (args[1:][:1], r.returncode, r.stderr)
    st, body = d.api("POST", f"/api/v1/changes/{ch['id']}/note", {"actor": "bob"})
    assert st == 400 and "text: required" in body["error"], body
    st, body = d.api("POST", f"/api/v1/changes/{ch['id']}/note", {"text": "t", "tags": []})
    assert st == 400 and "unknown field 'tags'" in body["error"], body
    st, body = d.api("POST", f"/api/v1/changes/{ch['id']}/note", {"text": 5, "actor": "bob"})
    assert st == 400 and "text: expected a string" in body["error"], body
    st, body = d.api("GET", f"/api/v1/changes/{ch['id']}/note")
    assert st == 405, body
    assert events_of(d, ch["id"]) == before
    # 4096 bytes exactly is a note.
    assert d.cli("note", str(ch["id"]), "y" * 4096).returncode == 0
    assert len(events_of(d, ch["id"])) == len(before) + 1
    # A bidi override is text, kept as sent, but never reaches a reader's screen as one.
    assert d.cli("note", str(ch["id"]), "evil\u202etxt.exe").returncode == 0
    assert events_of(d, ch["id"])[-1]["message"].endswith("evil\u202etxt.exe")
    md = d.cli("report", str(ch["id"]))
    assert md.returncode == 0 and "evil\\u202etxt.exe" in md.stdout, md.stdout[-400:]
    assert "\u202e" not in md.stdout
    # Over the socket without an actor, the note is the unix user's (SO_PEERCRED).
    st, body = d.api("POST", f"/api/v1/changes/{ch['id']}/note", {"text": "t"})
    login = pwd.getpwuid(os.getuid()).pw_name
    assert st == 200 and body["events"][-1]["message"] == f"{login}: t", body["events"][-1]


# stats ---------------------------------------------------------------------------------------

BAD_CANARY = """plans:
  bad:
    steps:
      - weight: 10
      - test: {command: [/bin/false], timeout: 5s}
      - weight: 100
"""


def test_stats_on_a_known_history(backend, daemon):
    v1, v2, v3, v4 = backend("v1"), backend("v2"), backend("v3"), backend("v4")
    d = daemon([v1], top_extra=BAD_CANARY)
    d.start(expect="v1\n")
    # 1. A deploy that completes, 2. rolled back by a person.
    deploy_ok(d, "v2", v2.addr)
    wait_body(d.port, "v2\n")
    r = d.cli("rollback", "web", "--reason", "checkout broken")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v1\n")
    # 3. A bad canary: 10 % of users, then its test fails and the plan rolls it back.
    r = d.cli("deploy", "web", "v3", "--target", v3.addr, "--plan", "bad", "--wait", timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert d.history()[0]["state"] == "rolled_back", d.history()[0]
    # 4. A deploy that completes, then its live version fails and cutover rolls it back.
    deploy_ok(d, "v4", v4.addr)
    wait_body(d.port, "v4\n")
    v4.set_healthy(False)

    def auto_rolled_back():
        c = d.history()[0]
        return c if c["kind"] == "rollback" and c["state"] == "completed" else None
    auto = wait_for(auto_rolled_back, 15, "cutover to roll v4 back on its own")
    assert auto["actor"] == "cutover", auto
    hist = list(reversed(d.history()))
    assert [(c["kind"], c["to"], c["state"]) for c in hist] == [
        ("deploy", "v2", "completed"), ("rollback", "v1", "completed"),
        ("deploy", "v3", "rolled_back"), ("deploy", "v4", "completed"),
        ("rollback", "v1", "completed")], hist

    r = d.cli("stats", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["service"] is None and s["window_days"] == 30
    assert s["changes"] == 5
    assert s["deploys"] == {"ended": 3, "completed": 2, "failed": 0, "rolled_back": 1,
                            "undone_later": 2}, s["deploys"]
    assert s["rollbacks"] == {"total": 2, "automatic": 1}, s["rollbacks"]
    assert s["failures"] == 3 and s["change_failure_rate"] == 1.0, s
    assert s["deploys_per_day"] == pytest.approx(2 / 30), s
    ttr = s["time_to_restore_ms"]
    assert ttr["count"] == 3 and ttr["open"] == 0, ttr
    assert 0 <= ttr["median"] <= ttr["worst"] < 30000, ttr
    lead = s["time_to_full_traffic_ms"]
    # Each completed deploy's time from its start to its end (full traffic).
    want = sorted(c["duration_ms"] for c in hist if c["kind"] == "deploy"
                  and c["state"] == "completed")
    assert lead["count"] == 2 and lead["median"] == sum(want) // 2 and lead["worst"] == want[-1], \
        (lead, want)
    # The rollback by a person: its time from request to end is one of the restores.
    assert hist[1]["duration_ms"] <= ttr["worst"]

    # The same for the service by name and a shorter window; none in a window of another
    # service's or before.
    st, by_name = d.api("GET", "/api/v1/stats?service=web&since=1h")
    assert st == 200 and by_name["deploys"] == s["deploys"] and by_name["window_days"] == \
        pytest.approx(1 / 24), by_name
    text = d.cli("stats", "web", "--since", "7d")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    print("\n" + out)
    assert "delivery figures for web, last 7d" in out, out
    assert "deployment frequency" in out and "0.29 a day (2 deploys completed)" in out, out
    assert "change failure rate    100% (3 of 3 deploys failed or were rolled back)" in out, out
    assert "time to restore" in out and "(3 restores)" in out, out
    assert "time to full traffic" in out and "(2 deploys)" in out, out


def test_stats_bad_input(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1])
    d.start(expect="v1\n")
    r = d.cli("stats", "--since", "yesterday")
    assert r.returncode == 2 and "--since must be a duration" in r.stderr, r.stderr
    r = d.cli("stats", "nope")
    assert r.returncode == 2 and "nope" in r.stderr, r.stderr
    for q, code in (("since=5", 400), ("since=0s", 400), ("service=nope", 404)):
        st, body = d.api("GET", f"/api/v1/stats?{q}")
        assert st == code, (q, st, body)
    st, body = d.api("POST", "/api/v1/stats")
    assert st == 405, body
    # No change yet: figures of nothing, not an error.
    s = json.loads(d.cli("stats", "--json").stdout)
    assert s["changes"] == 0 and s["change_failure_rate"] is None, s
    assert s["time_to_restore_ms"] == {"count": 0, "median": None, "worst": None, "open": 0}


# verify --------------------------------------------------------------------------------------

def test_verify_says_intact_then_names_the_event_edited_behind_its_back(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1])
    d.start(expect="v1\n")
    first = deploy_ok(d, "v2", v2.addr)
    assert d.cli("rollback", "web").returncode == 0
    second = d.history()[0]
    n = len(events_of(d, first["id"]))
    r = d.cli("verify", str(first["id"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"change {first['id']}: {n} events, chain intact\n", r.stdout
    r = d.cli("verify")
    total = n + len(events_of(d, second["id"]))
    assert r.returncode == 0 and f"2 changes, {total} events, chain intact" in r.stdout, r.stdout

    # Someone rewrites history with the sqlite3 CLI while the daemon runs.
    ev = events_of(d, first["id"])
    victim = int(sql(d, f"SELECT id FROM events WHERE change_id = {first['id']} "
                        f"ORDER BY id LIMIT 1 OFFSET 1"))
    sql(d, f"UPDATE events SET message = 'nothing happened' WHERE id = {victim}")
    r = d.cli("verify", str(first["id"]))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"change {first['id']}: event {victim} ({ev[1]['type']}, " in r.stdout, r.stdout
    assert "does not match the chain" in r.stdout, r.stdout
    r = d.cli("verify")
    assert r.returncode == 1 and f"event {victim} (" in r.stdout, r.stdout
    assert "1 of 2 changes does not match the chain" in r.stdout, r.stdout
    r = d.cli("verify", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["intact"] is False, r.stdout
    st, body = d.api("GET", f"/api/v1/changes/{first['id']}/verify")
    assert st == 200 and body["intact"] is False and body["first_bad"]["id"] == victim, body
    st, body = d.api("GET", f"/api/v1/changes/{second['id']}/verify")
    assert st == 200 and body["intact"] is True and body["chained"] == body["events"], body
    # A deleted event breaks the link of the next one; the newest deleted, the change itself
    # says that its chain went on.
    sql(d, f"UPDATE events SET message = '{ev[1]['message']}' WHERE id = {victim}")
    assert d.cli("verify", str(first["id"])).returncode == 0
    first_id = int(sql(d, f"SELECT min(id) FROM events WHERE change_id = {first['id']}"))
    sql(d, f"DELETE FROM events WHERE id = {first_id}")
    r = d.cli("verify", str(first["id"]))
    assert r.returncode == 1 and f"event {victim} (" in r.stdout, r.stdout
    last = int(sql(d, f"SELECT max(id) FROM events WHERE change_id = {second['id']}"))
    sql(d, f"DELETE FROM events WHERE id = {last}")
    r = d.cli("verify", str(second["id"]))
    assert r.returncode == 1 and "the events after it were removed" in r.stdout, r.stdout

    r = d.cli("verify", "999")
    assert r.returncode == 2 and "no change 999" in r.stderr, r.stderr


def test_events_recorded_before_the_chain_are_not_chained_and_do_not_fail(backend, daemon):
    v1, v2, v3 = backend("v1"), backend("v2"), backend("v3")
    d = daemon([v1])
    d.start(expect="v1\n")
    old = deploy_ok(d, "v2", v2.addr)
    d.kill9()
    # As a store written by a cutover before schema 5 and migrated: no hashes up to the mark.
    sql(d, "UPDATE events SET hash = NULL; UPDATE changes SET chain_head = NULL; "
           "UPDATE chain_mark SET event_id = "
           "(SELECT max(id) FROM events), since_ms = 1767225600000")
    d.start(expect="v2\n")
    n = len(events_of(d, old["id"]))
    r = d.cli("verify", str(old["id"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == (f"change {old['id']}: {n} events, not chained (recorded before "
                        f"2026-01-01T00:00:00.000Z, when this store began chaining)\n"), r.stdout
    new = deploy_ok(d, "v3", v3.addr)
    r = d.cli("verify")
    assert r.returncode == 0, r.stdout
    assert f"2 changes, {n + len(events_of(d, new['id']))} events, chain intact ({n} recorded " \
           f"before 2026-01-01T00:00:00.000Z, not chained)" in r.stdout, r.stdout
    # An event after the mark whose hash was removed is not taken for an old one.
    sql(d, f"UPDATE events SET hash = NULL WHERE change_id = {new['id']}")
    r = d.cli("verify", str(new["id"]))
    assert r.returncode == 1 and "it has no hash" in r.stdout, r.stdout


# roles over admin.listen ----------------------------------------------------------------------

def test_over_tcp_a_viewer_reads_figures_and_chains_and_an_operator_writes_notes_as_itself(
        backend, daemon, tmp_path):
    from test_admin_tcp import ALICE, VIEW, admin_daemon, call, tcli
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path)
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr)
    path = f"/api/v1/changes/{ch['id']}/note"
    st, body, _ = call(d, "POST", path, body={"text": "a lesson"})
    assert st == 401, body
    st, body, _ = call(d, "POST", path, VIEW, body={"text": "a lesson"})
    assert st == 403 and "needs operator" in body["error"], body
    st, body, _ = call(d, "POST", path, ALICE, body={"text": "a lesson", "actor": "lead"})
    assert st == 403 and "acts as 'alice'" in body["error"], body
    r = tcli(d, ALICE, "note", str(ch["id"]), "canary first next time")
    assert r.returncode == 0, r.stdout + r.stderr
    assert events_of(d, ch["id"])[-1]["message"] == "alice: canary first next time"
    for p in ("/api/v1/stats", "/api/v1/verify", f"/api/v1/changes/{ch['id']}/verify"):
        st, body, _ = call(d, "GET", p, VIEW)
        assert st == 200, (p, body)
    r = tcli(d, VIEW, "verify")
    assert r.returncode == 0 and "1 change, " in r.stdout and "chain intact" in r.stdout, r.stdout
    r = tcli(d, VIEW, "stats", "web")
    assert r.returncode == 0 and "(1 deploy completed)" in r.stdout, r.stdout


def test_a_live_failure_that_heals_is_restored_when_its_checks_pass(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra="    on_live_failure: alert\n")
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr)
    wait_body(d.port, "v2\n")
    v2.set_healthy(False)
    wait_for(lambda: d.status().get("down"), 10, "the service reported down")
    s = json.loads(d.cli("stats", "--json").stdout)
    assert s["time_to_restore_ms"]["open"] == 1 and s["failures"] == 1, s
    v2.set_healthy(True)
    wait_for(lambda: not d.status().get("down"), 10, "the service serving again")
    types = [e["type"] for e in events_of(d, ch["id"])]
    assert types[-2:] == ["service_down", "service_up"], types
    ev = events_of(d, ch["id"])
    s = json.loads(d.cli("stats", "--json").stdout)
    ttr = s["time_to_restore_ms"]
    assert ttr["open"] == 0 and ttr["count"] == 1, ttr
    down_ms = (datetime.fromisoformat(ev[-1]["ts"].replace("Z", "+00:00"))
               - datetime.fromisoformat(ev[-2]["ts"].replace("Z", "+00:00")))
    assert ttr["median"] == ttr["worst"] == round(down_ms.total_seconds() * 1000), (ttr, down_ms)
    assert s["change_failure_rate"] == 1.0 and s["deploys"]["undone_later"] == 1, s
    assert d.cli("verify", str(ch["id"])).returncode == 0
