"""python-socketio's asyncio `socketio.AsyncClient` (aiohttp), unchanged, against the 3-member hub
behind the round-robin proxy (e2e/clients/stack.mjs). Each test names the feature it verifies;
each runs its own event loop (asyncio.run), so no pytest plugin is needed."""

import asyncio
import time

import pytest
import socketio

from common import (assert_ok, assert_recipients, b64, mgmt, owner_of, pattern, proxy_url, rand, record_client, control,
                    recovery_mgmt, recovery_url, token)

PROXY = None


@pytest.fixture(scope="module", autouse=True)
def client_line():
    global PROXY
    PROXY = proxy_url()
    record_client("socketio.AsyncClient")


async def eventually(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def settle_counts(pairs, event, what, timeout=5.0):
    try:
        await eventually(lambda: all(len(r.events(event)) >= n for r, n in pairs), timeout, what)
    except AssertionError:
        pass
    await asyncio.sleep(0.3)
    assert [len(r.events(event)) for r, _ in pairs] == [n for _, n in pairs], \
        f"{what}: deliveries per socket"


# The blocking control API calls run in a thread so the client's event loop keeps going.
async def amgmt(*args):
    return await asyncio.to_thread(mgmt, *args)


async def acontrol(*args):
    return await asyncio.to_thread(control, *args)


async def atoken(**claims):
    return await asyncio.to_thread(token, **claims)


class Peer:
    """An AsyncClient that records every event it gets and answers server acks from `answers`."""

    def __init__(self, namespace="/", **client_opts):
        self.namespace = namespace
        self.got = []
        self.answers = {}
        self.errors = []
        self.connects = 0
        self.disconnects = 0
        self.on_connect = []
        opts = {"reconnection": False}
        opts.update(client_opts)
        self.sio = socketio.AsyncClient(**opts)

        @self.sio.on("*", namespace=namespace)
        async def any_event(event, *args):
            self.got.append([event, *args])
            return self.answers.get(event)

        @self.sio.on("connect", namespace=namespace)
        async def on_connect():
            self.connects += 1
            for hook in self.on_connect:
                hook()

        @self.sio.on("disconnect", namespace=namespace)
        async def on_disconnect(*_reason):
            self.disconnects += 1

        @self.sio.on("connect_error", namespace=namespace)
        async def on_connect_error(data=None):
            self.errors.append(data)

    async def connect(self, sub=None, auth=None, transports=None):
        if auth is None:
            auth = {"token": await atoken(sub=sub or f"pya-{rand()}")}
        await self.sio.connect(PROXY, auth=auth, transports=transports,
                               namespaces=[self.namespace], wait_timeout=10)
        return self

    @property
    def id(self):
        return self.sio.get_sid(self.namespace)

    async def call(self, event, *args):
        return await self.sio.call(event, args if len(args) != 1 else args[0],
                                   namespace=self.namespace, timeout=5)

    async def join(self, room):
        assert await self.call("roomcast:join", room) == {"ok": True}, f"join {room}"

    def events(self, event=None):
        return [e for e in self.got if event is None or e[0] == event]


def run(test):
    """Runs an async test body with a `peers` factory; disconnects every client at the end."""
    async def main():
        made = []

        def peers(namespace="/", **opts):
            p = Peer(namespace, **opts)
            made.append(p)
            return p

        try:
            await test(peers)
        finally:
            for p in made:
                try:
                    await p.sio.disconnect()
                except Exception:  # noqa: BLE001 - best effort
                    pass
    asyncio.run(main())


async def fetch_socket(namespace, room):
    ns = namespace.replace("/", "%2F")
    return (await amgmt("POST", f"/v1/namespaces/{ns}/sockets/fetch", {"rooms": [room]}))["sockets"]


@pytest.mark.feature("websocket")
def test_websocket_only():
    async def body(peers):
        a = await peers().connect(transports=["websocket"])
        assert a.sio.transport() == "websocket"
        room = f"room:ws-{rand()}"
        await a.join(room)
        [sock] = await fetch_socket("/", room)
        assert "transport=websocket" in sock["handshake"]["query"]
    run(body)


@pytest.mark.feature("polling")
def test_polling_only():
    async def body(peers):
        a = await peers().connect(transports=["polling"])
        assert a.sio.transport() == "polling"
        await a.join(f"room:poll-{rand()}")
        res = await amgmt("POST", "/v1/namespaces/%2F/emit",
                          {"event": "push", "args": [1], "socketIds": [a.id]})
        assert_recipients(res, 1)
        await settle_counts([(a, 1)], "push", "push over polling")
        assert a.sio.transport() == "polling"
    run(body)


@pytest.mark.feature("upgrade")
def test_default_transports_upgrade():
    async def body(peers):
        a = await peers().connect()
        await eventually(lambda: a.sio.transport() == "websocket", 10, "upgrade to websocket")
        room = f"room:up-{rand()}"
        await a.join(room)
        [sock] = await fetch_socket("/", room)
        assert "transport=polling" in sock["handshake"]["query"], "the session started on polling"
        assert a.disconnects == 0
    run(body)


@pytest.mark.feature("namespace")
def test_custom_namespace():
    async def body(peers):
        room = f"room:ns-{rand()}"
        in_ns = await peers("/clients").connect()
        in_ns2 = await peers("/clients").connect()
        in_root = await peers().connect()
        for p in (in_ns, in_ns2, in_root):
            await p.join(room)
        assert_ok(await in_ns2.call("roomcast:emit", {"room": room, "event": "msg", "args": ["ns"]}),
                  "recipients", 1)
        res = await amgmt("POST", "/v1/namespaces/%2Fclients/emit",
                          {"event": "news", "args": ["api"], "rooms": [room]})
        assert_recipients(res, 2)
        await settle_counts([(in_ns, 1), (in_ns2, 0), (in_root, 0)], "msg", "roomcast:emit in /clients")
        await settle_counts([(in_ns, 1), (in_ns2, 1), (in_root, 0)], "news", "management emit")
        socks = await fetch_socket("/clients", room)
        assert sorted(s["id"] for s in socks) == sorted([in_ns.id, in_ns2.id])
    run(body)


@pytest.mark.feature("rooms")
def test_rooms_through_policies():
    async def body(peers):
        room = f"room:r-{rand()}"
        a = await peers().connect(sub="alice")
        b = await peers().connect(transports=["websocket"])
        c = await peers().connect(transports=["polling"])
        outsider = await peers().connect()
        for p in (a, b, c):
            await p.join(room)
        refused = await a.call("roomcast:join", "admin")
        assert refused["ok"] is False and refused["error"] == "forbidden"
        await a.join("user:alice")
        assert (await a.call("roomcast:join", "user:bob"))["error"] == "forbidden"
        assert_ok(await a.call("roomcast:emit",
                            {"room": room, "event": "msg", "args": ["hello", {"n": 1}]}), "recipients", 2)
        await settle_counts([(b, 1), (c, 1), (a, 0), (outsider, 0)], "msg", "roomcast:emit")
        assert b.events("msg") == [["msg", "hello", {"n": 1}]]
        assert await b.call("roomcast:leave", room) == {"ok": True}
        assert_ok(await a.call("roomcast:emit", {"room": room, "event": "msg", "args": ["again"]}),
                  "recipients", 1)
        await settle_counts([(b, 1), (c, 2)], "msg", "after b left")
    run(body)


@pytest.mark.feature("ack-client")
def test_acks_client_to_hub():
    async def body(peers):
        room = f"room:ack-{rand()}"
        a = await peers().connect()
        b = await peers().connect()
        await a.join(room)
        await b.join(room)
        assert_ok(await a.call("chat", "hi"), "delivered", 1)
        assert_ok(await a.call("roomcast:emit", {"room": room, "event": "chat", "args": [2]}), "recipients", 1)
        bad = await a.call("roomcast:emit", {"room": room})
        assert bad["ok"] is False and bad["error"] == "bad_request"
        fut = asyncio.get_running_loop().create_future()
        await a.sio.emit("chat", "x", callback=lambda *args: fut.set_result(args))
        got = await asyncio.wait_for(fut, 5)
        assert len(got) == 1
        assert_ok(got[0], "delivered", 1)
        await settle_counts([(b, 3), (a, 0)], "chat", "the events acknowledged")
    run(body)


@pytest.mark.feature("ack-server")
def test_acks_hub_to_client():
    async def body(peers):
        a = await peers().connect(transports=["websocket"])
        b = await peers().connect(transports=["polling"])
        for p in (a, b):
            p.answers["question"] = {"answer": 42, "from": "python-async"}
        res = await amgmt("POST", "/v1/namespaces/%2F/emit",
                          {"event": "question", "args": [{"n": 41}], "socketIds": [a.id, b.id],
                           "ackTimeoutMs": 5000})
        assert res["recipients"] == 2 and res["timedOut"] is False
        assert sorted(x["socketId"] for x in res["acks"]) == sorted([a.id, b.id])
        for x in res["acks"]:
            assert x["args"] == [{"answer": 42, "from": "python-async"}]
        assert a.events("question") == [["question", {"n": 41}]]
    run(body)


@pytest.mark.feature("binary")
def test_binary_both_ways():
    async def body(peers):
        room = f"room:bin-{rand()}"
        a = await peers().connect(transports=["websocket"])
        b = await peers().connect(transports=["polling"])
        await a.join(room)
        await b.join(room)
        big = pattern(70_000, 3)
        assert_ok(await a.call("bin", pattern(16), {"nested": big, "n": 1}), "delivered", 1)
        await settle_counts([(b, 1)], "bin", "binary relay")
        assert b.events("bin") == [["bin", pattern(16), {"nested": big, "n": 1}]]
        assert_ok(await b.call("bin", bytes([0, 255, 128])), "delivered", 1)
        await settle_counts([(a, 1)], "bin", "binary relay back")
        assert a.events("bin") == [["bin", bytes([0, 255, 128])]]
        a.answers["frame"] = [bytes([9, 8, 7])]
        res = await amgmt("POST", "/v1/namespaces/%2F/emit",
                          {"event": "frame", "args": [{"_binary": b64(bytes([1, 2, 3, 4]))}, "x"],
                           "socketIds": [a.id], "ackTimeoutMs": 5000})
        assert res["timedOut"] is False
        assert res["acks"][0]["args"] == [[{"_binary": b64(bytes([9, 8, 7]))}]]
        assert a.events("frame") == [["frame", bytes([1, 2, 3, 4]), "x"]]
    run(body)


@pytest.mark.feature("jwt")
def test_jwt_in_auth():
    async def body(peers):
        sub = f"jwt-{rand()}"
        a = await peers().connect(sub=sub)
        room = f"room:jwt-{rand()}"
        await a.join(room)
        [sock] = await fetch_socket("/", room)
        assert sock["id"] == a.id
        assert sock["claims"]["sub"] == sub and sock["claims"]["aud"] == "roomcast-clients"

        async def refusal(auth):
            p = peers()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await p.connect(auth=auth)
            assert p.errors, "connect_error handler called"
            return p.errors[-1]

        assert await refusal({}) == {"message": "authentication token missing",
                                     "data": {"reason": "token_missing"}}
        forged = await atoken(sub=sub, secret="another-secret-another-secret-0000")
        assert (await refusal({"token": forged}))["data"]["reason"] == "bad_signature"
        expired = await atoken(sub=sub, expiresIn=-3600)
        assert (await refusal({"token": expired}))["data"]["reason"] == "token_expired"
    run(body)


@pytest.mark.feature("reconnect")
def test_reconnect_after_node_killed():
    async def body(peers):
        room = f"room:rc-{rand()}"
        m = peers(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5,
                  randomization_factor=0)
        joins = []

        async def rejoin():
            joins.append(await m.sio.call("roomcast:join", room, timeout=5))

        m.on_connect.append(lambda: m.sio.start_background_task(rejoin))
        await m.connect()
        await eventually(lambda: len(joins) == 1, 5, "first join")
        first = m.id
        killed = (await acontrol("POST", "/kill", {"socketId": first}))["killed"]
        assert killed == owner_of(first)
        try:
            await eventually(lambda: m.sio.connected and len(joins) >= 2, 20, "reconnect, rejoin")
            assert joins[-1] == {"ok": True}
            assert m.id != first, "a new socket"
            assert owner_of(m.id) != killed, "on a surviving member"
            assert m.disconnects >= 1
            res = await amgmt("POST", "/v1/namespaces/%2F/emit",
                              {"event": "after", "args": ["back"], "rooms": [room]})
            assert_recipients(res, 1)
            await settle_counts([(m, 1)], "after", "a room message after the reconnect")
        finally:
            await acontrol("POST", "/restore")
    run(body)


@pytest.mark.feature("recovery-fallback")
def test_recovery_on_falls_back_to_a_fresh_session():
    """As the sync suite's test: no recovery in python-socketio, so a fresh session after a cut,
    and the offset as an extra last argument of events."""
    async def main():
        room = f"room:py-{rand()}"
        sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5,
                                   randomization_factor=0)
        got, joins, sids = [], [], []

        @sio.on("seq")
        async def on_seq(*args):
            got.append(list(args))

        async def rejoin():
            joins.append(await sio.call("roomcast:join", room, timeout=5))

        @sio.on("connect")
        async def on_connect():
            sids.append(sio.get_sid())
            sio.start_background_task(rejoin)

        url = await asyncio.to_thread(recovery_url)
        await sio.connect(url, auth={"token": await atoken(sub=f"py-{rand()}")}, transports=["websocket"],
                          wait_timeout=10)
        try:
            await eventually(lambda: joins == [{"ok": True}], 5, "first join")
            await asyncio.to_thread(recovery_mgmt, "POST", "/v1/namespaces/%2F/emit",
                                    {"event": "seq", "args": [1], "rooms": [room]})
            await eventually(lambda: len(got) == 1, 5, "the first event")
            assert got[0][0] == 1 and isinstance(got[0][1], str) and len(got[0]) == 2, got[0]
            assert (await acontrol("POST", "/recovery/cut"))["cut"] >= 1
            await eventually(lambda: len(sids) == 2 and len(joins) == 2, 15, "a fresh session")
            assert sids[1] != sids[0]
            await asyncio.to_thread(recovery_mgmt, "POST", "/v1/namespaces/%2F/emit",
                                    {"event": "seq", "args": [2], "rooms": [room]})
            await eventually(lambda: len(got) == 2, 5, "an event after the reconnect")
            assert got[1][0] == 2
        finally:
            await sio.disconnect()
    asyncio.run(main())
