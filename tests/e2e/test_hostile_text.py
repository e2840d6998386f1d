"""Free text cannot forge a record (issue 14, item 5). A corpus of hostile strings (a newline
and a forged `| approved |` row, terminal escape sequences, HTML, C1 controls and bidi
overrides) goes in through deploy's reason, rollback's reason and approve; every place the text
comes out is checked: the Markdown report (one row stays one row, no HTML, no raw control or
bidi character), the JSON report (the text comes back exactly), the CLI's status, history
and report output, and the daemon's log. An actor that is not a name, and a reason over
the limit, are refused with a 400 that names the field.
"""
import json
import re
import subprocess
import time

from conftest import BIN, live_name, run_cli, wait_body
from progressive_util import change_of, progress_of, report_json, wait_for

FORGED_ROW = "fix\n| approved | mallory | 2026-01-01 |\n| reason | ok"
HOSTILE = [
    FORGED_ROW,
    "\x1b[2J\x1b[31mscreen cleared",
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "abc\u202edcba (right-to-left override)",
    "\u2066isolate\u2069 \u202aembed\u202c \u2067rtl\u2069",
    "c1 \u009b31m csi and \u0085 next line",
    "tab\there and cr\r\nlf",
    "pipe | backslash \\| backtick ``` star ** under __",
]
REASON = " ~ ".join(HOSTILE)
ROLLBACK_REASON = "\x1b]0;owned\x07 title and \u202e" + FORGED_ROW

# What must never reach a reader raw: C0 (but line ends) and C1 controls, DEL, bidi controls.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

PLAN = ("plans:\n  appr:\n    steps: [{weight: 10}, {approval: {approvers: [alice]}}, "
        "{weight: 100}]\n")


def assert_safe_terminal(what, text):
    bad = UNSAFE.search(text)
    assert bad is None, f"{what}: raw {bad.group()!r} at {bad.start()}: {text[max(0, bad.start() - 80):bad.start() + 40]!r}"
    for line in text.splitlines():
        assert not line.lstrip().startswith("| approved"), f"{what}: a forged row: {line!r}"


