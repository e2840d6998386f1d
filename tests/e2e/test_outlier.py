"""Passive health (outlier detection): a target that keeps failing real requests is taken out
of rotation between active health checks, so requests stop paying for it."""
import re
import subprocess

from conftest import free_port, http_get


def metric(d, name):
    out = subprocess.run(["curl", "-s", "--unix-socket", str(d.sock), "http://x/metrics"],
                         capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"^%s (\d+)$" % name, out, re.M)
    return int(m.group(1)) if m else None


def start(backend, daemon, outlier):
    good = backend("v1")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    # Active checks every 30 s with 5 failures needed: only passive detection can act in time.
    d = daemon([good], health={"interval": "30s", "timeout": "1s", "unhealthy_threshold": 5},
               service_extra=f"    outlier_detection: {outlier}\n")
    d.cfg.write_text(d.cfg.read_text().replace(f"[{good.addr}]", f"[{good.addr}, {dead}]"))
    d.start()
    return d


def run_requests(d, n):
    codes = [http_get(d.port, "/")[0] for _ in range(n)]
    assert codes == [200] * n, codes  # retries hide the dead target from clients either way
    return metric(d, "cutover_retries_total")


def test_failing_target_is_ejected(backend, daemon):
    d = start(backend, daemon, "{consecutive_failures: 3, ejection: 30s}")
    retries = run_requests(d, 200)
    # Round robin over two targets: without ejection about 100 requests would try the dead one
    # first. With it, 3 failures eject it for the rest of the run.
    assert retries is not None and retries <= 6, f"{retries} retries: the dead target stayed in"


def test_ejection_can_be_turned_off(backend, daemon):
    d = start(backend, daemon, "{consecutive_failures: 0}")
    retries = run_requests(d, 200)
    assert retries is not None and retries >= 60, f"only {retries} retries with detection off"
