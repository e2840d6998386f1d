"""Identities and the audit log, end to end (issue 15, item 2): over the admin socket the actor
is the peer's OS user (SO_PEERCRED) mapped to a person of `people:`, `--as` needs an admin, one
shell cannot approve as two people, and every API action and refused attempt is in
`cutover audit`. The other users are real: the CLI runs as `nobody` through setpriv, on a socket
shared with its group by admin.socket_group."""
import json
import os
import shutil
import signal
import time
import subprocess
import tempfile

import pytest

from conftest import BIN, Daemon, free_port
from progressive_util import progress_of, wait_for
from test_admin_tcp import call, write_tokens

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as a second OS user")

PLAN = """plans:
  appr:
    steps: [{weight: 10}, {approval: {approvers: [alice, bob], count: 2}}, {weight: 100}]
"""
PEOPLE = """people:
  alice: {unix_user: nobody, role: operator, services: {web: [approver]}}
  bob: {role: operator, services: {"*": [approver, informed]}}
  boss: {unix_user: root, role: admin, services: {web: [owner]}}
admin: {socket_group: nogroup}
"""


@pytest.fixture
def shared_dir():
    """A directory the user nobody can reach (pytest's own are root's alone)."""
    d = tempfile.mkdtemp(prefix="cutover-who-", dir="/tmp")
    os.chmod(d, 0o755)
    yield __import__("pathlib").Path(d)
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(d, *args):
    env = {k: v for k, v in os.environ.items() if k != "CUTOVER_USER"}
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(BIN), *args, "-c", str(d.cfg)], capture_output=True, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)


def people_daemon(procs, shared_dir, backend, extra=""):
    v1 = backend("v1")
    d = Daemon(procs, shared_dir, [v1], top_extra=PEOPLE + PLAN + extra)
    os.chmod(d.cfg, 0o644)
    d.start(expect="v1\n")
    os.chmod(d.state_dir, 0o755)
    return d


def audit(d, *extra):
    r = d.cli("audit", "--json", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["audit"]


def test_the_unix_peer_is_the_person_and_as_needs_an_admin(procs, shared_dir, backend):
    d = people_daemon(procs, shared_dir, backend)
    st = os.stat(d.sock)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == 65534, oct(st.st_mode)
    v2 = backend("v2")
    # nobody is alice: her deploy is recorded as hers, whatever her environment says.
    r = as_nobody(d, "deploy", "web", "v2", "--target", v2.addr, "--plan", "appr")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: progress_of(d).get("step") == 2, 15, "the plan at its approval")
    ch = d.status()["change"]
    cid = str(ch["id"])
    assert ch["actor"] == "alice", ch
    # alice cannot approve as bob: one shell is one person.
    r = as_nobody(d, "approve", cid, "--as", "bob")
    assert r.returncode != 0 and "needs the role admin" in r.stderr, r.stdout + r.stderr
    # Nor her own change (four eyes), nor twice.
    r = as_nobody(d, "approve", cid)
    assert r.returncode != 0 and "cannot approve" in r.stderr, r.stdout + r.stderr
    assert progress_of(d).get("step") == 2
    # boss (root) is an admin: acting for bob is allowed, and the audit log says who did it.
    r = d.cli("approve", cid, "--as", "bob")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = audit(d)
    refused = [l for l in lines if l["path"].endswith("/approve") and l["status"] == 403]
    assert refused and all(l["channel"] == "unix" and "(nobody)" in l["peer"] for l in refused), \
        lines
    assert refused[0]["actor"] == "alice" and "admin" in refused[0]["outcome"], refused
    ok = [l for l in lines if l["path"].endswith("/approve") and l["status"] == 200]
    assert len(ok) == 1 and ok[0]["actor"] == "boss as bob" and "uid 0 (root)" in ok[0]["peer"], ok
    dep = [l for l in lines if l["path"] == "/api/v1/services/web/deploy"]
    assert dep and dep[0]["actor"] == "alice" and dep[0]["status"] == 200 and \
        dep[0]["outcome"] == f"change {cid}", dep
    d.cli("abort", "web")


