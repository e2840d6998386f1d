"""Bad input of every kind gets a clear error and changes nothing: malformed HTTP framing
(request smuggling material), oversized heads, broken configs, wrong CLI calls, malformed
admin API requests. After each, the daemon still serves and its state is what it was.
"""
import re
import socket
import time

import pytest

import subprocess

from conftest import BIN, body_of, free_port, live_name, run_cli, wait_body, wait_port, write_config

# Each request carries a unique path so the backend's log can prove it never arrived.
ATTACKS = {
    "cl-and-te": b"POST /attack-cl-te HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST /attack-te-cl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "two-differing-cl": b"POST /attack-two-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                        b"Content-Length: 6\r\n\r\nhello!",
    "te-xchunked": b"POST /attack-xchunked HTTP/1.1\r\nHost: t\r\n"
                   b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-chunked-not-final": b"POST /attack-te-notfinal HTTP/1.1\r\nHost: t\r\n"
                            b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "bare-lf": b"GET /attack-bare-lf HTTP/1.1\nHost: t\n\n",
    "bare-lf-in-one-field": b"GET /attack-bare-lf2 HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "space-before-colon": b"GET /attack-space-colon HTTP/1.1\r\nHost: t\r\n"
                          b"Transfer-Encoding : chunked\r\n\r\n",
    "obs-fold": b"GET /attack-obs-fold HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
    "missing-host-1.1": b"GET /attack-no-host HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
    "two-hosts": b"GET /attack-two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}

# An invalid chunk size is found in the body, after a valid head. The whole message is sent in one
# write, so the proxy sees the bad chunk before it forwards anything (HAProxy doesn't forward it
# either).
BAD_CHUNK = (b"POST /attack-bad-chunk HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"zz\r\nhello\r\n0\r\n\r\n")


def exchange(port, data, wait=3.0):
    """Sends raw bytes; reads until the server closes (or `wait` s pass).
    -> (bytes received, closed: bool)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    got, closed = b"", False
    try:
        s.sendall(data)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        s.close()
    return got, closed


@pytest.fixture
def served(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    v1.clear()
    return d, v1


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_framing_attack_gets_400_closed_and_not_forwarded(served, name):
    d, v1 = served
    got, closed = exchange(d.port, ATTACKS[name])
    assert got.startswith(b"HTTP/1.1 400 "), f"{name}: answered {got[:200]!r}"
    assert closed, f"{name}: connection left open after 400"
    assert got.count(b"HTTP/1.1 ") == 1, f"{name}: more than one answer: {got!r}"
    assert [e["line"] for e in v1.requests()] == [], f"{name}: reached the backend"
    assert body_of(d.port) == "v1\n", "the daemon stopped serving"


def test_invalid_chunk_size_gets_400_closed_and_not_forwarded(served):
    d, v1 = served
    got, closed = exchange(d.port, BAD_CHUNK)
    assert got.startswith(b"HTTP/1.1 400 "), f"answered {got[:200]!r}"
    assert closed, "connection left open after 400"
    assert got.count(b"HTTP/1.1 ") == 1, got
    assert [e["line"] for e in v1.requests()] == [], "the request reached the backend"
    assert body_of(d.port) == "v1\n"


def test_smuggled_request_after_cl_te_is_never_seen(served):
    # Classic CL.TE smuggling: a proxy that trusted Content-Length would forward a second
    # request hidden in the body.
    d, v1 = served
    smuggle = (b"POST /attack-smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    got, closed = exchange(d.port, smuggle)
    assert got.startswith(b"HTTP/1.1 400 ") and closed, got[:200]
    assert got.count(b"HTTP/1.1 ") == 1, got
    lines = [e["line"] for e in v1.requests()]
    assert not any("smuggle" in ln for ln in lines), lines
    assert body_of(d.port) == "v1\n", "the daemon stopped serving"


def test_70kib_header_block_gets_431(served):
    d, v1 = served
    fields = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    got, _ = exchange(d.port, b"GET /attack-big-head HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert got.startswith(b"HTTP/1.1 431 "), f"answered {got[:200]!r}"
    assert [e["line"] for e in v1.requests()] == []
    # A head just under the limit still passes.
    fields = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"a" * 1000) for i in range(60))
    got, _ = exchange(d.port, b"GET /big-ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                      + fields + b"\r\n")
    assert got.startswith(b"HTTP/1.1 200 "), f"a 61 KiB head answered {got[:200]!r}"


def test_garbage_and_truncated_heads_do_not_hurt_the_daemon(served):
    d, v1 = served
    for junk in (b"\x00\x01\x02\xff" * 100 + b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n"):
        got, _ = exchange(d.port, junk, wait=2)
        assert got.startswith(b"HTTP/1.1 4") or got.startswith(b"HTTP/1.1 505"), (junk[:40], got)
    # Half a request, then the client goes away.
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"GET / HTTP/1.1\r\nHo")
    s.close()
    time.sleep(0.2)
    assert [e["line"] for e in v1.requests()] == []
    assert d.alive()
    assert body_of(d.port) == "v1\n"


# --- config errors -----------------------------------------------------------------------------

GOOD = """state_dir: {state}
services:
  web:
    listen: 127.0.0.1:{port}
    health_check: {{path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2}}
    drain_timeout: 5s
    deploy_timeout: 5s
    targets: [127.0.0.1:{target}]
"""

BAD_CONFIGS = {
    # name: (text transform, key the message must name, 1-based line it must point at or None)
    "unknown-duration": (lambda t: t.replace("drain_timeout: 5s", "drain_timeout: 5 parsecs"),
                         "drain_timeout", "drain_timeout"),
    "missing-listen": (lambda t: re.sub(r"    listen: .*\n", "", t), "listen", None),
    "weight-101": (lambda t: t.replace("    targets:", "    plan: canary\n    targets:")
                   + "plans:\n  canary:\n    steps:\n      - weight: 10\n      - weight: 101\n",
                   "weight", "weight: 101"),
    "negative-threshold": (lambda t: t.replace("healthy_threshold: 1", "healthy_threshold: -1"),
                           "healthy_threshold", "health_check"),
    "bad-listen": (lambda t: re.sub(r"listen: 127\.0\.0\.1:\d+", "listen: 127.0.0.1:99999", t),
                   "listen", "listen:"),
    "io-coalesce-over-1ms": (lambda t: t.replace("services:\n", "io_coalesce_us: 5000\nservices:\n"),
                             "io_coalesce_us", "io_coalesce_us"),
    "targets-not-a-list": (lambda t: re.sub(r"targets: \[.*\]", "targets: 5", t), "targets",
                           "targets:"),
    # A PROXY listener that would believe any peer is refused, not started.
    "proxy-protocol-without-trusted-proxies": (
        lambda t: t.replace("    drain_timeout:", "    proxy_protocol: true\n    drain_timeout:"),
        "trusted_proxies", "proxy_protocol: true"),
    "trusted-proxy-not-a-range": (
        lambda t: t.replace("    drain_timeout:",
                            "    trusted_proxies: [10.0.0.0/8, lb.internal]\n    drain_timeout:"),
        "trusted_proxies[1]", "trusted_proxies:"),
    "on-live-failure-unknown": (
        lambda t: t.replace("    drain_timeout:", "    on_live_failure: retry\n    drain_timeout:"),
        "on_live_failure", "on_live_failure: retry"),
    "risk-policy-not-a-bool": (
        lambda t: t.replace("    drain_timeout:",
                            "    risk_policy: {high: {ticket: sometimes}}\n    drain_timeout:"),
        "risk_policy.high.ticket", "risk_policy:"),
    "version-not-a-name": (
        lambda t: t.replace("    drain_timeout:", "    version: v1 beta\n    drain_timeout:"),
        "version", "version: v1 beta"),
    "version-without-targets": (
        lambda t: re.sub(r"    targets: .*\n", "    version: blue\n", t), "version", "version: blue"),
    "allow-self-not-a-bool": (
        lambda t: t.replace("    targets:", "    plan: canary\n    targets:")
        + "plans:\n  canary:\n    steps:\n      - approval: {approvers: [lead], "
          "allow_self: sometimes}\n", "allow_self", "allow_self: sometimes"),
}


def config_text(tmp_path, transform):
    text = GOOD.format(state=tmp_path / "var", port=free_port(), target=free_port())
    return transform(text)


def line_of(text, needle):
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("cmd", ["check", "serve"])
def test_bad_config_exits_2_naming_file_line_and_key(tmp_path, procs, name, cmd):
    transform, key, at = BAD_CONFIGS[name]
    text = config_text(tmp_path, transform)
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    if cmd == "check":
        r = run_cli("check", "-c", cfg, timeout=10)
        rc, out = r.returncode, r.stdout + r.stderr
    else:
        p = procs.start([BIN, "serve", "-c", cfg], name="serve-bad")
        try:
            rc = p.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve with a bad config ({name}) is still running after 10 s")
        out = p.log_path.read_text(errors="replace")
    assert rc == 2, f"{cmd} {name}: exit {rc}, want 2; output: {out}"
    assert key in out, f"{cmd} {name}: message does not name {key!r}: {out}"
    m = re.search(r"bad\.yml:(\d+)", out)
    assert m, f"{cmd} {name}: message has no file:line: {out}"
    if at is not None:
        assert int(m.group(1)) == line_of(text, at), \
            f"{cmd} {name}: points at line {m.group(1)}, the problem is on line {line_of(text, at)}"
    else:
        assert 3 <= int(m.group(1)) <= len(text.splitlines()), out


def test_unknown_key_warns_but_starts(tmp_path, backend, procs):
    v1 = backend("v1")
    port = free_port()
    text = GOOD.format(state=tmp_path / "var", port=port, target=v1.port)
    text = text.replace("    drain_timeout: 5s\n", "    drain_timeout: 5s\n    colour: blue\n")
    cfg = tmp_path / "warn.yml"
    cfg.write_text(text)
    r = run_cli("check", "-c", cfg, timeout=10)
    assert r.returncode == 0, f"check exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "colour" in r.stdout + r.stderr, "no warning about the unknown key"
    assert "web" in r.stdout, f"check does not list the service: {r.stdout}"
    p = procs.start([BIN, "serve", "-c", cfg], name="serve-warn")
    assert wait_port(port, 10, p), p.log_path.read_text()
    wait_body(port, "v1\n")
    log = p.log_path.read_text(errors="replace")
    assert re.search(r"level=warn\S*.*colour|colour.*level=warn", log), \
        f"serve did not warn about the unknown key: {log}"


# --- CLI misuse ----------------------------------------------------------------------------------

def test_cli_misuse_exits_2_and_changes_nothing(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1]).start(expect="v1\n")
    before = d.history()
    for args, why in [(("frobnicate",), "unknown command"),
                      (("deploy", "web"), "deploy without VERSION"),
                      (("deploy",), "deploy without SERVICE"),
                      (("deploy", "nosuch", "v2", "--target", v2.addr), "unknown service"),
                      (("deploy", "web", "v2", "--target"), "--target without a value"),
                      (("deploy", "web", "v2", "--target", "not-an-address"), "bad target"),
                      (("deploy", "web", "bad name!", "--target", v2.addr), "bad version name"),
                      (("deploy", "web", "v2", "--target", v2.addr, "--bogus"), "unknown option"),
                      (("status", "--jsn"), "unknown option"),
                      (("rollback",), "rollback without SERVICE")]:
        r = d.cli(*args, timeout=15)
        assert r.returncode == 2, f"{why}: {args} exit {r.returncode}: {r.stdout}{r.stderr}"
        assert r.stderr.strip(), f"{why}: no message on stderr"
    assert v2.requests() == []
    assert body_of(d.port) == "v1\n"
    assert d.history() == before
    assert live_name(d.status()) != "v2"


def test_unknown_change_and_logs_without_run_name_the_problem(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    before = d.history()
    for args in (("report", "9999"), ("report", "9999", "--format", "md")):
        r = d.cli(*args, timeout=15)
        assert r.returncode == 2, f"{args}: exit {r.returncode}: {r.stdout}{r.stderr}"
        assert r.stderr.strip() == "cutover: no change 9999", r.stderr
        assert r.stdout == ""
    for path in ("/api/v1/changes/9999", "/api/v1/changes/9999/report",
                 "/api/v1/changes/9999/report?format=md"):
        st, body = d.api("GET", path)
        assert st == 404 and body == {"error": "no change 9999"}, (path, st, body)
    # `web` has targets, no `run:`: cutover runs no instance of it, so it keeps no logs.
    r = d.cli("logs", "web", timeout=15)
    assert r.returncode == 2, f"logs: exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "'web' has no managed instances (no `run:`" in r.stderr, r.stderr
    assert d.history() == before
    assert body_of(d.port) == "v1\n"


def test_cli_without_daemon_fails_clearly(tmp_path):
    cfg = write_config(tmp_path / "c.yml", free_port(), ["127.0.0.1:1"], tmp_path / "var")
    r = run_cli("status", "-c", cfg, timeout=10)
    assert r.returncode == 1, f"status with no daemon: exit {r.returncode}"
    assert r.stderr.strip()


# --- admin API misuse ----------------------------------------------------------------------------

API_BAD = [
    # (method, path, raw body, the field the error must name)
    ("POST", "/api/v1/services/web/deploy", "{not json", None),
    ("POST", "/api/v1/services/web/deploy", "[1, 2]", None),
    ("POST", "/api/v1/services/web/deploy", '{"version": 2, "targets": ["127.0.0.1:1"]}', "version"),
    ("POST", "/api/v1/services/web/deploy", '{"targets": ["127.0.0.1:1"]}', "version"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "bad name!", "targets": ["127.0.0.1:1"]}',
     "version"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "v2", "targets": "127.0.0.1:1"}', "targets"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "v2"}', "targets"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "v2", "targets": []}', "targets"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "v2", "targets": [5]}', "targets"),
    ("POST", "/api/v1/services/web/deploy", '{"version": "v2", "targets": ["nohostport"]}',
     "targets"),
    ("POST", "/api/v1/services/web/deploy",
     '{"version": "v2", "targets": ["127.0.0.1:1"], "wait": "yes"}', "wait"),
    ("POST", "/api/v1/services/web/deploy",
     '{"version": "v2", "targets": ["127.0.0.1:1"], "reason": 7}', "reason"),
    ("POST", "/api/v1/services/web/rollback", '{"actor": 5}', "actor"),
]


def test_admin_api_rejects_bad_requests_with_400_and_changes_nothing(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    st, svc_before = d.api("GET", "/api/v1/services/web")
    assert st == 200, svc_before
    st, ch_before = d.api("GET", "/api/v1/changes?service=web")
    assert st == 200, ch_before
    for method, path, raw, field in API_BAD:
        st, doc = d.api(method, path, raw=raw)
        assert st == 400, f"{path} {raw}: status {st}: {doc}"
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
            f"{raw}: no JSON error: {doc!r}"
        if field:
            assert field in doc["error"], f"{raw}: error does not name {field!r}: {doc['error']}"
        assert d.alive(), f"daemon died on {raw}"
    st, doc = d.api("POST", "/api/v1/services/nosuch/deploy",
                    body={"version": "v2", "targets": [v1.addr]})
    assert st == 404, (st, doc)
    st, doc = d.api("DELETE", "/api/v1/services/web")
    assert st in (404, 405), (st, doc)
    st, doc = d.api("GET", "/api/v1/nowhere")
    assert st == 404, (st, doc)
    big = '{"version": "v2", "targets": ["127.0.0.1:1"], "reason": "%s"}' % ("x" * (1 << 20))
    st, doc = d.api("POST", "/api/v1/services/web/deploy", raw=big)
    assert st == 413, (st, str(doc)[:200])
    assert body_of(d.port) == "v1\n"
    st, svc_after = d.api("GET", "/api/v1/services/web")
    assert st == 200 and shape(svc_after) == shape(svc_before), (svc_before, svc_after)
    assert d.api("GET", "/api/v1/changes?service=web") == (200, ch_before)


def shape(svc):
    """What a bad request must not change: live and previous versions, their targets, change."""
    def ver(v):
        return v and (v.get("name"), sorted(t["address"] for t in v.get("targets", [])))
    return ver(svc.get("live")), ver(svc.get("previous")), svc.get("change")


def test_admin_socket_is_private(backend, daemon):
    v1 = backend("v1")
    d = daemon([v1]).start(expect="v1\n")
    assert (d.sock.stat().st_mode & 0o777) == 0o600, oct(d.sock.stat().st_mode)
