"""A config is text or it is refused (issue 14, item 3): a NUL byte, invalid UTF-8 or a control
character anywhere in the file, a health-check path that would inject bytes into the request
line, or a state_dir that cannot be a directory is an error naming file:line. `check` exits 2,
`serve` does not start, and a `reload` with such a file is refused while the daemon keeps
serving what it served.
"""
import os
import re
import subprocess

import pytest

from conftest import BIN, body_of, free_port, run_cli, wait_body, wait_port

GOOD = ("state_dir: {state}\n"
        "services:\n"
        "  web:\n"
        "    listen: 127.0.0.1:{port}\n"
        "    health_check: {{path: /healthz, interval: 200ms, timeout: 500ms, "
        "healthy_threshold: 1, unhealthy_threshold: 2}}\n"
        "    drain_timeout: 2s\n"
        "    targets: [127.0.0.1:{target}]\n").encode()

# name: (transform of the good file's bytes, 1-based line the error must name, word it must say)
HOSTILE = {
    "nul-byte": (lambda b: b.replace(b"services:\n", b"services:\n\x00"), 3, "NUL"),
    "nul-cuts-the-rest": (lambda b: b.replace(b"state_dir", b"\x00state_dir"), 1, "NUL"),
    "invalid-utf8": (lambda b: b.replace(b"drain_timeout: 2s", b"drain_timeout: 2s # \xc3\x28"),
                     6, "UTF-8"),
    "overlong-utf8": (lambda b: b.replace(b"drain_timeout: 2s", b"drain_timeout: 2s # \xc0\xaf"),
                      6, "UTF-8"),
    "escape-char": (lambda b: b.replace(b"drain_timeout", b"drain_timeout: 2s #\x1b[2J\n    x"),
                    6, "control"),
    "c1-control": (lambda b: b.replace(b"listen:", b"listen: # \xc2\x9b\n    listen:"), 4,
                   "control"),
    "lone-cr": (lambda b: b.replace(b"drain_timeout: 2s\n", b"drain_timeout: 2s\r    x: 1\n"),
                6, "CR"),
    "health-path-crlf-escaped": (
        lambda b: b.replace(b"path: /healthz", b'path: "/healthz\\r\\nX-Injected: 1"'), 5,
        "health_check.path"),
    "health-path-space": (lambda b: b.replace(b"path: /healthz", b'path: "/a b"'), 5,
                          "health_check.path"),
    "health-path-tab": (lambda b: b.replace(b"path: /healthz", b'path: "/a\\tb"'), 5,
                        "health_check.path"),
    "state-dir-is-a-file": (lambda b: re.sub(rb"state_dir: .*\n", b"state_dir: /etc/passwd\n", b),
                            1, "state_dir"),
    "state-dir-under-a-file": (
        lambda b: re.sub(rb"state_dir: .*\n", b"state_dir: /etc/passwd/var\n", b), 1,
        "state_dir"),
}


def good_bytes(tmp_path, port=None, target=None):
    return GOOD.replace(b"{state}", str(tmp_path / "var").encode()) \
        .replace(b"{port}", str(port or free_port()).encode()) \
        .replace(b"{target}", str(target or free_port()).encode()) \
        .replace(b"{{", b"{").replace(b"}}", b"}")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_config_is_refused_by_check_and_serve_naming_file_line(tmp_path, procs, name):
    transform, line, word = HOSTILE[name]
    good = good_bytes(tmp_path)
    bad = transform(good)
    assert bad != good
    cfg = tmp_path / "bad.yml"
    cfg.write_bytes(bad)
    r = run_cli("check", "-c", cfg, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"check {name}: exit {r.returncode}, want 2: {out}"
    assert f"bad.yml:{line}:" in out, f"check {name}: does not name bad.yml:{line}: {out}"
    assert word in out, f"check {name}: does not say {word!r}: {out}"
    p = procs.start([BIN, "serve", "-c", cfg], name="serve-bad")
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve with a hostile config ({name}) still runs after 10 s")
    assert rc == 2, f"serve {name}: exit {rc}: {p.log_path.read_text(errors='replace')}"


def test_text_config_with_crlf_tabs_and_utf8_is_accepted(tmp_path):
    good = good_bytes(tmp_path)
    text = good.replace(b"\n", b"\r\n").replace(b"drain_timeout: 2s",
                                                   b"drain_timeout: 2s\t# d\xc3\xa9j\xc3\xa0 vu")
    cfg = tmp_path / "ok.yml"
    cfg.write_bytes(text)
    r = run_cli("check", "-c", cfg, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    # A state_dir that does not exist yet but can be created is fine.
    cfg.write_bytes(good.replace(str(tmp_path / "var").encode(),
                                 str(tmp_path / "new" / "deeper").encode()))
    r = run_cli("check", "-c", cfg, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["nul-byte", "invalid-utf8", "health-path-crlf-escaped",
                                  "state-dir-is-a-file"])
def test_reload_of_a_hostile_config_is_refused_and_the_daemon_serves_on(tmp_path, backend,
                                                                        procs, name):
    v1 = backend("v1")
    port = free_port()
    cfg = tmp_path / "cutover.yml"
    good = good_bytes(tmp_path, port, v1.port)
    cfg.write_bytes(good)
    p = procs.start([BIN, "serve", "-c", cfg], name="serve")
    assert wait_port(port, 10, p), p.log_path.read_text()
    wait_body(port, "v1\n")
    transform, line, word = HOSTILE[name]
    tmp = cfg.with_name("cutover.yml.new")
    tmp.write_bytes(transform(good))
    os.replace(tmp, cfg)
    sock = tmp_path / "var" / "cutover.sock"
    # Through --admin the daemon itself reads (and refuses) the file.
    r = run_cli("reload", "--admin", f"unix:{sock}", timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"reload {name}: exit {r.returncode}: {out}"
    assert f"cutover.yml:{line}:" in out and word in out, out
    assert p.poll() is None, "the daemon died on a hostile reload"
    assert {body_of(port) for _ in range(10)} == {"v1\n"}
    assert "reload refused" in p.log_path.read_text(errors="replace")

