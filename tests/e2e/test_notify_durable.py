"""Webhooks that arrive (issue 15 item 1), end to end with a real receiver of this test that
verifies Standard Webhooks signatures: deliveries survive a receiver that is down and a kill -9
of cutover, every retry keeps its webhook-id (so a receiver can drop a replay), the slack and
cloudevents bodies, filters by event type, notify.max_age, and bad webhook config.

    /usr/bin/python3 -m pytest -s -q tests/e2e/test_notify_durable.py
"""
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, run_cli, wait_body


class Receiver:
    """A webhook receiver as docs/operations.md describes one: it checks the signature and the
    timestamp, and answers 409 to a webhook-id it has already accepted (a replay). It records
    every attempt; the first `fail` ones are answered 500."""

    def __init__(self, key, port=None, fail=0):
        self.key, self.fail = key, fail
        self.attempts, self.seen, self.lock = [], set(), threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = rec.judge(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.srv = None
        self.H = H

    def start(self):
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), self.H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def valid(self, h, body):
        wid, ts = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
        want = base64.b64encode(hmac.new(self.key, f"{wid}.{ts}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
        sigs = [s[3:] for s in h.get("webhook-signature", "").split() if s.startswith("v1,")]
        fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
        return bool(wid) and fresh and any(hmac.compare_digest(s, want) for s in sigs)

    def judge(self, h, body):
        with self.lock:
            ok = self.valid(h, body)
            wid = h.get("webhook-id")
            if not ok:
                status = 401
            elif self.fail > 0:
                self.fail -= 1
                status = 500
            elif wid in self.seen:
                status = 409
            else:
                self.seen.add(wid)
                status = 200
            self.attempts.append({"wid": wid, "valid": ok, "status": status, "headers": h,
                                  "raw": body, "body": json.loads(body)})
            return status

    def accepted(self):
        with self.lock:
            return [a for a in self.attempts if a["status"] == 200]

    def wait(self, pred, secs=60):
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            got = self.accepted()
            if pred(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"not within {secs}s; accepted: {[a['body'] for a in self.accepted()]}")

    def close(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()


@pytest.fixture
def receivers():
    made = []
    yield made
    for r in made:
        r.close()


def secret(tmp, name, text, mode=0o600):
    p = tmp / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def stored_event_ids(d):
    """Every stored event's id, read from the store itself (read-only)."""
    db = sqlite3.connect(f"file:{d.state_dir / 'cutover.db'}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT id FROM events ORDER BY id")]
    finally:
        db.close()


def change(d, cid):
    st, ch = d.api("GET", f"/api/v1/changes/{cid}")
    assert st == 200, ch
    return ch


@pytest.mark.xdist_group("load")
def test_a_receiver_down_across_a_kill9_gets_every_event_once_signed(backend, daemon, wrk,
                                                                     receivers, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    raw_key = os.urandom(24)
    key_file = secret(tmp_path, "hook.key", "whsec_" + base64.b64encode(raw_key).decode() + "\n")
    rcv = Receiver(raw_key, fail=2)  # down for now; once up, its first two answers are 500
    receivers.append(rcv)
    d = daemon([v1], top_extra=(f"notify:\n  webhooks:\n"
                                f"    - {{url: \"{rcv.url}\", secret_file: \"{key_file}\"}}\n"))
    d.start(expect="v1\n")

    load = wrk(d.port, 3)
    time.sleep(0.3)
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    r = d.cli("rollback", "web", "--reason", "durable webhook test")
    assert r.returncode == 0, r.stdout + r.stderr
    res = load.result()
    assert res["requests"] > 1000 and res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]

    first = d.history()[-1]["id"]  # the oldest: its deliveries are tried first
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dl = change(d, first)["deliveries"]
        if dl["last_error"]:
            break
        time.sleep(0.2)
    assert dl["pending"] > 0 and dl["delivered"] == 0 and dl["last_error"], dl

    d.kill9()
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_body(d.port, "v2\n")
    ids = stored_event_ids(d)
    assert len(ids) >= 6, ids

    rcv.start()
    got = rcv.wait(lambda g: {a["body"]["id"] for a in g} >= set(ids))
    events = {}
    for a in got:
        events.setdefault(a["body"]["id"], set()).add(a["wid"])
    assert set(ids) <= set(events) <= set(stored_event_ids(d)), (sorted(events), ids)
    assert all(len(w) == 1 for w in events.values()), events
    wids = [next(iter(w)) for w in events.values()]
    assert len(set(wids)) == len(wids), "a webhook-id shared by two events"
    assert all(a["valid"] for a in rcv.attempts), "a delivery with a bad signature"
    # The two answered 500 were tried again under the same webhook-id.
    failed = [a for a in rcv.attempts if a["status"] == 500]
    assert len(failed) == 2 and all(a["wid"] in rcv.seen for a in failed), failed
    # The json body: the Event object with the change's fields.
    b = got[0]["body"]
    assert b["event_id"] == b["id"] and b["service"] == "web" and b["kind"] == "deploy", b
    assert b["to"] == "v2" and "actor" in b and "from" in b and "reason" in b, b

    # A replay (the same delivery POSTed again) is told apart by its webhook-id.
    a = got[0]
    c = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        "-H", f"webhook-id: {a['wid']}",
                        "-H", f"webhook-timestamp: {a['headers']['webhook-timestamp']}",
                        "-H", f"webhook-signature: {a['headers']['webhook-signature']}",
                        "--data-binary", "@-", rcv.url], input=a["raw"], capture_output=True,
                       timeout=10)
    assert c.stdout == b"409", c

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dl = change(d, first)["deliveries"]
        if dl["pending"] == 0:
            break
        time.sleep(0.2)
    n_first = len(change(d, first)["events"])
    assert dl == {"pending": 0, "delivered": n_first, "failed": 0,
                  "last_error": dl["last_error"]}, dl
    r = d.cli("report", str(first))
    assert r.returncode == 0 and f"webhook deliveries | {n_first} delivered, 0 pending" in r.stdout, \
        r.stdout + r.stderr
    print(f"\n{len(ids)} events, {len(rcv.attempts)} attempts, {len(got)} accepted, "
          f"all signed and delivered once per webhook-id after a kill -9")


