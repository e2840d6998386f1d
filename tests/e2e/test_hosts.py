"""Several services on one listener (issue 17 item 2): each request goes to the service whose
`hosts` (exact, or `*.example.com`) and `path_prefix` take it, the most specific first; one that
none takes goes to the `default: true` service, or gets 404. Each service keeps its own
versions, plans and changes: a canary on one host name moves none of another's traffic. `check`
refuses routes that overlap; a hot upgrade keeps the shared socket.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_hosts.py
"""
import collections
import http.client
import json
import os
import signal
import ssl
import subprocess
import time

import pytest

from conftest import BIN, free_port, parse_wrk, run_cli, wait_port


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return sorted(int(x) for x in r.stdout.split() if int(x) != os.getpid())


@pytest.fixture(autouse=True)
def reap(procs, tmp_path):
    """A hot upgrade's successor is not this test's child: stop it by pid at teardown."""
    yield
    for p in pgrep(str(tmp_path)):
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    for p in pgrep(str(tmp_path)):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


HEALTH = ("{path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1, "
          "unhealthy_threshold: 2}")


def service(name, port, target, extra):
    return (f"  {name}:\n    listen: 127.0.0.1:{port}\n    health_check: {HEALTH}\n"
            f"    drain_timeout: 2s\n    deploy_timeout: 5s\n    targets: [{target}]\n{extra}")


def start(procs, tmp_path, text, port):
    cfg = tmp_path / "cutover.yml"
    cfg.write_text(f"state_dir: {tmp_path / 'var'}\n{text}")
    p = procs.start([BIN, "serve", "-c", cfg], name="cutover")
    assert wait_port(port, 10, p), p.log_path.read_text()
    return cfg


def get(port, host, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host} if host else {})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_answer(port, host, want, path="/", secs=10):
    deadline = time.monotonic() + secs
    got = None
    while time.monotonic() < deadline:
        try:
            got = get(port, host, path)
            if got == (200, want):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{host}{path}: {got}, want {want!r}")


@pytest.fixture
def three(procs, tmp_path, backend):
    """web (web.example.com), api (*.example.com under /api) and site (the default) on one
    port, each with its own backend."""
    port = free_port()
    b = {"web": backend("w1"), "api": backend("a1"), "site": backend("s1")}
    text = ("services:\n"
            + service("web", port, b["web"].addr, "    hosts: [web.example.com]\n")
            + service("api", port, b["api"].addr,
                      "    hosts: [\"*.example.com\"]\n    path_prefix: /api\n")
            + service("site", port, b["site"].addr, "    default: true\n")
            + "plans:\n  half:\n    steps: [{weight: 50}, {pause: {}}, {weight: 100}]\n")
    cfg = start(procs, tmp_path, text, port)
    for host, path, want in [("web.example.com", "/", "w1\n"), ("x.example.com", "/api", "a1\n"),
                             ("other.org", "/", "s1\n")]:
        wait_answer(port, host, want, path)
    return port, cfg, b


def test_requests_go_to_the_service_their_host_and_path_name(three):
    port, cfg, _ = three
    cases = [
        ("web.example.com", "/", "w1"),
        ("WEB.Example.COM:8080", "/x", "w1"),      # case and port do not matter
        ("web.example.com.", "/", "w1"),            # nor a trailing dot
        ("web.example.com", "/api/v1", "w1"),       # an exact host beats *.example.com
        ("shop.example.com", "/api", "a1"),
        ("a.b.example.com", "/api/orders?x=1", "a1"),
        ("shop.example.com", "/apix", "s1"),        # a prefix ends at a segment boundary
        ("example.com", "/api", "s1"),              # *.example.com needs a name below it
        ("other.org", "/api", "s1"),
        (None, "/", "s1"),                          # HTTP/1.0 without Host: the default
    ]
    for host, path, want in cases:
        if host is None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c._http_vsn, c._http_vsn_str = 10, "HTTP/1.0"
            c.putrequest("GET", path, skip_host=True)
            c.endheaders()
            r = c.getresponse()
            got = (r.status, r.read().decode())
            c.close()
        else:
            got = get(port, host, path)
        assert got == (200, want + "\n"), f"{host}{path}: {got}, want {want}"
    # One keep-alive connection, two hosts: each request finds its own service.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen = []
    for host in ["web.example.com", "shop.example.com", "web.example.com"]:
        c.request("GET", "/api/x", headers={"Host": host})
        r = c.getresponse()
        seen.append(r.read().decode().strip())
    c.close()
    assert seen == ["w1", "a1", "w1"], seen
    out = run_cli("check", "-c", cfg).stdout
    assert "web.example.com" in out and "*.example.com/api" in out and "default" in out, out


def test_no_route_and_no_default_is_404(procs, tmp_path, backend):
    port = free_port()
    w, a = backend("w1"), backend("a1")
    text = ("services:\n"
            + service("web", port, w.addr, "    hosts: [web.example.com]\n")
            + service("api", port, a.addr, "    hosts: [api.example.com]\n"))
    start(procs, tmp_path, text, port)
    wait_answer(port, "web.example.com", "w1\n")
    wait_answer(port, "api.example.com", "a1\n")
    st, body = get(port, "elsewhere.org")
    assert st == 404 and "no service" in body, (st, body)
    assert w.requests()[-1]["line"].startswith("GET /") and len(a.requests()) >= 1


