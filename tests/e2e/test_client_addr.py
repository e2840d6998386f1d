"""The real client address behind load balancers, end to end (issue 13 b): `trusted_proxies`
makes cutover read X-Forwarded-For from a trusted peer (the right-most entry that is not a
trusted proxy), `proxy_protocol: true` makes a listener read a PROXY v1/v2 header first and
close connections whose header is missing, malformed or sent by an untrusted peer. The address
found is what pilot `source:` cohorts route by and what the upstream reads in X-Forwarded-For.

Loopback has every 127.0.0.0/8 address: the tests connect from 127.0.0.2 (the trusted
balancer) and 127.0.0.3 (anybody else). Real daemon, backend.py, wrk; processes stopped by pid.
"""
import re
import socket
import subprocess

import pytest

from conftest import parse_wrk, wait_body
from progressive_util import change_of, progress_of, user_requests, wait_for
import proxyproto_util as pp

LB, OTHER = "127.0.0.2", "127.0.0.3"
COHORT = "198.51.100.7"  # in the pilot's source range
OUTSIDER = "203.0.113.9"  # not in it
PLAN = ("plans:\n  ps:\n    steps: [{pilot: {source: 198.51.100.0/24, duration: 60s}}, "
        "{weight: 100}]\n")


def exchange(port, data, src, timeout=5):
    """Connects from src, sends data, reads until the peer closes -> the bytes received (b""
    when the daemon closed the connection without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(src, 0)) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


def get(port, src, headers=(), prefix=b""):
    head = "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + \
        "Connection: close\r\n\r\n"
    return exchange(port, prefix + head.encode(), src)


def version_of(resp):
    assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
    return resp.split(b"\r\n\r\n", 1)[1].decode().strip()


def xff_seen(b):
    """The X-Forwarded-For of the last request backend b logged."""
    reqs = user_requests(b)
    assert reqs, "the backend saw no request"
    return [v for k, v in reqs[-1]["headers"] if k.lower() == "x-forwarded-for"]


def start_pilot(d, v2):
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "ps", timeout=30)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}"
    assert change_of(d) is not None
    wait_for(lambda: progress_of(d).get("step") == 1, 15, "the pilot step")


def metric(d, name):
    st, text = d.api("GET", "/metrics")
    assert st == 200, text
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def test_pilot_source_cohort_follows_xff_from_a_trusted_proxy_only(backend, daemon):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=f"    trusted_proxies: [{LB}]\n", top_extra=PLAN)
    d.start(expect="v1\n")
    start_pilot(d, v2)

    # From the trusted balancer, the client is the right-most untrusted X-Forwarded-For entry.
    assert version_of(get(d.port, LB, [("X-Forwarded-For", COHORT)])) == "v2"
    assert xff_seen(v2) == [f"{COHORT}, {LB}"]
    assert version_of(get(d.port, LB, [("X-Forwarded-For", OUTSIDER)])) == "v1"
    # What the client put left of the real client is not forwarded: no byte it chose goes on.
    assert version_of(get(d.port, LB, [("X-Forwarded-For", f"10.9.9.9, {COHORT}")])) == "v2"
    assert xff_seen(v2) == [f"{COHORT}, {LB}"]
    # Several fields read as one list; a trusted hop in it is skipped.
    resp = get(d.port, LB, [("X-Forwarded-For", OUTSIDER), ("X-Forwarded-For", f"{COHORT}, {LB}")])
    assert version_of(resp) == "v2"
    assert xff_seen(v2) == [f"{COHORT}, {LB}, {LB}"]

    # Anybody else is its own client, whatever it says: ignored, and not forwarded.
    v1.clear()
    assert version_of(get(d.port, OTHER, [("X-Forwarded-For", COHORT)])) == "v1"
    assert xff_seen(v1) == [OTHER]


def test_untrusted_listener_forwards_every_xff_field(backend, daemon):
    """Without trusted_proxies the chain goes on as it came (every field), then the peer."""
    v1 = backend("v1")
    d = daemon([v1])
    d.start(expect="v1\n")
    v1.clear()
    resp = get(d.port, OTHER, [("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", "192.0.2.2")])
    assert version_of(resp) == "v1"
    assert xff_seen(v1) == [f"192.0.2.1, 192.0.2.2, {OTHER}"]


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_header_names_the_client(backend, daemon, version):
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=f"    trusted_proxies: [{LB}]\n    proxy_protocol: true\n",
               top_extra=PLAN)
    d.start()  # the health of a proxy_protocol listener is seen through the header only

    def hdr(src):
        return pp.v1(src, "127.0.0.1", 40000, d.port) if version == 1 else \
            pp.v2(src, "127.0.0.1", 40000, d.port, tlvs=[(0x04, b"x" * 10)], crc=True)

    wait_for(lambda: get(d.port, LB, prefix=hdr(OUTSIDER)).startswith(b"HTTP/1.1 200"), 10,
             "an answer through the PROXY header")
    start_pilot(d, v2)
    assert version_of(get(d.port, LB, prefix=hdr(COHORT))) == "v2"
    assert xff_seen(v2) == [COHORT]
    assert version_of(get(d.port, LB, prefix=hdr(OUTSIDER))) == "v1"
    assert xff_seen(v1) == [OUTSIDER]
    # A LOCAL header (a balancer's health check) keeps the connection's own address.
    local = pp.v1_unknown() if version == 1 else pp.v2_local()
    assert version_of(get(d.port, LB, prefix=local)) == "v1"
    assert xff_seen(v1) == [LB]
    # The header and the request may arrive in pieces.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5, source_address=(LB, 0)) as s:
        h = hdr(COHORT)
        s.sendall(h[:7])
        s.sendall(h[7:] + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert version_of(got) == "v2"

    before = metric(d, "cutover_proxy_header_refused_total")
    # Refused unheard: a valid header from an untrusted peer, a malformed header, no header.
    assert get(d.port, OTHER, prefix=hdr(COHORT)) == b""
    bad = b"PROXY TCP4 198.51.100.07 127.0.0.1 1 2\r\n" if version == 1 else \
        pp.V2_SIG + bytes([0x31, 0x11]) + b"\0\x0c" + b"\0" * 12
    assert get(d.port, LB, prefix=bad) == b""
    assert get(d.port, LB) == b""
    assert metric(d, "cutover_proxy_header_refused_total") == before + 3
    assert d.alive()


@pytest.mark.xdist_group("load")
def test_wrk_through_trusted_xff_has_no_errors(backend, daemon, procs):
    v1 = backend("v1")
    d = daemon([v1], service_extra="    trusted_proxies: [127.0.0.1]\n")
    d.start(expect="v1\n")
    v1.clear()
    p = procs.start(["wrk", "-t1", "-c16", "-d3s", "--timeout", "5s", "-H",
                     f"X-Forwarded-For: 10.1.1.1, {COHORT}", f"http://127.0.0.1:{d.port}/"],
                    name="wrk")
    p.wait(40)
    res = parse_wrk(p.log_path.read_text())
    print(f"\nwrk through trusted X-Forwarded-For: {res['rps']:.0f} req/s, "
          f"{res['requests']} requests")
    assert res["requests"] > 0, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    seen = {v for r in user_requests(v1)[:200] for k, v in r["headers"]
            if k.lower() == "x-forwarded-for"}
    assert seen == {f"{COHORT}, 127.0.0.1"}, seen


def test_tcp_service_reads_the_proxy_header_per_connection(backend, daemon):
    """protocol: tcp relays bytes; on a proxy_protocol listener the PROXY header is read first
    and its source is the client the pilot cohort sees; the upstream gets the bytes after it."""
    v1, v2 = backend("v1"), backend("v2")
    d = daemon([v1], service_extra=f"    protocol: tcp\n    trusted_proxies: [{LB}]\n"
                                   f"    proxy_protocol: true\n", top_extra=PLAN)
    d.start()
    wait_for(lambda: get(d.port, LB, prefix=pp.v2(OUTSIDER, "127.0.0.1", 1, 2))
             .startswith(b"HTTP/1.1 200"), 10, "an answer through the TCP relay")
    start_pilot(d, v2)
    for version in (1, 2):
        mk = pp.v1 if version == 1 else pp.v2
        assert version_of(get(d.port, LB, prefix=mk(COHORT, "127.0.0.1", 5, 6))) == "v2"
        assert version_of(get(d.port, LB, prefix=mk(OUTSIDER, "127.0.0.1", 5, 6))) == "v1"
    # The bytes after the header reach the upstream as sent: a TCP relay adds no header.
    assert xff_seen(v2) == [] and xff_seen(v1) == []
    before = metric(d, "cutover_proxy_header_refused_total")
    assert get(d.port, OTHER, prefix=pp.v1(COHORT, "127.0.0.1", 5, 6)) == b""
    assert get(d.port, LB, prefix=b"PROXY TCP4 1.2.3.4\r\n") == b""
    assert get(d.port, LB) == b""
    assert metric(d, "cutover_proxy_header_refused_total") == before + 3


@pytest.mark.xdist_group("load")
def test_wrk_through_a_tcp_service_has_no_errors(backend, daemon, procs):
    v1 = backend("v1")
    d = daemon([v1], service_extra="    protocol: tcp\n")
    d.start(expect="v1\n")
    p = procs.start(["wrk", "-t1", "-c16", "-d3s", "--timeout", "5s",
                     f"http://127.0.0.1:{d.port}/"], name="wrk")
    p.wait(40)
    res = parse_wrk(p.log_path.read_text())
    print(f"\nwrk through the TCP relay: {res['rps']:.0f} req/s, {res['requests']} requests")
    assert res["requests"] > 0, res["text"]
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    # A client that half-closes after its request still gets the whole answer.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"v1\n"), got[:300]
