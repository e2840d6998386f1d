"""TLS termination (issue 17, item 1), end to end: the real daemon with certificates made by the
`openssl` CLI in the test's temp dir, real TLS clients (Python's ssl, `openssl s_client`, curl,
wrk over https) on loopback.

    /usr/bin/python3 -m pytest -q tests/e2e/test_tls.py
"""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, free_port, parse_wrk, pattern_sha256, run_cli, wait_port
from wsutil import ws_frame, ws_parse

HEALTH = {"interval": "200ms"}


# ---------------------------------------------------------------- certificates --------------

def sh(*args, cwd=None):
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


class Certs:
    """A private CA in tmp and leaf certificates it signs (EC P-256: quick to make)."""

    def __init__(self, tmp):
        self.dir = tmp / "pki"
        self.dir.mkdir(exist_ok=True)
        self.ca = self.dir / "ca.pem"
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "2", "-subj", "/CN=test-ca", "-keyout", self.dir / "ca.key",
           "-out", self.ca)

    def make(self, name, dns, serial, days=2):
        """-> (cert path, key path), the key mode 0600."""
        key, csr, pem = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                         self.dir / f"{name}.pem")
        ext = self.dir / f"{name}.ext"
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-subj", f"/CN={dns[0]}", "-keyout", key, "-out", csr)
        ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in dns) + ",IP:127.0.0.1\n")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.dir / "ca.key",
           "-set_serial", serial, "-days", days, "-extfile", ext, "-out", pem)
        os.chmod(key, 0o600)
        return pem, key


def tls_yaml(cert, key):
    return f"    tls: {{cert: {cert}, key: {key}}}\n"


def client_ctx(certs, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def https_get(port, certs, path="/", sni="web.test", headers=None, sock=None):
    """One GET over TLS -> (status, body, the TLS socket kept open)."""
    s = sock
    if s is None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = client_ctx(certs).wrap_socket(raw, server_hostname=sni)
    h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: web.test\r\n{h}\r\n".encode())
    return read_response(s) + (s,)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:n].decode(errors="replace")


