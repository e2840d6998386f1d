"""Nothing of the daemon leaks into its children, end to end: a managed instance (`run:`) and a
plan's `test:` step command start with only stdin, stdout and stderr open, although the daemon
holds its store, its listeners, its admin socket, its event loop's descriptors and a webhook
connection (a keep-alive receiver on loopback, so libcurl's socket is open at spawn time). Every
descriptor the daemon holds (fds 3 and up) is close-on-exec, read from /proc/PID/fdinfo. The
same holds for the next daemon generation after `cutover upgrade`.

The children run fdlist.py (written by this test), which records the descriptors it was born
with into a file and then execs the real command.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_cloexec.py
"""
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port, wait_body
from test_managed import managed, wait_for  # noqa: F401 (a fixture)

FDLIST = '''
import os, sys
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass  # the directory listdir had open, closed by now
out = os.path.join(sys.argv[1], f"{os.getpid()}.fds")
with open(out, "w") as f:
    for fd, target in sorted(fds.items()):
        if not target.endswith("/fd"):  # listdir's own descriptor of /proc/self/fd
            f.write(f"{fd} {target}\\n")
os.execvp(sys.argv[2], sys.argv[2:])
'''


class KeepAliveReceiver:
    """A webhook receiver that keeps its connections open (HTTP/1.1), as real ones do."""

    def __init__(self):
        self.n, self.lock = 0, threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with rec.lock:
                    rec.n += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.n

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def not_cloexec(pid):
    """The daemon's descriptors above stderr that are not close-on-exec, with their targets."""
    bad = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(re.search(r"^flags:\s+(\d+)", f.read(), re.M).group(1), 8)
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if not flags & 0o2000000:  # O_CLOEXEC, as fdinfo reports FD_CLOEXEC
            bad.append((fd, target))
    return bad


def webhook_connection(pid, port):
    """Whether process pid holds an established TCP connection to 127.0.0.1:port."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True).stdout
    return f"pid={pid}," in out


def births(outdir):
    got = {}
    for p in outdir.glob("*.fds"):
        got[p.name] = [ln.split(" ", 1) for ln in p.read_text().splitlines()]
    return got


def check_children(outdir, seen, what, least=2):
    """Every child recorded since `seen` started with fds 0, 1, 2 only."""
    now = births(outdir)
    new = {k: v for k, v in now.items() if k not in seen}
    assert len(new) >= least, f"{what}: expected a test step and an instance, got {new}"
    for name, fds in new.items():
        assert [int(fd) for fd, _ in fds] == [0, 1, 2], f"{what}: child {name} inherited {fds}"
    seen.update(new)
    return len(new)


def test_children_start_with_stdio_only_across_an_upgrade(managed, tmp_path):
    outdir = tmp_path / "fds"
    outdir.mkdir()
    fdlist = tmp_path / "fdlist.py"
    fdlist.write_text(FDLIST)
    rec = KeepAliveReceiver()
    plans = (f"notify:\n  webhooks:\n    - url: http://127.0.0.1:{rec.port}/hook\n"
             "plans:\n"
             "  smoke:\n"
             f"    steps: [{{test: {{command: [{sys.executable}, {fdlist}, {outdir}, true]}}}},"
             " {weight: 100}]\n")
    cmd = [sys.executable, str(fdlist), str(outdir), sys.executable, str(managed.app),
           "${PORT}", "${VERSION}"]
    d = managed.daemon(instances=1, plans=plans, command=cmd).start()
    pids = [d.pid]
    seen = {}
    try:
        for gen in (1, 2):
            pid = pids[-1]
            # A first deploy makes the webhook connection; the next one spawns while it is open.
            first, second = f"v{2 * gen - 1}", f"v{2 * gen}"
            managed.deploy_ok(first, "--plan", "smoke")
            wait_body(d.port, first + "\n")
            wait_for(lambda: rec.count() > 0 and webhook_connection(pid, rec.port), 15,
                     f"generation {gen}: a webhook delivered on a kept-alive connection")
            check_children(outdir, seen, f"generation {gen}, {first}", least=1)
            assert webhook_connection(pid, rec.port)
            managed.deploy_ok(second, "--plan", "smoke")
            wait_body(d.port, second + "\n")
            n = check_children(outdir, seen, f"generation {gen}, {second} (webhook socket open)")
            bad = not_cloexec(pid)
            assert bad == [], f"generation {gen}: daemon fds without close-on-exec: {bad}"
            print(f"\ngeneration {gen} (pid {pid}): {n} children after a webhook delivery "
                  f"started with fds 0-2 only; all {len(os.listdir(f'/proc/{pid}/fd'))} "
                  "daemon fds close-on-exec")
            if gen == 1:
                r = d.cli("upgrade", timeout=20)
                assert r.returncode == 0, r.stdout + r.stderr
                m = re.search(r"handed over to pid (\d+)", r.stdout)
                assert m, r.stdout
                pids.append(int(m.group(1)))
                wait_for(lambda: d.proc.poll() is not None, 10, "the old daemon exits")
    finally:
        for pid in pids[1:]:
            try:
                os.kill(pid, 15)
                deadline = time.monotonic() + 5
                while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                    time.sleep(0.05)
            except OSError:
                pass
        rec.close()