@pytest.mark.xdist_group("load")
def test_canary_on_one_host_while_the_other_stays_still(three, procs, backend):
    port, cfg, b = three
    w2 = backend("w2")
    loads = [procs.start(["wrk", "-t1", "-c8", "-d8s", "--timeout", "5s", "-H", f"Host: {h}",
                          f"http://127.0.0.1:{port}{p}"], name=f"wrk-{h}")
             for h, p in [("web.example.com", "/"), ("shop.example.com", "/api")]]
    time.sleep(1)
    r = run_cli("deploy", "web", "w2", "--target", w2.addr, "--plan", "half", "-c", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(run_cli("status", "web", "--json", "-c", cfg).stdout)
    assert st["change"]["state"] == "running", st["change"]
    counts = collections.Counter()
    for i in range(200):
        counts[("web",) + (get(port, "web.example.com")[1].strip(),)] += 1
        counts[("api",) + (get(port, "shop.example.com", "/api")[1].strip(),)] += 1
    print(f"\nwhile web's canary runs at 50%: {dict(counts)}")
    assert counts[("api", "a1")] == 200, "api must stay on a1 whatever web does"
    assert 60 <= counts[("web", "w2")] <= 140 and counts[("web", "w1")] >= 60, counts
    api = json.loads(run_cli("status", "api", "--json", "-c", cfg).stdout)
    assert api["change"] is None and api["live"]["name"] == "v1", api
    assert api["routes"] == {"hosts": ["*.example.com"], "path_prefix": "/api", "default": False}
    for p in loads:
        p.wait(20)
    for p in loads:
        res = parse_wrk(p.log_path.read_text())
        print(f"{p.args[7]}: {res['requests']} requests, socket errors {res['socket_errors']}, "
              f"non-2xx {res['non2xx']}")
        assert res["requests"] > 100 and res["socket_errors"] == 0 and res["non2xx"] == 0, \
            res["text"]


def test_upgrade_and_reload_keep_the_shared_listener(three, backend):
    port, cfg, _ = three
    r = run_cli("upgrade", "-c", cfg, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_answer(port, "web.example.com", "w1\n")
    assert get(port, "shop.example.com", "/api") == (200, "a1\n")
    assert get(port, "other.org") == (200, "s1\n")
    # A reload that puts a new service first on the shared listen: the socket (named after the
    # old first one) is still taken over, and the new service's host is served.
    blog = backend("b1")
    text = cfg.read_text().replace("services:\n", "services:\n" + service(
        "blog", port, blog.addr, "    hosts: [blog.example.com]\n"), 1)
    cfg.write_text(text)
    r = run_cli("reload", "-c", cfg, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_answer(port, "blog.example.com", "b1\n")
    assert get(port, "web.example.com") == (200, "w1\n")
    assert get(port, "other.org") == (200, "s1\n")


@pytest.mark.parametrize("extra_web,extra_api,want", [
    ("    hosts: [web.example.com]\n", "    hosts: [WEB.example.com]\n", "routes overlap"),
    ("    hosts: [\"*.example.com\"]\n    path_prefix: /api/\n",
     "    hosts: [\"*.example.com\"]\n    path_prefix: /api\n", "routes overlap"),
    ("    default: true\n", "    default: true\n", "one default service"),
    ("    hosts: [web.example.com]\n", "", "no other listener uses"),
    ("    hosts: [\"web.example.com:80\"]\n", "    default: true\n", "a host name like"),
    ("    path_prefix: api\n", "    default: true\n", "a path like /api"),
])
def test_check_refuses_overlapping_or_bad_routes(tmp_path, extra_web, extra_api, want):
    port = free_port()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"state_dir: {tmp_path / 'var'}\nservices:\n"
                   + service("web", port, "127.0.0.1:1", extra_web)
                   + service("api", port, "127.0.0.1:2", extra_api))
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2 and want in r.stderr, r.stdout + r.stderr
    assert "c.yml:" in r.stderr, r.stderr


def test_a_shared_tls_listener_serves_each_host_its_own_certificate(procs, tmp_path, backend):
    """Several services on one TLS port: the listener holds every sharer's certificates and SNI
    picks each host's own; a shared listener with TLS on one service only is refused."""
    from test_tls import Certs, serial_of
    certs = Certs(tmp_path)
    wc, wk = certs.make("web", ["web.example.com"], 4001)
    ac, ak = certs.make("api", ["api.example.com"], 4002)
    port = free_port()
    b1, b2 = backend("w1"), backend("a1")
    text = ("services:\n"
            + service("web", port, b1.addr, f"    hosts: [web.example.com]\n"
                      f"    tls: {{cert: {wc}, key: {wk}}}\n")
            + service("api", port, b2.addr, f"    hosts: [api.example.com]\n"
                      f"    tls: {{cert: {ac}, key: {ak}}}\n"))
    start(procs, tmp_path, text, port)
    assert serial_of(port, "web.example.com") == "0FA1"
    assert serial_of(port, "api.example.com") == "0FA2"
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False  # no SNI for an IP address: the Host header routes
    for host, want in [("web.example.com", "w1\n"), ("api.example.com", "a1\n")]:
        deadline = time.monotonic() + 10
        while True:
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
            try:
                c.request("GET", "/", headers={"Host": host})
                r = c.getresponse()
                got = (r.status, r.read().decode())
            finally:
                c.close()
            if got == (200, want) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == (200, want), (host, got)
    bad = tmp_path / "bad.yml"
    bad.write_text(f"state_dir: {tmp_path / 'var2'}\nservices:\n"
                   + service("web", port + 1, b1.addr, f"    hosts: [web.example.com]\n"
                             f"    tls: {{cert: {wc}, key: {wk}}}\n")
                   + service("api", port + 1, b2.addr, "    hosts: [api.example.com]\n"))
    r = subprocess.run([str(BIN), "check", "-c", str(bad)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "tls on every service of a shared listener" in r.stderr, r.stderr
