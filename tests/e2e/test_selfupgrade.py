"""cutover itself without downtime, end to end: hot upgrades, config reloads, socket activation,
sd_notify, graceful stop and crash recovery, through the real daemon (build/cutover), the real
CLI, scripted backends (backend.py), wrk and small python clients, all on loopback.

A hand-over changes the daemon's pid: the successor is a child of the old daemon, not of this
test. Every case therefore also stops, at teardown, by pid, each process whose command line
names the case's temp dir (its config path): successors, launchers, wrapper scripts.

Figures (hand-over times, error counts) are printed: run with `-s` to see them.
    /usr/bin/python3 -m pytest -s -q tests/e2e/test_selfupgrade.py
"""
import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from conftest import BIN, body_of, free_port, http_get, live_name, port_open, run_cli, \
    wait_body, wait_port

# ---------------------------------------------------------------------------------- helpers --


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return sorted(int(x) for x in r.stdout.split() if int(x) != os.getpid())


def serve_pids(cfg):
    """Pids of the live (not zombie) `cutover serve -c CFG` processes, successors included."""
    return [p for p in pgrep(f"serve -c {cfg}") if alive(p)]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(fn, secs, what, interval=0.05):
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {secs}s (last: {last!r})")


def kill_tree_of(tmp_path):
    """Stops, by pid, every process whose command line names tmp_path (TERM, 5 s, KILL)."""
    pids = pgrep(str(tmp_path))
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids + pgrep(str(tmp_path)):
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(autouse=True)
def reap(procs, tmp_path):
    """Set up after `procs`, so torn down before it: successors go first, then procs' own."""
    yield
    kill_tree_of(tmp_path)


def handover_pid(out):
    m = re.search(r"handed over to pid (\d+)", out)
    assert m, f"no successor pid in the answer: {out!r}"
    return int(m.group(1))


def log_ts(line):
    m = re.match(r"ts=(\S+)", line)
    return datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() if m else None


def handover_times_ms(log):
    """From the daemons' shared log: ms from 'handing over' to 'successor ready', per hand-over."""
    out, start = [], None
    for line in log.splitlines():
        if "handing over to a new process" in line:
            start = log_ts(line)
        elif "successor ready; draining" in line and start is not None:
            out.append(round((log_ts(line) - start) * 1000))
            start = None
    return out


def script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


def assert_no_errors(res, min_requests=1000):
    assert res["requests"] > min_requests, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']} " \
        f"of {res['requests']}\n{res['text']}"


def upgrade_dir(path):
    """Config text that lets `upgrade --binary` take the test's own scripts in path."""
    return f"admin: {{upgrade_dir: {path}}}\n"


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def svc_yaml(name, port, targets, interval="200ms", hc_path="/healthz", drain="2s"):
    return (f"  {name}:\n"
            f"    listen: 127.0.0.1:{port}\n"
            f"    health_check: {{path: {hc_path}, interval: {interval}, timeout: 500ms, "
            f"healthy_threshold: 1, unhealthy_threshold: 2}}\n"
            f"    drain_timeout: {drain}\n"
            f"    targets: [{', '.join(targets)}]\n")


def start_daemon_env(d, env_extra, expect=None):
    """Like Daemon.start, with extra environment variables."""
    d.starts += 1
    env = dict(os.environ, **env_extra)
    d.proc = d.procs.start([BIN, "serve", "-c", d.cfg], name=f"cutover-{d.starts}", env=env)
    assert wait_port(d.port, 10, d.proc), f"cutover did not listen: {d.log()}"
    if expect is not None:
        wait_body(d.port, expect)
    return d


class Stream:
    """A steady stream of NEW connections, one GET / each, `rate` per second, each with its
    own client timeout; records (start, end, outcome) for every request."""

    def __init__(self, port, rate=200, timeout=5.0):
        self.port, self.rate, self.timeout = port, rate, timeout
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=400)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _one(self):
        t0 = time.monotonic()
        try:
            st, body, _ = http_get(self.port, "/", timeout=self.timeout)
            out = "ok" if st == 200 else f"http {st}"
        except ConnectionRefusedError:
            out = "refused"
        except (socket.timeout, TimeoutError):
            out = "timeout"
        except ConnectionResetError as e:  # RemoteDisconnected is one too
            out = f"reset ({type(e).__name__})"
        except (OSError, http.client.HTTPException) as e:
            out = type(e).__name__
        with self.lock:
            self.results.append((t0, time.monotonic(), out))

    def _run(self):
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            self.pool.submit(self._one)
            nxt += 1.0 / self.rate
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True)
        return self.results