def test_pending_deliveries_survive_a_reload(backend, daemon, receivers, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    key_file = secret(tmp_path, "k", "reload-secret\n")
    rcv = Receiver(b"reload-secret")
    receivers.append(rcv)
    d = daemon([v1], top_extra=(f"notify:\n  webhooks:\n"
                                f"    - {{url: \"{rcv.url}\", secret_file: \"{key_file}\"}}\n"))
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    cid = d.history()[0]["id"]
    r = d.cli("reload", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"handed over to pid (\d+)", r.stdout)
    assert m, r.stdout
    successor = int(m.group(1))
    try:
        wait_body(d.port, "v2\n")
        assert change(d, cid)["deliveries"]["pending"] > 0
        rcv.start()
        ids = stored_event_ids(d)
        got = rcv.wait(lambda g: {a["body"]["id"] for a in g} >= set(ids), 45)
        assert all(a["valid"] for a in rcv.attempts)
        n = len(change(d, cid)["events"])
        deadline = time.monotonic() + 10
        while change(d, cid)["deliveries"]["delivered"] < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert change(d, cid)["deliveries"]["delivered"] == n, change(d, cid)
        print(f"\n{len(got)} deliveries made by the successor of a reload")
    finally:
        os.kill(successor, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists(f"/proc/{successor}"):
            time.sleep(0.05)


def test_slack_and_cloudevents_bodies_and_the_event_filter(backend, daemon, receivers, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    key = b"plain-secret-" + os.urandom(8).hex().encode()
    key_file = secret(tmp_path, "k", key.decode() + "\n")
    slack = Receiver(key).start()
    ce = Receiver(key).start()
    receivers += [slack, ce]
    d = daemon([v1], top_extra=(
        f"notify:\n  webhooks:\n"
        f"    - {{url: \"{slack.url}\", format: slack, events: [switched],"
        f" secret_file: \"{key_file}\"}}\n"
        f"    - {{url: \"{ce.url}\", format: cloudevents, secret_file: \"{key_file}\"}}\n"))
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--reason", "a <b> & c")
    assert r.returncode == 0, r.stdout + r.stderr
    r = d.cli("rollback", "web")
    assert r.returncode == 0, r.stdout + r.stderr

    got = slack.wait(lambda g: len(g) >= 2, 20)
    time.sleep(1)
    got = slack.accepted()
    assert len(got) == 2, [a["body"] for a in got]  # the two switches, nothing else
    for a in got:
        b = a["body"]
        assert a["headers"]["X-Cutover-Event"] == "switched"
        assert isinstance(b["text"], str) and "web" in b["text"] and "switched" in b["text"], b
        assert b["blocks"][0]["type"] == "section", b
        assert b["blocks"][0]["text"] == {"type": "mrkdwn", "text": b["text"]}, b
        assert b["blocks"][1]["type"] == "context", b
    assert "a &lt;b&gt; &amp; c" in got[0]["body"]["blocks"][1]["elements"][0]["text"], got[0]

    n = sum(len(change(d, c["id"])["events"]) for c in d.history())
    got = ce.wait(lambda g: len(g) >= n, 20)
    types = [a["body"]["type"] for a in got]
    assert "dev.cdevents.service.deployed.0.1.1" in types, types
    assert "dev.cdevents.service.rolledback.0.1.1" in types, types
    assert "dev.cutover.created" in types, types
    for a in got:
        b = a["body"]
        assert a["headers"]["Content-Type"] == "application/cloudevents+json"
        assert b["specversion"] == "1.0" and b["source"] == "/cutover/services/web", b
        assert b["id"] == str(b["data"]["event_id"]) and b["time"] == b["data"]["ts"], b
        assert b["datacontenttype"] == "application/json" and b["subject"].startswith("changes/")
    print(f"\nslack: {[a['body']['text'] for a in slack.accepted()]}\ncloudevents: {types}")


def test_a_delivery_older_than_max_age_is_given_up(backend, daemon, tmp_path):
    v1, v2 = backend("v1"), backend("v2")
    down = f"http://127.0.0.1:{free_port()}/nobody"
    d = daemon([v1], top_extra=f"notify:\n  max_age: 2s\n  webhooks:\n    - url: {down}\n")
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    cid = d.history()[0]["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        dl = change(d, cid)["deliveries"]
        if dl["pending"] == 0:
            break
        time.sleep(0.3)
    n = len(change(d, cid)["events"])
    assert dl["pending"] == 0 and dl["failed"] == n and dl["delivered"] == 0, dl
    assert "given up after" in dl["last_error"] and "notify.max_age" in dl["last_error"], dl
    assert "webhook delivery given up" in d.log()


BAD = {
    "unknown format": ("    - {url: \"http://x/\", format: xml}\n", ":6:",
                       "notify.webhooks[0].format: expected json, slack or cloudevents"),
    "unknown event": ("    - url: \"http://x/\"\n      events: [switched, deployed]\n", ":7:",
                      "notify.webhooks[0].events: expected event types"),
    "loose secret": ("    - {url: \"http://x/\", secret_file: KEY}\n", ":6:",
                     "expected mode 0600"),
    "bad whsec": ("    - {url: \"http://x/\", secret_file: BADKEY}\n", ":6:",
                  "expected whsec_ and base64"),
    "missing secret": ("    - {url: \"http://x/\", secret_file: NOKEY}\n", ":6:",
                       "notify.webhooks[0].secret_file: cannot read"),
    "bad max_age": ("    - url: \"http://x/\"\n  max_age: soon\n", ":7:", "notify.max_age"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_webhook_config_is_refused_with_its_line(case, tmp_path):
    text, line, want = BAD[case]
    loose = secret(tmp_path, "loose.key", "k\n", 0o644)
    bad = secret(tmp_path, "bad.key", "whsec_***\n")
    text = (text.replace("BADKEY", str(bad)).replace("NOKEY", str(tmp_path / "none"))
            .replace("KEY", str(loose)))
    cfg = tmp_path / "cutover.yml"
    cfg.write_text(f"state_dir: {tmp_path}/var\nservices:\n  web: {{listen: 127.0.0.1:{free_port()}, "
                   f"targets: [127.0.0.1:1]}}\nnotify:\n  webhooks:\n" + text)
    # notify sits after services here: the first webhook is on line 6.
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2 and want in r.stderr and f"cutover.yml{line}" in r.stderr, r.stderr
