"""python-socketio's synchronous `socketio.Client`, unchanged, against the 3-member hub behind the
round-robin proxy (e2e/clients/stack.mjs). Each test names the feature it verifies."""

import threading
import time

import pytest
import socketio

from common import (assert_ok, assert_recipients, b64, eventually, mgmt, owner_of, pattern, proxy_url, rand, record_client,
                    recovery_mgmt, recovery_url, settle_counts, control, token)

PROXY = None


@pytest.fixture(scope="module", autouse=True)
def client_line():
    global PROXY
    PROXY = proxy_url()
    record_client("socketio.Client")


class Peer:
    """A socketio.Client that records every event it gets, and answers server acks from
    `answers` (event name -> value)."""

    def __init__(self, namespace="/", **client_opts):
        self.namespace = namespace
        self.lock = threading.Lock()
        self.got = []
        self.answers = {}
        self.errors = []
        self.connects = 0
        self.disconnects = 0
        self.on_connect = []
        opts = {"reconnection": False}
        opts.update(client_opts)
        self.sio = socketio.Client(**opts)

        @self.sio.on("*", namespace=namespace)
        def any_event(event, *args):
            with self.lock:
                self.got.append([event, *args])
            return self.answers.get(event)

        @self.sio.on("connect", namespace=namespace)
        def on_connect():
            self.connects += 1
            for hook in self.on_connect:
                hook()

        @self.sio.on("disconnect", namespace=namespace)
        def on_disconnect(*_reason):
            self.disconnects += 1

        @self.sio.on("connect_error", namespace=namespace)
        def on_connect_error(data=None):
            self.errors.append(data)

    def connect(self, sub=None, auth=None, transports=None):
        if auth is None:
            auth = {"token": token(sub=sub or f"py-{rand()}")}
        self.sio.connect(PROXY, auth=auth, transports=transports, namespaces=[self.namespace],
                         wait_timeout=10)
        return self

    @property
    def id(self):
        return self.sio.get_sid(self.namespace)

    def call(self, event, *args):
        return self.sio.call(event, args if len(args) != 1 else args[0], namespace=self.namespace,
                             timeout=5)

    def join(self, room):
        assert self.call("roomcast:join", room) == {"ok": True}, f"join {room}"

    def events(self, event=None):
        with self.lock:
            return [e for e in self.got if event is None or e[0] == event]

    def close(self):
        try:
            self.sio.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass


@pytest.fixture
def peers():
    made = []

    def make(namespace="/", **opts):
        p = Peer(namespace, **opts)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def fetch_socket(namespace, room):
    ns = namespace.replace("/", "%2F")
    return mgmt("POST", f"/v1/namespaces/{ns}/sockets/fetch", {"rooms": [room]})["sockets"]


@pytest.mark.feature("websocket")
def test_websocket_only(peers):
    a = peers().connect(transports=["websocket"])
    assert a.sio.transport() == "websocket"
    room = f"room:ws-{rand()}"
    a.join(room)
    [sock] = fetch_socket("/", room)
    assert "transport=websocket" in sock["handshake"]["query"]


@pytest.mark.feature("polling")
def test_polling_only(peers):
    a = peers().connect(transports=["polling"])
    assert a.sio.transport() == "polling"
    a.join(f"room:poll-{rand()}")
    # A push while the long-poll GET is pending.
    assert_recipients(mgmt("POST", "/v1/namespaces/%2F/emit",
                           {"event": "push", "args": [1], "socketIds": [a.id]}), 1)
    settle_counts([(a, 1)], "push", "push over polling")
    assert a.sio.transport() == "polling"


@pytest.mark.feature("upgrade")
def test_default_transports_upgrade(peers):
    a = peers().connect()
    eventually(lambda: a.sio.transport() == "websocket", 10, "upgrade to websocket")
    room = f"room:up-{rand()}"
    a.join(room)
    [sock] = fetch_socket("/", room)
    assert "transport=polling" in sock["handshake"]["query"], "the session started on polling"
    assert a.disconnects == 0


