"""The small faults of issue 14 (item 6), each a story with the real daemon:

- `upgrade --binary` takes only a binary under admin.upgrade_dir (default: the running binary's
  directory), owned by root or the daemon's user and not writable by group or others, so an
  admin token is not a way to run any program as the daemon;
- a query that names an unknown service is a 404 naming it, not an empty 200;
- a kill -9 costs a keep-alive client at most one request per open connection
  (docs/operations.md states it);
- the caller of `upgrade` learns the outcome even when the old daemon dies mid hand-over (the
  CLI asks whoever answers at the same address).
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import time

from conftest import BIN, body_of, free_port, run_cli, wait_body, wait_port


def script(path, text, mode=0o755):
    path.write_text("#!/bin/sh\n" + text)
    os.chmod(path, mode)
    return path


def stop_pid(pid):
    """SIGTERM to a daemon the test's process list does not know (a hand-over's successor), and
    waits up to 10 s for it to end."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.1)


def health_pid(d):
    st, doc = d.api("GET", "/api/v1/health")
    assert st == 200, (st, doc)
    return doc["pid"]


def test_upgrade_binary_outside_the_running_binarys_directory_is_refused(backend, daemon,
                                                                         tmp_path):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    pid = d.pid
    other = script(tmp_path / "evil", "touch " + str(tmp_path / "ran") + "\nexit 3\n")
    r = d.cli("upgrade", "--binary", other, timeout=20)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "not under admin.upgrade_dir" in r.stderr and "running binary's directory" in r.stderr \
        and str(BIN.resolve().parent) in r.stderr, r.stderr
    st, doc = d.api("POST", "/api/v1/upgrade", {"binary": str(other)})
    assert st == 400 and "not under admin.upgrade_dir" in doc["error"], (st, doc)
    time.sleep(0.3)
    assert not (tmp_path / "ran").exists(), "the refused binary ran"
    assert health_pid(d) == pid and d.alive()
    assert "upgrade refused" in d.log()


def test_upgrade_binary_must_be_under_upgrade_dir_and_safely_owned(backend, daemon, tmp_path):
    v1 = backend("v1")
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    os.chmod(bindir, 0o755)
    d = daemon([v1], top_extra=f"admin: {{upgrade_dir: {bindir}}}\n").start(expect="v1\n")
    pid = d.pid
    marker = tmp_path / "ran"
    evil = f"touch {marker}\nexit 3\n"
    outside = script(tmp_path / "outside", evil)
    link = bindir / "link"
    os.symlink(outside, link)
    writable = script(bindir / "writable", evil, mode=0o777)
    group_w = script(bindir / "group-writable", evil, mode=0o775)
    foreign = script(bindir / "foreign", evil)
    os.chown(foreign, 12345, 12345)
    (bindir / "sub").mkdir()
    cases = [
        (outside, "not under admin.upgrade_dir"),
        (link, "not under admin.upgrade_dir"),               # a symlink is followed first
        (bindir / ".." / "outside", "not under admin.upgrade_dir"),
        (writable, "mode 0777"),
        (group_w, "mode 0775"),
        (foreign, "owned by uid 12345"),
        (bindir / "missing", "No such file"),
        (bindir / "sub", "not a regular file"),
    ]
    for path, want in cases:
        st, doc = d.api("POST", "/api/v1/upgrade", {"binary": str(path)})
        assert st == 400 and want in doc["error"], (path, st, doc)
    r = d.cli("upgrade", "--binary", writable, timeout=20)
    assert r.returncode != 0 and "mode 0777" in r.stderr, r.stdout + r.stderr
    # A directory others may write into cannot hold the binary either (it could be swapped).
    good = script(bindir / "cutover-next", f'exec {BIN} "$@"\n')
    os.chmod(bindir, 0o777)
    try:
        st, doc = d.api("POST", "/api/v1/upgrade", {"binary": str(good)})
        assert st == 400 and "writable by group or others" in doc["error"], (st, doc)
    finally:
        os.chmod(bindir, 0o755)
    time.sleep(0.3)
    assert not marker.exists(), "a refused binary ran"
    assert health_pid(d) == pid

    # The right binary in the right place with the right owner and mode: the upgrade happens.
    r = d.cli("upgrade", "--binary", good, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and d.alive():
        time.sleep(0.1)
    assert not d.alive(), "the old daemon did not hand over"
    new = json.loads(subprocess.run(
        ["curl", "-s", "-m", "5", "--unix-socket", str(d.sock), "http://x/api/v1/health"],
        capture_output=True, text=True, timeout=10).stdout)["pid"]
    assert new != pid
    try:
        assert body_of(d.port) == "v1\n"
    finally:
        stop_pid(new)


def test_upgrade_dir_must_be_a_directory(tmp_path):
    for value, want in (("/etc/passwd", "not a directory"),
                        (str(tmp_path / "nope"), "No such file")):
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"state_dir: {tmp_path / 'var'}\nadmin:\n  upgrade_dir: {value}\n")
        r = run_cli("check", "-c", cfg, timeout=10)
        assert r.returncode == 2 and "c.yml:3:" in r.stderr and "admin.upgrade_dir" in r.stderr \
            and want in r.stderr, r.stderr


