"""Rolling replacement, end to end (issue 4 item 4): a service with `strategy: {type: rolling}`
replaces its managed instances in health-gated batches instead of starting a second full set.

Under wrk load, with a status sampler that reads the service every few tens of ms, the tests
check the Kubernetes-like bounds: never more than instances + max_surge in rotation, never
fewer than instances - max_unavailable healthy ones, and 0 errors. A failing batch (a version
that crashes at start, or one whose analysis gate fails) rolls the replaced batches back: the
old version is whole again and the new one's processes are gone.

The instance program and helpers are those of test_managed.py. Figures are printed (`-s`).
"""
import re
import threading
import time

import pytest

from conftest import body_of, http_get, live_name, run_cli, wait_body, write_config
from test_managed import assert_no_errors, managed, wait_for  # noqa: F401 (fixture)

ROLLING_1_0 = "{type: rolling, max_surge: 1, max_unavailable: 0}"
ROLLING_0_1 = "{type: rolling, max_surge: 0, max_unavailable: 1}"

GATED = """plans:
  gated:
    steps:
      - weight: 100
    analysis: {interval: 500ms, min_requests: 30, max_error_rate: 0.05}
"""


def healthy(targets):
    return sum(1 for t in targets or [] if t.get("state") == "healthy")


class Sampler:
    """Reads the service's status in a thread; keeps what the bounds need from each sample."""

    def __init__(self, d):
        self.d = d
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                svc = self.d.status()
            except AssertionError:
                continue
            live = svc.get("live") or {}
            roll = svc.get("rolling") or {}
            tv = (svc.get("change") or {}).get("target_version") or {}
            self.samples.append({
                "in_rotation": len(live.get("targets") or []) + (len(tv.get("targets") or [])
                                                                  if roll else 0),
                "healthy": healthy(live.get("targets")) + (healthy(tv.get("targets"))
                                                           if roll else 0),
                "rolling": roll,
            })
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._t.join(10)
        return self.samples


def rolling_deploy_under_load(managed, wrk, strategy, n, surge, unavail):
    d = managed.daemon(instances=n, drain="1s", strategy=strategy).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    assert len(managed.pids("v1")) == n
    load = wrk(d.port, 14, conns=16)
    time.sleep(1.0)
    sampler = Sampler(d)
    t0 = time.monotonic()
    r = managed.deploy_ok("v2")
    took = time.monotonic() - t0
    time.sleep(0.3)
    samples = sampler.stop()
    assert load.running(), "load ended before the replacement was done: make the load longer"
    res = load.result()
    during = [s for s in samples if s["rolling"]]
    batches = max((s["rolling"].get("batch", 0) for s in during), default=0)
    print(f"\nrolling {n} instances, max_surge {surge}, max_unavailable {unavail}, under wrk "
          f"-t1 -c16: {res['requests']} requests, socket errors {res['socket_errors']}, non-2xx "
          f"{res['non2xx']}; replaced in {took:.2f}s, {batches} batches; {len(during)} status "
          f"samples during it: in rotation {min(s['in_rotation'] for s in during)}.."
          f"{max(s['in_rotation'] for s in during)}, healthy "
          f"{min(s['healthy'] for s in during)}..{max(s['healthy'] for s in during)}")
    assert "v2" in r.stdout
    assert_no_errors(res)
    assert len(during) >= 2, f"too few samples during the replacement: {samples[:3]}"
    assert max(s["in_rotation"] for s in during) <= n + surge, during
    assert min(s["healthy"] for s in samples) >= n - unavail, \
        [s for s in samples if s["healthy"] < n - unavail][:3]
    assert batches == n, f"expected {n} batches of 1, saw {batches}"
    assert body_of(d.port) == "v2\n"
    svc = d.status()
    assert live_name(svc) == "v2" and svc.get("rolling") is None, svc
    # The old instances stop one by one after their drain (1 s + 0.5 s).
    wait_for(lambda: managed.pids("v1") == [], 10, "no v1 process left")
    assert len(managed.pids("v2")) == n
    ch = d.history()[0]
    assert ch["state"] == "completed" and ch["to"] == "v2", ch
    return d


@pytest.mark.xdist_group("load")
def test_rolling_surge_1_unavailable_0_under_load(managed, wrk):
    rolling_deploy_under_load(managed, wrk, ROLLING_1_0, 3, 1, 0)


@pytest.mark.xdist_group("load")
def test_rolling_surge_0_unavailable_1_under_load(managed, wrk):
    rolling_deploy_under_load(managed, wrk, ROLLING_0_1, 3, 0, 1)


