"""The stakeholder model (issue 15, item 1): people with duties per service and the webhooks
that reach them. A person's webhook hears of the services they own or are informed of, and of
the events that wait for them by name (`awaiting`: an approval step names its approvers, a
hold names the service's owners); nobody else's."""
import pytest

from conftest import free_port
from progressive_util import progress_of, wait_for
from test_webhooks import receiver  # noqa: F401  (the fixture)


def config(alice, bob, ops):
    return f"""notify:
  webhooks:
    - {{name: alice-dm, url: {alice.url}}}
    - {{name: bob-dm, url: {bob.url}}}
    - {{name: ops-chat, url: {ops.url}, format: slack}}
people:
  alice: {{services: {{web: [approver]}}, webhooks: [alice-dm]}}
  bob: {{services: {{web: [owner]}}, webhooks: [bob-dm]}}
  carol: {{services: {{api: [informed]}}, webhooks: [ops-chat]}}
plans:
  appr:
    steps: [{{weight: 10}}, {{approval: {{approvers: [alice]}}}}, {{weight: 100}}]
"""


def test_each_person_hears_what_concerns_them(backend, daemon, receiver):  # noqa: F811
    v1, v2 = backend("v1"), backend("v2")
    alice, bob, ops = receiver(), receiver(), receiver()
    d = daemon([v1], top_extra=config(alice, bob, ops))
    other = free_port()
    d.cfg.write_text(d.cfg.read_text() + f"  api:\n    listen: 127.0.0.1:{other}\n"
                     f"    targets: [{v1.addr}]\n")
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "appr")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: progress_of(d).get("step") == 2, 15, "the plan at its approval")
    # alice is awaited by name: she gets that event (and only events naming her).
    got = alice.wait(lambda g: any(e["type"] == "awaiting" for e in g))
    aw = [e for e in got if e["type"] == "awaiting"]
    assert aw[0]["awaiting"] == ["alice"] and "waits at step 2" in aw[0]["message"], aw
    assert all(e["type"] == "awaiting" for e in got), [e["type"] for e in got]
    # bob owns web: he hears of everything, the awaiting event included.
    bob.wait(lambda g: {"created", "step", "awaiting"} <= {e["type"] for e in g})
    r = d.cli("approve", str(d.status()["change"]["id"]), "--as", "alice")
    assert r.returncode == 0, r.stdout + r.stderr
    bob.wait(lambda g: any(e["type"] == "completed" for e in g))
    # carol is only informed of api: nothing of web reaches her channel.
    import time
    time.sleep(0.5)
    assert ops.events() == [], ops.events()


def test_a_hold_awaits_the_owners(backend, daemon, receiver):  # noqa: F811
    v1, v2 = backend("v1"), backend("v2")
    alice, bob, ops = receiver(), receiver(), receiver()
    text = config(alice, bob, ops).replace(
        "steps: [{weight: 10}, {approval: {approvers: [alice]}}, {weight: 100}]",
        "steps: [{weight: 10}, {pause: 2s}, {weight: 100}]\n"
        "    analysis: {interval: 300ms, min_requests: 1000000}\n"
        "    on_inconclusive: pause")
    d = daemon([v1], top_extra=text)
    d.cfg.write_text(d.cfg.read_text() + f"  api:\n    listen: 127.0.0.1:{free_port()}\n"
                     f"    targets: [{v1.addr}]\n")
    d.start(expect="v1\n")
    r = d.cli("deploy", "web", "v2", "--target", v2.addr, "--plan", "appr")
    assert r.returncode == 0, r.stdout + r.stderr
    got = bob.wait(lambda g: any(e["type"] == "awaiting" for e in g), secs=20)
    aw = [e for e in got if e["type"] == "awaiting"][0]
    assert aw["awaiting"] == ["bob"] and "holds for a person" in aw["message"], aw
    assert alice.events() == []
    d.cli("abort", "web")


@pytest.mark.parametrize("text,needle", [
    ("notify: {webhooks: [{name: a, url: 'http://127.0.0.1:1'}, {name: a, url: 'http://127.0.0.1:2'}]}\n",
     "already notify.webhooks[0]'s name"),
    ("notify: {webhooks: [{name: a, url: 'http://127.0.0.1:1'}]}\npeople: {x: {webhooks: [b]}}\n",
     "no webhook named 'b'"),
])
def test_bad_stakeholder_config_names_the_key(backend, daemon, text, needle):
    import subprocess
    from conftest import BIN
    d = daemon([backend("v1")], top_extra=text)
    r = subprocess.run([str(BIN), "check", "-c", str(d.cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
