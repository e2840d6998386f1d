"""One daemon per state_dir, end to end: a second `cutover serve` on the same state_dir exits 2
naming the state_dir and the pid that holds it, before it touches the store or a port; the
successor of a hot upgrade takes the lock over (a third daemon is then refused naming the
successor); after a kill -9 a new daemon starts at once (the lock dies with its holder).

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_state_lock.py
"""
import os
import re
import signal
import socket
import subprocess
import time

from conftest import BIN, body_of, free_port, wait_body, wait_port


def second_serve(d, tmp_path, name):
    """`cutover serve` with d's state_dir but another listen port; returns the finished run."""
    cfg = tmp_path / f"{name}.yml"
    cfg.write_text(re.sub(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{free_port()}",
                          d.cfg.read_text()))
    return subprocess.run([str(BIN), "serve", "-c", str(cfg)], capture_output=True, text=True,
                          timeout=20, cwd=tmp_path)


def gone(pid, secs=10):
    """The process and all its threads have exited (zombies at most): its files, the lock
    among them, are closed. A zombie leader alone is not enough: after a SIGKILL the leader of
    a threaded process can be a zombie while its workers still exit, holding the shared files
    (a CI run saw the next daemon refused for the lock that way)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            states = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            if all(st in ("Z", "X") for st in states):
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_second_daemon_refused_upgrade_keeps_lock_kill9_frees_it(backend, daemon, tmp_path):
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="1s").start(expect="v1\n")
    lock = d.state_dir / "cutover.lock"
    assert lock.read_text().strip() == str(d.pid)

    r = second_serve(d, tmp_path, "second")
    print(f"\nsecond daemon: exit {r.returncode}: {r.stderr.strip()}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(d.state_dir) in r.stderr and f"pid {d.pid}" in r.stderr, r.stderr
    assert d.alive() and body_of(d.port) == "v1\n"

    # A hot upgrade: the successor holds the lock from its start; the old daemon's exit does
    # not free it.
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    succ = int(re.search(r"handed over to pid (\d+)", r.stdout).group(1))
    try:
        assert gone(d.pid), "the upgraded daemon did not exit"
        assert lock.read_text().strip() == str(succ)
        r = second_serve(d, tmp_path, "third")
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"pid {succ}" in r.stderr and str(d.state_dir) in r.stderr, r.stderr
        wait_body(d.port, "v1\n")

        # kill -9: nothing is left to hold the lock, a new daemon starts on the same state_dir.
        os.kill(succ, signal.SIGKILL)
        assert gone(succ)
    finally:
        try:
            os.kill(succ, signal.SIGKILL)
        except OSError:
            pass
    d.start(expect="v1\n")
    assert wait_port(d.port)
    assert lock.read_text().strip() == str(d.pid)


def test_kill9_of_the_successor_frees_the_lock_while_the_old_daemon_drains(backend, daemon,
                                                                           tmp_path, procs):
    # An idle keep-alive connection keeps the upgraded daemon draining until drain_timeout
    # (10 s): it must not hold the lock meanwhile, or a crashed successor could not be replaced.
    v1 = backend("v1")
    d = daemon([v1], drain_timeout="10s").start(expect="v1\n")
    conn = socket.create_connection(("127.0.0.1", d.port))
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"v1" in conn.recv(4096)
    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    succ = int(re.search(r"handed over to pid (\d+)", r.stdout).group(1))
    try:
        os.kill(succ, signal.SIGKILL)
        assert gone(succ)
        assert d.alive(), "the old daemon stopped draining before the test could check"
        cfg = tmp_path / "next.yml"
        port = free_port()
        cfg.write_text(re.sub(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{port}",
                              d.cfg.read_text()))
        p = procs.start([BIN, "serve", "-c", cfg], name="next")
        assert wait_port(port, 10, p), f"exit {p.poll()}: {p.log_path.read_text()}"
        assert d.alive(), "the old daemon stopped draining before the next daemon started"
        assert (d.state_dir / "cutover.lock").read_text().strip() == str(p.pid)
    finally:
        conn.close()
        try:
            os.kill(succ, signal.SIGKILL)
        except OSError:
            pass
