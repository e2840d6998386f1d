"""Shadow traffic (issue 18), end to end: a `mirror:` step copies live requests to the new
version after the live answer went out, compares the two answers per route, samples the
mismatches into the change record, and rolls back through max_mismatch_rate, while users get
only the live version's answers. Real daemon, real backends (backend.py), wrk on loopback.
"""
import json
import threading

import pytest

from conftest import live_name, run_cli
from progressive_util import Client, report_json, wait_for


MR = ["--mirror-routes"]  # backend.py's /api/x, /b and /api/j


def plans(**named):
    out = "plans:\n"
    for name, body in named.items():
        out += f"  {name}:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())
    return out


def deploy_ok(d, version, target, plan):
    r = d.cli("deploy", "web", version, "--target", target, "--plan", plan)
    assert r.returncode == 0, f"deploy exit {r.returncode}: {r.stdout}{r.stderr}\n{d.log()[-3000:]}"
    # The newest change of the history: status may already show none if it ended fast.
    return d.history()[0]


def wait_ended(d, secs):
    def ended():
        c = d.history()[0]
        return c if c["state"] != "running" else None
    return wait_for(ended, secs, "the change ended")


def mirror_record(d, change_id):
    rep = report_json(d, change_id)
    text = json.dumps(rep)
    steps = [s for s in _find_steps(rep) if s.get("kind") == "mirror"]
    assert steps and "mirror" in steps[0], f"no mirror record in the report: {text[:3000]}"
    return steps[0]["mirror"], rep


def _find_steps(doc):
    """The steps log wherever the report keeps it (detail.steps)."""
    if isinstance(doc, dict):
        if isinstance(doc.get("steps"), list) and doc["steps"] and \
                isinstance(doc["steps"][0], dict) and "kind" in doc["steps"][0]:
            return doc["steps"]
        for v in doc.values():
            r = _find_steps(v)
            if r:
                return r
    elif isinstance(doc, list):
        for v in doc:
            r = _find_steps(v)
            if r:
                return r
    return []


class Users(threading.Thread):
    """A user on one keep-alive connection asking /api/x and /b in turn; keeps every answer."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.c = Client(port)
        self.stop = threading.Event()
        self.answers = []

    def run(self):
        while not self.stop.is_set():
            for path in ("/api/x?id=7", "/b", "/api/x?id=8"):
                st, body, hdrs, _ = self.c.get(path, {"Authorization": "Bearer s3cret",
                                                     "Cookie": "sid=s3cret"})
                self.answers.append((path, st, body, hdrs.get("x-version")))

    def finish(self):
        self.stop.set()
        self.join(15)
        self.c.close()
        return self.answers


MIRROR_PLAN = """
steps:
  - mirror: {percent: 100, duration: 8s, compare: [status, body], headers: [content-type],
             ignore_json: [/meta], min_pairs: 20, max_mismatch_rate: 0.05}
  - weight: 100
