// A 3-node cluster of the real binary on loopback (127.0.0.11, .12, .13): clients on every
// node, broadcasts from clients (`roomcast:emit` policies) and from the management API of one
// node, every delivery counted exactly: each member once, non-members and the sender never.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import {
  startCluster,
  apiCall as api,
  metric,
  call,
  roomMember,
  assertCounts,
  assertRoomEmit,
  ClientPool,
  eventually,
  assertBytes,
  lifecycle,
} from "./harness.mjs";

const IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
const HEARTBEAT_TIMEOUT_MS = 1000;
const pool = new ClientPool();
let nodes = [];
let startNode;
let linked;

before(async () => {
  ({ nodes, startNode, linked } = await startCluster({
    ips: IPS,
    token: "cluster-test-token-0123456789abcdef",
    heartbeatTimeout: HEARTBEAT_TIMEOUT_MS,
  }));
});
lifecycle(pool, { servers: () => nodes, label: "at the end of cluster tests" });

/** Connects a client to a node (alternating transports) and joins rooms through policies. */
const member = (node, rooms, transport = "websocket") =>
  roomMember(pool, node.url, rooms, { transports: [transport] });

/** Clients on every node: two members of `room` each (websocket, polling), one outsider. */
async function population(room) {
  const members = [];
  const outsiders = [];
  for (const node of nodes) {
    members.push(await member(node, [room], "websocket"));
    members.push(await member(node, [room], "polling"));
    outsiders.push(await member(node, [`${room}:outside`], "websocket"));
  }
  return { members, outsiders };
}

it("links every node to every other", async () => {
  for (const node of nodes) {
    assert.equal(await linked(node), 3);
    assert.equal(await metric(node, "roomcast_peers"), 2);
    assert.equal(await metric(node, "roomcast_peers_connected"), 2);
  }
});

it("a client's roomcast:emit reaches every member on every node exactly once", async () => {
  const { members, outsiders } = await population("room:1");
  await assertRoomEmit(members, outsiders, "room:1", "roomcast:emit from node 0");
  // One copy per destination node, whatever the number of recipients there (the first
  // broadcast of this cluster: nothing else was sent before).
  assert.equal(await metric(nodes[0], "roomcast_peer_messages_sent_total"), 2);
  assert.equal(await metric(nodes[1], "roomcast_peer_messages_received_total"), 1);
  assert.equal(await metric(nodes[2], "roomcast_peer_messages_received_total"), 1);
  assert.equal(await metric(nodes[0], "roomcast_peer_messages_dropped_total"), 0);

  // From another node too, to a room its sender shares with members of two rooms.
  const double = await member(nodes[2], ["room:1", "room:3"]);
  const sender1 = members[2]; // on node 1
  assert.deepEqual(await call(sender1, "roomcast:join", "room:3"), { ok: true });
  await call(sender1, "roomcast:emit", { rooms: ["room:1", "room:3"], event: "both", args: [2] });
  await assertCounts(
    [
      ...members.filter((s) => s !== sender1).map((s) => [s, 1]),
      [sender1, 0],
      [double, 1],
      ...outsiders.map((s) => [s, 0]),
    ],
    "both",
    "emit to two rooms from node 1",
  );
});

it("the development relay's broadcasts reach the sender's rooms on every node", async () => {
  const clients = [];
  for (const node of nodes) {
    for (const transport of ["websocket", "polling"]) {
      const s = await member(node, [], transport);
      assert.equal((await call(s, "join", "relay:1")).ok, true);
      clients.push(s);
    }
  }
  const outsider = await member(nodes[1], ["room:relay-outside"]);
  const [sender, ...others] = clients;
  assert.equal((await call(sender, "chat", "hello")).ok, true);
  await assertCounts(
    [...others.map((s) => [s, 1]), [sender, 0], [outsider, 0]],
    "chat",
    "relay broadcast",
  );
});

it("binary attachments cross nodes", async () => {
  const a = await member(nodes[0], ["room:bin"]);
  const b = await member(nodes[1], ["room:bin"]);
  const c = await member(nodes[2], ["room:bin"], "polling");
  const got = new Promise((resolve) => c.once("blob", resolve));
  const res = await call(a, "roomcast:emit", {
    room: "room:bin",
    event: "blob",
    args: [Buffer.from([0, 1, 2, 255])],
  });
  assert.equal(res.ok, true, JSON.stringify(res));
  assertBytes(await got, Buffer.from([0, 1, 2, 255]), "binary at node 2");
  await assertCounts([[b, 1], [c, 1], [a, 0]], "blob", "binary emit");
  assertBytes(b.got[0][1], Buffer.from([0, 1, 2, 255]), "binary at node 1");
});

