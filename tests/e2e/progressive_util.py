#!/usr/bin/env python3
"""Helpers for test_progressive.py.

As a program: backend.py with a few more knobs (backend.py itself is left as it is):

    progressive_util.py backend PORT VERSION [--error-rate F] [--count-file PATH] [--unhealthy]

Same behaviour as backend.py, except that each answer that would be the plain version body
(GET / and other paths) is, with probability F, a 500 "boom" instead. Health checks, /requests
and the admin routes are never failed. With --count-file, one byte is appended to PATH for each
500 it sends.
"""
import http.client
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run_backend(argv):
    rate = 0.0
    if "--error-rate" in argv:
        i = argv.index("--error-rate")
        rate = float(argv[i + 1])
        del argv[i:i + 2]
    count_file = None
    if "--count-file" in argv:
        i = argv.index("--count-file")
        count_file = argv[i + 1]
        del argv[i:i + 2]
    sys.argv = [str(HERE / "backend.py")] + argv
    sys.path.insert(0, str(HERE))
    import backend  # reads sys.argv at import

    plain = (backend.VERSION + "\n").encode()
    orig_send = backend.send
    rng = random.Random()

    def send(sock, code, body, extra=(), ctype="text/plain", head_only=False):
        if code == 200 and body == plain and not head_only and rng.random() < rate:
            if count_file:
                with open(count_file, "ab") as f:  # one byte per 500 sent
                    f.write(b"x")
            return orig_send(sock, 500, b"boom\n", extra, ctype)
        return orig_send(sock, code, body, extra, ctype, head_only)

    backend.send = send
    try:
        backend.main()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "backend":
    _run_backend(sys.argv[2:])
    sys.exit(0)

# ---- library part (imported by the tests) -----------------------------------------------

from conftest import Backend, free_port, parse_wrk, wait_port  # noqa: E402


class ErrBackend(Backend):
    """A Backend (same API: .requests(), .clear(), .set_healthy()) whose plain answers fail
    with 500 at `error_rate`."""

    def __init__(self, procs, version, error_rate=0.0, unhealthy=False, port=None):
        self.version = version
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        args = [sys.executable, Path(__file__).resolve(), "backend", self.port, version,
                "--error-rate", error_rate] + (["--unhealthy"] if unhealthy else [])
        self.count_file = procs.tmp / f"errors-{version}-{self.port}"
        args += ["--count-file", self.count_file]
        self.proc = procs.start(args, name=f"backend-{version}")
        assert wait_port(self.port, 10, self.proc), f"backend {version} did not start"

    def errors_sent(self):
        """How many 500s it has sent so far."""
        return self.count_file.stat().st_size if self.count_file.exists() else 0


def user_requests(b):
    """The requests a backend logged that came from users (backend.py leaves out health checks
    and /requests itself)."""
    return [r for r in b.requests() if not r["line"].startswith("POST /admin/")]


class Client:
    """Keep-alive HTTP client on one connection (reconnects on failure) -> (status, body, hdrs)."""

    def __init__(self, port, timeout=5):
        self.port = port
        self.timeout = timeout
        self.c = None

    def get(self, path="/", headers=None):
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.c.request("GET", path, headers=headers or {})
                r = self.c.getresponse()
                body = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, body.decode("latin-1"), hdrs, r.getheaders()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def version(self, headers=None):
        st, body, _, _ = self.get("/", headers)
        return body.strip() if st == 200 else f"<{st}>"

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def split_users(port, users, header="X-User-Id"):
    """{user: version} for one request per user on one keep-alive connection."""
    c = Client(port)
    try:
        return {u: c.version({header: u}) for u in users}
    finally:
        c.close()


def start_wrk_users(procs, tmp, port, secs, conns=8):
    """wrk with a lua script giving each request a random X-User-Id; -> Popen (parse its log
    with wrk_result)."""
    script = tmp / "users.lua"
    script.write_text('math.randomseed(os.time())\n'
                      'request = function() return wrk.format(nil, nil, '
                      '{["X-User-Id"] = tostring(math.random(1, 1000000000))}) end\n')
    return procs.start(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
                        "-s", script, f"http://127.0.0.1:{port}/"], name="wrk")


def wrk_result(p, secs):
    p.wait(secs + 30)
    return parse_wrk(p.log_path.read_text())


def change_of(d):
    return d.status().get("change")


def progress_of(d):
    ch = change_of(d)
    return (ch or {}).get("progress") or {}


def wait_for(fn, secs, what, interval=0.1, tolerate=False):
    """Polls fn() until it returns something truthy; -> that value. With `tolerate`, an
    AssertionError from fn() (e.g. the CLI failing while a daemon starts) counts as not yet."""
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as e:
            if not tolerate:
                raise
            last = f"{type(e).__name__}: {e}"
            time.sleep(interval)
            continue
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {secs}s (last: {last!r})")


def report_json(d, change_id):
    r = d.cli("report", str(change_id), "--format", "json")
    assert r.returncode == 0, f"report exit {r.returncode}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)
