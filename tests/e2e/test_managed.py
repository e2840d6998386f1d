"""Managed instances, end to end: cutover runs the versions itself (`run:` in the service) and a
managed deploy under load loses nothing, a killed instance comes back, a crashing version never
gets traffic (or is rolled back during a canary), retired and stopped versions leave no process,
a restarted daemon adopts the instances it left, and `cutover logs` shows their output.

The instance program is a copy of backend.py in the test's tmp dir (so the process counts below
see this test's instances only), patched to print two lines at start and to misbehave on demand:
the environment variable MODE_<VERSION> (set through `run.env`) is one of
  crash_at_start  print "boom" and exit 1 before listening
  crash_after     serve for ~1 s, then print "boom" and exit 1
  ignore_term     ignore SIGTERM (only SIGKILL stops it)
  errors          answer 500 where it would answer "VERSION\\n" (health checks still pass)

Figures (errors under load, deploy-to-100 % time) are printed: run with `-s` to see them.
Every test is bounded (SIGALRM) and stops the daemon and any instance left by pid.
"""
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BACKEND, Daemon, Procs, body_of, free_ports, live_name, run_cli, wait_body, \
    write_config

TEST_LIMIT_S = 120

APP_PATCH = '''
import os as _os
import signal as _signal

_MODE = _os.environ.get("MODE_" + VERSION, "")
if _MODE == "crash_at_start":
    print(f"boom: {VERSION} cannot start", flush=True)
    sys.exit(1)
if _MODE == "ignore_term":
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
if _MODE == "errors":
    _plain_send = send

    def send(sock, code, body, extra=(), ctype="text/plain", head_only=False):
        if code == 200 and body == (VERSION + "\\n").encode():
            code = 500
        _plain_send(sock, code, body, extra, ctype, head_only)


def _announce():
    print(f"started {VERSION} on {PORT}", flush=True)
    print(f"ready {VERSION} instance {_os.environ.get('CUTOVER_INSTANCE', '?')}", flush=True)
    if _MODE == "crash_after":
        def _die():
            time.sleep(1.0)
            print(f"boom: {VERSION} crashing after 1s", flush=True)
            _os._exit(1)
        threading.Thread(target=_die, daemon=True).start()


'''


def write_app(path):
    src = BACKEND.read_text()
    assert "\ndef main():" in src and "    ls.listen(1024)\n" in src
    src = src.replace("\ndef main():", APP_PATCH + "\ndef main():", 1)
    src = src.replace("    ls.listen(1024)\n", "    ls.listen(1024)\n    _announce()\n", 1)
    path.write_text(src)
    return path


