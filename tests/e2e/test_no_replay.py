"""No request is sent twice unless it may be (issue 14 item 2, RFC 9110 9.2.2).

A backend reads a request on a kept-alive connection and closes it without answering. cutover
sent it again on a new connection whatever its method, so a POST could be applied twice. Now
only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) are sent again; a POST gets a
502, is counted as lost with reason "not_retried", and reaches the backend once.
Real daemon; a small scripted backend (below); loopback; processes stopped by pid.
"""
import re
import socket
import sys
from urllib.parse import quote

from conftest import free_port, wait_body, wait_port

# GET /healthz and GET / answer 200 (keep-alive). Any request whose path starts with /drop is
# logged and then its connection is closed without an answer; /drop-once only the first time
# for a given path. GET /count?p=PATH answers how many times PATH arrived.
BACKEND = r'''
import socket, sys, threading
from collections import Counter
from urllib.parse import urlsplit, parse_qs
seen = Counter()
lock = threading.Lock()

def answer(s, body):
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

def conn(s):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            meth, target, _ = lines[0].split(" ")
            cl = 0
            for ln in lines[1:]:
                k, v = ln.split(":", 1)
                if k.strip().lower() == "content-length":
                    cl = int(v)
            while len(buf) < cl:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[cl:]
            url = urlsplit(target)
            if url.path.startswith("/drop"):
                with lock:
                    seen[meth + " " + url.path] += 1
                    n = seen[meth + " " + url.path]
                if url.path.startswith("/drop-once") and n > 1:
                    answer(s, b"second try\n")
                    continue
                return  # read it, then close without an answer
            if url.path == "/count":
                key = parse_qs(url.query)["p"][0]
                with lock:
                    answer(s, str(seen[key]).encode())
                continue
            answer(s, b"ok\n")
    finally:
        s.close()

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(128)
while True:
    c, _ = ls.accept()
    threading.Thread(target=conn, args=(c,), daemon=True).start()
'''


class KeepAlive:
    """One client connection, requests written by hand -> (status, body)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def request(self, method, path, body=b""):
        self.s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                       f"\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            assert d, f"closed without an answer to {method} {path}"
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        cl = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(self.buf) < cl:
            d = self.s.recv(65536)
            assert d
            self.buf += d
        body, self.buf = self.buf[:cl], self.buf[cl:]
        return int(head.split(b" ", 2)[1]), body

    def close(self):
        self.s.close()


def count(port, key):
    c = KeepAlive(port)
    try:
        st, body = c.request("GET", f"/count?p={quote(key)}")
        assert st == 200
        return int(body)
    finally:
        c.close()


def lost(d, reason):
    st, text = d.api("GET", "/metrics")
    assert st == 200
    m = re.search(rf'^cutover_proxy_lost_total{{service="web",role="stable",reason="{reason}"}} '
                  rf'(\d+)$', text, re.M)
    assert m, f"no lost series for reason {reason}"
    return int(m.group(1))


def start(procs, tmp_path, daemon):
    script = tmp_path / "dropper.py"
    script.write_text(BACKEND)
    port = free_port()
    p = procs.start([sys.executable, script, port], name="dropper")
    assert wait_port(port, 10, p)

    class B:
        addr = f"127.0.0.1:{port}"

    B.port = port
    d = daemon([B], top_extra="workers: 1\n")
    d.start()
    wait_body(d.port, "ok\n")
    return B, d


def test_post_on_a_reused_connection_is_not_sent_twice(procs, tmp_path, daemon):
    b, d = start(procs, tmp_path, daemon)
    c = KeepAlive(d.port)
    for i in range(5):
        # A GET first, so that the POST goes out on the pooled (reused) upstream connection.
        assert c.request("GET", "/") == (200, b"ok\n")
        st, _ = c.request("POST", f"/drop/{i}", b"pay me once")
        assert st == 502, f"POST {i} answered {st}"
        c.close()
        c = KeepAlive(d.port)
    c.close()
    for i in range(5):
        assert count(b.port, f"POST /drop/{i}") == 1, f"POST /drop/{i} reached the backend " \
            f"{count(b.port, f'POST /drop/{i}')} times"
    assert lost(d, "not_retried") == 5


def test_idempotent_request_on_a_reused_connection_is_still_retried(procs, tmp_path, daemon):
    b, d = start(procs, tmp_path, daemon)
    c = KeepAlive(d.port)
    for method in ("GET", "PUT", "DELETE"):
        assert c.request("GET", "/") == (200, b"ok\n")
        st, body = c.request(method, f"/drop-once/{method}")
        assert (st, body) == (200, b"second try\n"), f"{method}: {st} {body!r}"
        assert count(b.port, f"{method} /drop-once/{method}") == 2
    c.close()
    assert lost(d, "not_retried") == 0