"""


@pytest.mark.xdist_group("load")
def test_mismatches_are_counted_sampled_and_roll_back_while_users_get_live_answers(
        backend, daemon, wrk):
    v1 = backend("v1", extra=MR)
    v2 = backend("v2", extra=MR + ["--api-x-status", "500", "--b-body", "other\n"])
    d = daemon([v1], top_extra=plans(shadow=MIRROR_PLAN))
    d.start(expect="v1\n")
    users = Users(d.port)
    users.start()
    load = wrk(d.port, 20, conns=8, path="/b")
    ch = deploy_ok(d, "v2", v2.addr, "shadow")
    c = wait_ended(d, 20)
    res = load.stop()
    answers = users.finish()

    # No user ever had the new version: the change ends as failed (the house's word for a
    # rollback before users), and the live version stays.
    assert c["id"] == ch["id"] and c["state"] == "failed", c
    assert live_name(d.status()) == "v1"
    # Users got only live answers, and no error.
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    assert res["requests"] > 0
    assert answers, "the user thread got no answer"
    bad = [a for a in answers if a[1] != 200 or a[3] != "v1"]
    assert not bad, f"{len(bad)} answers not from the live version: {bad[:5]}"
    assert all(a[2] == "b\n" for a in answers if a[0] == "/b")

    m, rep = mirror_record(d, ch["id"])
    print(f"\nmirror record: pairs {m['pairs']}, mismatches {m['mismatches']}, "
          f"dropped {m['dropped']}, routes {[(r['route'], r['pairs'], r['mismatches']) for r in m['routes']]}")
    routes = {r["route"]: r for r in m["routes"]}
    assert routes["GET /b"]["mismatches"] > 0 and routes["GET /b"]["kinds"]["body"] > 0
    assert routes["GET /b"]["kinds"]["status"] == 0
    # /api/x?id=7 and ?id=8 are one route; its mismatches are of status.
    assert routes["GET /api/x"]["kinds"]["status"] > 0
    assert m["kinds"]["status"] > 0 and m["kinds"]["body"] > 0
    assert m["pairs"] >= 20 and m["mismatches"] / m["pairs"] > 0.05
    assert 0 < len(m["samples"]) <= 20
    kinds = {s["route"]: s for s in m["samples"]}
    assert "GET /b" in kinds and kinds["GET /b"]["live_status"] == 200
    assert "other" in kinds["GET /b"]["diff"]
    xs = [s for s in m["samples"] if s["route"] == "GET /api/x"]
    if xs:
        assert xs[0]["live_status"] == 200 and xs[0]["new_status"] == 500
        assert "s3cret" not in xs[0]["request"] and "***" in xs[0]["request"]
    assert "s3cret" not in json.dumps(rep)
    fail = json.dumps(rep)
    assert "max_mismatch_rate" in fail
    # The markdown report shows the mirror's figures too.
    r = d.cli("report", str(ch["id"]), "--format", "md")
    assert r.returncode == 0 and "Mirrored:" in r.stdout and "GET /b" in r.stdout, r.stdout


@pytest.mark.xdist_group("load")
def test_a_version_differing_only_in_ignored_json_fields_passes(backend, daemon, wrk):
    v1, v2 = backend("v1", extra=MR), backend("v2", extra=MR)
    d = daemon([v1], top_extra=plans(shadow=MIRROR_PLAN.replace("duration: 8s", "duration: 3s")))
    d.start(expect="v1\n")
    load = wrk(d.port, 20, conns=8, path="/api/j")
    ch = deploy_ok(d, "v2", v2.addr, "shadow")
    c = wait_ended(d, 20)
    res = load.stop()
    assert c["id"] == ch["id"] and c["state"] == "completed", c
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    m, _ = mirror_record(d, ch["id"])
    print(f"\nmirror record: pairs {m['pairs']}, mismatches {m['mismatches']}")
    assert m["pairs"] >= 20 and m["mismatches"] == 0 and m["samples"] == [], m
    assert [r["route"] for r in m["routes"]] == ["GET /api/j"]


def test_a_quiet_mirror_is_inconclusive(backend, daemon):
    v1, v2 = backend("v1", extra=MR), backend("v2", extra=MR)
    plan = MIRROR_PLAN.replace("duration: 8s", "duration: 1s") + "on_inconclusive: rollback\n"
    d = daemon([v1], top_extra=plans(shadow=plan))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "shadow")
    c = wait_ended(d, 15)
    assert c["id"] == ch["id"] and c["state"] == "failed", c
    rep = json.dumps(report_json(d, ch["id"]))
    assert "fewer than min_pairs" in rep, rep[:2000]


BAD = [
    # (what, service extra, plan step, expected text)
    ("tcp", "    protocol: tcp\n    plan: shadow\n",
     "{mirror: {percent: 50, duration: 5s}}", "needs protocol http"),
    ("percent 0", "", "{mirror: {percent: 0, duration: 5s}}", "percent"),
    ("percent 101", "", "{mirror: {percent: 101, duration: 5s}}", "percent"),
    ("pointer", "", "{mirror: {duration: 5s, ignore_json: [meta/time]}}", "JSON pointer"),
    ("escape", "", "{mirror: {duration: 5s, ignore_json: [/a~2b]}}", "JSON pointer"),
    ("no duration", "", "{mirror: {percent: 10}}", "duration"),
]


@pytest.mark.parametrize("what,svc,step,text", BAD, ids=[b[0] for b in BAD])
def test_bad_mirror_config_names_file_and_line(tmp_path, what, svc, step, text):
    cfg = tmp_path / "cutover.yml"
    cfg.write_text(f"state_dir: {tmp_path}/var\n"
                   f"plans:\n"
                   f"  shadow:\n"
                   f"    steps:\n"
                   f"      - {step}\n"
                   f"services:\n"
                   f"  web:\n"
                   f"    listen: 127.0.0.1:1\n"
                   f"    targets: [127.0.0.1:2]\n"
                   f"{svc}")
    r = run_cli("check", "-c", cfg)
    assert r.returncode != 0, r.stdout
    err = r.stderr + r.stdout
    line = 5 if what != "tcp" else 11  # the service's `plan:` line
    assert f"cutover.yml:{line}" in err and text in err, err


# ---- load: synthetic requests for a quiet canary -------------------------------------------

LOAD_PLAN = """
steps:
  - load: {rate: 50, duration: 4s, paths: [/api/x, /b], headers: {X-Probe: yes}}
  - weight: 100