def inst_pids(app, version=None):
    """Live (non-zombie) processes running `app`, optionally only those of `version`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if str(app) in argv and (version is None or argv[-1] == version):
            out.append(int(d))
    return sorted(out)


def instances_of(svc, which="live"):
    return (svc.get(which) or {}).get("instances") or []


def wait_for(fn, secs, what, interval=0.1):
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {secs}s waiting for {what} (last: {last!r})")


def assert_no_errors(res, min_requests=1000):
    assert res["requests"] > min_requests, f"too few requests under load:\n{res['text']}"
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, \
        f"errors under load: socket={res['socket_errors']} non2xx={res['non2xx']} " \
        f"of {res['requests']}\n{res['text']}"


class Poller:
    """GET / on fresh connections every few ms in a thread; keeps (time, body) pairs."""

    def __init__(self, port, every=0.01):
        self.port = port
        self.every = every
        self.seen = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.seen.append((time.monotonic(), body_of(self.port, timeout=2)))
            time.sleep(self.every)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.seen


class Managed:
    """A daemon whose service `web` runs the patched backend copy; cleans up by pid."""

    def __init__(self, procs, tmp, make_daemon):
        self.procs = procs
        self.tmp = tmp
        self.make_daemon = make_daemon
        self.app = write_app(tmp / "app.py")
        # The instances' port_range: 61 ports of this worker's block, so that parallel tests
        # never start instances on the same port.
        self.lo = free_ports(61)
        self.d = None

    def daemon(self, instances=2, env=None, plans="", stop_timeout="3s", drain="2s",
               deploy_timeout="10s", command=None, port_range=None, health=None, where=None,
               rollback_window=None, strategy=None, extra="", run_extra=""):
        cmd = command or [sys.executable, str(self.app), "${PORT}", "${VERSION}"]
        run = ("    run:\n"
               f"      command: [{', '.join(repr(c) if c.startswith('$') else c for c in cmd)}]\n"
               f"      instances: {instances}\n"
               f"      port_range: {port_range or f'{self.lo}-{self.lo + 60}'}\n"
               f"      stop_timeout: {stop_timeout}\n")
        if rollback_window:
            run += f"      rollback_window: {rollback_window}\n"
        run += run_extra  # more run keys, indented by 6
        if env:
            run += "      env: {" + ", ".join(f"{k}: {v}" for k, v in env.items()) + "}\n"
        if strategy:
            run += f"    strategy: {strategy}\n"
        run += extra  # more service keys, indented by 4
        cfg = dict(service_extra=run, top_extra=plans, drain_timeout=drain,
                   deploy_timeout=deploy_timeout, health=health)
        if where is not None:  # the config and state_dir somewhere else than tmp_path
            where.mkdir(parents=True, exist_ok=True)
            self.d = Daemon(self.procs, where, [], **cfg)
        else:
            self.d = self.make_daemon([], **cfg)
        return self.d

    def pids(self, version=None):
        return inst_pids(self.app, version)

    def deploy(self, version, *extra, timeout=40):
        r = self.d.cli("deploy", "web", version, *extra, timeout=timeout)
        return r

    def deploy_ok(self, version, *extra):
        r = self.deploy(version, "--wait", *extra)
        assert r.returncode == 0, \
            f"deploy {version} exit {r.returncode}: {r.stdout}{r.stderr}\n{self.d.log()[-3000:]}"
        return r

    def cleanup(self):
        if self.d is not None and self.d.proc is not None:
            Procs.stop(self.d.proc)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class LimitExceeded(Exception):
    pass


@pytest.fixture
def managed(procs, tmp_path, daemon):
    def on_alarm(signum, frame):
        raise LimitExceeded(f"test ran longer than {TEST_LIMIT_S}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_LIMIT_S)
    m = Managed(procs, tmp_path, daemon)
    try:
        yield m
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        m.cleanup()


# --- a. first deploy -------------------------------------------------------------------------

def test_first_deploy_without_live_version(managed):
    d = managed.daemon().start()
    t0 = time.monotonic()
    r = managed.deploy_ok("v1")
    took = time.monotonic() - t0
    print(f"\nfirst managed deploy (2 instances, nothing live before): --wait returned in {took:.2f}s")
    assert "v1" in r.stdout
    # --wait returned once healthy: v1 answers at once, without polling.
    assert body_of(d.port) == "v1\n"
    assert len(managed.pids("v1")) == 2, managed.pids()
    svc = d.status()
    assert live_name(svc) == "v1"
    inst = instances_of(svc)
    assert sorted(i["instance"] for i in inst) == [0, 1], svc
    assert sorted(i["pid"] for i in inst) == managed.pids("v1")
    assert all(managed.lo <= i["port"] <= managed.lo + 60 for i in inst), inst
    assert len({i["port"] for i in inst}) == 2
    assert all(t.get("state") == "healthy" for t in svc["live"]["targets"]), svc
    assert d.history()[0]["state"] == "completed"


# --- b. managed deploy under load -------------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_managed_deploy_under_load_then_only_new_processes(managed, wrk):
    d = managed.daemon(drain="2s").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    old = managed.pids("v1")
    assert len(old) == 2
    # Load until the deploy is done, however long the host takes (a fixed -d8s ran out on a
    # busy host before the deploy ended); 60 s is only the upper bound.
    load = wrk(d.port, 60, conns=16)
    time.sleep(1.5)
    poll = Poller(d.port)
    t0 = time.monotonic()
    managed.deploy_ok("v2")
    t_cli = time.monotonic() - t0
    # Keep sampling a bit after the switch, then find when every answer became v2.
    time.sleep(1.0)
    seen = poll.stop()
    assert load.running(), "load ended before the deploy was done: make the load longer"
    res = load.stop()
    after = [(t, b) for t, b in seen if t >= t0]
    not_v2 = [t for t, b in after if b != "v2\n"]
    first_v2 = next((t for t, b in after if b == "v2\n"), None)
    assert first_v2 is not None, f"v2 never answered: {after[-5:]}"
    t100 = (max(not_v2) if not_v2 else t0) - t0
    print(f"\nmanaged deploy v1 -> v2 (2 instances) under wrk -t1 -c16: "
          f"{res['requests']} requests, socket errors {res['socket_errors']}, "
          f"non-2xx {res['non2xx']}; deploy to first v2 answer {first_v2 - t0:.2f}s, "
          f"deploy to 100% v2 {t100:.2f}s (last non-v2 answer), --wait returned after "
          f"{t_cli:.2f}s")
    assert set(b for _, b in seen) <= {"v1\n", "v2\n"}, \
        f"answers other than v1/v2 during the deploy: {set(b for _, b in seen)}"
    assert_no_errors(res)
    assert body_of(d.port) == "v2\n"
    # v1 is stopped at drain_timeout + 0.5 s after the switch: give it drain + 2 s.
    time.sleep(2.0 + 2.0)
    assert managed.pids("v1") == [], f"v1 processes left after drain: {managed.pids('v1')}"
    assert not any(p in managed.pids() for p in old)
    assert len(managed.pids("v2")) == 2, managed.pids()
    svc = d.status()
    assert live_name(svc) == "v2"
    assert sorted(i["pid"] for i in instances_of(svc)) == managed.pids("v2")
    prev = svc.get("previous") or {}
    assert not instances_of(svc, "previous"), f"retired v1 still shows instances: {prev}"


# --- c. kill -9 one instance under load --------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_kill9_instance_under_load_no_failed_request(managed, wrk):
    d = managed.daemon().start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    inst = {i["instance"]: i for i in instances_of(d.status())}
    victim = inst[0]
    load = wrk(d.port, 6, conns=16)
    time.sleep(2)
    os.kill(victim["pid"], signal.SIGKILL)
    t_kill = time.monotonic()

    def back():
        now = {i["instance"]: i for i in instances_of(d.status())}
        i0 = now.get(0)
        if i0 and i0["pid"] not in (0, victim["pid"]) and i0["restarts"] >= 1 \
                and i0["pid"] in managed.pids("v1"):
            return i0
        return None
    i0 = wait_for(back, 10, "instance 0 restarted")
    t_back = time.monotonic() - t_kill
    res = load.result()
    print(f"\nkill -9 of one of 2 instances under wrk -t1 -c16: {res['requests']} requests, "
          f"socket errors {res['socket_errors']}, non-2xx {res['non2xx']}; instance back "
          f"(status) after {t_back:.2f}s, new pid {i0['pid']}, restarts {i0['restarts']}")
    assert_no_errors(res, min_requests=500)
    assert victim["pid"] not in managed.pids()
    assert len(managed.pids("v1")) == 2, managed.pids()
    assert i0["port"] == victim["port"], (victim, i0)
    # The restarted instance gets traffic again once healthy.
    wait_for(lambda: all(t.get("state") == "healthy" for t in d.status()["live"]["targets"]),
             10, "both targets healthy")


# --- d. a version that crashes at start ------------------------------------------------------

def test_version_crashing_at_start_never_gets_traffic(managed):
    d = managed.daemon(env={"MODE_v2": "crash_at_start"}, deploy_timeout="15s").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    before = len(d.history())
    poll = Poller(d.port, every=0.02)
    t0 = time.monotonic()
    r = managed.deploy("v2", timeout=40)
    took = time.monotonic() - t0
    time.sleep(0.5)
    seen = poll.stop()
    out = r.stdout + r.stderr
    print(f"\ncrash at start: deploy exit {r.returncode} after {took:.2f}s: {out.strip()}")
    assert r.returncode == 1, f"deploy exit {r.returncode}, want 1: {out}"
    assert re.search(r"crash|exit", out, re.I), f"the message does not name the crash: {out}"
    assert re.search(r"logs/web/v2-\d+\.log", out), f"the message does not name the log: {out}"
    answers = {}
    for _, b in seen:
        answers[b] = answers.get(b, 0) + 1
    assert set(answers) == {"v1\n"}, f"answers during the failed deploy: {answers}"
    assert sum(answers.values()) >= 20
    svc = d.status()
    assert live_name(svc) == "v1"
    hist = d.history()
    assert len(hist) == before + 1 and hist[0]["to"] == "v2" and hist[0]["state"] == "failed", \
        hist[0]
    # The log named holds the program's own words.
    m = re.search(r"(\S*logs/web/v2-\d+\.log)", out)
    assert "boom" in Path(m.group(1).rstrip(")")).read_text()
    # A failed version keeps no process (nor keeps restarting).
    wait_for(lambda: managed.pids("v2") == [], 10, "no v2 process")
    time.sleep(1.0)
    assert managed.pids("v2") == [], "v2 restarted after the change failed"
    assert len(managed.pids("v1")) == 2



def test_crash_message_names_whole_log_path_with_long_names(managed):
    # A long (but allowed) version name, 64 characters, and a state_dir as long as the admin
    # socket allows: the failure message must still carry the whole log path.
    version = "v2_" + "a" * 61
    room = 107 - len("/var/cutover.sock") - len(str(managed.tmp)) - 1
    where = managed.tmp / ("d" * max(1, room)) if room > 0 else None
    d = managed.daemon(env={f"MODE_{version}": "crash_at_start"}, where=where).start()
    managed.deploy_ok("v1")
    r = managed.deploy(version)
    out = r.stdout + r.stderr
    print(f"\nlong names: deploy exit {r.returncode}: {out.strip()}")
    assert r.returncode == 1, out
    paths = [str(d.state_dir / "logs" / "web" / f"{version}-{i}.log") for i in (0, 1)]
    assert any(p in out for p in paths), \
        f"the message does not carry the whole log path ({len(paths[0])} chars): {out}"


# --- e. crash loop during a canary plan -------------------------------------------------------

CANARY = ("plans:\n"
          "  canary:\n"
          "    steps: [{weight: 50}, {pause: 30s}, {weight: 100}]\n")


def test_crash_loop_during_canary_rolls_back(managed):
    d = managed.daemon(env={"MODE_v2": "crash_after"}, plans=CANARY).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    t0 = time.monotonic()
    r = managed.deploy("v2", "--plan", "canary")
    assert r.returncode == 0, f"canary deploy exit {r.returncode}: {r.stdout}{r.stderr}"

    def ended():
        c = d.history()[0]
        return c if c["state"] not in ("running", "paused", "pending") else None
    ch = wait_for(ended, 40, "the canary change to end", interval=0.25)
    took = time.monotonic() - t0
    print(f"\ncrash loop during canary: change {ch['state']} after {took:.2f}s: "
          f"{ch.get('message')}")
    assert ch["to"] == "v2" and ch["state"] == "rolled_back", ch
    assert re.search(r"crash|exit", ch.get("message") or "", re.I), ch
    assert took < 30, "rolled back only after the 30 s pause: the crash loop was not seen"
    svc = d.status()
    assert live_name(svc) == "v1"
    wait_body(d.port, "v1\n")
    answers = {body_of(d.port) for _ in range(20)}
    assert answers == {"v1\n"}, answers
    wait_for(lambda: managed.pids("v2") == [], 10, "no v2 process after the rollback")
    assert len(managed.pids("v1")) == 2


# --- f. a process that ignores SIGTERM --------------------------------------------------------

@pytest.mark.xdist_group("load")
def test_process_ignoring_sigterm_is_killed_after_stop_timeout(managed):
    d = managed.daemon(env={"MODE_v1": "ignore_term"}, stop_timeout="3s", drain="1s").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    old = managed.pids("v1")
    assert len(old) == 2
    managed.deploy_ok("v2")
    t_switch = time.monotonic()
    # Retired at drain (1 s) + 0.5 s, TERM ignored, KILL 3 s later: ~4.5 s after the switch.
    time.sleep(3.2)
    alive = [p for p in old if p in managed.pids("v1")]
    assert alive == old, f"a process that ignores SIGTERM died before stop_timeout: {alive}"
    wait_for(lambda: managed.pids("v1") == [], 10, "the SIGTERM-ignoring v1 to be killed",
             interval=0.05)
    gone = time.monotonic() - t_switch
    print(f"\nSIGTERM-ignoring instances gone {gone:.2f}s after the switch "
          f"(drain 1s + 0.5s + stop_timeout 3s = 4.5s)")
    assert 3.5 <= gone <= 8, f"killed {gone:.2f}s after the switch, expected ~4.5s"
    assert len(managed.pids("v2")) == 2
    assert body_of(d.port) == "v2\n"


# --- g. kill -9 of cutover, restart, adoption ---------------------------------------------------

def test_kill9_cutover_restart_adopts_same_pids(managed):
    d = managed.daemon().start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    before = {i["instance"]: (i["pid"], i["port"]) for i in instances_of(d.status())}
    pids = managed.pids("v1")
    assert sorted(p for p, _ in before.values()) == pids and len(pids) == 2
    d.kill9()
    time.sleep(0.5)
    assert managed.pids("v1") == pids, "instances died with the daemon"
    for _, port in before.values():
        assert body_of(port) == "v1\n", f"instance on {port} does not answer without the daemon"
    d.start(expect="v1\n")
    time.sleep(3)  # a duplicate start, if any, would show up by now
    assert managed.pids("v1") == pids, \
        f"after the restart: {managed.pids()} (before {pids})\n{d.log()[-3000:]}"
    assert len(managed.pids()) == 2, f"duplicated instances: {managed.pids()}"
    svc = d.status()
    after = {i["instance"]: (i["pid"], i["port"]) for i in instances_of(svc)}
    assert after == before, (before, after)
    assert live_name(svc) == "v1"
    assert all(t.get("state") == "healthy" for t in svc["live"]["targets"]), svc
    assert {body_of(d.port) for _ in range(10)} == {"v1\n"}
    assert "instance adopted" in d.log(), d.log()[-3000:]
    # Adopted instances are still managed: a new deploy retires them.
    managed.deploy_ok("v2")
    wait_for(lambda: managed.pids("v1") == [], 8, "adopted v1 instances to be retired")
    assert len(managed.pids("v2")) == 2


# --- h. SIGTERM to cutover serve ----------------------------------------------------------------

def test_serve_sigterm_with_stop_with_daemon_leaves_no_instance(managed):
    # run.stop_with_daemon: true (the default leaves them for the next daemon: test_change.py).
    # v1 ignores SIGTERM: the daemon must still SIGKILL it before it exits.
    d = managed.daemon(env={"MODE_v1": "ignore_term"}, stop_timeout="2s", drain="1s",
                       run_extra="      stop_with_daemon: true\n").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    managed.deploy_ok("v2")
    assert len(managed.pids()) == 4
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(30)
    took = time.monotonic() - t0
    left = managed.pids()
    print(f"\ncutover serve exited {rc} {took:.2f}s after SIGTERM; instances left: {left}")
    assert rc == 0, f"serve exit {rc}\n{d.log()[-2000:]}"
    assert left == [], f"instance processes left after serve exited: {left}\n{d.log()[-3000:]}"


# --- i. cutover logs ----------------------------------------------------------------------------

def test_logs_command(managed):
    d = managed.daemon().start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    logdir = d.state_dir / "logs" / "web"
    ports = {i["instance"]: i["port"] for i in instances_of(d.status())}

    r = d.cli("logs", "web", "v1")
    assert r.returncode == 0, r.stderr
    for i in (0, 1):
        assert f"==> {logdir}/v1-{i}.log <==" in r.stdout, r.stdout
        assert f"started v1 on {ports[i]}" in r.stdout, r.stdout
        assert f"ready v1 instance {i}" in r.stdout, r.stdout
    assert r.stdout.index("v1-0.log") < r.stdout.index("v1-1.log")

    r = d.cli("logs", "web", "v1", "-n", "1")
    assert r.returncode == 0, r.stderr
    assert "started v1" not in r.stdout and r.stdout.count("ready v1 instance") == 2, r.stdout

    r = d.cli("logs", "web", "v1", "-n0")
    assert r.returncode == 0 and "ready" not in r.stdout, r.stdout

    managed.deploy_ok("v2")
    # Without VERSION and with the daemon up: the live version only.
    r = d.cli("logs", "web")
    assert r.returncode == 0, r.stderr
    assert "ready v2 instance 0" in r.stdout and "v1" not in r.stdout, r.stdout

    # -f: what instances write later shows up, also after a copytruncate-style rotation.
    f = d.cli_bg("logs", "web", "v2", "-f", "-n", "0")
    time.sleep(0.8)
    (logdir / "v2-0.log").write_bytes(b"")      # truncated in place, like copytruncate
    time.sleep(0.8)                             # the follower has seen it shrink
    victim = next(i for i in instances_of(d.status()) if i["instance"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)      # the restart prints "started" again
    wait_for(lambda: f"started v2 on {victim['port']}" in f.log_path.read_text(), 10,
             "the restarted instance's output in logs -f")
    f.send_signal(signal.SIGINT)
    assert f.wait(3) == 0, f.log_path.read_text()
    assert "ready v1" not in f.log_path.read_text()

    # Without the daemon: every version's files.
    Procs.stop(d.proc)
    r = d.cli("logs", "web", "-n", "5")
    assert r.returncode == 0, r.stderr
    for name in ("v1-0.log", "v1-1.log", "v2-0.log", "v2-1.log"):
        assert f"==> {logdir}/{name} <==" in r.stdout, r.stdout

    # Bad usage and nothing to show.
    r = d.cli("logs", "nope")
    assert r.returncode == 2 and "nope" in r.stderr, (r.returncode, r.stderr)
    r = d.cli("logs", "web", "v9")
    assert r.returncode == 1 and "no log file" in r.stderr, (r.returncode, r.stderr)
    r = d.cli("logs", "web", "-n", "x")
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = d.cli("logs")
    assert r.returncode == 2, (r.returncode, r.stderr)


# --- j. bad input ------------------------------------------------------------------------------

def test_bad_command_is_refused_before_anything_starts(managed):
    missing = str(managed.tmp / "no-such-program")
    d = managed.daemon(command=[missing, "${PORT}"]).start()
    before = d.history()
    r = managed.deploy("v1")
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"deploy exit {r.returncode}, want 2: {out}"
    assert "no-such-program" in out, out
    st, body = d.api("POST", "/api/v1/services/web/deploy", {"version": "v1"})
    assert st == 400 and "no-such-program" in str(body), (st, body)
    assert d.history() == before, "a refused deploy changed the history"
    svc = d.status()
    assert not live_name(svc) and not instances_of(svc), svc
    logdir = d.state_dir / "logs" / "web"
    assert not logdir.exists() or list(logdir.iterdir()) == [], list(logdir.iterdir())


def test_port_range_without_free_port(managed):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        d = managed.daemon(instances=1, port_range=f"{port}-{port}").start()
        before = d.history()
        r = managed.deploy("v1")
        out = r.stdout + r.stderr
        print(f"\nport range with no free port: deploy exit {r.returncode}: {out.strip()}")
        assert r.returncode in (1, 2), out
        assert "port_range" in out and "no free port" in out, out
        assert managed.pids() == [], managed.pids()
        assert d.history() == before, d.history()
        assert not instances_of(d.status())
    finally:
        held.close()



def test_port_range_without_free_port_is_not_a_server_error(managed):
    # No free port is the operator's range being exhausted, not a fault of the daemon: the API
    # should say so with a 4xx/503, not 500 "daemon error" (CLI exit 1 as for a crash).
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        d = managed.daemon(instances=1, port_range=f"{port}-{port}").start()
        st, body = d.api("POST", "/api/v1/services/web/deploy", {"version": "v1"})
        assert "no free port" in str(body), (st, body)
        assert st in (400, 409, 503), f"no free port answered HTTP {st}: {body}"
    finally:
        held.close()

@pytest.mark.parametrize("run_extra,key", [
    ("instances: 0", "instances"),
    ('port_range: ""', "port_range"),
    ("port_range: 30010-30000", "port_range"),
    ("stop_with_daemon: maybe", "stop_with_daemon"),
])
def test_check_rejects_bad_run_keys(tmp_path, run_extra, key):
    lines = ["command: [python3, app.py, '${PORT}']", "instances: 1", "port_range: 30000-30010"]
    k = run_extra.split(":")[0]
    lines = [ln for ln in lines if not ln.startswith(k + ":")] + [run_extra]
    run = "    run:\n" + "".join(f"      {ln}\n" for ln in lines)
    cfg = write_config(tmp_path / "c.yml", 18999, [], tmp_path / "var", service_extra=run)
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2, f"check exit {r.returncode}: {r.stdout}{r.stderr}"
    assert f"run.{key}" in r.stderr or key in r.stderr, r.stderr


# --- rollback window ---------------------------------------------------------------------------

def test_rollback_within_rollback_window_reuses_the_processes(managed):
    """With run.rollback_window, the previous version keeps running after its drain, and a
    rollback in the window switches back to those very processes (no restart); without it they
    are stopped after the drain (the other tests)."""
    d = managed.daemon(drain="1s", rollback_window="30s").start()
    managed.deploy_ok("v1")
    v1 = managed.pids("v1")
    managed.deploy_ok("v2")
    time.sleep(2.5)  # past v1's drain: without the window its processes would be gone by now
    assert managed.pids("v1") == v1, "v1's processes were stopped inside the rollback window"
    t0 = time.monotonic()
    r = d.cli("rollback", "web", timeout=20)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert body_of(d.port) == "v1\n"
    assert managed.pids("v1") == v1, "the rollback started new v1 processes"
    print(f"\nrollback within the window: {took:.2f}s, same pids {v1}")
    wait_for(lambda: managed.pids("v2") == [], 35, "v2 retired after the rollback window")


# --- an interrupted change's processes ---------------------------------------------------------

def test_kill9_during_managed_deploy_reaps_new_version(managed):
    """kill -9 while v2's instances wait for health: the restart marks the change interrupted
    and stops v2's processes instead of leaving them running unowned."""
    d = managed.daemon(deploy_timeout="30s",
                       health={"interval": "300ms", "healthy_threshold": 20}).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    v1 = managed.pids("v1")
    d.cli_bg("deploy", "web", "v2")
    wait_for(lambda: len(managed.pids("v2")) == 2, 10, "v2's instances")
    d.kill9()
    d.start()
    wait_for(lambda: managed.pids("v2") == [], 15, "v2's processes stopped after the restart")
    ch = next(c for c in d.history() if c["to"] == "v2")
    assert ch["state"] == "interrupted", ch
    assert managed.pids("v1") == v1
    assert live_name(d.status()) == "v1"


def test_deploy_of_a_version_whose_processes_still_run_is_refused(managed):
    """v1 still drains after the switch to v2: deploying v1 again would make a second set of
    the same version (shared records and logs), so it is refused and nothing changes."""
    d = managed.daemon(drain="20s").start()
    managed.deploy_ok("v1")
    managed.deploy_ok("v2")
    v1 = managed.pids("v1")
    assert len(v1) == 2  # draining
    n_changes = len(d.history())
    r = managed.deploy("v1")
    assert r.returncode != 0, r.stdout
    assert "still running or stopping" in r.stderr and "cutover rollback" in r.stderr, r.stderr
    assert len(d.history()) == n_changes
    assert live_name(d.status()) == "v2"
    assert managed.pids("v1") == v1