@pytest.mark.xdist_group("load")
def test_rolling_rollback_command_replaces_back(managed, wrk):
    d = rolling_deploy_under_load(managed, wrk, ROLLING_1_0, 2, 1, 0)
    load = wrk(d.port, 10, conns=16)
    time.sleep(0.5)
    t0 = time.monotonic()
    r = d.cli("rollback", "web", timeout=40)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"rollback exit {r.returncode}: {r.stdout}{r.stderr}"
    res = load.result()
    print(f"\nrolling rollback of 2 instances under load: {res['requests']} requests, socket "
          f"errors {res['socket_errors']}, non-2xx {res['non2xx']}; took {took:.2f}s")
    assert_no_errors(res, min_requests=500)
    assert live_name(d.status()) == "v1"
    assert body_of(d.port) == "v1\n"
    wait_for(lambda: managed.pids("v2") == [], 10, "no v2 process after the rollback")
    assert len(managed.pids("v1")) == 2


@pytest.mark.xdist_group("load")
def test_rolling_batch_that_crashes_restores_old_version(managed, wrk):
    d = managed.daemon(instances=3, drain="1s", strategy=ROLLING_1_0, deploy_timeout="8s",
                       env={"MODE_v2": "crash_at_start"}).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    old = managed.pids("v1")
    load = wrk(d.port, 6, conns=16)
    time.sleep(0.5)
    r = managed.deploy("v2", "--wait")
    assert r.returncode == 1, f"deploy of a crashing version exit {r.returncode}: {r.stdout}"
    res = load.result()
    ch = d.history()[0]
    print(f"\nrolling deploy of a version that crashes at start: change {ch['state']}: "
          f"{ch.get('message')}; load {res['requests']} requests, errors "
          f"{res['socket_errors']}+{res['non2xx']}")
    assert ch["state"] == "failed", ch
    assert re.search(r"boom|exit", ch.get("message") or ""), ch
    assert "v2-0.log" in (ch.get("message") or ""), ch
    assert_no_errors(res, min_requests=300)
    # Never given traffic, the old set untouched (surge 1: the first batch only added one).
    assert managed.pids("v1") == old
    wait_for(lambda: managed.pids("v2") == [], 10, "no v2 process after the failure")
    wait_for(lambda: d.status().get("rolling") is None, 10, "the restore to end")
    assert live_name(d.status()) == "v1"


@pytest.mark.xdist_group("load")
def test_rolling_gate_failure_rolls_replaced_batches_back(managed, wrk):
    # wrk sends no cookie: each request falls in a random bucket, so the new version gets its
    # share of instances as its share of requests (by address, all of wrk is one user).
    d = managed.daemon(instances=3, drain="1s", strategy=ROLLING_1_0, plans=GATED,
                       env={"MODE_v2": "errors"},
                       extra="    sticky: {cookie: cid}\n").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    load = wrk(d.port, 12, conns=8)
    time.sleep(0.5)
    t0 = time.monotonic()
    r = managed.deploy("v2", "--plan", "gated", "--wait")
    took = time.monotonic() - t0
    assert r.returncode == 1, f"a failing canary must exit 1: {r.stdout}{r.stderr}"
    ch = d.history()[0]
    print(f"\nrolling deploy with a failing gate: {ch['state']} after {took:.2f}s: "
          f"{ch.get('message')}")
    assert ch["state"] == "rolled_back", ch
    assert "error" in (ch.get("message") or ""), ch
    # The old version is whole again; the new one is gone.
    wait_for(lambda: d.status().get("rolling") is None, 15, "the restore to end")
    svc = d.status()
    assert live_name(svc) == "v1" and healthy(svc["live"]["targets"]) == 3, svc
    wait_for(lambda: managed.pids("v2") == [], 10, "no v2 process after the rollback")
    assert len(managed.pids("v1")) == 3
    load.result()
    answers = {body_of(d.port) for _ in range(30)}
    assert answers == {"v1\n"}, answers


@pytest.mark.parametrize("strategy,want", [
    ("{type: rolling, max_surge: 0, max_unavailable: 0}", "both 0"),
    ("{type: rolling, max_surge: 5}", "at most run.instances"),
    ("{type: sideways}", "rolling or blue_green"),
    ("{max_surge: 1}", "type"),
])
def test_check_rejects_bad_strategy(tmp_path, strategy, want):
    run = ("    run:\n      command: [/bin/true]\n      instances: 2\n"
           f"    strategy: {strategy}\n")
    cfg = write_config(tmp_path / "c.yml", 18080, [], tmp_path / "var", service_extra=run)
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2, r.stdout
    assert "strategy" in r.stderr and want in r.stderr, r.stderr