@pytest.mark.feature("namespace")
def test_custom_namespace(peers):
    room = f"room:ns-{rand()}"
    in_ns = peers("/clients").connect()
    in_ns2 = peers("/clients").connect()
    in_root = peers().connect()
    for p in (in_ns, in_ns2, in_root):
        p.join(room)
    assert_ok(in_ns2.call("roomcast:emit", {"room": room, "event": "msg", "args": ["ns"]}), "recipients", 1)
    assert_recipients(mgmt("POST", "/v1/namespaces/%2Fclients/emit",
                           {"event": "news", "args": ["api"], "rooms": [room]}), 2)
    settle_counts([(in_ns, 1), (in_ns2, 0), (in_root, 0)], "msg", "roomcast:emit in /clients")
    settle_counts([(in_ns, 1), (in_ns2, 1), (in_root, 0)], "news", "management emit to /clients")
    socks = fetch_socket("/clients", room)
    assert sorted(s["id"] for s in socks) == sorted([in_ns.id, in_ns2.id])


@pytest.mark.feature("rooms")
def test_rooms_through_policies(peers):
    room = f"room:r-{rand()}"
    a = peers().connect(sub="alice")
    b = peers().connect(transports=["websocket"])
    c = peers().connect(transports=["polling"])
    outsider = peers().connect()
    for p in (a, b, c):
        p.join(room)
    refused = a.call("roomcast:join", "admin")
    assert refused["ok"] is False and refused["error"] == "forbidden"
    a.join("user:alice")
    assert a.call("roomcast:join", "user:bob")["error"] == "forbidden"
    assert_ok(a.call("roomcast:emit", {"room": room, "event": "msg", "args": ["hello", {"n": 1}]}), "recipients", 2)
    settle_counts([(b, 1), (c, 1), (a, 0), (outsider, 0)], "msg", "roomcast:emit to the room")
    assert b.events("msg") == [["msg", "hello", {"n": 1}]]
    assert b.call("roomcast:leave", room) == {"ok": True}
    assert_ok(a.call("roomcast:emit", {"room": room, "event": "msg", "args": ["again"]}), "recipients", 1)
    settle_counts([(b, 1), (c, 2)], "msg", "after b left")


@pytest.mark.feature("ack-client")
def test_acks_client_to_hub(peers):
    room = f"room:ack-{rand()}"
    a = peers().connect()
    b = peers().connect()
    a.join(room)
    b.join(room)
    assert_ok(a.call("chat", "hi"), "delivered", 1)
    assert_ok(a.call("roomcast:emit", {"room": room, "event": "chat", "args": [2]}), "recipients", 1)
    bad = a.call("roomcast:emit", {"room": room})
    assert bad["ok"] is False and bad["error"] == "bad_request"
    # Several arguments in one ack come back as a tuple... here the hub answers one object.
    got = []
    done = threading.Event()
    a.sio.emit("chat", "x", callback=lambda *args: (got.append(args), done.set()))
    assert done.wait(5)
    assert len(got) == 1 and len(got[0]) == 1
    assert_ok(got[0][0], "delivered", 1)
    settle_counts([(b, 3), (a, 0)], "chat", "the events acknowledged")


@pytest.mark.feature("ack-server")
def test_acks_hub_to_client(peers):
    a = peers().connect(transports=["websocket"])
    b = peers().connect(transports=["polling"])
    for p in (a, b):
        p.answers["question"] = {"answer": 42, "from": "python"}
    res = mgmt("POST", "/v1/namespaces/%2F/emit",
               {"event": "question", "args": [{"n": 41}], "socketIds": [a.id, b.id],
                "ackTimeoutMs": 5000})
    assert res["recipients"] == 2 and res["timedOut"] is False
    assert sorted(x["socketId"] for x in res["acks"]) == sorted([a.id, b.id])
    for x in res["acks"]:
        assert x["args"] == [{"answer": 42, "from": "python"}]
    assert a.events("question") == [["question", {"n": 41}]]


@pytest.mark.feature("binary")
def test_binary_both_ways(peers):
    room = f"room:bin-{rand()}"
    a = peers().connect(transports=["websocket"])
    b = peers().connect(transports=["polling"])
    a.join(room)
    b.join(room)
    big = pattern(70_000, 3)
    assert_ok(a.call("bin", pattern(16), {"nested": big, "n": 1}), "delivered", 1)
    settle_counts([(b, 1)], "bin", "binary relay")
    assert b.events("bin") == [["bin", pattern(16), {"nested": big, "n": 1}]]
    assert_ok(b.call("bin", bytes([0, 255, 128])), "delivered", 1)
    settle_counts([(a, 1)], "bin", "binary relay back")
    assert a.events("bin") == [["bin", bytes([0, 255, 128])]]
    a.answers["frame"] = [bytes([9, 8, 7])]
    res = mgmt("POST", "/v1/namespaces/%2F/emit",
               {"event": "frame", "args": [{"_binary": b64(bytes([1, 2, 3, 4]))}, "x"],
                "socketIds": [a.id], "ackTimeoutMs": 5000})
    assert res["timedOut"] is False
    assert res["acks"][0]["args"] == [[{"_binary": b64(bytes([9, 8, 7]))}]]
    assert a.events("frame") == [["frame", bytes([1, 2, 3, 4]), "x"]]


