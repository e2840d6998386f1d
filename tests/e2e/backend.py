#!/usr/bin/env python3
"""Scripted HTTP/1.1 backend for the end-to-end tests (python3 stdlib only; prints nothing).

    backend.py PORT VERSION [--unhealthy] [--mirror-routes [--api-x-status N] [--b-body TEXT]]
               [--delay-ms D]

A thread per connection, keep-alive, its own small request reader so that it can log exactly
what reached it (request line and headers, in order, as received) and read chunked bodies.

  GET  /healthz            200 "ok", or 503 when started --unhealthy or after POST /admin/unhealthy
  POST /admin/unhealthy    health checks fail from now on;  POST /admin/healthy: they pass again
  GET  /                   200 "VERSION\\n"
  GET  /slow?ms=N          sleeps N ms, then 200 "slept N\\n"
  GET  /download?bytes=N   chunked stream of N bytes of pattern(i) = i % 251
  POST /upload[?read_delay_ms=D]  reads the body (Content-Length or chunked; sleeping D ms per
                           64 KiB read), answers {"sha256": ..., "length": ...}
  GET  /status?code=N      answers N (204 and 304 without a body)
  HEAD any                 the head GET / would have: Content-Length 3 and no body
  GET  /hop                200 with hop-by-hop response headers (Connection: X-Resp-Hop, ...)
  GET  /requests           JSON list of what reached it: {"conn", "line", "headers", "complete"}
                           (health checks and /requests itself are not logged)
  POST /admin/clear        empties that list
  With --mirror-routes only (test_mirror.py; other tests use these paths as plain ones):
  GET  /api/x              200 {"x": 1} (--api-x-status N: N instead)
  GET  /b                  200 "b\n" (--b-body TEXT: TEXT instead)
  GET  /api/j              200 {"data": {"a": 1, "b": [1, 2]}, "meta": {"version": VERSION,
                           "time": <now>}}: versions differ in /meta only
  --delay-ms D             every answer but health checks and admin routes waits D ms first
  --cold-ms D --cold-for S the same D ms, only during the first S seconds of the process (a cache
                           that warms up: test_baseline.py)
  --slow-version V:D       when VERSION is V, the same D ms always (one slower version of many
                           started by one command line)
Any other path answers like GET /. Every answer carries X-Version: VERSION.
"""
import hashlib
import json
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

PORT = int(sys.argv[1])
VERSION = sys.argv[2]
STATE = {"healthy": "--unhealthy" not in sys.argv}