def test_check_rejects_rolling_without_run(tmp_path):
    cfg = write_config(tmp_path / "c.yml", 18080, ["127.0.0.1:9"], tmp_path / "var",
                       service_extra="    strategy: {type: rolling, max_surge: 1}\n")
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2 and "run:" in r.stderr, r.stderr


def wait_batch(d, k, secs=20):
    return wait_for(lambda: (d.status().get("rolling") or {}).get("batch", 0) >= k and
                    d.status().get("rolling"), secs, f"batch {k} of the replacement",
                    interval=0.05)


SLOW_HEALTH = {"interval": "300ms", "healthy_threshold": 4}


def test_kill9_during_rolling_resumes_at_its_batch_nothing_twice(managed):
    d = managed.daemon(instances=3, drain="2s", strategy=ROLLING_1_0,
                       health=SLOW_HEALTH).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    v1 = managed.pids("v1")
    r = d.cli_bg("deploy", "web", "v2")
    wait_batch(d, 2)
    v2_before = managed.pids("v2")
    d.kill9()
    r.wait(10)
    d.start()
    # The replacement resumes where it was: the v2 instances already started are adopted (same
    # pids), the batches go on, and the change completes; no v1 instance is started again.
    ch = wait_for(lambda: next((c for c in d.history() if c["to"] == "v2"
                                and c["state"] != "running"), None), 40, "the change to end")
    now2 = managed.pids("v2")
    wait_for(lambda: managed.pids("v1") == [], 15, "no v1 process after the replacement")
    print(f"\nkill -9 during a rolling replacement: change {ch['state']}; v2 pids before "
          f"{v2_before}, after {now2}; v1 was {v1}")
    assert ch["state"] == "completed", ch
    assert len(now2) == 3, now2
    assert set(v2_before) <= set(now2), f"started v2 instances were not adopted: {v2_before}"
    assert "rolling replacement resumed" in d.log(), d.log()[-3000:]
    assert {body_of(d.port) for _ in range(20)} == {"v2\n"}


@pytest.fixture
def reap_successors(procs, tmp_path):
    """An upgrade's successor is no child the test started: stop everything under tmp_path."""
    yield
    from test_selfupgrade import kill_tree_of
    kill_tree_of(tmp_path)


