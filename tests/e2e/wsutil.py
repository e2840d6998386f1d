#!/usr/bin/env python3
"""WebSocket (RFC 6455) and server-sent-events helpers for test_dataplane.py (python3 stdlib only).

As a program, a versioned backend:

    wsutil.py PORT VERSION

  GET /healthz                       200 "ok"
  GET /ws  (Upgrade: websocket)      101, then an echo server: text message M -> text "VERSION:M";
                                     ping -> pong; close -> close
  GET /sse                           200 text/event-stream, chunked, "data: VERSION N" every 100 ms
                                     (N from 0 per stream), never ending
  anything else                      200 "VERSION\\n" (Content-Length, keep-alive)

As a module: WSClient and SSEClient (blocking sockets, one reader thread each) that timestamp every
message and the moment and manner of the close, and Ticker, which sends a WebSocket message every
`every` seconds.
"""
import base64
import hashlib
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SSE_TICK = 0.1


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def ws_frame(opcode, payload, masked):
    """One final frame. Clients mask, servers do not (RFC 6455 5.1)."""
    n = len(payload)
    b0 = bytes([0x80 | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head = b0 + bytes([m | n])
    elif n < 1 << 16:
        head = b0 + bytes([m | 126]) + struct.pack("!H", n)
    else:
        head = b0 + bytes([m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


def ws_parse(buf):
    """-> (fin, opcode, masked, payload, rest), or None while buf holds no whole frame."""
    if len(buf) < 2:
        return None
    fin, op, masked, n, i = buf[0] >> 7, buf[0] & 15, buf[1] >> 7, buf[1] & 127, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, i = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, i = struct.unpack("!Q", buf[2:10])[0], 10
    key = b""
    if masked:
        if len(buf) < i + 4:
            return None
        key, i = buf[i:i + 4], i + 4
    if len(buf) < i + n:
        return None
    p = buf[i:i + n]
    if masked:
        p = bytes(c ^ key[j & 3] for j, c in enumerate(p))
    return fin, op, masked, p, buf[i + n:]


# ------------------------------------------------------------------------------------ backend

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    version = "v0"

    def log_message(self, *a):
        pass

    def _plain(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", self.version)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/healthz"):
            return self._plain(200, b"ok\n")
        if self.path.startswith("/ws"):
            return self._ws()
        if self.path.startswith("/sse"):
            return self._sse()
        return self._plain(200, (self.version + "\n").encode())

    def _ws(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        tokens = [t.strip().lower() for t in self.headers.get("Connection", "").split(",")]
        if self.headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in tokens \
                or not key:
            self.close_connection = True
            return self._plain(400, b"not a websocket handshake\n")
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        buf = b""
        try:
            while True:
                got = ws_parse(buf)
                if got is None:
                    data = self.rfile.read1(65536)
                    if not data:
                        return
                    buf += data
                    continue
                _fin, op, masked, payload, buf = got
                if not masked:
                    self.wfile.write(ws_frame(8, struct.pack("!H", 1002), False))
                    return
                if op == 8:
                    self.wfile.write(ws_frame(8, payload[:2], False))
                    return
                if op == 9:
                    self.wfile.write(ws_frame(10, payload, False))
                elif op == 1:
                    self.wfile.write(ws_frame(1, self.version.encode() + b":" + payload, False))
        except OSError:
            return

    def _sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Version", self.version)
        self.end_headers()
        self.close_connection = True
        n = 0
        try:
            while True:
                ev = b"data: %s %d\n\n" % (self.version.encode(), n)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                n += 1
                time.sleep(SSE_TICK)
        except OSError:
            return


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass  # a peer that went away (broken pipe, reset) is normal here


def serve(port, version):
    Handler.version = version
    Server(("127.0.0.1", port), Handler).serve_forever()


# ------------------------------------------------------------------------------------ clients

class HandshakeError(Exception):
    pass


def _read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise HandshakeError(f"closed before a response head (got {buf[:200]!r})")
        buf += data
        if len(buf) > 65536:
            raise HandshakeError("response head over 64 KiB")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs, rest


def _connect(port, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class _Reader:
    """Common part: a reader thread that records (time, text) messages and how the stream ended."""

    def __init__(self):
        self.msgs = []          # (monotonic time, text)
        self.closed_at = None   # monotonic time of EOF / reset / close frame
        self.how = ""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _ended(self, how):
        with self.lock:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
                self.how = how

    def _run(self):
        try:
            if self.rest:
                self._feed(self.rest)
            while self.closed_at is None:
                try:
                    data = self.s.recv(65536)
                except socket.timeout:
                    continue
                except OSError as e:
                    return self._ended(f"reset ({e})")
                if not data:
                    return self._ended("EOF")
                self._feed(data)
        finally:
            try:
                self.s.close()
            except OSError:
                pass

    def wait_closed(self, until):
        while self.closed_at is None and time.monotonic() < until:
            time.sleep(0.02)
        return self.closed_at

    def close(self):
        self._ended("closed by the test")
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class WSClient(_Reader):
    """A WebSocket over `port`: handshake in the constructor (raises HandshakeError unless 101
    with the right Sec-WebSocket-Accept), then send() text and a thread records the echoes."""

    def __init__(self, port, path="/ws", timeout=5, headers=None):
        super().__init__()
        self.close_code = None  # the status code of a close frame received, if any
        self.s = _connect(port, timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
                        f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.status, self.headers, self.rest = _read_head(self.s)
        if self.status.split()[1:2] != ["101"]:
            self.s.close()
            raise HandshakeError(f"handshake answered {self.status!r}, want 101")
        if self.headers.get("upgrade", "").lower() != "websocket" or \
                self.headers.get("sec-websocket-accept") != accept_key(key):
            self.s.close()
            raise HandshakeError(f"101 without the right Upgrade/Sec-WebSocket-Accept: {self.headers}")
        self.s.settimeout(0.5)
        self.buf = b""
        self.sent = []     # (monotonic time, text)
        self.wlock = threading.Lock()
        self.thread.start()

    def send(self, text):
        """-> True if the frame was written."""
        if self.closed_at is not None:
            return False
        try:
            with self.wlock:
                self.s.sendall(ws_frame(1, text.encode(), True))
            self.sent.append((time.monotonic(), text))
            return True
        except OSError as e:
            self._ended(f"send failed ({e})")
            return False

    def _feed(self, data):
        self.buf += data
        while True:
            got = ws_parse(self.buf)
            if got is None:
                return
            _fin, op, _m, payload, self.buf = got
            if op == 8:
                if len(payload) >= 2:
                    self.close_code = struct.unpack("!H", payload[:2])[0]
                return self._ended("close frame")
            if op == 9:
                try:
                    with self.wlock:
                        self.s.sendall(ws_frame(10, payload, True))
                except OSError:
                    pass
            elif op == 1:
                with self.lock:
                    self.msgs.append((time.monotonic(), payload.decode("utf-8", "replace")))

    def echo_of(self, text, until):
        """Waits until the echo of `text` (suffix ':text') arrives; -> the echo or None."""
        while time.monotonic() < until:
            with self.lock:
                for _, m in self.msgs:
                    if m.endswith(":" + text):
                        return m
            if self.closed_at is not None:
                return None
            time.sleep(0.01)
        return None


class Ticker(threading.Thread):
    """Sends "m0", "m1", ... on a WSClient every `every` seconds until stopped or closed."""

    def __init__(self, ws, every=0.1):
        super().__init__(daemon=True)
        self.ws, self.every = ws, every
        self.stop = threading.Event()

    def run(self):
        i, nxt = 0, time.monotonic()
        while not self.stop.is_set() and self.ws.closed_at is None:
            if not self.ws.send(f"m{i}"):
                return
            i += 1
            nxt += self.every
            self.stop.wait(max(0.0, nxt - time.monotonic()))


class SSEClient(_Reader):
    """A text/event-stream GET over `port`; a thread records the data of every event."""

    def __init__(self, port, path="/sse", timeout=5):
        super().__init__()
        self.s = _connect(port, timeout)
        self.asked = time.monotonic()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Accept: text/event-stream\r\n\r\n").encode())
        self.status, self.headers, self.rest = _read_head(self.s)
        if self.status.split()[1:2] != ["200"]:
            self.s.close()
            raise HandshakeError(f"SSE answered {self.status!r}, want 200")
        if not self.headers.get("content-type", "").startswith("text/event-stream"):
            self.s.close()
            raise HandshakeError(f"SSE Content-Type {self.headers.get('content-type')!r}")
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.s.settimeout(0.5)
        self.raw, self.text = b"", ""
        self.thread.start()

    def _feed(self, data):
        if not self.chunked:
            return self._body(data)
        self.raw += data
        while True:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            try:
                n = int(line.split(b";")[0], 16)
            except ValueError:
                return self._ended(f"bad chunk framing {line[:40]!r}")
            if n == 0:
                return self._ended("last chunk")
            if len(rest) < n + 2:
                return
            self._body(rest[:n])
            self.raw = rest[n + 2:]

    def _body(self, data):
        self.text += data.decode("utf-8", "replace")
        while "\n\n" in self.text:
            ev, self.text = self.text.split("\n\n", 1)
            for ln in ev.split("\n"):
                if ln.startswith("data:"):
                    with self.lock:
                        self.msgs.append((time.monotonic(), ln[5:].strip()))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    serve(int(sys.argv[1]), sys.argv[2])
