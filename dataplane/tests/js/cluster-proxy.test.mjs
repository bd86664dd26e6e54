// No sticky sessions: a 3-node cluster of the real binary (127.0.0.11-.13) behind the
// round-robin TCP proxy (rr-proxy on 127.0.0.10), where every new connection goes to the next
// node. Real socket.io-clients on polling, WebSocket and polling-then-upgrade talk to the
// proxy only; requests for a session another node owns are forwarded to that owner. Raw HTTP
// and WebSocket requests sent straight to the wrong node prove the forwarding itself.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  startServer,
  startCluster,
  apiCall as api,
  metric,
  call,
  roomMember,
  assertCounts,
  assertRoomEmit,
  ClientPool,
  eventually,
  sleep,
  eioUrl,
  freshHttp,
  http,
  pollingHandshake,
  pollGet,
  pollPost,
  assertEioError,
  RawWs,
  SEP,
  lifecycle,
} from "./harness.mjs";

const IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
const PROXY_IP = "127.0.0.10";
const PING_INTERVAL_MS = 3000;
const pool = new ClientPool();
let nodes = [];
let startNode;
let linked;
let proxy;

/** The member id a session id names (its suffix is the base64url of the owner's id). */
const ownerOf = (sid) => Buffer.from(sid.slice(16), "base64url").toString();

/** The sum of a counter over every node. */
const total = async (name) => (await Promise.all(nodes.map((n) => metric(n, name)))).reduce((a, b) => a + b, 0);

before(async () => {
  ({ nodes, startNode, linked } = await startCluster({
    ips: IPS,
    token: "cluster-proxy-test-token-0123456789",
    config: { engine: { pingInterval: PING_INTERVAL_MS, pingTimeout: 2000 } },
  }));
  proxy = await startServer({
    bin: "rr-proxy",
    listen: `${PROXY_IP}:0`,
    args: nodes.flatMap((n) => ["--backend", `${n.host}:${n.port}`]),
    readyRe: /^listening on ([0-9.]+):(\d+)$/m,
  });
});
lifecycle(pool, { servers: () => [...nodes, proxy], label: "at the end of the proxy tests" });

const TRANSPORTS = {
  polling: { transports: ["polling"] },
  websocket: { transports: ["websocket"] },
  default: {},
};

/** A client through the proxy; default clients are waited for until they upgraded. */
async function viaProxy(kind, rooms) {
  const s = await roomMember(pool, proxy.url, rooms, TRANSPORTS[kind]);
  if (kind === "default") {
    await eventually(() => s.io.engine.transport.name === "websocket", 5000, "upgrade to websocket");
  }
  s.kind = kind;
  s.owner = ownerOf(s.io.engine.id);
  return s;
}

/** Members of `room` through the proxy on every transport, until every node owns some. */
async function population(room, perKind = 3) {
  const members = [];
  for (let round = 0; round < 4; round++) {
    for (const kind of Object.keys(TRANSPORTS)) {
      for (let i = 0; i < perKind; i++) members.push(await viaProxy(kind, [room]));
    }
    if (new Set(members.map((s) => s.owner)).size === nodes.length) break;
  }
  assert.deepEqual(
    [...new Set(members.map((s) => s.owner))].sort(),
    ["hub-0", "hub-1", "hub-2"],
    "members on every node",
  );
  const outsiders = [];
  for (const kind of Object.keys(TRANSPORTS)) outsiders.push(await viaProxy(kind, [`${room}:outside`]));
  return { members, outsiders };
}