def test_upgrade_during_a_paused_rolling_plan_is_not_refused(reap_successors, managed):
    d = managed.daemon(instances=2, drain="1s", strategy=ROLLING_1_0, plans=PLAN_HALF).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    r = managed.deploy("v2", "--plan", "half")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: (d.status().get("change") or {}).get("progress", {}).get("step") == 2, 30,
             "the plan's pause")
    before = managed.pids()
    r = d.cli("upgrade", timeout=30)
    assert r.returncode == 0, f"upgrade refused during a paused rolling plan: {r.stdout}{r.stderr}"
    time.sleep(1)
    assert managed.pids() == before, "the hand-over restarted instances"
    p = wait_for(lambda: (d.status().get("change") or {}).get("progress"), 10, "progress")
    assert p.get("step") == 2 and p.get("state") == "paused" or p.get("state") == "running", p
    r = d.cli("promote", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    ch = wait_for(lambda: next((c for c in d.history() if c["to"] == "v2"
                                and c["state"] != "running"), None), 40, "the change to end")
    assert ch["state"] == "completed", ch
    wait_for(lambda: managed.pids("v1") == [], 15, "no v1 process left")
    assert len(managed.pids("v2")) == 2


def test_serve_sigterm_during_rolling_leaves_no_process(managed):
    d = managed.daemon(instances=2, drain="5s", strategy=ROLLING_1_0,
                       health=SLOW_HEALTH, run_extra="      stop_with_daemon: true\n").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    d.cli_bg("deploy", "web", "v2")
    wait_batch(d, 1)
    wait_for(lambda: managed.pids("v2"), 10, "a v2 process")
    d.proc.terminate()
    d.proc.wait(30)
    wait_for(lambda: managed.pids() == [], 15, "no instance left after SIGTERM")


PLAN_HALF = """plans:
  half:
    steps:
      - weight: 50
      - pause: {}
      - weight: 100
"""


def test_plan_weight_steps_set_instance_goals(managed):
    d = managed.daemon(instances=3, drain="1s", strategy=ROLLING_1_0, plans=PLAN_HALF).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    r = managed.deploy("v2", "--plan", "half")
    assert r.returncode == 0, r.stdout + r.stderr

    def paused():
        s = d.status()
        p = ((s.get("change") or {}).get("progress") or {})
        return s if p.get("step") == 2 else None
    svc = wait_for(paused, 20, "the pause step (after weight 50)")
    ro = svc["rolling"]
    # weight 50 of 3 instances = 2 new ones, 1 old one left.
    assert ro["goal"] == 2 and ro["new_healthy"] == 2 and ro["old_in_rotation"] == 1, ro
    text = d.cli("status", "web").stdout
    assert "rolling:" in text and "2 of 3 new healthy" in text, text
    wait_for(lambda: len(managed.pids("v1")) == 1, 10, "two v1 instances stopped")
    assert len(managed.pids("v2")) == 2
    r = d.cli("promote", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: live_name(d.status()) == "v2", 20, "v2 live after the last step")
    assert d.history()[0]["state"] == "completed"
    wait_for(lambda: managed.pids("v1") == [], 10, "no v1 process left")
    assert len(managed.pids("v2")) == 3


STARVED = """plans:
  starved:
    steps:
      - weight: 100
    analysis: {interval: 300ms, min_requests: 1000000, max_error_rate: 0.05}
    on_inconclusive: pause
"""


def test_batch_without_verdict_holds_until_resumed(managed):
    """No traffic, so no analysis verdict: after deploy_timeout the batch is inconclusive and
    (on_inconclusive: pause) held for a person; `resume` lets the next batch start."""
    d = managed.daemon(instances=2, drain="1s", strategy=ROLLING_1_0, plans=STARVED,
                       deploy_timeout="3s").start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    r = managed.deploy("v2", "--plan", "starved")
    assert r.returncode == 0, r.stdout + r.stderr

    def holding():
        p = ((d.status().get("change") or {}).get("progress") or {})
        return p if p.get("state") == "holding" else None
    p = wait_for(holding, 20, "the plan to hold for want of a verdict", interval=0.2)
    assert "no analysis verdict" in (p.get("hold_reason") or ""), p
    ro = d.status()["rolling"]
    assert ro["batch"] == 1 and ro["state"] == "analysis", ro
    r = d.cli("resume", "web")
    assert r.returncode == 0, r.stdout + r.stderr
    # The second batch starts, then holds again for its own window, then completes on resume.
    wait_for(lambda: (d.status().get("rolling") or {}).get("batch") == 2 or
             live_name(d.status()) == "v2", 15, "the second batch")
    wait_for(lambda: live_name(d.status()) == "v2", 15, "v2 live")
    assert d.history()[0]["state"] == "completed"


PLAN_NO_100 = """plans:
  partial:
    steps:
      - pilot: {header: "X-Cohort: pilot", duration: 1s}
      - weight: 50
      - pause: 500ms
"""


def test_plan_without_weight_100_finishes_and_pilot_reaches_new_version(managed):
    """A plan that ends below 100 % replaces the rest at its end; its pilot step routes the
    cohort to the first new instance while everyone else stays on the old ones."""
    d = managed.daemon(instances=2, drain="1s", strategy=ROLLING_1_0, plans=PLAN_NO_100).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    r = managed.deploy("v2", "--plan", "partial")
    assert r.returncode == 0, r.stdout + r.stderr

    def in_pilot():
        p = ((d.status().get("change") or {}).get("progress") or {})
        return p if p.get("step") == 1 and p.get("state") == "running" else None
    wait_for(in_pilot, 15, "the pilot step", interval=0.05)
    pilot = {http_get(d.port, headers={"X-Cohort": "pilot"})[1] for _ in range(10)}
    others = {body_of(d.port) for _ in range(10)}
    print(f"\npilot step under rolling: pilot cohort saw {pilot}, others {others}")
    assert pilot == {b"v2\n"} and others == {"v1\n"}, (pilot, others)
    wait_for(lambda: live_name(d.status()) == "v2", 20, "v2 live at the plan's end")
    assert d.history()[0]["state"] == "completed"
    assert d.alive()
    wait_for(lambda: managed.pids("v1") == [], 10, "no v1 process left")
    assert len(managed.pids("v2")) == 2


def test_rolling_rollback_soon_after_reuses_draining_instances(managed):
    """Within the old version's drain, a rollback puts its still-running instances back
    instead of starting new ones (same pids)."""
    d = managed.daemon(instances=2, drain="20s", strategy=ROLLING_1_0).start()
    managed.deploy_ok("v1")
    wait_body(d.port, "v1\n")
    v1 = managed.pids("v1")
    managed.deploy_ok("v2")
    assert live_name(d.status()) == "v2"
    assert managed.pids("v1") == v1  # draining, not stopped yet
    r = d.cli("rollback", "web", timeout=40)
    assert r.returncode == 0, r.stdout + r.stderr
    svc = d.status()
    assert live_name(svc) == "v1"
    assert sorted(i["pid"] for i in svc["live"]["instances"]) == v1, svc["live"]
    assert {body_of(d.port) for _ in range(10)} == {"v1\n"}
