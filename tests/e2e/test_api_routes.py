"""The admin API's route table (src/api/api.c, api_routes[]): every route needs exactly the role
its row names, whatever spelling of the path is sent; a path on no row is 404 (405 for another
method). Real daemon on loopback, requests from http.client.

    /usr/bin/python3 -m pytest -q tests/e2e/test_api_routes.py
"""
from test_admin_tcp import ALICE, ROOT, VIEW, admin_daemon, call

ROLES = {"viewer": VIEW, "operator": ALICE, "admin": ROOT}
ORDER = ["viewer", "operator", "admin"]

# (method, path, role it needs, body that changes nothing when allowed)
ROUTES = [
    ("GET", "/metrics", "viewer", None),
    ("GET", "/api/v1/health", "viewer", None),
    ("GET", "/api/v1/services", "viewer", None),
    ("GET", "/api/v1/services/web", "viewer", None),
    ("GET", "/api/v1/services/web/plan?version=v9", "viewer", None),
    ("GET", "/api/v1/changes", "viewer", None),
    ("GET", "/api/v1/changes/999", "viewer", None),
    ("GET", "/api/v1/changes/999/report", "viewer", None),
    ("GET", "/api/v1/services/web/series", "viewer", None),
    ("GET", "/api/v1/events?service=nope", "viewer", None),
    ("GET", "/api/v1/session", "viewer", None),
    ("GET", "/api/v1/audit", "operator", None),
    ("DELETE", "/api/v1/session", "viewer", None),
    ("POST", "/api/v1/services/web/deploy", "operator", {"nope": 1}),
    ("POST", "/api/v1/services/web/rollback", "operator", {"nope": 1}),
    ("POST", "/api/v1/changes/999/promote", "operator", {}),
    ("POST", "/api/v1/changes/999/pause", "operator", {}),
    ("POST", "/api/v1/changes/999/resume", "operator", {}),
    ("POST", "/api/v1/changes/999/abort", "operator", {}),
    ("POST", "/api/v1/changes/999/approve", "operator", {}),
    ("POST", "/api/v1/services/web/hold", "operator", {"nope": 1}),
    ("POST", "/api/v1/services/web/release", "operator", {"nope": 1}),
    ("POST", "/api/v1/services/web/maintenance", "operator", {"nope": 1}),
    ("POST", "/api/v1/changes/999/note", "operator", {"nope": 1}),
    ("GET", "/api/v1/changes/999/verify", "viewer", None),
    ("GET", "/api/v1/verify", "viewer", None),
    ("GET", "/api/v1/stats", "viewer", None),
    ("POST", "/api/v1/upgrade", "admin", {"binary": "relative"}),
    ("POST", "/api/v1/reload", "admin", {"nope": 1}),
]


def test_each_route_needs_the_role_of_its_row(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    pid = d.pid
    for method, path, need, body in ROUTES:
        st, doc, _ = call(d, method, path, body=body)
        assert st == 401, (method, path, st, doc)
        for role in ORDER:
            st, doc, _ = call(d, method, path, token=ROLES[role], body=body)
            if ORDER.index(role) < ORDER.index(need):
                assert st == 403 and f"needs {need}" in doc["error"], (method, path, role, st, doc)
            else:
                # Allowed: the route's own answer (a body or id it refuses), never 401/403.
                assert st not in (401, 403, 405), (method, path, role, st, doc)
    # Nothing above changed anything: no change recorded, the daemon not replaced.
    assert d.history() == []
    st, doc, _ = call(d, "GET", "/api/v1/health", token=VIEW)
    assert st == 200 and doc["pid"] == pid


def test_the_dashboard_and_its_login_need_no_token(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    for path in ["/", "/dash/app.js", "/dash/app.css"]:
        st, _, _ = call(d, "GET", path)
        assert st == 200, (path, st)
    st, doc, _ = call(d, "POST", "/api/v1/session", body={})
    assert st == 400 and "token: required" in doc["error"], (st, doc)
    # Anything else of /dash/ is no file, and the login takes POST only.
    st, _, _ = call(d, "GET", "/dash/../api/v1/services")
    assert st in (401, 404), st
    st, doc, _ = call(d, "PUT", "/api/v1/session", token=VIEW, body={})
    assert st == 405, (st, doc)


def test_a_path_on_no_row_is_404_and_another_method_405(backend, daemon, tmp_path):
    d = admin_daemon(daemon, [backend("v1")], tmp_path)
    d.start(expect="v1\n")
    # Without a token nobody learns which routes exist.
    st, _, _ = call(d, "GET", "/api/v1/nothing")
    assert st == 401
    st, doc, _ = call(d, "GET", "/api/v1/nothing", token=VIEW)
    assert st == 404 and "no such route" in doc["error"], (st, doc)
    st, doc, _ = call(d, "GET", "/api/v1/services/web/deploy", token=ROOT)
    assert (st, doc["error"]) == (405, "use POST"), (st, doc)
    st, doc, _ = call(d, "POST", "/api/v1/services", token=ROOT, body={})
    assert (st, doc["error"]) == (405, "use GET"), (st, doc)
    st, doc, _ = call(d, "GET", "/api/v1/changes/abc", token=VIEW)
    assert st == 404 and "positive integer" in doc["error"], (st, doc)
    # Encoded segments are decoded before the table is read: %70ause is pause.
    st, doc, _ = call(d, "POST", "/api/v1/changes/999/%70ause", token=VIEW, body={})
    assert st == 403 and "needs operator" in doc["error"], (st, doc)
    st, doc, _ = call(d, "POST", "/api/v1/changes/999/%70ause", token=ALICE, body={})
    assert st == 404 and "no change 999" in doc["error"], (st, doc)
    st, doc, _ = call(d, "GET", "/api/v1/services%2Fweb", token=VIEW)
    assert st == 400, (st, doc)