def count(results, t_from=None, t_to=None):
    out = {}
    for t0, _, o in results:
        if (t_from is None or t0 >= t_from) and (t_to is None or t0 < t_to):
            out[o] = out.get(o, 0) + 1
    return out


# A launcher that does what systemd does for a .socket unit with Restart=always: it owns the
# listening socket for good, and (re)starts the daemon with it as fd 3 (LISTEN_FDS=1,
# LISTEN_FDNAMES=NAME, LISTEN_PID = the child's pid), RESTART_DELAY seconds after it died.
LAUNCHER = r'''
import os, signal, socket, sys, time
port, name, delay, pidfile = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
cmd = sys.argv[5:]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(4096)
child = [0]
def term(sig, frm):
    if child[0]:
        try: os.kill(child[0], signal.SIGTERM)
        except ProcessLookupError: pass
        try: os.waitpid(child[0], 0)
        except ChildProcessError: pass
    os._exit(0)
signal.signal(signal.SIGTERM, term)
while True:
    pid = os.fork()
    if pid == 0:
        if s.fileno() != 3:
            os.dup2(s.fileno(), 3)
        os.set_inheritable(3, True)
        env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES=name, LISTEN_PID=str(os.getpid()))
        os.execve(cmd[0], cmd, env)
    child[0] = pid
    with open(pidfile, "a") as f:
        f.write(f"{pid} {time.monotonic()}\n")
    _, status = os.waitpid(pid, 0)
    with open(pidfile, "a") as f:
        f.write(f"exit {pid} {status} {time.monotonic()}\n")
    child[0] = 0
    time.sleep(delay)
'''


def split(port, users):
    """user -> the body of GET / with X-User-Id: user."""
    out = {}
    for u in users:
        st, body, _ = http_get(port, "/", headers={"X-User-Id": u})
        out[u] = body.decode() if st == 200 else f"<{st}>"
    return out


def launcher_pids(pidfile):
    if not pidfile.exists():
        return []
    return [int(l.split()[0]) for l in pidfile.read_text().splitlines() if not l.startswith("exit")]


# ------------------------------------------------------------------------------ 1. upgrades --

@pytest.mark.xdist_group("load")
def test_three_hot_upgrades_under_keepalive_load(backend, daemon, wrk):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="3s").start(expect="v1\n")
    pids = [d.pid]
    load = wrk(d.port, 20, conns=16)
    took = []
    time.sleep(3)
    for i in range(3):
        t0 = time.monotonic()
        r = d.cli("upgrade", timeout=20)
        took.append(time.monotonic() - t0)
        assert r.returncode == 0, f"upgrade {i + 1} exit {r.returncode}: {r.stdout}{r.stderr}"
        new = handover_pid(r.stdout)
        assert new not in pids and alive(new), (new, pids)
        pids.append(new)
        t_last = time.monotonic()
        if i < 2:
            time.sleep(3)
    # Each replaced daemon is gone within drain_timeout (3 s) + 2 s of the last upgrade, while the
    # load goes on: exactly one daemon, the last successor, is left.
    left = wait_until(lambda: serve_pids(d.cfg) == [pids[-1]] and serve_pids(d.cfg),
                      3 + 2 - (time.monotonic() - t_last), "one daemon left after the upgrades")
    gone_after = time.monotonic() - t_last
    assert load.running(), "load ended before the upgrades were done: make the load longer"
    res = load.result()
    log = d.log()
    ho = handover_times_ms(log)
    print(f"\n3 hot upgrades under wrk -t1 -c16: {res['requests']} requests, "
          f"socket errors {res['socket_errors']}, non-2xx {res['non2xx']}; "
          f"`cutover upgrade` took {', '.join(f'{t * 1000:.0f}' for t in took)} ms; "
          f"spawn->READY (log) {ho} ms; one daemon left {gone_after:.2f}s after the last")
    assert_no_errors(res)
    assert left == [pids[-1]]
    assert len(ho) == 3, log
    assert body_of(d.port) == "v1\n"
    assert "level=error" not in log, log