def md_pipes(line):
    """Unescaped pipes of a Markdown table line."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def cli_out(d, *args):
    r = d.cli(*args)
    assert r.returncode == 0, f"{args}: exit {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def test_hostile_reasons_are_shown_escaped_everywhere(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=PLAN)
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "appr", "--reason", REASON,
              timeout=30)
    assert r.returncode == 0, f"deploy: exit {r.returncode}: {r.stdout}{r.stderr}"
    cid = str(change_of(d)["id"])
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the approval step")
    # The CLI's view while the change waits, with the hostile text in it.
    assert_safe_terminal("status", cli_out(d, "status", "web"))
    r = d.cli("approve", cid, "--as", "alice")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: (d.history()[0]["state"] == "completed"), 15, "the change to complete")
    wait_body(d.port, "v2\n")
    # A rollback with another hostile reason.
    r = d.cli("rollback", "web", "--reason", ROLLBACK_REASON, timeout=30)
    assert r.returncode == 0, f"rollback: exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v1\n")
    rid = str(d.history()[0]["id"])
    assert rid != cid

    # JSON keeps the text exactly (it is escaped by JSON itself).
    rep = report_json(d, cid)["change"]
    assert rep["reason"] == REASON, rep["reason"]
    assert report_json(d, rid)["change"]["reason"] == ROLLBACK_REASON
    st, raw = d.api("GET", f"/api/v1/changes/{cid}/report")
    assert st == 200 and raw["change"]["reason"] == REASON

    for ident, reason in ((cid, REASON), (rid, ROLLBACK_REASON)):
        # The Markdown report, as the daemon writes it and as the CLI prints it.
        for md in (cli_out(d, "report", ident, "--format", "md"),
                   d.api("GET", f"/api/v1/changes/{ident}/report?format=md")[1]):
            assert_safe_terminal(f"report {ident} md", md)
            assert "<script" not in md and "<img" not in md, md
            rows = [ln for ln in md.splitlines() if ln.startswith("| reason |")]
            assert len(rows) == 1, f"one reason row expected: {rows}"
            assert md_pipes(rows[0]) == 3, f"the reason row has extra cells: {rows[0]!r}"
            assert "\\u202e" in md, "the bidi override is not shown as an escape"
            assert "\\n" in rows[0], "the newline is not shown as \\n"
            # No row of the first table comes from the reason.
            first = md.split("\n\n")[1].splitlines()
            rows = [ln.split("|")[1].strip() for ln in first[2:]]
            # "duration" and "requests lost" come only once the change (and its drain) ended.
            rows = [r for r in rows if r not in ("duration", "requests lost")]
            assert rows == ["from → to", "plan", "outcome", "started by", "reason", "created",
                            "ended", "last message"], first
        assert "&lt;script&gt;" in cli_out(d, "report", cid, "--format", "md")
        # The JSON report on a terminal: ASCII, escapes only.
        assert_safe_terminal(f"report {ident} json", cli_out(d, "report", ident))

    assert_safe_terminal("history", cli_out(d, "history", "web"))
    assert_safe_terminal("history --json", cli_out(d, "history", "web", "--json"))
    assert_safe_terminal("status", cli_out(d, "status", "web"))
    # The daemon's log: one line per event, nothing raw.
    log = d.log()
    assert_safe_terminal("log", log)
    assert "reason=" in log and "\\u202e" in log, log[-2000:]
    for line in log.splitlines():
        assert line.startswith("ts="), f"a log line not written by the logger: {line!r}"


def test_an_actor_that_is_not_a_name_and_a_long_reason_are_refused(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=PLAN)
    d.start(expect="v1\n")
    before = d.history()
    for actor in ["mallory\n| approved | alice |", "\x1b[2Jx", "<b>x</b>", "a\u202eb", "a b",
                  "x" * 65, ""]:
        st, body = d.api("POST", "/api/v1/services/web/deploy",
                         {"version": "v2", "targets": [v2.addr], "actor": actor})
        if actor == "":
            assert st == 400 and "actor" in body["error"], (actor, st, body)
            continue
        assert st == 400, (actor, st, body)
        assert body["error"].startswith("actor:") and "64" in body["error"], body
    # Through the CLI: $CUTOVER_USER is the actor; the refusal is clear and exits non-zero.
    r = subprocess.run([str(BIN), "deploy", "web", "v2", "--target", v2.addr, "-c", str(d.cfg)],
                       capture_output=True, text=True, timeout=30,
                       env={"CUTOVER_USER": "eve\x1b[2J", "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and "actor" in r.stderr, r.stdout + r.stderr
    assert_safe_terminal("deploy refusal", r.stderr)
    st, body = d.api("POST", "/api/v1/services/web/deploy",
                     {"version": "v2", "targets": [v2.addr], "reason": "r" * 1025})
    assert st == 400 and body["error"] == "reason: at most 1024 bytes, got 1025", body
    st, body = d.api("POST", "/api/v1/services/web/rollback", {"reason": "r" * 5000})
    assert st == 400 and body["error"].startswith("reason: at most 1024 bytes"), body
    assert d.history() == before, "a refused request recorded a change"
    assert live_name(d.status()) == "v1"
    # A reason of exactly the limit, and an approval with a hostile actor.
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "appr", "--reason", "r" * 1024,
              timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    cid = change_of(d)["id"]
    wait_for(lambda: progress_of(d).get("step") == 2, 10, "the approval step")
    for actor in ["alice\n| approved |", "alice\u202e", "<i>alice</i>"]:
        st, body = d.api("POST", f"/api/v1/changes/{cid}/approve", {"actor": actor})
        assert st == 400 and body["error"].startswith("actor:"), (actor, st, body)
    r = d.cli("approve", str(cid), "--as", "alice\x1b[2J")
    assert r.returncode != 0 and "actor" in r.stderr, r.stdout + r.stderr
    time.sleep(0.3)
    assert progress_of(d).get("step") == 2, "a refused approval moved the change"