@pytest.mark.feature("jwt")
def test_jwt_in_auth(peers):
    sub = f"jwt-{rand()}"
    a = peers().connect(sub=sub)
    room = f"room:jwt-{rand()}"
    a.join(room)
    [sock] = fetch_socket("/", room)
    assert sock["id"] == a.id
    assert sock["claims"]["sub"] == sub and sock["claims"]["aud"] == "roomcast-clients"

    def refusal(auth):
        p = peers()
        with pytest.raises(socketio.exceptions.ConnectionError):
            p.connect(auth=auth)
        assert p.errors, "connect_error handler called"
        return p.errors[-1]

    assert refusal({}) == {"message": "authentication token missing",
                           "data": {"reason": "token_missing"}}
    forged = token(sub=sub, secret="another-secret-another-secret-0000")
    assert refusal({"token": forged})["data"]["reason"] == "bad_signature"
    expired = token(sub=sub, expiresIn=-3600)
    assert refusal({"token": expired})["data"]["reason"] == "token_expired"


@pytest.mark.feature("reconnect")
def test_reconnect_after_node_killed(peers):
    room = f"room:rc-{rand()}"
    m = peers(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5,
              randomization_factor=0)
    joins = []

    def rejoin():
        # From a background task: a handler must not block the client's reader thread.
        m.sio.emit("roomcast:join", room, callback=lambda r: joins.append(r))

    m.on_connect.append(lambda: m.sio.start_background_task(rejoin))
    m.connect()
    eventually(lambda: len(joins) == 1, 5, "first join")
    first = m.id
    killed = control("POST", "/kill", {"socketId": first})["killed"]
    assert killed == owner_of(first)
    try:
        eventually(lambda: m.sio.connected and len(joins) >= 2, 20, "reconnect and rejoin")
        assert joins[-1] == {"ok": True}
        assert m.id != first, "a new socket"
        assert owner_of(m.id) != killed, "on a surviving member"
        assert m.disconnects >= 1
        assert_recipients(mgmt("POST", "/v1/namespaces/%2F/emit",
                               {"event": "after", "args": ["back"], "rooms": [room]}), 1)
        settle_counts([(m, 1)], "after", "a room message after the reconnect")
    finally:
        control("POST", "/restore")
        time.sleep(0.2)


@pytest.mark.feature("recovery-fallback")
def test_recovery_on_falls_back_to_a_fresh_session():
    """python-socketio does not implement connection state recovery: against a hub with it on,
    events carry the offset as an extra last argument, and after a cut the client reconnects
    to a fresh session (new socket id, rooms joined again by the app), never to an error."""
    room = f"room:py-{rand()}"
    sio = socketio.Client(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5,
                          randomization_factor=0)
    got, joins, sids = [], [], []

    @sio.on("seq")
    def on_seq(*args):
        got.append(list(args))

    def rejoin():
        sio.emit("roomcast:join", room, callback=lambda r: joins.append(r))

    @sio.on("connect")
    def on_connect():
        sids.append(sio.get_sid())
        sio.start_background_task(rejoin)

    sio.connect(recovery_url(), auth={"token": token(sub=f"py-{rand()}")}, transports=["websocket"],
                wait_timeout=10)
    try:
        eventually(lambda: joins == [{"ok": True}], 5, "first join")
        recovery_mgmt("POST", "/v1/namespaces/%2F/emit", {"event": "seq", "args": [1], "rooms": [room]})
        eventually(lambda: len(got) == 1, 5, "the first event")
        assert got[0][0] == 1 and isinstance(got[0][1], str) and len(got[0]) == 2, \
            f"the event and its offset: {got[0]}"
        assert control("POST", "/recovery/cut")["cut"] >= 1
        eventually(lambda: len(sids) == 2 and len(joins) == 2, 15, "reconnected to a fresh session")
        assert sids[1] != sids[0], "a new socket id: the client did not ask for recovery"
        recovery_mgmt("POST", "/v1/namespaces/%2F/emit", {"event": "seq", "args": [2], "rooms": [room]})
        eventually(lambda: len(got) == 2, 5, "an event after the reconnect")
        assert got[1][0] == 2
    finally:
        sio.disconnect()
