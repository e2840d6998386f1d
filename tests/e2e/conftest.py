"""Fixtures for the end-to-end tests: the real daemon (build/cutover), scripted backends
(backend.py), the real CLI, curl and wrk, all on loopback with free ports and a temp dir per
test. Every process a test starts is stopped by pid at teardown (TERM, 5 s, KILL).

Run: `make e2e` (pytest-xdist, E2E_JOBS workers, --dist loadgroup) or one file with
/usr/bin/python3 -m pytest -q tests/e2e/test_x.py   (after `make`)

Parallel runs: each xdist worker hands out ports from its own block (free_port), and every
path is under the test's tmp_path. A test that runs load (wrk, slowhttptest) or asserts on
timing or throughput carries @pytest.mark.xdist_group("load"): all of those run one after
the other on a single worker, so no load run skews another's figures. Procs.start refuses to
start wrk or slowhttptest in a test without that mark.
"""
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CUTOVER_BIN") or ROOT / "build" / "cutover")  # override: to test another build
BACKEND = Path(__file__).resolve().parent / "backend.py"

LOAD_GROUP = "load"
LOAD_TOOLS = {"wrk", "slowhttptest"}


def _port_block():
    """[lo, hi): the ports this process hands out. Below the kernel's ephemeral range, so that
    no outgoing connection's source port lands on one; split evenly among the xdist workers
    (PYTEST_XDIST_WORKER gw0, gw1, ...) so that two workers never hand out the same port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER") or "gw0"
    i = int(worker[2:]) if worker[2:].isdigit() else 0
    lo, hi = 10000, eph_lo
    if hi - lo < 500 * n:  # an unusual ephemeral range: take the space above it instead
        lo, hi = 10000, 65000
    size = (hi - lo) // n
    return lo + i * size, lo + (i + 1) * size


_BLOCK = _port_block()
# A random start in the block keeps two pytest runs on one host (two developers, two
# worktrees) apart; within a run the cursor only moves forward, so no port is handed out twice.
_next_port = random.Random().randrange(*_BLOCK)
_used_ports = set()


def _bindable(port):
    """Whether nothing holds 127.0.0.1:port now (not even a TIME_WAIT: no SO_REUSEADDR)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n=1):
    """The first of n consecutive loopback ports nobody listens on now, taken from this
    worker's block and never handed out again in this run."""
    global _next_port
    lo, hi = _BLOCK
    for _ in range(hi - lo):
        first = _next_port
        if first + n > hi:
            first = lo
        run = range(first, first + n)
        _next_port = first + n
        if all(p not in _used_ports for p in run) and all(_bindable(p) for p in run):
            _used_ports.update(run)
            return first
    raise AssertionError(f"no {n} free consecutive ports left in {lo}-{hi - 1}")


def free_port():
    """A loopback port nobody listens on now, never handed out twice in this run."""
    return free_ports(1)


def port_open(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, secs=10, proc=None):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def http_get(port, path="/", timeout=5, headers=None):
    """One GET on a fresh connection -> (status, body bytes, headers dict lower-cased)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, body, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def body_of(port, path="/", timeout=5):
    """The answer's body as text, or None when there was no answer."""
    try:
        st, body, _ = http_get(port, path, timeout=timeout)
        return body.decode("latin-1") if st == 200 else f"<{st}>"
    except (OSError, http.client.HTTPException):
        return None


def wait_body(port, want, secs=10):
    """Polls GET / until it answers `want` (the daemon may listen before its first health check)."""
    deadline = time.monotonic() + secs
    got = None
    while time.monotonic() < deadline:
        got = body_of(port, timeout=2)
        if got == want:
            return True
        time.sleep(0.1)
    raise AssertionError(f"port {port} did not answer {want!r} within {secs}s (last: {got!r})")