def test_upgrades_do_not_leak_file_descriptors(backend, daemon):
    # Each daemon must pass on only the listening sockets and the READY fd: whatever else it
    # has open (its workers' copies of the listeners, connections, the store) must not survive
    # the exec into the successor, or every upgrade leaves more behind.
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="1s").start(expect="v1\n")
    counts = [len(os.listdir(f"/proc/{d.pid}/fd"))]
    pid = d.pid
    for _ in range(3):
        r = d.cli("upgrade", timeout=20)
        assert r.returncode == 0, r.stderr
        old, pid = pid, handover_pid(r.stdout)
        wait_until(lambda: not alive(old), 5, "old daemon exits")
        body_of(d.port)
        counts.append(len(os.listdir(f"/proc/{pid}/fd")))
    listeners = subprocess.run(["ss", "-ltnpH", f"sport = :{d.port}"], capture_output=True,
                               text=True).stdout.strip()
    print(f"\nopen fds: first daemon {counts[0]}, after each upgrade {counts[1:]}; "
          f"listener held as {listeners}")
    # The leak this guards against added two fds per upgrade (the workers' copies of each
    # listener). Totals jitter by one or two (health-check probes, admin connections), so the
    # exact check is on the listener: held by the daemon's own fd and one copy per worker.
    assert counts[-1] <= counts[0] + 2, f"fds grow with each upgrade: {counts}"
    holders = listeners.count("fd=")
    assert holders <= 1 + 2, f"listener held by {holders} fds: {listeners}"


def test_upgrade_mid_rollout_resumes_plan_at_its_step(backend, daemon):
    # A plan (30 %, pause 60 s, 100 %) is in its pause when the daemon is upgraded: the successor
    # carries on at the same step with the time that was left, and the split stays 30 %.
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], drain_timeout="2s", service_extra="    sticky: {header: X-User-Id}\n",
               top_extra="plans:\n  p30:\n    steps: [{weight: 30}, {pause: 60s}, {weight: 100}]\n")
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "p30", timeout=30)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"

    def progress():
        ch = d.status().get("change") or {}
        return ch.get("progress") or {}
    p1 = wait_until(lambda: (lambda p: p if p.get("step") == 2 else None)(progress()), 10,
                    "plan at step 2")
    left1 = p1.get("step_remaining_ms")
    users = [f"u{i}" for i in range(300)]
    before = split(d.port, users)
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, f"upgrade exit {r.returncode}: {r.stdout}{r.stderr}"
    new = handover_pid(r.stdout)
    time.sleep(0.5)
    p2 = progress()
    left2 = p2.get("step_remaining_ms")
    print(f"\nplan across an upgrade: step {p1.get('step')} -> {p2.get('step')}, "
          f"pause left {left1} -> {left2} ms")
    assert p2.get("step") == 2 and p2.get("weight") == 30, p2
    assert isinstance(left2, int) and 0 < left2 < left1 and left2 > left1 - 10000, (left1, left2)
    after = split(d.port, users)
    v2_share = list(after.values()).count("v2\n") / len(users)
    moved = [u for u in users if before[u] != after[u]]
    print(f"share of v2 after the upgrade {v2_share:.2f}; users that changed version: {len(moved)}")
    assert set(after.values()) <= {"v1\n", "v2\n"} and 0.2 <= v2_share <= 0.4, after
    assert not moved, f"{len(moved)} users changed version across the upgrade"
    assert alive(new) and serve_pids(d.cfg) in ([new], sorted([new, d.pid]))


# -------------------------------------------------------------------- 2. failing successors --

@pytest.mark.xdist_group("load")
def test_upgrade_to_a_binary_that_exits_keeps_the_old_daemon(backend, daemon, wrk, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], top_extra=upgrade_dir(tmp_path), drain_timeout="3s").start(expect="v1\n")
    bad = script(tmp_path / "bad-cutover", "exit 3\n")
    load = wrk(d.port, 8, conns=16)
    time.sleep(2)
    t0 = time.monotonic()
    r = d.cli("upgrade", "--binary", bad, timeout=20)
    took = time.monotonic() - t0
    msg = (r.stdout + r.stderr).strip()
    print(f"\nupgrade to a binary that exits 3: exit {r.returncode} after {took * 1000:.0f} ms: "
          f"{msg}")
    assert r.returncode == 1, f"upgrade to a failing binary: exit {r.returncode}: {msg}"
    assert "status 3" in msg and "keeps serving" in msg, msg
    assert d.alive() and serve_pids(d.cfg) == [d.pid]
    assert body_of(d.port) == "v1\n"

    # A binary that does not exist: refused by the CLI (exit 2) and by the daemon (400).
    missing = tmp_path / "no-such-cutover"
    r = d.cli("upgrade", "--binary", missing, timeout=20)
    assert r.returncode == 2, f"missing binary: exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "no-such-cutover" in r.stderr, r.stderr
    st, doc = d.api("POST", "/api/v1/upgrade", {"binary": str(missing)})
    assert st == 400 and "no-such-cutover" in str(doc), (st, doc)
    assert d.alive() and serve_pids(d.cfg) == [d.pid]

    assert load.running(), "load ended before the failed upgrades were done"
    res = load.result()
    print(f"load across the failed upgrades: {res['requests']} requests, "
          f"socket errors {res['socket_errors']}, non-2xx {res['non2xx']}")
    assert_no_errors(res)
    # The control plane restarted after the failed hand-over: a deploy works, then an upgrade.
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy after a failed upgrade: {r.stdout}{r.stderr}\n{d.log()}"
    wait_body(d.port, "v2\n", secs=5)
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, f"upgrade after a failed one: exit {r.returncode}: {r.stderr}"
    wait_until(lambda: serve_pids(d.cfg) == [handover_pid(r.stdout)], 6, "old daemon exits")
    assert body_of(d.port) == "v2\n"