def test_a_unix_user_who_is_not_a_person_may_only_read(procs, shared_dir, backend):
    text = PEOPLE.replace("unix_user: nobody, ", "")
    v1 = backend("v1")
    d = Daemon(procs, shared_dir, [v1], top_extra=text + PLAN)
    os.chmod(d.cfg, 0o644)
    d.start(expect="v1\n")
    os.chmod(d.state_dir, 0o755)
    r = as_nobody(d, "status", "web", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = as_nobody(d, "rollback", "web")
    assert r.returncode != 0 and "has the role viewer" in r.stderr, r.stdout + r.stderr
    assert [l["status"] for l in audit(d) if l["path"].endswith("/rollback")] == [403]


def test_audit_log_records_actions_and_refusals_on_both_channels(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    write_tokens(tmp_path)
    port = free_port()
    d = daemon([v1], top_extra=f"admin: {{listen: 127.0.0.1:{port}, tokens_file: tokens.yml}}\n")
    d.admin_port = port
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    st, _, _ = call(d, "GET", "/api/v1/services", token="wrong-token-0123456789")
    assert st == 401
    st, _, _ = call(d, "POST", "/api/v1/services/web/rollback", token="view-0123456789abcdef00",
                    body={})
    assert st == 403
    st, _, _ = call(d, "POST", "/api/v1/services/web/deploy", token="alice-0123456789abcdef",
                    body={"version": "v2", "targets": [v2.addr]})
    assert st == 409  # already live
    st, _, _ = call(d, "GET", "/api/v1/services", token="view-0123456789abcdef00")
    assert st == 200  # a read that succeeds is not an action: not logged
    lines = audit(d)
    got = [(l["channel"], l["method"], l["path"], l["status"], l["actor"]) for l in lines]
    assert got[:4] == [
        ("unix", "POST", "/api/v1/services/web/deploy", 200, got[0][4]),
        ("tcp", "GET", "/api/v1/services", 401, None),
        ("tcp", "POST", "/api/v1/services/web/rollback", 403, "watcher"),
        ("tcp", "POST", "/api/v1/services/web/deploy", 409, "alice"),
    ], got
    assert lines[1]["peer"].startswith("127.0.0.1:") and "no valid token" in lines[1]["peer"]
    assert "already live" in lines[3]["outcome"], lines[3]
    assert len(lines) == 4, got
    # Text output, a window, and bad input.
    r = d.cli("audit", "--since", "1h")
    assert r.returncode == 0 and "/api/v1/services/web/rollback 403" in r.stdout, r.stdout
    r = d.cli("audit", "--since", "soon")
    assert r.returncode == 2 and "--since" in r.stderr, r.stderr
    st, body, _ = call(d, "GET", "/api/v1/audit", token="view-0123456789abcdef00")
    assert st == 403, body  # reading the audit log needs operator


@pytest.mark.parametrize("text,needle", [
    ("people:\n  alice: {unix_user: nobody}\n  bob: {unix_user: nobody}\n", "people.bob.unix_user"),
    ("people:\n  alice: {role: root}\n", "people.alice.role"),
    ("people:\n  alice: {services: {shop: [owner]}}\n", "no service named 'shop'"),
    ("people:\n  alice: {services: {web: [boss]}}\n", "people.alice.services.web[0]"),
    ("people:\n  carol: {}\n" + PLAN, "'alice' is not one of people"),
    ("admin: {socket_group: no-such-group-xyz}\n", "admin.socket_group"),
])
def test_bad_people_config_is_refused_naming_the_key(backend, daemon, text, needle):
    d = daemon([backend("v1")], top_extra=text)
    r = subprocess.run([str(BIN), "check", "-c", str(d.cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and needle in r.stderr and "cutover.yml:" in r.stderr, r.stderr


def test_reload_and_upgrade_are_in_the_audit_log(backend, daemon):
    d = daemon([backend("v1")])
    d.start(expect="v1\n")
    try:
        for cmd in (["reload"], ["upgrade"]):
            r = d.cli(*cmd)
            assert r.returncode == 0, r.stdout + r.stderr
        lines = wait_audit(d, 2)
        assert [(l["path"], l["status"]) for l in lines] == [("/api/v1/reload", 200),
                                                             ("/api/v1/upgrade", 200)], lines
    finally:
        # Each hand-over leaves a successor that is not this test's child: stop it by pid.
        st, body = d.api("GET", "/api/v1/health")
        if st == 200 and body.get("pid") not in (None, d.proc.pid):
            os.kill(body["pid"], signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(body["pid"], 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


def wait_audit(d, n, secs=10):
    import time
    deadline = time.monotonic() + secs
    while True:
        lines = audit(d)
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_an_action_whose_client_went_away_is_still_in_the_audit_log(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra="plans:\n  slow: {steps: [{weight: 10}, {pause: 1m}, "
               "{weight: 100}]}\n")
    d.start(expect="v1\n")
    body = json.dumps({"version": "v2", "targets": [v2.addr], "plan": "slow", "wait": True})
    r = subprocess.run(["curl", "-s", "-m", "1", "--unix-socket", str(d.sock), "-X", "POST",
                        "-H", "Content-Type: application/json", "--data-binary", body,
                        "http://localhost/api/v1/services/web/deploy"], capture_output=True)
    assert r.returncode == 28, r  # curl's timeout: it hung up before the answer
    lines = wait_audit(d, 1)
    assert [(l["path"], l["status"]) for l in lines] == [
        ("/api/v1/services/web/deploy", 499)], lines
    assert "went away" in lines[0]["outcome"], lines
    d.cli("abort", "web")