def _opt(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


API_X_STATUS = int(_opt("--api-x-status", "200"))
B_BODY = _opt("--b-body", "b\n").encode()
DELAY = int(_opt("--delay-ms", "0")) / 1000.0
_SLOW = _opt("--slow-version", ":0").rsplit(":", 1)
if _SLOW[0] == VERSION:
    DELAY += int(_SLOW[1]) / 1000.0
COLD = int(_opt("--cold-ms", "0")) / 1000.0
COLD_UNTIL = time.monotonic() + float(_opt("--cold-for", "0"))
MIRROR_ROUTES = "--mirror-routes" in sys.argv
LOG = []  # dicts, appended under LOCK
LOCK = threading.Lock()
LOG_MAX = 20000
PATTERN = bytes(i % 251 for i in range(251 * 261))  # 65511 bytes: a whole number of periods


class BadRequest(Exception):
    pass


class Conn:
    """Buffered reader over a socket; never reads past what a request needs except into buf."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def read_head(self):
        """Returns the head (bytes up to the empty line, lenient about bare LF) or None on EOF."""
        while True:
            for sep in (b"\r\n\r\n", b"\n\n"):
                i = self.buf.find(sep)
                if i >= 0:
                    head, self.buf = self.buf[:i], self.buf[i + len(sep):]
                    return head
            if len(self.buf) > 1 << 20:
                raise BadRequest("head too large")
            try:
                self.fill()
            except EOFError:
                return None

    def read_line(self):
        while b"\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_some(self, limit):
        if not self.buf:
            self.fill()
        out, self.buf = self.buf[:limit], self.buf[limit:]
        return out

    def body_chunks(self, headers):
        """Yields the request body in pieces (Content-Length or chunked)."""
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                size_line = self.read_line().split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise BadRequest("bad chunk size")
                if size == 0:
                    while self.read_line() != b"":  # trailers
                        pass
                    return
                while size:
                    piece = self.read_some(min(size, 65536))
                    size -= len(piece)
                    yield piece
                if self.read_line() != b"":
                    raise BadRequest("chunk not followed by CRLF")
        else:
            left = int(headers.get("content-length", "0") or 0)
            while left:
                piece = self.read_some(min(left, 65536))
                left -= len(piece)
                yield piece


def parse_head(head):
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    line = lines[0].decode("latin-1")
    fields = []
    for raw in lines[1:]:
        name, _, value = raw.decode("latin-1").partition(":")
        fields.append([name, value.strip()])
    return line, fields


def send(sock, code, body, extra=(), ctype="text/plain", head_only=False):
    reason = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
              404: "Not Found", 503: "Service Unavailable"}.get(code, "X")
    head = [f"HTTP/1.1 {code} {reason}", f"X-Version: {VERSION}"]
    if code not in (204, 304):
        head += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
    else:
        body = b""
    head += [f"{k}: {v}" for k, v in extra]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body))


def send_download(sock, n):
    sock.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  f"Transfer-Encoding: chunked\r\nX-Version: {VERSION}\r\n\r\n").encode())
    pos = 0
    while pos < n:
        k = min(len(PATTERN), n - pos)  # PATTERN is whole periods, so each chunk starts at phase 0
        sock.sendall(b"%x\r\n" % k + PATTERN[:k] + b"\r\n")
        pos += k
    sock.sendall(b"0\r\n\r\n")


def handle(sock, peer):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(sock)
    conn_id = f"{peer[0]}:{peer[1]}"
    while True:
        head = c.read_head()
        if head is None:
            return
        line, fields = parse_head(head)
        parts = line.split(" ")
        if len(parts) != 3:
            send(sock, 400, b"bad request line\n", [("Connection", "close")])
            return
        method, target, proto = parts
        headers = {}
        for k, v in fields:
            headers[k.lower()] = v
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        entry = None
        if url.path not in ("/healthz", "/requests"):
            entry = {"conn": conn_id, "line": line, "headers": fields, "complete": False,
                     "t": time.time()}
            with LOCK:
                if len(LOG) < LOG_MAX:
                    LOG.append(entry)
        close = headers.get("connection", "").lower() == "close" or proto == "HTTP/1.0"
        extra = [("Connection", "close")] if close else []

        if method == "POST" and url.path == "/upload":
            h = hashlib.sha256()
            length = 0
            delay = int(q.get("read_delay_ms", "0")) / 1000.0
            for piece in c.body_chunks(headers):
                h.update(piece)
                length += len(piece)
                if delay:
                    time.sleep(delay * len(piece) / 65536)
            body = json.dumps({"sha256": h.hexdigest(), "length": length}).encode()
        else:
            for _ in c.body_chunks(headers):
                pass
            body = None
        if entry is not None:
            entry["complete"] = True

        if (DELAY or COLD) and not url.path.startswith(("/healthz", "/admin/", "/requests")):
            cold = COLD if time.monotonic() < COLD_UNTIL else 0
            if DELAY + cold:
                time.sleep(DELAY + cold)
        if url.path == "/healthz":
            send(sock, 200 if STATE["healthy"] else 503, b"ok\n" if STATE["healthy"] else b"no\n",
                 extra)
        elif url.path == "/admin/unhealthy" and method == "POST":
            STATE["healthy"] = False
            send(sock, 200, b"unhealthy\n", extra)
        elif url.path == "/admin/healthy" and method == "POST":
            STATE["healthy"] = True
            send(sock, 200, b"healthy\n", extra)
        elif url.path == "/admin/clear" and method == "POST":
            with LOCK:
                LOG.clear()
            send(sock, 200, b"cleared\n", extra)
        elif url.path == "/requests":
            with LOCK:
                data = json.dumps(LOG).encode()
            send(sock, 200, data, extra, ctype="application/json")
        elif url.path == "/upload" and method == "POST":
            send(sock, 200, body, extra, ctype="application/json")
        elif url.path == "/slow":
            ms = int(q.get("ms", "1000"))
            time.sleep(ms / 1000.0)
            send(sock, 200, f"slept {ms}\n".encode(), extra)
        elif MIRROR_ROUTES and url.path == "/api/x":
            send(sock, API_X_STATUS, b'{"x": 1}', extra, ctype="application/json",
                 head_only=method == "HEAD")
        elif MIRROR_ROUTES and url.path == "/b":
            send(sock, 200, B_BODY, extra, head_only=method == "HEAD")
        elif MIRROR_ROUTES and url.path == "/api/j":
            doc = {"data": {"a": 1, "b": [1, 2]}, "meta": {"version": VERSION, "time": time.time()}}
            send(sock, 200, json.dumps(doc).encode(), extra, ctype="application/json",
                 head_only=method == "HEAD")
        elif url.path == "/download":
            send_download(sock, int(q.get("bytes", "0")))
        elif url.path == "/status":
            send(sock, int(q.get("code", "200")), b"status\n", extra, head_only=method == "HEAD")
        elif method == "HEAD":
            send(sock, 200, (VERSION + "\n").encode(), extra, head_only=True)
        elif url.path == "/hop":
            send(sock, 200, b"hop\n", extra + [
                ("Connection", "X-Resp-Hop" + (", close" if close else "")),
                ("X-Resp-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"), ("X-End-To-End", "1")])
        else:
            send(sock, 200, (VERSION + "\n").encode(), extra)
        if close:
            return


def serve_conn(sock, peer):
    try:
        handle(sock, peer)
    except (OSError, EOFError, BadRequest, ValueError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", PORT))
    ls.listen(1024)
    while True:
        sock, peer = ls.accept()
        threading.Thread(target=serve_conn, args=(sock, peer), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