def pattern_sha256(n):
    """sha256 of backend.py's download pattern: byte i is i % 251."""
    block = bytes(i % 251 for i in range(251 * 261))
    h = hashlib.sha256()
    while n:
        k = min(n, len(block))
        h.update(block[:k])
        n -= k
    return h.hexdigest()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class Procs:
    """Starts processes and stops each one, by pid, at teardown."""

    def __init__(self, tmp, node=None):
        self.tmp = tmp
        self.node = node
        self.procs = []
        self.n = 0

    def start(self, args, name="proc", **kw):
        tool = os.path.basename(str(args[0]))
        if tool in LOAD_TOOLS and self.node is not None:
            groups = [m.args[0] if m.args else m.kwargs.get("name")
                      for m in self.node.iter_markers("xdist_group")]
            assert LOAD_GROUP in groups, \
                f"{self.node.nodeid} runs {tool}: mark it @pytest.mark.xdist_group(\"{LOAD_GROUP}\")"
        self.n += 1
        log = open(self.tmp / f"{self.n:02d}-{name}.log", "wb")
        p = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=kw.pop("cwd", self.tmp), **kw)
        p.log_path = Path(log.name)
        log.close()
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


class Backend:
    def __init__(self, procs, version, unhealthy=False, port=None, extra=()):
        self.version = version
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        args = [sys.executable, BACKEND, self.port, version] + (["--unhealthy"] if unhealthy else [])
        args += list(extra)
        self.proc = procs.start(args, name=f"backend-{version}")
        assert wait_port(self.port, 10, self.proc), f"backend {version} did not start"

    def requests(self):
        st, body, _ = http_get(self.port, "/requests")
        assert st == 200
        return json.loads(body)

    def post(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("POST", path, body=b"")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def set_healthy(self, ok):
        assert self.post("/admin/healthy" if ok else "/admin/unhealthy") == 200

    def clear(self):
        assert self.post("/admin/clear") == 200

    def kill(self):
        Procs.stop(self.proc, signal.SIGKILL)


def write_config(path, listen_port, targets, state_dir, service_extra="", top_extra="",
                 deploy_timeout="5s", drain_timeout="5s", health=None, timeouts=None,
                 max_header_bytes=65536):
    """Writes a one-service config (service `web`) and returns its path."""
    h = {"path": "/healthz", "interval": "200ms", "timeout": "500ms",
         "healthy_threshold": 1, "unhealthy_threshold": 2}
    h.update(health or {})
    t = {"client_header": "10s", "client_idle": "60s", "upstream_connect": "5s",
         "upstream_response": "60s"}
    t.update(timeouts or {})
    hs = ", ".join(f"{k}: {v}" for k, v in h.items())
    ts = ", ".join(f"{k}: {v}" for k, v in t.items())
    text = (f"state_dir: {state_dir}\n"
            f"{top_extra}"
            f"services:\n"
            f"  web:\n"
            f"    listen: 127.0.0.1:{listen_port}\n"
            f"    health_check: {{{hs}}}\n"
            f"    drain_timeout: {drain_timeout}\n"
            f"    deploy_timeout: {deploy_timeout}\n"
            f"    timeouts: {{{ts}}}\n"
            f"    limits: {{max_header_bytes: {max_header_bytes}}}\n"
            f"    targets: [{', '.join(targets)}]\n"
            f"{service_extra}")
    path.write_text(text)
    return path


class Daemon:
    """`cutover serve -c CFG`, its service port, and the CLI and admin API that reach it."""

    def __init__(self, procs, tmp, backends, **cfg):
        self.procs = procs
        self.tmp = tmp
        self.port = free_port()
        self.state_dir = tmp / "var"
        self.cfg = write_config(tmp / "cutover.yml", self.port, [b.addr for b in backends],
                                self.state_dir, **cfg)
        self.proc = None
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid

    @property
    def sock(self):
        return self.state_dir / "cutover.sock"

    def start(self, expect=None):
        """Starts the daemon and waits for the service port (and, if given, for body `expect`)."""
        assert BIN.exists(), f"{BIN} missing: run make"
        self.starts += 1
        self.proc = self.procs.start([BIN, "serve", "-c", self.cfg], name=f"cutover-{self.starts}")
        if not wait_port(self.port, 10, self.proc):
            raise AssertionError(f"cutover serve did not listen on {self.port}: "
                                 f"exit={self.proc.poll()} log:\n{self.log()}")
        if expect is not None:
            wait_body(self.port, expect)
        return self

    def log(self):
        return self.proc.log_path.read_text(errors="replace") if self.proc else ""

    def kill9(self):
        Procs.stop(self.proc, signal.SIGKILL)

    def alive(self):
        return self.proc.poll() is None

    def cli(self, *args, timeout=30):
        return run_cli(*args, "-c", self.cfg, timeout=timeout)

    def cli_bg(self, *args):
        return self.procs.start([BIN, *args, "-c", self.cfg], name="cli")

    def status(self):
        r = self.cli("status", "web", "--json")
        assert r.returncode == 0, f"status --json exit {r.returncode}: {r.stdout}{r.stderr}"
        return service_of(json.loads(r.stdout))

    def history(self):
        r = self.cli("history", "web", "--json")
        assert r.returncode == 0, f"history --json exit {r.returncode}: {r.stdout}{r.stderr}"
        return changes_of(json.loads(r.stdout))

    def api(self, method, path, body=None, raw=None):
        """Admin API over the unix socket with curl -> (status, parsed JSON or text)."""
        args = ["curl", "-s", "-m", "10", "--unix-socket", str(self.sock), "-X", method,
                "-w", "\n%{http_code}", f"http://localhost{path}"]
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        r = subprocess.run(args, input=(data or "").encode(), capture_output=True, timeout=20)
        out = r.stdout.decode(errors="replace")
        text, _, code = out.rpartition("\n")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return int(code or 0), parsed


def run_cli(*args, timeout=30):
    r = subprocess.run([str(BIN), *[str(a) for a in args]], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r


def service_of(doc):
    """The `web` Service object from `status --json` (a Service or {"services": [...]})."""
    if isinstance(doc, dict) and "services" in doc:
        doc = doc["services"]
    if isinstance(doc, list):
        doc = next(s for s in doc if s.get("name") == "web")
    return doc


def changes_of(doc):
    """The list of Change objects from `history --json` (a list or {"changes": [...]})."""
    if isinstance(doc, dict):
        doc = doc["changes"]
    return doc


def live_name(svc):
    return (svc.get("live") or {}).get("name")


class Wrk:
    """wrk in the background for a bounded time; .result() parses its summary."""

    def __init__(self, procs, port, secs, conns=16, path="/", threads=1):
        self.proc = procs.start(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s",
                                 "--timeout", "5s", f"http://127.0.0.1:{port}{path}"], name="wrk")
        self.t0 = time.monotonic()
        self.secs = secs

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """Ends the load now: on SIGINT wrk stops and prints its summary as at the end of -d.
        Lets a test run load for as long as the step under test takes, not a guessed time."""
        if self.running():
            self.proc.send_signal(signal.SIGINT)
        return self.result()

    def result(self):
        self.proc.wait(self.secs + 30)
        return parse_wrk(self.proc.log_path.read_text())


def parse_wrk(text):
    """-> dict(socket_errors, non2xx, requests, rps, text), like accept/lib.sh wrk_errors."""
    se = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text)) \
        if "Socket errors" in text else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    return {"socket_errors": se, "non2xx": int(m.group(1)) if m else 0,
            "requests": int(r.group(1)) if r else 0,
            "rps": float(rps.group(1)) if rps else 0.0, "text": text}


def pytest_configure(config):
    # pytest-xdist registers it too; this keeps a run without the plugin free of warnings.
    config.addinivalue_line("markers", "xdist_group(name): run all tests of a group on one worker")


@pytest.fixture
def procs(tmp_path, request):
    p = Procs(tmp_path, request.node)
    yield p
    p.stop_all()


@pytest.fixture
def backend(procs):
    """backend(version, unhealthy=False) -> a started Backend."""
    return lambda version, unhealthy=False, port=None, extra=(): Backend(procs, version, unhealthy,
                                                                         port, extra)


@pytest.fixture
def daemon(procs, tmp_path):
    """daemon(backends, **config options) -> a configured, not yet started, Daemon."""
    return lambda backends, **cfg: Daemon(procs, tmp_path, backends, **cfg)


@pytest.fixture
def wrk(procs):
    return lambda port, secs, conns=16, path="/": Wrk(procs, port, secs, conns, path)
