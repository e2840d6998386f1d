"""The dashboard in a real browser: headless Debian chromium driven by playwright-core
(tests/browser/dashboard.test.js; scripts/deps.sh installs both). A canary advances from 10 % to
40 % under light traffic while the page is open; the operator sees it move without a reload,
cancels an Abort at its confirmation, clicks Pause and the API says paused; the daemon upgrades
itself and the page's stream and session carry on (Resume); a Promote reaches an approval step
that shows in "Waiting for me", where Approve completes the change, whose report the page
renders; a viewer is offered no action. Screenshots are kept in build/browser/ for a person to look at.

    /usr/bin/python3 -m pytest -q tests/e2e/test_dashboard_browser.py
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import http_get
from test_admin_tcp import ROOT as ADMIN  # noqa: F401
from test_admin_tcp import ALICE, LEAD, VIEW, admin_daemon, call, reap, write_tokens  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "browser"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

PLAN = """plans:
  canary:
    steps: [{weight: 10}, {pause: 5s}, {weight: 40}, {pause: 10m},
            {approval: {approvers: [lead]}}, {weight: 100}]
"""

# A reason is free text from a person: the page must show it as text, never run it.
HOSTILE = '<img src=x onerror="window.pwned=1"> fix #12'

TOKENS = f"""tokens:
  lead: {{role: operator, token: {LEAD}}}
  ann: {{role: operator, token: {ALICE}}}
  grafana: {{role: viewer, token: {VIEW}}}
  root: {{role: admin, token: {ADMIN}}}
"""


@pytest.mark.xdist_group("load")  # a browser and a timed plan: not beside other loads
def test_operator_watches_a_canary_and_pauses_it_a_viewer_gets_no_action(backend, daemon,
                                                                          tmp_path):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/deps.sh (Debian chromium)"
    assert (REPO / "tests/browser/node_modules/playwright-core").is_dir(), \
        "playwright-core missing: run scripts/deps.sh (npm ci in tests/browser)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    v1, v2 = backend("v1"), backend("v2")
    d = admin_daemon(daemon, [v1], tmp_path, extra_top=PLAN)
    write_tokens(tmp_path, TOKENS)
    d.start(expect="v1\n")

    # Light traffic for the charts, for as long as the browser runs.
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                http_get(d.port, "/", timeout=2)
            except OSError:
                pass
            time.sleep(0.01)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    ready = SHOTS / ".logged-in"
    ready.unlink(missing_ok=True)
    deployed = {}

    def deploy():
        # The change starts once the operator's page is open, so the page sees it from 10 %.
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
        deployed["r"] = subprocess.run(
            [str(REPO / "build/cutover"), "deploy", "web", "v2", "--target", v2.addr, "--plan",
             "canary", "--reason", HOSTILE, "--admin", d.admin_url],
            env=dict(os.environ, CUTOVER_TOKEN=ALICE),
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    dt = threading.Thread(target=deploy, daemon=True)
    dt.start()
    try:
        r = subprocess.run(["node", str(REPO / "tests/browser/dashboard.test.js"),
                            d.admin_url + "/", LEAD, VIEW, ADMIN, str(SHOTS)],
                           env=dict(os.environ, CHROMIUM=CHROMIUM), capture_output=True, text=True,
                           timeout=120, cwd=REPO)
    finally:
        stop.set()
        t.join(5)
        dt.join(35)
    assert deployed.get("r") is not None and deployed["r"].returncode == 0, deployed
    cid = d.history()[0]["id"]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"the browser test printed nothing: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    res = json.loads(lines[-1])
    assert r.returncode == 0 and res["ok"], (res, r.stderr[-2000:])
    print("\nbrowser:", "; ".join(res["steps"]))

    # What the page did is what the change records: paused, resumed and approved by lead (ann
    # started it, so lead may approve), then completed on v2.
    st, doc, _ = call(d, "GET", f"/api/v1/changes/{cid}", token=VIEW)
    assert st == 200 and doc["state"] == "completed", (st, doc)
    said = " | ".join(e["message"] for e in doc["events"])
    for want in ["paused by lead", "resumed by lead", "step 4 (pause 10m) promoted",
                 "approved by lead"]:
        assert want in said, (want, said.split(" | "))
    assert d.status()["live"]["name"] == "v2"
    for shot in ["login-refused.png", "canary-10.png", "dashboard.png", "abort-confirm.png",
                 "waiting-for-me.png", "report.png", "viewer.png"]:
        assert (SHOTS / shot).stat().st_size > 10000, shot