def serial_of(port, sni="web.test"):
    """The serial (hex, as openssl prints it) of the certificate a new connection gets."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    if sni is not None:
        args += ["-servername", sni]
    else:
        args += ["-noservername"]
    r = subprocess.run(args, input="", capture_output=True, text=True, timeout=10)
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    assert pem, f"no certificate from 127.0.0.1:{port} ({sni}): {r.stdout[-400:]}{r.stderr}"
    out = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem.group(0),
                         capture_output=True, text=True, timeout=10).stdout.strip()
    return out.split("=", 1)[1]


def metric(d, name, **labels):
    st, text = d.api("GET", "/metrics")
    assert st == 200
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return int(float(line.split()[-1]))
    raise AssertionError(f"{name}{{{want}}} not in /metrics")


def wait_https(port, certs, want, secs=10):
    end = time.monotonic() + secs
    last = None
    while time.monotonic() < end:
        try:
            st, body, s = https_get(port, certs)
            s.close()
            if st == 200 and body.strip() == want:
                return
            last = (st, body)
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"https://127.0.0.1:{port}/ never answered {want}: {last}")


def start_wrk(procs, port, secs, conns=16):
    return procs.start(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
                        f"https://127.0.0.1:{port}/"], name="wrk")


def wrk_result(p, secs):
    p.wait(secs + 30)
    return parse_wrk(p.log_path.read_text())


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def _serve_pids(tmp_path):
    r = subprocess.run(["pgrep", "-f", "--", f"serve -c {tmp_path}/"], capture_output=True,
                       text=True)
    return [int(x) for x in r.stdout.split()]


@pytest.fixture(autouse=True)
def reap(procs, tmp_path):
    """A reload or upgrade hands over to a successor that is not the test's child: at teardown
    (before procs' own), every `serve -c` of this test's config is stopped by pid."""
    yield
    pids = _serve_pids(tmp_path)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _serve_pids(tmp_path):
        time.sleep(0.05)
    for p in _serve_pids(tmp_path):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------- serving ---------------------

def test_sni_chooses_among_two_certificates_alpn_and_forwarded_proto(backend, daemon, certs):
    """Two certificates on one listener: a.test (the default, listed first) and *.b.test. The
    client's SNI picks one; no SNI or an unknown name gets the default. TLS 1.2 and 1.3 both
    work, ALPN says http/1.1, and the backend is told X-Forwarded-Proto: https."""
    a_pem, a_key = certs.make("a", ["a.test"], 0xA1)
    b_pem, b_key = certs.make("b", ["*.b.test"], 0xB2)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, service_extra=(
        f"    tls:\n      certificates:\n        - {{cert: {a_pem}, key: {a_key}}}\n"
        f"        - {{cert: {b_pem}, key: {b_key}}}\n")).start()
    wait_https(d.port, certs, "v1")

    assert serial_of(d.port, "a.test") == "A1"
    assert serial_of(d.port, "www.b.test") == "B2"
    assert serial_of(d.port, "WWW.B.TEST") == "B2", "names compare case-insensitively"
    assert serial_of(d.port, "b.test") == "A1", "a wildcard stands for one label, not none"
    assert serial_of(d.port, "unknown.example") == "A1"
    assert serial_of(d.port, None) == "A1"

    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(certs, alpn=("h2", "http/1.1"))
        ctx.minimum_version = ctx.maximum_version = version
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5),
                             server_hostname="x.b.test") as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                   ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert s.selected_alpn_protocol() == "http/1.1"
            st, body, _ = https_get(d.port, certs, sock=s,
                                    headers={"X-Forwarded-Proto": "http"})
            assert (st, body.strip()) == (200, "v1")

    # The client's own X-Forwarded-Proto does not reach the backend: cutover's does.
    seen = [[v for k, v in r["headers"] if k.lower() == "x-forwarded-proto"]
            for r in v1.requests()]
    assert seen and all(v == ["https"] for v in seen), seen
    assert metric(d, "cutover_tls_handshakes_total", service="web") >= 7
    # Each certificate's notAfter (made for 2 days), and a warning at start: under 14 days left.
    for pem in (a_pem, b_pem):
        exp = metric(d, "cutover_tls_certificate_expiry_timestamp_seconds", service="web",
                     cert=pem)
        assert abs(exp - (time.time() + 2 * 86400)) < 3600, exp
    assert d.log().count("TLS certificate expires soon") == 2, d.log()


def test_bad_input_closes_only_that_connection_and_is_counted(backend, daemon, certs):
    """A bad SNI, plain HTTP on the TLS port and a handshake that never finishes each close
    their own connection promptly and are counted by reason, while a TLS client that opened
    its connection before them goes on being served on it."""
    pem, key = certs.make("web", ["web.test"], 0x10)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, timeouts={"client_header": "1s"},
               service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    st, body, good = https_get(d.port, certs)
    assert st == 200

    # An SNI that is no host name: refused with an alert during the handshake.
    t0 = time.monotonic()
    with pytest.raises(ssl.SSLError) as e:
        client_ctx(certs).wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5),
                                      server_hostname="bad!name.test")
    assert "UNRECOGNIZED_NAME" in str(e.value).upper(), e.value
    assert time.monotonic() - t0 < 2

    # Plain HTTP: a 400 in plain text that says to use https, then the close.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"https://" in data

    # A handshake that never finishes (half a record header) is closed at client_header (1 s).
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01")
        t0 = time.monotonic()
        assert s.recv(100) == b""
        took = time.monotonic() - t0
    assert 0.8 < took < 2.5, took

    # The connection opened first still works.
    st, body, _ = https_get(d.port, certs, sock=good)
    assert (st, body.strip()) == (200, "v1")
    good.close()
    assert metric(d, "cutover_tls_handshake_failures_total", service="web", reason="sni") == 1
    assert metric(d, "cutover_tls_handshake_failures_total", service="web",
                  reason="plain_http") == 1
    assert metric(d, "cutover_tls_handshake_failures_total", service="web", reason="timeout") == 1
    assert d.alive()


# ---------------------------------------------------------------- config errors --------------

def test_bad_certificates_are_config_errors_naming_the_file(backend, daemon, certs, tmp_path):
    """`cutover check` (and serve) refuse a key others may read, a certificate that does not
    match its key, an expired certificate and a file that cannot be read, naming the file."""
    pem, key = certs.make("good", ["web.test"], 0x20)
    other_pem, _ = certs.make("other", ["web.test"], 0x21)
    old_pem, old_key = certs.make("old", ["web.test"], 0x22, days=-1)
    loose = tmp_path / "pki" / "loose.key"
    loose.write_bytes(key.read_bytes())
    os.chmod(loose, 0o644)
    cases = [
        (tls_yaml(pem, loose), [str(loose), "0644", "chmod 600"]),
        (tls_yaml(other_pem, key), [str(other_pem), "does not match", str(key)]),
        (tls_yaml(old_pem, old_key), [str(old_pem), "expired"]),
        (tls_yaml(tmp_path / "pki" / "missing.pem", key), ["missing.pem", "cannot read"]),
    ]
    v1 = backend("v1")
    for extra, want in cases:
        d = daemon([v1], health=HEALTH, service_extra=extra)
        r = run_cli("check", "-c", d.cfg)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert re.search(r"cutover\.yml:\d+", out), out
        for w in want:
            assert w in out, (w, out)
        p = subprocess.run([str(BIN), "serve", "-c", str(d.cfg)], capture_output=True,
                           text=True, timeout=20)
        assert p.returncode != 0 and want[0] in p.stdout + p.stderr


def test_reload_with_a_bad_certificate_changes_nothing(backend, daemon, certs):
    pem, key = certs.make("one", ["web.test"], 0x31)
    live_pem, live_key = certs.dir / "live.pem", certs.dir / "live.key"
    live_pem.write_bytes(pem.read_bytes())
    live_key.write_bytes(key.read_bytes())
    os.chmod(live_key, 0o600)
    other_pem, _ = certs.make("two", ["web.test"], 0x32)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, service_extra=tls_yaml(live_pem, live_key)).start()
    wait_https(d.port, certs, "v1")
    pid = d.pid
    live_pem.write_bytes(other_pem.read_bytes())  # a certificate for another key
    r = d.cli("reload", timeout=20)
    assert r.returncode != 0 and "does not match" in r.stdout + r.stderr, r.stdout + r.stderr
    assert d.alive() and d.pid == pid
    assert serial_of(d.port) == "31"
    wait_https(d.port, certs, "v1")


# ---------------------------------------------------------------- traffic under load ---------

@pytest.mark.xdist_group("load")
def test_rotation_by_reload_under_https_load_then_upgrade(backend, daemon, certs, procs):
    """Certificates rotate by `cutover reload` under wrk over https with no error; a
    connection opened before the reload is still answered after it, new connections get the
    new certificate, and a hot upgrade keeps serving TLS."""
    one_pem, one_key = certs.make("one", ["web.test"], 0x41)
    two_pem, two_key = certs.make("two", ["web.test"], 0x42)
    pem, key = certs.dir / "web.pem", certs.dir / "web.key"
    pem.write_bytes(one_pem.read_bytes())
    key.write_bytes(one_key.read_bytes())
    os.chmod(key, 0o600)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, drain_timeout="3s",
               service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    assert serial_of(d.port) == "41"
    st, _, early = https_get(d.port, certs)
    assert st == 200

    load = start_wrk(procs, d.port, 5)
    time.sleep(1.5)
    pem.write_bytes(two_pem.read_bytes())
    key.write_bytes(two_key.read_bytes())
    r = d.cli("reload", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    st, body, _ = https_get(d.port, certs, sock=early)
    assert (st, body.strip()) == (200, "v1"), "the connection opened before the reload goes on"
    early.close()
    res = wrk_result(load, 5)
    assert res["requests"] > 0, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert serial_of(d.port) == "42"

    r = d.cli("upgrade", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_https(d.port, certs, "v1")
    assert serial_of(d.port) == "42"


@pytest.mark.xdist_group("load")
def test_deploy_under_https_load_loses_nothing(backend, daemon, certs, procs):
    pem, key = certs.make("web", ["web.test"], 0x51)
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], health=HEALTH, service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    load = start_wrk(procs, d.port, 5, conns=32)
    time.sleep(1)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    res = wrk_result(load, 5)
    assert res["requests"] > 0, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    wait_https(d.port, certs, "v2")


# ---------------------------------------------------------------- admin.listen ---------------

def test_admin_listen_over_tls(backend, daemon, certs, tmp_path):
    """admin.tls: the admin API answers over TLS (curl, and the CLI with CUTOVER_CACERT); plain
    HTTP on that port gets a 400 that says to use https, and is counted."""
    token = "root-0123456789abcdef00"
    tokens = tmp_path / "tokens.yml"
    tokens.write_text(f"tokens:\n  root: {{role: admin, token: {token}}}\n")
    os.chmod(tokens, 0o600)
    pem, key = certs.make("admin", ["admin.test"], 0x61)
    aport = free_port()
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, top_extra=(
        f"admin: {{listen: 127.0.0.1:{aport}, tokens_file: {tokens}, "
        f"tls: {{cert: {pem}, key: {key}}}}}\n")).start()
    assert wait_port(aport, 10)
    r = subprocess.run(["curl", "-s", "-m", "5", "--cacert", str(certs.ca), "-H",
                        f"Authorization: Bearer {token}",
                        f"https://127.0.0.1:{aport}/api/v1/services"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "web" in r.stdout, r.stdout + r.stderr
    env = dict(os.environ, CUTOVER_TOKEN=token, CUTOVER_CACERT=str(certs.ca))
    r = subprocess.run([str(BIN), "status", "web", "--json", "--admin",
                        f"https://127.0.0.1:{aport}"], capture_output=True, text=True,
                       timeout=20, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web" in json.dumps(json.loads(r.stdout))
    r = subprocess.run(["curl", "-s", "-m", "5", f"http://127.0.0.1:{aport}/api/v1/services"],
                       capture_output=True, text=True, timeout=20)
    assert "https://" in r.stdout, r.stdout
    assert metric(d, "cutover_admin_tls_handshake_failures_total", reason="plain_http") == 1


# ---------------------------------------------------------------- big bodies, backpressure --

def test_big_bodies_both_ways_with_slow_peers(backend, daemon, certs, tmp_path):
    """Bodies many records long cross TLS intact both ways while a slow peer holds them back:
    a download read slowly by the client (ciphertext queues in cutover), and an upload read
    slowly by the backend (cutover stops reading the client, then resumes with plaintext
    OpenSSL already decrypted)."""
    pem, key = certs.make("web", ["web.test"], 0x71)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, service_extra=tls_yaml(pem, key),
               timeouts={"client_idle": "20s"}).start()
    wait_https(d.port, certs, "v1")
    n = 6 * 1024 * 1024
    out = tmp_path / "down.bin"
    r = subprocess.run(["curl", "-s", "-m", "60", "--cacert", str(certs.ca), "--limit-rate", "3M",
                        "-o", str(out), f"https://127.0.0.1:{d.port}/download?bytes={n}"],
                       capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == n and hashlib.sha256(out.read_bytes()).hexdigest() == \
        pattern_sha256(n)

    body = os.urandom(4 * 1024 * 1024)
    src = tmp_path / "up.bin"
    src.write_bytes(body)
    r = subprocess.run(["curl", "-s", "-m", "60", "--cacert", str(certs.ca), "--data-binary",
                        f"@{src}", "-H", "Content-Type: application/octet-stream",
                        f"https://127.0.0.1:{d.port}/upload?read_delay_ms=20"],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


def test_sessions_resume_with_tickets(backend, daemon, certs):
    """A client that kept its session (a ticket: cutover keeps no server-side session cache)
    resumes it on its next connection, over TLS 1.2 and 1.3 alike."""
    pem, key = certs.make("web", ["web.test"], 0x81)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(certs)
        ctx.minimum_version = ctx.maximum_version = version
        raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="web.test") as s:
            st, _, _ = https_get(d.port, certs, sock=s)  # TLS 1.3 tickets come after the handshake
            assert st == 200 and not s.session_reused
            session = s.session
        raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="web.test", session=session) as s:
            st, body, _ = https_get(d.port, certs, sock=s)
            assert (st, body.strip()) == (200, "v1")
            assert s.session_reused, version


def test_connection_close_ends_with_close_notify(backend, daemon, certs):
    """When cutover closes a TLS connection (here after `Connection: close`), it says so with
    close_notify first: a strict client sees a clean end, not a possible truncation."""
    pem, key = certs.make("web", ["web.test"], 0x91)
    v1 = backend("v1")
    d = daemon([v1], health=HEALTH, service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    ctx = client_ctx(certs)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # strict, as curl is
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="web.test", suppress_ragged_eofs=False) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)  # SSLEOFError if the TCP connection ended without close_notify
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"v1\n"), data


def test_websocket_over_tls(daemon, certs, procs):
    """A WebSocket upgrade over TLS becomes a tunnel through the TLS connection: messages go
    both ways, in frames the client masks and the backend echoes with its version."""
    class WS:
        port = free_port()
        addr = f"127.0.0.1:{port}"
    p = procs.start([sys.executable, Path(__file__).resolve().parent / "wsutil.py", WS.port,
                     "v1"], name="wsbackend")
    assert wait_port(WS.port, 10, p)
    pem, key = certs.make("web", ["web.test"], 0xA5)
    d = daemon([WS], health=HEALTH, service_extra=tls_yaml(pem, key)).start()
    wait_https(d.port, certs, "v1")
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    with client_ctx(certs).wrap_socket(raw, server_hostname="web.test") as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: web.test\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        for msg in (b"hello", b"x" * 40000):  # the second spans several TLS records
            s.sendall(ws_frame(1, msg, masked=True))
            while (f := ws_parse(buf)) is None:
                buf += s.recv(65536)
            fin, op, masked, payload, buf = f
            assert (op, payload) == (1, b"v1:" + msg)