analysis: {interval: 1s, min_requests: 40, max_error_rate: 0.05}
on_inconclusive: rollback
"""


def metric_total(text, name, **want):
    import re
    out = 0.0
    for m in re.finditer(r"^" + re.escape(name) + r"\{([^}]*)\}\s+(\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if all(labels.get(k) == x for k, x in want.items()):
            out += float(m.group(2))
    return out


def test_a_quiet_canary_reaches_a_pass_through_load(backend, daemon):
    v1, v2 = backend("v1", extra=MR), backend("v2", extra=MR)
    d = daemon([v1], top_extra=plans(quiet=LOAD_PLAN))
    d.start(expect="v1\n")
    v2.clear()
    ch = deploy_ok(d, "v2", v2.addr, "quiet")
    c = wait_ended(d, 20)
    # No user request at all: the synthetic ones let the gates pass the step.
    assert c["id"] == ch["id"] and c["state"] == "completed", c
    rep = report_json(d, ch["id"])
    steps = _find_steps(rep)
    load = next(s for s in steps if s["kind"] == "load")
    syn = load["synthetic"]
    print(f"\nload step: synthetic {syn}, canary (users) {load.get('canary')}, gate {load.get('gate')}")
    assert syn["requests"] >= 150 and syn["errors_5xx"] == 0 and syn["cutover_errors"] == 0, syn
    assert load["gate"]["result"] == "pass", load["gate"]
    # Counted apart: the users' figures of the step have none of them.
    assert load["canary"]["requests"] == 0, load["canary"]
    seen = [r for r in v2.requests() if "X-Probe" in dict(r["headers"])]
    assert len(seen) >= 150 and {r["line"].split()[1] for r in seen} == {"/api/x", "/b"}
    assert all(dict(r["headers"]).get("X-Cutover-Synthetic") == "1" for r in seen)
    st, text = d.api("GET", "/metrics")
    assert st == 200
    assert metric_total(text, "cutover_synthetic_requests_total", service="web", version="v2",
                        code="2xx", source="synthetic") == syn["requests"]
    assert metric_total(text, "cutover_http_requests_total", version="v2") < syn["requests"]


def test_a_quiet_canary_that_fails_synthetic_requests_is_stopped(backend, daemon):
    v1 = backend("v1", extra=MR)
    v2 = backend("v2", extra=MR + ["--api-x-status", "500"])
    d = daemon([v1], top_extra=plans(quiet=LOAD_PLAN))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "quiet")
    c = wait_ended(d, 20)
    assert c["id"] == ch["id"] and c["state"] == "failed", c
    doc = report_json(d, ch["id"])
    rep = json.dumps(doc)
    assert "max_error_rate" in rep, rep[:2000]
    assert live_name(d.status()) == "v1"
    load = next(s for s in _find_steps(doc) if s["kind"] == "load")
    assert load["synthetic"]["errors_5xx"] > 0, load


def test_a_load_rate_over_the_ceiling_names_file_and_line(tmp_path):
    cfg = tmp_path / "cutover.yml"
    cfg.write_text(f"state_dir: {tmp_path}/var\n"
                   "plans:\n"
                   "  quiet:\n"
                   "    steps:\n"
                   "      - load: {rate: 100000, duration: 5s}\n"
                   "services:\n"
                   "  web:\n"
                   "    listen: 127.0.0.1:1\n"
                   "    targets: [127.0.0.1:2]\n")
    r = run_cli("check", "-c", cfg)
    assert r.returncode != 0
    err = r.stderr + r.stdout
    assert "cutover.yml:5" in err and "rate" in err and "1000" in err, err


@pytest.mark.xdist_group("load")
def test_a_slow_new_version_costs_clients_nothing_and_copies_over_max_inflight_are_dropped(
        backend, daemon, wrk):
    v1 = backend("v1", extra=MR)
    v2 = backend("v2", extra=MR + ["--delay-ms", "500"])
    plan = """
