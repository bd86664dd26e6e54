// A peer link cut and restored: hub-0 reaches hub-1 through a TCP relay this test controls
// (hub-0 dials, its member list points at the relay; hub-1's list has hub-0's real address).
// Cutting the relay's connections breaks the link at once; pausing them makes it go silent, so
// the heartbeat timeout ends it. Either way both nodes take the other out of routing, hub-0
// redials, and after the relink each has the other's rooms again: broadcasts reach the members
// on the other node exactly once, rooms joined while the link was down included.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import {
  startClusterNode,
  apiCall as api,
  call,
  roomMember,
  assertCounts,
  ClientPool,
  eventually,
  lifecycle,
  presetPort,
} from "./harness.mjs";

const TOKEN = "cluster-links-token-0123456789abcdef";
const IPS = ["127.0.0.31", "127.0.0.32"];
const HEARTBEAT_TIMEOUT_MS = 1000;
const PEER_PORT = presetPort();
const pool = new ClientPool();
let nodes = [];
let relay;

/** Forwards TCP connections from 127.0.0.30:0 to `target`; can cut or pause them all. */
async function startRelay(target) {
  const pairs = new Set();
  let paused = false;
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target.port, target.host);
    const pair = { inbound, outbound };
    pairs.add(pair);
    const drop = () => {
      inbound.destroy();
      outbound.destroy();
      pairs.delete(pair);
    };
    inbound.on("error", drop).on("close", drop);
    outbound.on("error", drop).on("close", drop);
    inbound.on("data", (d) => paused || outbound.write(d));
    outbound.on("data", (d) => paused || inbound.write(d));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.30", resolve));
  return {
    address: `127.0.0.30:${server.address().port}`,
    connections: () => pairs.size,
    /** Closes every relayed connection (new ones are relayed again). */
    cut() {
      for (const { inbound, outbound } of pairs) {
        inbound.destroy();
        outbound.destroy();
      }
      pairs.clear();
    },
    /** Drops every byte in both directions while the connections stay open. */
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const linked = async (node) => (await api(node, "GET", "/v1/stats")).nodes;

before(async () => {
  relay = await startRelay({ host: IPS[1], port: PEER_PORT });
  const start = (i, members) =>
    startClusterNode({
      id: `hub-${i}`,
      ip: IPS[i],
      peerPort: PEER_PORT,
      members,
      token: TOKEN,
      heartbeatTimeout: HEARTBEAT_TIMEOUT_MS,
    });
  nodes = await Promise.all([
    start(0, [`hub-0=${IPS[0]}:${PEER_PORT}`, `hub-1=${relay.address}`]),
    start(1, [`hub-0=${IPS[0]}:${PEER_PORT}`, `hub-1=${IPS[1]}:${PEER_PORT}`]),
  ]);
  for (const node of nodes) await eventually(async () => (await linked(node)) === 2, 10_000, "linked");
  assert.equal(relay.connections(), 1, "the link goes through the relay");
});
lifecycle(pool, {
  servers: () => nodes,
  label: "at the end of link tests",
  cleanup: () => relay.close(),
});

const member = (node, rooms) => roomMember(pool, node.url, rooms, { transports: ["websocket"] });

async function emitCounted(from, room, to, event) {
  assert.equal((await call(from, "roomcast:emit", { room, event, args: [] })).ok, true);
  await assertCounts(to, event, `${event} to ${room}`);
}

it("a cut link leaves routing at once, relinks, and both sides get each other's rooms again", async () => {
  const a = await member(nodes[0], ["room:cut"]);
  const b = await member(nodes[1], ["room:cut"]);
  await emitCounted(a, "room:cut", [[b, 1], [a, 0]], "before");

  relay.cut();
  // Both ends see the stream close; neither waits for a heartbeat timeout.
  await eventually(async () => (await linked(nodes[0])) === 1 && (await linked(nodes[1])) === 1, 2000, "out of routing");
  // A room joined on hub-1 while the link is down reaches hub-0 with the full list on relink.
  const late = await member(nodes[1], ["room:while-down"]);
  await eventually(async () => (await linked(nodes[0])) === 2 && (await linked(nodes[1])) === 2, 10_000, "relinked");

  await emitCounted(a, "room:cut", [[b, 1], [a, 0], [late, 0]], "after");
  const sender = await member(nodes[0], ["room:while-down"]);
  await emitCounted(sender, "room:while-down", [[late, 1], [sender, 0], [b, 0]], "joined-while-down");
  // And the other way round.
  await emitCounted(b, "room:cut", [[a, 1], [b, 0]], "back");
});

it("a silent link (bytes dropped, connection open) leaves routing within the heartbeat timeout", async () => {
  const a = await member(nodes[0], ["room:silent"]);
  const b = await member(nodes[1], ["room:silent"]);
  relay.pause();
  const t0 = Date.now();
  await eventually(async () => (await linked(nodes[0])) === 1 && (await linked(nodes[1])) === 1, 10_000, "silent peer out of routing");
  const took = Date.now() - t0;
  assert.ok(took >= HEARTBEAT_TIMEOUT_MS * 0.5, `not before the heartbeat timeout (${took} ms)`);
  assert.ok(took <= HEARTBEAT_TIMEOUT_MS + 3000, `within the heartbeat timeout, with slack (${took} ms)`);
  relay.cut();
  relay.resume();
  await eventually(async () => (await linked(nodes[0])) === 2 && (await linked(nodes[1])) === 2, 10_000, "relinked");
  await emitCounted(a, "room:silent", [[b, 1], [a, 0]], "after-silence");
  assert.equal(nodes[0].exited, null);
});

it("a management call naming a socket of an unlinked member answers 503, not a silent success", async () => {
  const b = await member(nodes[1], []);
  const join = (node) =>
    fetch(`${node.api}/v1/namespaces/%2F/sockets/join`, {
      method: "POST",
      headers: { authorization: `Bearer ${node.token}`, "content-type": "application/json" },
      body: JSON.stringify({ socketIds: [b.id], join: ["room:unlinked"] }),
      signal: AbortSignal.timeout(5000),
    });
  relay.pause(); // redials hang too while paused
  await eventually(async () => (await linked(nodes[0])) === 1, 10_000, "hub-1 out of hub-0's routing");
  const res = await join(nodes[0]);
  assert.equal(res.status, 503);
  assert.match(res.headers.get("content-type"), /application\/problem\+json/);
  const problem = await res.json();
  assert.equal(problem.type, "https://roomcast.dev/problems/unavailable");
  assert.match(problem.detail, /"hub-1"/);
  relay.cut();
  relay.resume();
  await eventually(async () => (await linked(nodes[0])) === 2 && (await linked(nodes[1])) === 2, 10_000, "relinked");
  const ok = await join(nodes[0]);
  assert.equal(ok.status, 200, await ok.clone().text());
  const a = await member(nodes[0], ["room:unlinked"]);
  await emitCounted(a, "room:unlinked", [[b, 1], [a, 0]], "after-relink");
});
