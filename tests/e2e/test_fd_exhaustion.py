"""Running out of file descriptors is a slowdown, not an outage (issue 14 item 1).

The daemon runs under `ulimit -n 256` and gets 1,000 client connections that each send a
request. Its listeners pause accepting (close their copy of the socket, listen again after
10 ms doubling to 1 s) instead of spinning in accept4, so the connections it already has are
served, the admin API answers throughout, the service answers again within seconds once the
flood is gone, and SIGTERM stops it, even during a flood. Real daemon, backend.py; loopback; bounded in time.
"""
import os
import re
import resource
import signal
import socket
import time

from conftest import BIN, http_get, wait_body, wait_port

FLOOD = 1000
LIMIT = 256


def metric(d, name, label):
    st, text = d.api("GET", "/metrics")
    assert st == 200, f"/metrics answered {st}"
    m = re.search(rf'^{name}\{{listener="{label}"\}} (\d+)$', text, re.M)
    assert m, f"{name}{{listener={label}}} not in /metrics"
    return int(m.group(1))


def ask(s):
    """One GET on the keep-alive socket s -> the status code."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"\r\n\r\nv1\n"):
        chunk = s.recv(4096)
        assert chunk, f"an established connection was closed: {got[:200]!r}"
        got += chunk
    return int(got.split(b" ", 2)[1])


def test_descriptor_exhaustion_pauses_accepting_and_recovers(procs, backend, daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "cannot open the flood"

    v1 = backend("v1")
    d = daemon([v1], top_extra="workers: 2\n")
    d.starts += 1
    d.proc = procs.start([BIN, "serve", "-c", d.cfg], name="cutover",
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                               (LIMIT, LIMIT)))
    assert wait_port(d.port, 10, d.proc), d.log()
    wait_body(d.port, "v1\n")
    assert f"Max open files            {LIMIT}" in open(f"/proc/{d.pid}/limits").read()

    established = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        assert ask(s) == 200
        established.append(s)

    flood = []
    t0 = time.monotonic()
    try:
        for _ in range(FLOOD):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            flood.append(s)
        time.sleep(0.3)  # the handshakes complete in the kernel, accepted or not
        for s in flood:
            try:
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            except OSError:
                pass  # refused or reset: part of a flood
        # For 3 s: the established connections are served, the admin API answers.
        admin_ok = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for s in established:
                assert ask(s) == 200
            st, _ = d.api("GET", "/metrics")
            assert st == 200, f"the admin API did not answer during the flood ({st})"
            admin_ok += 1
            time.sleep(0.2)
        paused = metric(d, "cutover_accept_paused_total", "service")
        print(f"\nflood of {FLOOD} under ulimit -n {LIMIT}: {admin_ok} admin answers, "
              f"{paused} accept pauses, {len(os.listdir(f'/proc/{d.pid}/fd'))} descriptors open")
        assert paused > 0, "the data plane never paused accepting: was the limit reached?"
        assert d.alive()
    finally:
        for s in flood:
            s.close()
    flood_secs = time.monotonic() - t0

    # The service answers again within seconds; the open connections still work.
    deadline = time.monotonic() + 10
    while True:
        try:
            st, body, _ = http_get(d.port, timeout=2)
            if st == 200 and body == b"v1\n":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the service did not answer within 10 s of the flood"
        time.sleep(0.1)
    recovered = time.monotonic() - t0 - flood_secs
    print(f"answered again {recovered:.2f} s after the flood closed")
    for s in established:
        assert ask(s) == 200
        s.close()
    log = d.log()
    assert log.count("accepting paused") == 1, log[-3000:]

    # SIGTERM stops it while a second flood holds every descriptor it can get.
    flood = []
    try:
        for _ in range(FLOOD):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.port))
            flood.append(s)
        time.sleep(0.5)
        t1 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(15)
        print(f"SIGTERM under the second flood: exited after {time.monotonic() - t1:.2f} s")
    finally:
        for s in flood:
            s.close()
    assert d.proc.returncode == 0, d.log()[-2000:]