steps:
  - mirror: {percent: 100, duration: 6s, max_inflight: 4, min_pairs: 5, max_mismatch_rate: 1}
  - pause: {}
"""
    d = daemon([v1], top_extra=plans(slow=plan))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "slow")
    # Every copy waits 500 ms on v2; clients must not wait with them.
    res = wrk(d.port, 3, conns=8, path="/b").result()
    assert res["socket_errors"] == 0 and res["non2xx"] == 0, res["text"]
    import re
    # wrk's summary has no percentiles without --latency: bound the average and the max instead.
    m = re.search(r"Latency\s+([\d.]+)(us|ms|s)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", res["text"])
    assert m, res["text"]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    avg, mx = float(m.group(1)) * scale[m.group(2)], float(m.group(3)) * scale[m.group(4)]
    print(f"\nclients with a mirror to a 500 ms slower version: avg {avg:.2f} ms, max {mx:.2f} ms, "
          f"{res['requests']} requests")
    assert avg < 100 and mx < 500, f"clients waited for the copies: avg {avg} ms, max {mx} ms"

    def mirrored():
        steps = _find_steps(report_json(d, ch["id"]))
        mm = next((s.get("mirror") for s in steps if s.get("kind") == "mirror"), None)
        return mm if mm and mm["pairs"] >= 5 else None
    m = wait_for(mirrored, 10, "mirror results in the record")
    assert m["dropped"] > 0 and m["mismatches"] == m["kinds"]["body"], m
    # At most 4 in flight at once, 500 ms each, over ~3 s: a few dozen pairs at most.
    assert m["pairs"] <= 4 * 2 * 8, m
    assert d.cli("abort", "web").returncode == 0


def test_a_new_version_that_does_not_answer_is_a_mismatch_of_kind_error(backend, daemon):
    v1, v2 = backend("v1", extra=MR), backend("v2", extra=MR)
    plan = """
steps:
  - mirror: {percent: 100, duration: 30s, min_pairs: 10, max_mismatch_rate: 0.5}
  - weight: 100
"""
    d = daemon([v1], top_extra=plans(down=plan))
    d.start(expect="v1\n")
    ch = deploy_ok(d, "v2", v2.addr, "down")
    v2.kill()  # healthy long enough to be routed to; now every copy fails to connect
    c = Client(d.port)
    answers = []

    def ended():
        for _ in range(20):
            answers.append(c.get("/b")[:2])
        last = d.history()[0]
        return last if last["state"] != "running" else None
    last = wait_for(ended, 20, "the change ended")
    c.close()
    assert last["id"] == ch["id"] and last["state"] == "failed", last
    assert answers and all(a == (200, "b\n") for a in answers), answers[:5]
    m, _ = mirror_record(d, ch["id"])
    assert m["kinds"]["error"] > 0 and m["kinds"]["error"] + m["dropped"] >= 10, m