@pytest.mark.xdist_group("load")
def test_upgrade_to_a_binary_that_never_gets_ready_times_out(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = daemon([v1], top_extra=upgrade_dir(tmp_path), drain_timeout="2s").start(expect="v1\n")
    hang = script(tmp_path / "hang-cutover", "exec sleep 60\n")
    up = d.cli_bg("upgrade", "--binary", hang)
    t0 = time.monotonic()
    answers = {}
    while up.poll() is None and time.monotonic() - t0 < 20:
        got = body_of(d.port, timeout=2)
        answers[got] = answers.get(got, 0) + 1
        time.sleep(0.05)
    took = time.monotonic() - t0
    out = up.log_path.read_text()
    print(f"\nupgrade to a binary that never says READY: exit {up.returncode} after {took:.1f}s: "
          f"{out.strip()}; answers meanwhile {answers}")
    assert up.returncode == 1, out
    assert 9 <= took <= 13, f"READY timeout is 10 s, took {took:.1f}s"
    assert "did not become ready" in out, out
    assert set(answers) == {"v1\n"}, answers
    # The hanging successor was killed; the old daemon is the only one and serves.
    wait_until(lambda: not pgrep(str(hang)), 3, "the hanging successor is killed")
    assert serve_pids(d.cfg) == [d.pid]


# ------------------------------------------------------------------------------- 3. reload --

@pytest.mark.xdist_group("load")
def test_reload_adds_changes_removes_services_under_load(backend, daemon, wrk):
    web, chk, gone, added = backend("web"), backend("chk"), backend("gone"), backend("added")
    d = daemon([web])
    p_chk, p_gone, p_added = free_port(), free_port(), free_port()
    head = f"state_dir: {d.state_dir}\nservices:\n"
    old = head + svc_yaml("web", d.port, [web.addr]) + svc_yaml("chk", p_chk, [chk.addr]) + \
        svc_yaml("gone", p_gone, [gone.addr])
    new = head + svc_yaml("web", d.port, [web.addr]) + \
        svc_yaml("chk", p_chk, [chk.addr], interval="700ms", hc_path="/hc2") + \
        svc_yaml("added", p_added, [added.addr])
    write_atomic(d.cfg, old)
    d.start(expect="web\n")
    wait_body(p_chk, "chk\n")
    wait_body(p_gone, "gone\n")
    assert not port_open(p_added)
    chk.clear()
    load = wrk(d.port, 10, conns=16)
    time.sleep(3)
    write_atomic(d.cfg, new)
    t0 = time.monotonic()
    r = d.cli("reload", timeout=20)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"reload exit {r.returncode}: {r.stdout}{r.stderr}\n{d.log()}"
    new_pid = handover_pid(r.stdout)
    t_reload = time.monotonic()
    # The added service answers, the changed one still does, the removed one stops (drain 2 s).
    wait_body(p_added, "added\n", secs=5)
    t_added = time.monotonic() - t_reload
    assert body_of(p_chk) == "chk\n"
    # The changed health check runs on its new path at its new interval (700 ms).
    time.sleep(max(0.0, 3.5 - (time.monotonic() - t_reload)))
    hc = [e["t"] for e in chk.requests() if e["line"].startswith("GET /hc2 ")]
    gaps = sorted(b - a for a, b in zip(hc, hc[1:]))
    assert len(hc) >= 3, f"new health check seen {len(hc)} times in 3.5 s: {chk.requests()[:5]}"
    median = gaps[len(gaps) // 2]
    assert load.running(), "load ended before the reload was done"
    res = load.result()
    print(f"\nreload under load on the unchanged service: {res['requests']} requests, socket "
          f"errors {res['socket_errors']}, non-2xx {res['non2xx']}; reload took "
          f"{took * 1000:.0f} ms; added service answered after {t_added:.2f}s; new health "
          f"check every {median * 1000:.0f} ms")
    assert_no_errors(res)
    assert 0.55 <= median <= 0.95, f"health check interval after reload: {gaps}"
    assert body_of(d.port) == "web\n"
    # The old daemon is gone within its drain_timeout (2 s), and with it the removed service's
    # port: nobody listens there any more (a connection would wait in a backlog nobody serves).
    wait_until(lambda: serve_pids(d.cfg) == [new_pid], 2 + 3, "the old daemon exits")
    closed = None
    try:
        wait_until(lambda: not port_open(p_gone), 1.0,
                   "the removed service's port closes once the old daemon is gone")
        closed = time.monotonic() - t_reload
    finally:
        print(f"removed service's port {p_gone}: "
              + (f"closed {closed:.2f}s after the reload" if closed else
                 f"still accepting connections; held by {holders(p_gone)}"))


def holders(port):
    """Which processes hold a listening socket on port, from ss -ltnp."""
    r = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return r.stdout.strip() or "nobody"


def test_reload_with_invalid_config_is_refused_and_old_config_serves(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="2s").start(expect="v1\n")
    good = d.cfg.read_text()
    bad = good.replace("interval: 200ms", "interval: 5 parsecs")
    assert bad != good
    write_atomic(d.cfg, bad)
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "parsecs" in l)
    # Through -c, the CLI itself refuses the file; through --admin, the daemon refuses it.
    r = d.cli("reload", timeout=20)
    assert r.returncode == 2, f"reload (CLI reads the bad file): exit {r.returncode}"
    assert f"cutover.yml:{line}:" in r.stderr, r.stderr
    r = run_cli("reload", "--admin", f"unix:{d.sock}", timeout=20)
    print(f"\nreload of an invalid config: exit {r.returncode}: {r.stderr.strip()}")
    assert r.returncode == 2, f"reload (daemon reads the bad file): exit {r.returncode}"
    assert f"cutover.yml:{line}:" in r.stderr and "interval" in r.stderr, r.stderr
    assert "reload refused" in d.log()
    assert d.alive() and serve_pids(d.cfg) == [d.pid]
    assert {body_of(d.port) for _ in range(20)} == {"v1\n"}
    # SIGHUP with the bad file: refused too, logged, nothing moves.
    os.kill(d.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert d.log().count("reload refused") >= 2, d.log()
    assert d.alive() and serve_pids(d.cfg) == [d.pid]

    # A valid file whose new listener cannot be opened (the port is taken): the successor fails,
    # reload exits 1 with the reason, the old daemon keeps serving.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        write_atomic(d.cfg, good + f"  other:\n    listen: 127.0.0.1:{taken}\n"
                                   f"    targets: [{v1.addr}]\n")
        r = d.cli("reload", timeout=20)
        print(f"reload onto a taken port: exit {r.returncode}: {r.stderr.strip()}")
        assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}{r.stderr}"
        assert str(taken) in r.stderr and "keeps serving" in r.stderr, r.stderr
        # The failed successor may take a moment to be reaped.
        assert d.alive()
        wait_until(lambda: serve_pids(d.cfg) == [d.pid], 5, "the failed successor to be gone")
        assert body_of(d.port) == "v1\n"
    finally:
        blocker.close()
    # Back to a good file: a reload goes through (nothing was left half done).
    write_atomic(d.cfg, good)
    r = d.cli("reload", timeout=20)
    assert r.returncode == 0, f"reload of the good file: {r.stdout}{r.stderr}"
    wait_until(lambda: serve_pids(d.cfg) == [handover_pid(r.stdout)], 5, "old daemon exits")
    assert body_of(d.port) == "v1\n"


