"""Helpers shared by the python suites of the stock-clients tier: the control API of the hub
(e2e/clients/stack.mjs), tokens, management calls and the results file. Run by
e2e/clients/run.sh, which sets ROOMCAST_CLIENTS_CONTROL and ROOMCAST_CLIENTS_RESULTS."""

import base64
import json
import os
import random
import string
import time
import urllib.error
import urllib.request
from importlib.metadata import version


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this suite through e2e/clients/run.sh")
    return value


CONTROL = _env("ROOMCAST_CLIENTS_CONTROL")
RESULTS = _env("ROOMCAST_CLIENTS_RESULTS")


def record(obj):
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def record_client(kind):
    record({
        "type": "client",
        "version": f"python-socketio {version('python-socketio')} "
                   f"(python-engineio {version('python-engineio')})",
        "details": {"client": kind, "requests": version("requests"),
                    "websocket-client": version("websocket-client"), "aiohttp": version("aiohttp")},
    })


def control(method, route, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(CONTROL + route, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"control {route}: {e.code} {e.read().decode()}") from e


def proxy_url():
    return control("GET", "/info")["proxy"]


def recovery_url():
    """The single-node hub with connection state recovery on, behind a proxy that can cut."""
    return control("GET", "/info")["recovery"]


def recovery_mgmt(method, path, body=None):
    res = control("POST", "/recovery/mgmt", {"method": method, "path": path, "body": body})
    assert res["status"] == 200, f"{method} {path}: {res}"
    return res["body"]


def token(**claims):
    return control("POST", "/token", claims)["token"]


def mgmt(method, path, body=None):
    """A management API call on a live member; asserts HTTP 200 and returns the body."""
    res = control("POST", "/mgmt", {"method": method, "path": path, "body": body})
    assert res["status"] == 200, f"{method} {path}: {res}"
    return res["body"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def owner_of(socket_id):
    """The member a socket id names (its suffix is the base64url of the member id)."""
    suffix = socket_id[16:]
    return base64.urlsafe_b64decode(suffix + "=" * (-len(suffix) % 4)).decode()


def rand(n=8):
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


def eventually(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settle_counts(pairs, event, what, timeout=5.0):
    """Waits until each (recorder, n) got n `event`s, then checks that exactly that many came."""
    def done():
        return all(len(r.events(event)) >= n for r, n in pairs)
    try:
        eventually(done, timeout, what)
    except AssertionError:
        pass
    time.sleep(0.3)
    assert [len(r.events(event)) for r, _ in pairs] == [n for _, n in pairs], \
        f"{what}: deliveries per socket"


def pattern(n, seed=0):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def assert_ok(res, key, most, what=None):
    """An answer {ok: True, KEY: n}: the hub counts the sockets of the node that served the call
    only (docs/configuration.md, cluster), so through the proxy n is at most `most`; what each
    client got is counted separately."""
    what = what or key
    assert sorted(res) == sorted(["ok", key]), f"{what}: {res}"
    assert res["ok"] is True, f"{what}: {res}"
    assert isinstance(res[key], int) and 0 <= res[key] <= most, f"{what}: {res}"


def assert_recipients(res, most, what="management emit"):
    """A management emit's answer {recipients: n}, n at most `most` (see assert_ok)."""
    assert list(res) == ["recipients"], f"{what}: {res}"
    assert isinstance(res["recipients"], int) and 0 <= res["recipients"] <= most, f"{what}: {res}"