it("clients on every transport connect and talk through the round-robin proxy", async () => {
  const before = {
    requests: await total("roomcast_forwarded_requests_total"),
    upgrades: await total("roomcast_forwarded_upgrades_total"),
  };
  const { members, outsiders } = await population("room:p1");
  for (const s of [...members, ...outsiders]) {
    assert.equal(s.connected, true, `${s.kind} client connected`);
    // A round trip on the session: the join answer came back through the proxy.
    assert.deepEqual(await call(s, "roomcast:join", "room:p1:extra"), { ok: true }, `${s.kind} round trip`);
  }
  // Long-polling clients keep working across a ping interval (the proxy holds their GETs).
  const polling = members.filter((s) => s.kind === "polling");
  await sleep(PING_INTERVAL_MS + 500);
  for (const s of polling) {
    assert.equal(s.connected, true, "polling client still connected after a ping interval");
    assert.deepEqual(await call(s, "roomcast:join", "room:p1:later"), { ok: true });
  }
  // A polling client's GET and POST overlap, so they use two connections, which the proxy
  // sends to two nodes. (Upgrades usually are forwarded too, but by chance they may all land
  // on their owners: the raw tests below prove upgrade forwarding.)
  assert.ok(
    (await total("roomcast_forwarded_requests_total")) > before.requests,
    "some polling requests were forwarded",
  );
  const upgrades = (await total("roomcast_forwarded_upgrades_total")) - before.upgrades;
  console.log(`# forwarded upgrades through the proxy: ${upgrades}`);
  assert.equal(await total("roomcast_forward_failures_total"), 0);
});

it("broadcasts through the proxy reach every member once and no outsider", async () => {
  const { members, outsiders } = await population("room:p2");
  await assertRoomEmit(members, outsiders, "room:p2", "roomcast:emit through the proxy");

  // From the management API of one node, to the room plus one outsider by socket id.
  const target = outsiders[0];
  await api(nodes[1], "POST", "/v1/namespaces/%2F/emit", { event: "news", rooms: ["room:p2", target.id] });
  await assertCounts(
    [...members.map((s) => [s, 1]), ...outsiders.map((s) => [s, s === target ? 1 : 0])],
    "news",
    "management emit to clients behind the proxy",
  );
});

it("broadcasts with acks and fetchSockets see the clients behind the proxy", async () => {
  const { members, outsiders } = await population("room:p3", 1);
  for (const s of members) s.on("ask", (n, cb) => cb(`${s.id}:${n}`));
  const out = await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", {
    event: "ask",
    args: [5],
    rooms: ["room:p3"],
    ackTimeoutMs: 5000,
  });
  assert.equal(out.recipients, members.length, JSON.stringify(out));
  assert.equal(out.timedOut, false);
  assert.deepEqual(
    out.acks.map((x) => [x.socketId, x.args]).sort(),
    members.map((s) => [s.id, [`${s.id}:5`]]).sort(),
  );
  for (const s of outsiders) assert.deepEqual(s.got, [], `${s.kind} outsider got nothing`);

  const body = await api(nodes[2], "POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: ["room:p3"] });
  assert.deepEqual(body.sockets.map((s) => s.id).sort(), members.map((s) => s.id).sort());
});