# -------------------------------------------------------------------- 5. socket activation --

@pytest.mark.xdist_group("load")
def test_socket_activation_kill9_under_new_connections_refuses_none(backend, daemon, tmp_path,
                                                                    procs):
    v1 = backend("v1")
    # The burst of requests that waited in the backlog hits the (python) backend at once: a
    # 500 ms health check can time out then and mark it unhealthy (503s that say nothing about
    # the socket hand-over tested here), so the checks are lenient in this case.
    d = daemon([v1], drain_timeout="2s", health={"timeout": "3s", "unhealthy_threshold": 5})
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    pidfile = tmp_path / "daemon.pids"
    lp = procs.start([sys.executable, launcher, d.port, "web", "1.0", pidfile,
                      BIN, "serve", "-c", d.cfg], name="launcher")
    wait_until(lambda: launcher_pids(pidfile), 5, "the launcher started the daemon")
    wait_body(d.port, "v1\n")
    first = launcher_pids(pidfile)[0]
    assert "listeners_inherited=yes" in lp.log_path.read_text()

    stream = Stream(d.port, rate=200, timeout=5.0)
    time.sleep(2)
    t_kill = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: (launcher_pids(pidfile) + [None])[1], 5, "the daemon restarted")
    t_restart = time.monotonic()
    wait_until(lambda: "pid=%d" % second in lp.log_path.read_text(), 5, "the new daemon serves")
    time.sleep(3)
    results = stream.stop()
    allc = count(results)
    gap = count(results, t_kill, t_restart + 0.2)
    slow = max(e - s for s, e, o in results if o == "ok")
    bad = sorted((round(s - t_restart, 2), o) for s, e, o in results if o != "ok")
    if bad:
        print(f"failures (start time relative to the restart, s): {bad[:5]} .. {bad[-3:]}")
        print(lp.log_path.read_text()[-3000:])
    print(f"\nsocket activation, kill -9 under {len(results)} new connections (~200/s): "
          f"all {allc}; started between the kill and the restart ({t_restart - t_kill:.2f}s): "
          f"{gap}; slowest answered request {slow:.2f}s")
    assert allc.get("refused", 0) == 0, f"connections refused across kill -9 + restart: {allc}"
    # Only the requests the killed daemon had already accepted may die with it (a few at most);
    # those that arrived in the gap waited in the kernel's backlog and were answered. How many
    # arrive in the gap depends on how fast this Python client starts requests, not on the
    # daemon: 200/s nominal, 60/s measured with the host at load average 12 (80 in a 1.33 s gap).
    # 20 is enough to show that the backlog held them; every one of them must be answered.
    assert gap.get("ok", 0) >= 20, gap
    assert set(gap) == {"ok"}, f"requests that arrived in the gap failed: {gap}"
    broken = sum(n for o, n in allc.items() if o != "ok")
    assert broken <= 10, f"more failures than requests in flight at the kill: {allc}"
    assert slow >= 0.8, "no request waited for the restart: was the daemon really down?"
    assert alive(second) and body_of(d.port) == "v1\n"
    assert lp.log_path.read_text().count("listeners_inherited=yes") == 2


