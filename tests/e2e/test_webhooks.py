"""notify.webhooks, end to end: the real daemon POSTs every event of every change to a receiver
of this test (an HTTP server on loopback), in order, retrying a receiver that fails, filtered by
service, without ever holding up a deploy.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_webhooks.py
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, run_cli, wait_body


class Receiver:
    """Records each POST (path, headers, JSON body); answers 500 to the first `fail` ones."""

    def __init__(self, fail=0):
        self.got, self.fail, self.lock = [], fail, threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with rec.lock:
                    failing = rec.fail > 0
                    rec.fail -= 1 if failing else 0
                    if not failing:
                        rec.got.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def events(self):
        with self.lock:
            return [b for _, _, b in self.got]

    def wait(self, pred, secs=15):
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            if pred(self.events()):
                return self.events()
            time.sleep(0.05)
        raise AssertionError(f"not within {secs}s; received: {self.events()}")

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(fail=0):
        r = Receiver(fail)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def hooks(*entries):
    out = "notify:\n  webhooks:\n"
    for url, services in entries:
        out += f"    - url: {url}\n"
        if services:
            out += f"      services: [{', '.join(services)}]\n"
    return out


def events_of(d, cid):
    st, ch = d.api("GET", f"/api/v1/changes/{cid}")
    assert st == 200, ch
    return ch["events"]


def test_each_event_is_posted_in_order_and_a_failing_receiver_is_retried(backend, daemon,
                                                                        receiver):
    v1, v2 = backend("v1"), backend("v2")
    all_ = receiver(fail=2)            # its first two deliveries fail: retried
    only_api = receiver()              # wants another service's events only
    d = daemon([v1], top_extra=hooks((all_.url + "/hook", None), (only_api.url, ["api"])),
               service_extra="")
    other = free_port()
    d.cfg.write_text(d.cfg.read_text() + f"  api:\n    listen: 127.0.0.1:{other}\n"
                     f"    targets: [{v1.addr}]\n")
    d.start(expect="v1\n")

    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v2\n")
    r = d.cli("rollback", "web", "--reason", "webhook test")
    assert r.returncode == 0, r.stdout + r.stderr
    changes = [c["id"] for c in reversed(d.history())]
    want = [(cid, e["type"], e["message"]) for cid in changes for e in events_of(d, cid)]
    got = all_.wait(lambda g: len(g) >= len(want))
    assert [(e["change"], e["type"], e["message"]) for e in got] == want, (got, want)
    assert all(e["service"] == "web" for e in got)
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids)), ids
    path, headers, body = all_.got[0]
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    assert headers["X-Cutover-Event"] == body["type"]
    print(f"\nwebhook received {len(got)} events in order after 2 failed deliveries: "
          f"{[e['type'] for e in got]}")
    time.sleep(0.5)
    assert only_api.events() == [], "a webhook for another service got web's events"


@pytest.mark.xdist_group("load")
def test_a_receiver_that_is_down_never_holds_up_a_deploy(backend, daemon, wrk):
    v1, v2 = backend("v1"), backend("v2")
    down = f"http://127.0.0.1:{free_port()}/nobody"   # nothing listens there
    d = daemon([v1], top_extra=hooks((down, None)))
    d.start(expect="v1\n")
    load = wrk(d.port, 3)
    time.sleep(0.3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    r = d.cli("rollback", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    res = load.result()
    assert res["requests"] > 1000 and res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    st, _ = d.api("GET", "/api/v1/health")
    assert st == 200


BAD = {
    "ftp url": ("notify:\n  webhooks:\n    - url: ftp://x/y\n", "notify.webhooks[0].url"),
    "space in url": ("notify:\n  webhooks:\n    - url: \"http://a b/\"\n", "notify.webhooks[0].url"),
    "no url": ("notify:\n  webhooks:\n    - services: [web]\n", "notify.webhooks[0].url: missing"),
    "unknown service": ("notify:\n  webhooks:\n    - {url: \"http://x/\", services: [nope]}\n",
                        "'nope'"),
    "not a list": ("notify:\n  webhooks: http://x/\n", "notify.webhooks"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_webhook_config_is_refused_with_its_line(case, backend, daemon):
    text, want = BAD[case]
    v1 = backend("v1")
    d = daemon([v1], top_extra=text)
    r = run_cli("check", "-c", d.cfg)
    assert r.returncode == 2 and want in r.stderr and "cutover.yml:" in r.stderr, r.stderr