it("a management API emit on one node reaches members on the others", async () => {
  const { members, outsiders } = await population("room:4");
  const out = await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", {
    event: "news",
    args: ["from the app"],
    rooms: ["room:4"],
  });
  assert.equal(out.recipients, 2, "recipients counts this node's sockets");
  await assertCounts(
    [...members.map((s) => [s, 1]), ...outsiders.map((s) => [s, 0])],
    "news",
    "management emit to room:4",
  );

  // The whole namespace, except one room; and one socket on another node by its id.
  await api(nodes[1], "POST", "/v1/namespaces/%2F/emit", { event: "all", except: ["room:4:outside"] });
  await assertCounts(
    [...members.map((s) => [s, 1]), ...outsiders.map((s) => [s, 0])],
    "all",
    "namespace emit except the outsiders' room",
  );
  const target = outsiders[2]; // on node 2
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { event: "dm", socketIds: [target.id] });
  await assertCounts(
    [...members.map((s) => [s, 0]), ...outsiders.map((s) => [s, s === target ? 1 : 0])],
    "dm",
    "emit to a socket id on another node",
  );
});

it("a room broadcast goes only to the nodes with members of the room", async () => {
  const a = await member(nodes[0], ["room:narrow"]);
  const b = await member(nodes[1], ["room:narrow"], "polling");
  const c = await member(nodes[2], ["room:elsewhere"]);
  const received = () => Promise.all(nodes.map((n) => metric(n, "roomcast_peer_messages_received_total")));
  const before = await received();
  for (let i = 0; i < 20; i++) {
    assert.equal((await call(a, "roomcast:emit", { room: "room:narrow", event: "n", args: [i] })).ok, true);
  }
  await assertCounts([[b, 20], [a, 0], [c, 0]], "n", "narrow room emits");
  assert.deepEqual(b.got.map(([, i]) => i), [...Array(20).keys()], "in order");
  const after = await received();
  assert.equal(after[1] - before[1], 20, "node 1 (members) got each broadcast once");
  assert.equal(after[2] - before[2], 0, "node 2 (no members) got none");

  // Once c's join is acked every node knows, so the next emit reaches it.
  assert.deepEqual(await call(c, "roomcast:join", "room:narrow"), { ok: true });
  await call(a, "roomcast:emit", { room: "room:narrow", event: "m", args: [] });
  await assertCounts([[b, 1], [c, 1], [a, 0]], "m", "emit after a join on a third node");

  // An emit to one socket goes to that socket's node only.
  const mid = await received();
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { event: "dm", socketIds: [b.id] });
  await assertCounts([[b, 1], [c, 0]], "dm", "emit to one socket");
  const end = await received();
  assert.equal(end[1] - mid[1], 1);
  assert.equal(end[2] - mid[2], 0, "the other node is not bothered");
});

it("a socketsJoin answered by one node is known to all: an emit from a third node reaches the joined sockets", async () => {
  for (let round = 0; round < 5; round++) {
    const b = await member(nodes[1], []);
    const room = `joined-remotely:${round}`;
    await api(nodes[0], "POST", "/v1/namespaces/%2F/sockets/join", { socketIds: [b.id], join: [room] });
    await api(nodes[2], "POST", "/v1/namespaces/%2F/emit", { event: "hey", rooms: [room] });
    await assertCounts([[b, 1]], "hey", `round ${round}: emit from node 2 after a join through node 0`);
  }
});

it("socketsJoin, socketsLeave and disconnectSockets on one node act on every node", async () => {
  const a = await member(nodes[0], []);
  const b = await member(nodes[1], [], "polling");
  const c = await member(nodes[2], []);
  const route = (what) => `/v1/namespaces/%2F/sockets/${what}`;
  // Counts are the serving node's; the peers apply the operation to their own sockets.
  assert.equal((await api(nodes[0], "POST", route("join"), { socketIds: [b.id, c.id], join: ["picked"] })).matched, 0);
  // Sent after the join over the same links, so the joined sockets get it.
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { event: "picked", rooms: ["picked"] });
  await assertCounts([[a, 0], [b, 1], [c, 1]], "picked", "emit after a remote join");
  const rooms = await api(nodes[2], "GET", "/v1/namespaces/%2F/rooms");
  assert.equal(rooms.rooms.find((r) => r.name === "picked")?.members, 2, JSON.stringify(rooms));

  await api(nodes[0], "POST", route("leave"), { rooms: ["picked"], leave: ["picked"] });
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { event: "left", rooms: ["picked"] });
  await assertCounts([[a, 0], [b, 0], [c, 0]], "left", "emit after a remote leave");

  const gone = new Promise((resolve) => c.once("disconnect", resolve));
  await api(nodes[1], "POST", route("disconnect"), { socketIds: [c.id] });
  assert.equal(await gone, "io server disconnect");
  assert.equal(b.connected, true);
  assert.equal(a.connected, true);
});