def test_systemd_socket_activate_smoke(backend, daemon, procs):
    sa = "/usr/bin/systemd-socket-activate"
    if not os.access(sa, os.X_OK):
        pytest.skip("systemd-socket-activate not installed (Debian package systemd)")
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="2s")
    p = procs.start([sa, "-l", f"127.0.0.1:{d.port}", "--fdname=web", BIN, "serve", "-c", d.cfg],
                    name="socket-activate")
    assert wait_port(d.port, 5, p)  # the launcher listens; the first connection starts cutover
    wait_body(d.port, "v1\n", secs=10)
    # systemd-socket-activate execs cutover in place: the launcher's pid is the daemon's.
    assert os.readlink(f"/proc/{p.pid}/exe") == str(BIN.resolve())
    # The data plane may answer before the daemon logs that it serves: wait for the line.
    wait_until(lambda: "listeners_inherited=yes" in p.log_path.read_text(), 5,
               "the daemon logs that it inherited its listener")
    assert serve_pids(d.cfg) == [p.pid]
    # The activated socket is handed on by an upgrade like any other.
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, f"upgrade under socket activation: {r.stdout}{r.stderr}"
    new = handover_pid(r.stdout)
    wait_until(lambda: serve_pids(d.cfg) == [new], 5, "old daemon exits")
    assert body_of(d.port) == "v1\n"