def test_queries_naming_an_unknown_service_are_404(backend, daemon):
    v1 = backend("v1")
    old_port = free_port()
    d = daemon([v1], service_extra=(f"  old:\n    listen: 127.0.0.1:{old_port}\n"
                                    f"    health_check: {{interval: 200ms, healthy_threshold: 1}}\n"
                                    f"    targets: [{v1.addr}]\n"))
    d.start(expect="v1\n")
    for path in ["/api/v1/changes?service=nonexistent", "/api/v1/changes?service=nonexistent&limit=5",
                 "/api/v1/services/nonexistent", "/api/v1/changes?service=we"]:
        st, doc = d.api("GET", path)
        assert st == 404, (path, st, doc)
        name = path.split("service=")[-1].split("&")[0] if "service=" in path else "nonexistent"
        assert f"unknown service '{name}'" in doc["error"], (path, doc)
    # The event stream too (answered before the stream starts).
    r = subprocess.run(["curl", "-s", "-m", "3", "-w", "\n%{http_code}", "--unix-socket",
                        str(d.sock), "http://x/api/v1/events?service=nonexistent"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.endswith("\n404") and "nonexistent" in r.stdout, r.stdout
    # The CLI says so and exits non-zero.
    r = d.cli("history", "nonexistent")
    assert r.returncode != 0 and "unknown service 'nonexistent'" in r.stderr, \
        (r.returncode, r.stdout, r.stderr)
    # Known services answer 200, with or without changes.
    st, doc = d.api("GET", "/api/v1/changes?service=web")
    assert st == 200 and doc["changes"] == [], doc
    r = d.cli("deploy", "old", "v2", "--target", v1.addr, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    # A service a reload removed keeps its history: still a 200 with its changes.
    text = d.cfg.read_text()
    d.cfg.write_text(text[:text.index("  old:\n")])
    r = d.cli("reload", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st, doc = d.api("GET", "/api/v1/services/old")
            if st == 404:
                break
            time.sleep(0.2)
        assert st == 404, "the reload did not remove the service"
        st, doc = d.api("GET", "/api/v1/changes?service=old")
        assert st == 200 and len(doc["changes"]) == 1, (st, doc)
    finally:
        stop_pid(health_pid(d))


def test_kill9_costs_a_keepalive_client_at_most_one_request_per_connection(backend, procs,
                                                                          tmp_path):
    """docs/operations.md: a keep-alive client loses at most one request per open connection."""
    v1 = backend("v1")
    port = free_port()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"state_dir: {tmp_path / 'var'}\nservices:\n  web:\n"
                   f"    listen: 127.0.0.1:{port}\n"
                   f"    health_check: {{interval: 200ms, healthy_threshold: 1}}\n"
                   f"    targets: [{v1.addr}]\n")
    p = procs.start([BIN, "serve", "-c", cfg], name="serve")
    assert wait_port(port, 10, p)
    wait_body(port, "v1\n")
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(8)]
    for c in conns:
        c.request("GET", "/")
        assert c.getresponse().read() == b"v1\n"
    # Half of them have a request in flight at the kill, half are idle.
    for c in conns[:4]:
        c.request("GET", "/slow?ms=3000")
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    p2 = procs.start([BIN, "serve", "-c", cfg], name="serve-2")
    assert wait_port(port, 10, p2)
    wait_body(port, "v1\n")
    def attempt(c, send):
        """One try: send (unless the request is already out) and read the answer; None: lost."""
        try:
            if send:
                c.request("GET", "/")
            return c.getresponse().read()
        except (OSError, http.client.HTTPException):
            c.close()  # the client's next request reconnects
            return None

    lost = []
    for i, c in enumerate(conns):
        got, failed = attempt(c, send=i >= 4), 0
        while got is None and failed < 3:
            failed += 1
            got = attempt(c, send=True)
        assert got == b"v1\n", (i, got)
        lost.append(failed)
        c.close()
    print(f"\nrequests lost per keep-alive connection across a kill -9: {lost}")
    assert all(n <= 1 for n in lost), lost
    assert lost[:4] == [1, 1, 1, 1], f"an in-flight request survived a kill -9? {lost}"


def test_upgrade_caller_learns_the_outcome_when_the_old_daemon_dies_mid_handover(backend, daemon,
                                                                                  tmp_path):
    v1 = backend("v1")
    d = daemon([v1], top_extra=f"admin: {{upgrade_dir: {tmp_path}}}\n", drain_timeout="2s")
    d.start(expect="v1\n")
    old = d.pid
    started = tmp_path / "successor-started"
    slow = script(tmp_path / "slow-cutover",
                  f'echo $$ > {started}\nsleep 2\nexec {BIN} "$@"\n')
    up = d.cli_bg("upgrade", "--binary", slow)
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), up.log_path.read_text()
    time.sleep(0.1)
    successor = int(started.read_text())
    # The old daemon dies before its successor is ready, so before it can answer.
    os.kill(old, signal.SIGKILL)
    try:
        rc = up.wait(30)
        out = up.log_path.read_text()
        print(f"\nupgrade whose old daemon was killed mid hand-over: exit {rc}: {out.strip()}")
        assert rc == 0, out
        assert f"handed over to pid {successor}" in out, out
        assert body_of(d.port) == "v1\n"
        assert health_pid(d) == successor
    finally:
        stop_pid(successor)