/** A polling session opened on `owner` and connected to the main namespace; returns its ids. */
async function pollingSession(owner) {
  const { sid } = await pollingHandshake(owner);
  assert.equal(ownerOf(sid), `hub-${nodes.indexOf(owner)}`);
  const res = await pollPost(owner, sid, "40");
  assert.equal(res.status, 200, res.body);
  const got = await pollGet(owner, sid);
  assert.match(got.body, /^40\{"sid":"[^"]+"/, "CONNECT reply");
  return { sid, socketId: JSON.parse(got.body.split(SEP)[0].slice(2)).sid };
}

it("a polling session opened on one node is served when its requests land on the others", async () => {
  const [a, b, c] = nodes;
  const { sid, socketId } = await pollingSession(a);
  const forwardedB = await metric(b, "roomcast_forwarded_requests_total");
  const forwardedC = await metric(c, "roomcast_forwarded_requests_total");

  // A GET held on node B (forwarded to A) is answered with an event sent to the socket.
  const held = pollGet(b, sid, PING_INTERVAL_MS + 5000);
  await sleep(200);
  await api(c, "POST", "/v1/namespaces/%2F/emit", { event: "direct", args: [1], socketIds: [socketId] });
  const res = await held;
  assert.equal(res.status, 200, res.body);
  assert.equal(res.body, '42["direct",1]');

  // A long poll with nothing to say waits for the ping; the forwarder does not cut it short.
  const started = Date.now();
  const ping = await pollGet(c, sid, PING_INTERVAL_MS + 5000);
  assert.equal(ping.status, 200, ping.body);
  assert.equal(ping.body, "2");
  assert.ok(Date.now() - started >= 1000, `ping came after ${Date.now() - started} ms`);
  // The pong and a client event go through node B, on fresh connections (no keep-alive).
  const url = eioUrl(b, { EIO: "4", transport: "polling", sid });
  const post = (body) =>
    freshHttp(url, { method: "POST", body, headers: { "content-type": "text/plain;charset=UTF-8" } });
  assert.equal((await post("3")).status, 200);
  const joined = await post('421["roomcast:join","room:raw"]');
  assert.equal(joined.status, 200, joined.body);
  const ack = await freshHttp(eioUrl(c, { EIO: "4", transport: "polling", sid }));
  assert.equal(ack.body, '431[{"ok":true}]');

  // Node B forwarded the held GET and two POSTs, node C two GETs.
  assert.ok((await metric(b, "roomcast_forwarded_requests_total")) >= forwardedB + 3, "node B forwarded");
  assert.ok((await metric(c, "roomcast_forwarded_requests_total")) >= forwardedC + 2, "node C forwarded");
  const fetched = await api(b, "POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: ["room:raw"] });
  assert.deepEqual(fetched.sockets.map((s) => s.id), [socketId]);
});

it("requests through the proxy on fresh connections each are all served", async () => {
  // Each request is a new TCP connection, so the proxy spreads them over the three nodes.
  const res = await freshHttp(eioUrl(proxy, { EIO: "4", transport: "polling" }));
  assert.equal(res.status, 200, res.body);
  const { sid } = JSON.parse(res.body.slice(1));
  const url = eioUrl(proxy, { EIO: "4", transport: "polling", sid });
  const before = await total("roomcast_forwarded_requests_total");
  assert.equal((await freshHttp(url, { method: "POST", body: "40" })).status, 200);
  assert.match((await freshHttp(url)).body, /^40\{"sid"/);
  for (let i = 0; i < 4; i++) {
    const n = i + 1;
    const posted = await freshHttp(url, { method: "POST", body: `42${n}["roomcast:join","room:fresh"]` });
    assert.equal(posted.status, 200, posted.body);
    assert.equal((await freshHttp(url)).body, `43${n}[{"ok":true}]`);
  }
  // Ten requests over three nodes in turn: the owner got at most four of them.
  assert.ok((await total("roomcast_forwarded_requests_total")) - before >= 6, "forwarded through the proxy");
});

it("a WebSocket upgrade for one node's session works when sent to another node", async () => {
  const [a, b] = nodes;
  const { sid, socketId } = await pollingSession(a);
  const upgradesB = await metric(b, "roomcast_forwarded_upgrades_total");
  const ws = new RawWs(eioUrl(b, { EIO: "4", transport: "websocket", sid }, { ws: true }));
  await ws.open();
  ws.send("2probe");
  assert.equal(await ws.next(5000, "3probe"), "3probe");
  ws.send("5");
  // The session is now on this WebSocket: an emit to the socket arrives on it.
  await eventually(async () => {
    await api(a, "POST", "/v1/namespaces/%2F/emit", { event: "up", args: [], socketIds: [socketId] });
    return ws.queue.includes('42["up"]');
  }, 5000, "emit over the forwarded websocket");
  ws.send('421["roomcast:join","room:ws"]');
  await eventually(() => ws.queue.includes('431[{"ok":true}]'), 5000, "ack over the forwarded websocket");
  assert.equal(await metric(b, "roomcast_forwarded_upgrades_total"), upgradesB + 1);
  // Polling is over for this session; the client closing the socket ends it on the owner.
  ws.close();
  await eventually(
    async () => {
      const res = await pollGet(a, sid);
      return res.status === 400 && JSON.parse(res.body).code === 1;
    },
    5000,
    "session gone after close",
  );
});

it("unknown, garbage and already-forwarded session ids get 400 code 1", async () => {
  const [a, b] = nodes;
  const unroutable = await metric(a, "roomcast_forward_unroutable_total");
  const strangerSid = randomBytes(12).toString("base64url") + Buffer.from("hub-9").toString("base64url");
  for (const sid of [strangerSid, "garbage", randomBytes(12).toString("base64url")]) {
    assertEioError(await pollGet(a, sid), 400, 1, "Session ID unknown", `GET sid ${sid}`);
    assertEioError(await pollPost(a, sid, "40"), 400, 1, "Session ID unknown", `POST sid ${sid}`);
  }
  const ws = new RawWs(eioUrl(a, { EIO: "4", transport: "websocket", sid: strangerSid }, { ws: true }));
  const refused = await ws.waitRefusedOrClosed();
  assert.equal(refused.refused?.status, 400, JSON.stringify(refused));
  assert.deepEqual(JSON.parse(refused.refused.body), { code: 1, message: "Session ID unknown" });
  assert.ok((await metric(a, "roomcast_forward_unroutable_total")) > unroutable);

  // A request marked as forwarded is never forwarded again: only the owner serves it.
  const { sid, socketId } = await pollingSession(b);
  const forwarded = await metric(a, "roomcast_forwarded_requests_total");
  const marked = { "x-roomcast-forwarded": "hub-x" };
  const url = (node) => eioUrl(node, { EIO: "4", transport: "polling", sid });
  assertEioError(await http(url(a), { headers: marked }), 400, 1, "Session ID unknown", "marked GET on node A");
  assert.equal(await metric(a, "roomcast_forwarded_requests_total"), forwarded, "not forwarded");
  // On the owner the mark changes nothing: the session is alive and served.
  await api(a, "POST", "/v1/namespaces/%2F/emit", { event: "still", socketIds: [socketId] });
  const res = await http(url(b), { headers: marked });
  assert.equal(res.status, 200, res.body);
  assert.equal(res.body, '42["still"]');
});

it("an oversized POST for another node's session is refused as on its owner", async () => {
  const [a, b] = nodes;
  const { sid } = await pollingSession(a);
  const body = "4" + "x".repeat(1_000_000);
  const res = await pollPost(b, sid, body);
  assert.equal(res.status, 413, res.body);
  assert.equal(JSON.parse(res.body).message, "Payload too large");
  await eventually(
    async () => {
      const got = await pollGet(a, sid);
      return got.status === 400 || got.body.split(SEP).every((p) => p === "1" || p === "6");
    },
    5000,
    "the session closed on its owner",
  );
});

it("a node's sessions get 400 code 1 elsewhere once it is gone, and the proxy skips it", async () => {
  const [a, , c] = nodes;
  const { sid } = await pollingSession(c);
  c.proc.kill("SIGKILL");
  await eventually(async () => (await linked(a)) === 2, 5000, "node 2 out of routing");
  assertEioError(await pollGet(a, sid), 400, 1, "Session ID unknown", "GET for a dead node's session");
  // The proxy skips the refusing backend: new clients still connect on every transport.
  for (const kind of Object.keys(TRANSPORTS)) {
    for (let i = 0; i < 3; i++) {
      const s = await viaProxy(kind, ["room:survivors"]);
      assert.notEqual(s.owner, "hub-2");
    }
  }
  nodes[2] = await startNode(2);
  await eventually(async () => (await linked(a)) === 3, 10_000, "node 2 back");
});