@pytest.mark.xdist_group("load")
def test_sd_notify_messages_across_upgrade_and_stop(backend, daemon, tmp_path):
    # NOTIFY_SOCKET as systemd sets it for Type=notify: READY=1 at start; on upgrade RELOADING=1
    # from the old pid, READY=1 + MAINPID=new from the successor (hence NotifyAccess=all), and
    # nothing after that from the old pid that would make systemd think the service stops;
    # STOPPING=1 on SIGTERM.
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="1s")
    path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    ns.settimeout(0.2)
    msgs = []

    def drain_notify(secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                data, anc, _, _ = ns.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, TimeoutError):
                continue
            pid = None
            for lvl, typ, cd in anc:
                if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cd[:12])[0]
            msgs.append((pid, data.decode()))

    try:
        start_daemon_env(d, {"NOTIFY_SOCKET": path}, expect="v1\n")
        drain_notify(0.5)
        pid0 = d.pid
        assert (pid0, f"READY=1\nMAINPID={pid0}") in msgs, msgs
        n_start = len(msgs)
        r = d.cli("upgrade", timeout=20)
        assert r.returncode == 0, r.stderr
        pid1 = handover_pid(r.stdout)
        wait_until(lambda: not alive(pid0) or None, 5, "old daemon exits")
        drain_notify(0.5)
        after = msgs[n_start:]
        print(f"\nsd_notify across an upgrade: {after}")
        assert after[0] == (pid0, "RELOADING=1"), after
        i_ready = after.index((pid1, f"READY=1\nMAINPID={pid1}"))
        late = [m for m in after[i_ready + 1:] if m[0] == pid0]
        n_up = len(msgs)
        os.kill(pid1, signal.SIGTERM)
        wait_until(lambda: not alive(pid1) or None, 5, "daemon stops on SIGTERM")
        drain_notify(0.3)
        assert (pid1, "STOPPING=1") in msgs[n_up:], msgs[n_up:]
        # With NotifyAccess=all, systemd takes STOPPING=1 from the replaced daemon as the
        # service stopping (state stop-sigterm; MAINPID, the successor, is killed at
        # TimeoutStopSec): the replaced daemon must not send it.
        assert not late, f"the replaced daemon {pid0} notified after its successor was " \
                         f"ready: {late}"
    finally:
        ns.close()


# ------------------------------------------------------------------------------ 6. SIGTERM --

@pytest.mark.xdist_group("load")
def test_sigterm_under_load_completes_in_flight_requests(backend, daemon, wrk):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="5s").start(expect="v1\n")
    load = wrk(d.port, 6, conns=16)
    idle = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    idle.request("GET", "/")
    assert idle.getresponse().read() == b"v1\n"
    answers = [None] * 5

    def slow(i):
        try:
            answers[i] = http_get(d.port, "/slow?ms=1500", timeout=10)[:2]
        except Exception as e:  # reported by the assertion below
            answers[i] = e
    threads = [threading.Thread(target=slow, args=(i,)) for i in range(5)]
    time.sleep(2)
    for t in threads:
        t.start()
    time.sleep(0.3)
    t_term = time.monotonic()
    os.kill(d.pid, signal.SIGTERM)
    # A keep-alive connection that was idle when SIGTERM came: its next request is answered
    # (with Connection: close), not lost to a close racing with it.
    time.sleep(0.3)
    idle.request("GET", "/")
    resp = idle.getresponse()
    idle_answer = (resp.status, resp.read(), resp.getheader("Connection", ""))
    idle.close()
    for t in threads:
        t.join(10)
    d.proc.wait(10)
    took = time.monotonic() - t_term
    res = load.result()
    print(f"\nSIGTERM with 5 slow requests in flight under wrk: answers "
          f"{[a if isinstance(a, Exception) else a[0] for a in answers]}; exited "
          f"(code {d.proc.returncode}) {took:.2f}s after SIGTERM; wrk: {res['requests']} "
          f"requests, socket errors {res['socket_errors']} (after the stop), non-2xx "
          f"{res['non2xx']}")
    assert all(a == (200, b"slept 1500\n") for a in answers), answers
    assert idle_answer[:2] == (200, b"v1\n") and idle_answer[2].lower() == "close", idle_answer
    assert took <= 5 + 0.5, f"daemon took {took:.2f}s to stop, drain_timeout is 5s"
    assert d.proc.returncode == 0
    assert res["non2xx"] == 0, res["text"]
    assert "level=error" not in d.log(), d.log()


@pytest.mark.xdist_group("load")
def test_second_sigint_exits_at_once(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="30s").start(expect="v1\n")
    idle = socket.create_connection(("127.0.0.1", d.port))  # keeps the drain waiting
    try:
        os.kill(d.pid, signal.SIGINT)
        time.sleep(0.5)
        assert d.alive(), "one SIGINT must drain, not exit"
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGINT)
        d.proc.wait(5)
        assert time.monotonic() - t0 < 1.0
    finally:
        idle.close()