it("fetchSockets and rooms on one node see the sockets of every node", async () => {
  const a = await member(nodes[0], ["room:f1"]);
  const b = await member(nodes[1], ["room:f1"], "polling");
  const c = await member(nodes[2], ["room:f1", "room:f2"]);
  const body = await api(nodes[1], "POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: ["room:f1"], except: [a.id] });
  assert.deepEqual(body.sockets.map((s) => s.id).sort(), [b.id, c.id].sort());
  const remote = body.sockets.find((s) => s.id === c.id);
  assert.deepEqual(remote.rooms, [c.id, "room:f1", "room:f2"]);
  assert.match(remote.handshake.url, /^\/socket\.io\/\?/, "the handshake as its own node saw it");
  const byId = await api(nodes[0], "POST", "/v1/namespaces/%2F/sockets/fetch", { socketIds: [c.id] });
  assert.deepEqual(byId.sockets.map((s) => s.id), [c.id]);

  const { rooms } = await api(nodes[0], "GET", "/v1/namespaces/%2F/rooms");
  const count = (name) => rooms.find((r) => r.name === name)?.members;
  assert.equal(count("room:f1"), 3, JSON.stringify(rooms));
  assert.equal(count("room:f2"), 1, JSON.stringify(rooms));
});

it("a management API emit with acks collects the acks of every node", async () => {
  const a = await member(nodes[0], ["room:ask"]);
  const b = await member(nodes[1], ["room:ask"], "polling");
  const c = await member(nodes[2], ["room:ask"]);
  for (const s of [a, b, c]) s.on("ask", (n, cb) => cb(`${s.id}:${n}`));
  const out = await api(nodes[1], "POST", "/v1/namespaces/%2F/emit", {
    event: "ask",
    args: [7],
    rooms: ["room:ask"],
    ackTimeoutMs: 5000,
  });
  assert.equal(out.recipients, 3, JSON.stringify(out));
  assert.equal(out.timedOut, false);
  assert.deepEqual(
    out.acks.map((x) => [x.socketId, x.args]).sort(),
    [a, b, c].map((s) => [s.id, [`${s.id}:7`]]).sort(),
  );

  // A silent socket on another node: its node reports the timeout with the acks that came.
  const silent = await member(nodes[2], ["room:ask"]);
  silent.on("ask", () => {});
  const started = Date.now();
  const late = await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", {
    event: "ask",
    args: [8],
    rooms: ["room:ask"],
    ackTimeoutMs: 400,
  });
  assert.ok(Date.now() - started < 3000, `returned after the timeout (${Date.now() - started} ms)`);
  assert.equal(late.recipients, 4, JSON.stringify(late));
  assert.equal(late.timedOut, true);
  assert.deepEqual(late.acks.map((x) => x.socketId).sort(), [a.id, b.id, c.id].sort());
});

it("a stopped node leaves routing within the heartbeat timeout and the rest go on", async () => {
  const a = await member(nodes[0], ["room:9"]);
  const b = await member(nodes[1], ["room:9"]);
  await member(nodes[2], ["room:9"]);
  nodes[2].proc.kill("SIGKILL");
  const t0 = Date.now();
  await eventually(async () => (await linked(nodes[0])) === 2 && (await linked(nodes[1])) === 2, 5000, "node 2 out of routing");
  // Generous slack for slow machines: what matters is that it happens, in heartbeat time.
  assert.ok(Date.now() - t0 <= HEARTBEAT_TIMEOUT_MS + 3000, `took ${Date.now() - t0} ms`);
  await call(a, "roomcast:emit", { room: "room:9", event: "still", args: [] });
  await assertCounts([[b, 1], [a, 0]], "still", "emit among the survivors");
  // Restarted on the same addresses, it links again.
  nodes[2] = await startNode(2);
  await eventually(async () => (await linked(nodes[0])) === 3 && (await linked(nodes[2])) === 3, 10_000, "node 2 back");
  const c = await member(nodes[2], ["room:9"]);
  await call(a, "roomcast:emit", { room: "room:9", event: "again", args: [] });
  await assertCounts([[b, 1], [c, 1], [a, 0]], "again", "emit after the restart");
});