# ------------------------------------------------------------------------ 7. crash recovery --

@pytest.mark.xdist_group("load")
def test_kill9_under_load_then_restart_serves_live_version(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], drain_timeout="2s").start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=20)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    wait_body(d.port, "v2\n", secs=5)
    load = wrk(d.port, 8, conns=16)
    time.sleep(2)
    d.kill9()
    t_kill = time.monotonic()
    time.sleep(0.5)
    d.start()
    wait_body(d.port, "v2\n", secs=10)
    t_back = time.monotonic() - t_kill
    seen = {body_of(d.port) for _ in range(30)}
    res = load.result()
    print(f"\nkill -9 under load, restart by hand (no socket activation): serving v2 again "
          f"{t_back:.2f}s after the kill; wrk {res['requests']} requests, socket errors "
          f"{res['socket_errors']} (expected: the port is closed while no daemon runs), "
          f"non-2xx {res['non2xx']}")
    assert seen == {"v2\n"}, seen
    svc = d.status()
    assert live_name(svc) == "v2", svc
    assert serve_pids(d.cfg) == [d.pid]


# ---------------------------------------------------------------------------- 8. bad input --

def test_bad_upgrade_and_reload_requests_leave_the_daemon_untouched(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = daemon([v1], top_extra=upgrade_dir(tmp_path), drain_timeout="2s").start(expect="v1\n")
    pid = d.pid

    # A relative --binary that does not exist: the CLI refuses (exit 2). A relative path that
    # reaches the API (not through the CLI, which makes it absolute) is a 400.
    r = d.cli("upgrade", "--binary", "relative/path", timeout=20)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "relative/path" in r.stderr, r.stderr
    st, doc = d.api("POST", "/api/v1/upgrade", {"binary": "build/cutover"})
    assert st == 400 and "absolute" in str(doc), (st, doc)
    assert serve_pids(d.cfg) == [pid]

    # A second upgrade (or a reload) while one is in progress: 409 -> exit 1, the first goes on.
    slow = script(tmp_path / "slow-cutover", f"sleep 3\nexec {BIN} \"$@\"\n")
    first = d.cli_bg("upgrade", "--binary", slow)
    # The successor itself: the CLI of `first` names the binary too, and may not have asked yet.
    wait_until(lambda: pgrep(f"{slow} serve"), 3, "the slow successor started")
    r2 = d.cli("upgrade", timeout=20)
    r3 = d.cli("reload", timeout=20)
    st4, doc4 = d.api("POST", "/api/v1/upgrade", {})
    assert body_of(d.port) == "v1\n", "the old daemon must serve during the hand-over"
    assert first.wait(15) == 0, first.log_path.read_text()
    print(f"\nsecond upgrade during one: exit {r2.returncode}: {r2.stderr.strip()}; reload: exit "
          f"{r3.returncode}; API: {st4}")
    assert r2.returncode == 1 and "already in progress" in r2.stderr, (r2.returncode, r2.stderr)
    assert r3.returncode == 1 and "already in progress" in r3.stderr, (r3.returncode, r3.stderr)
    assert st4 == 409, (st4, doc4)
    pid = handover_pid(first.log_path.read_text())
    wait_until(lambda: serve_pids(d.cfg) == [pid], 5, "old daemon exits")
    assert body_of(d.port) == "v1\n"

    # Reload when the config file vanished: a clear error (exit 2), the daemon untouched.
    hidden = d.cfg.with_name("hidden.yml")
    os.rename(d.cfg, hidden)
    try:
        r = d.cli("reload", timeout=20)  # the CLI cannot read it either
        assert r.returncode == 2 and "cannot read" in r.stderr, (r.returncode, r.stderr)
        r = run_cli("reload", "--admin", f"unix:{d.sock}", timeout=20)
        print(f"reload with the config gone: exit {r.returncode}: {r.stderr.strip()}")
        assert r.returncode == 2, f"exit {r.returncode}: {r.stdout}{r.stderr}"
        assert "cutover.yml" in r.stderr and "No such file" in r.stderr, r.stderr
        assert serve_pids(hidden.with_name("cutover.yml")) == [pid]
        assert body_of(d.port) == "v1\n"
    finally:
        os.rename(hidden, d.cfg)
