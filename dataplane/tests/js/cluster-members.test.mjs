// Members that change at run time: nodes of the real binary on loopback (127.0.0.21, .22, .23)
// learn the cluster from a members file (`cluster.membersFile`) that the test rewrites on every
// node. A node added to the files joins within the discovery interval plus link time, and one
// removed leaves routing, while a client publishes to a room without a pause: members connected
// throughout get every message exactly once, in order.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startClusterNode, roomsMode, apiCall, metric, ClientPool, connected, eventually, sleep, lifecycle, presetPort } from "./harness.mjs";

const TOKEN = "cluster-members-token-0123456789abcdef";
const IPS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
const DISCOVERY_INTERVAL_MS = 200;
/** Discovery interval + dial (with backoff) + link: generous for slow machines. */
const JOIN_WITHIN_MS = 8000;
const PEER_PORT = presetPort();
const pool = new ClientPool();
const nodes = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-members-"));
const membersFile = (i) => path.join(dir, `members-${i}`);

/** Rewrites every node's members file (atomically: a new file renamed over the old one). */
function setMembers(ids) {
  const text = `# written by cluster-members.test.mjs\n${ids.map((i) => `hub-${i}=${IPS[i]}:${PEER_PORT}`).join("\n")}\n`;
  for (let i = 0; i < IPS.length; i++) {
    const tmp = `${membersFile(i)}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, membersFile(i));
  }
}

function startNode(i) {
  const ip = IPS[i];
  return startClusterNode({
    id: `hub-${i}`,
    ip,
    peerPort: PEER_PORT,
    token: TOKEN,
    config: {
      socketio: { namespaces: [{ name: "/", policies: { join: ["room:*"], emitToJoined: true } }] },
      cluster: {
        peerListen: `${ip}:${PEER_PORT}`,
        membersFile: membersFile(i),
        discoveryInterval: DISCOVERY_INTERVAL_MS,
        heartbeatInterval: 200,
        heartbeatTimeout: 1000,
        ...roomsMode(),
      },
    },
  });
}

const stats = (node) => apiCall(node, "GET", "/v1/stats");

/** Waits until `node` links to exactly the members `ids` and its ring is `ids`. */
async function sees(node, ids, what) {
  const want = ids.map((i) => `hub-${i}`);
  await eventually(
    async () => {
      const s = await stats(node);
      return s.nodes === ids.length && JSON.stringify(s.members) === JSON.stringify(want);
    },
    JOIN_WITHIN_MS,
    what,
  );
}

/** A client on `node` (joined to `room`) that records the `event` arguments it gets. */
async function member(node, room, transport = "websocket") {
  const s = pool.io(node.url, { transports: [transport] });
  await connected(s);
  assert.deepEqual(await s.timeout(3000).emitWithAck("roomcast:join", room), { ok: true });
  s.got = [];
  s.onAny((event, ...args) => s.got.push([event, ...args]));
  return s;
}

const numbers = (s, event) => s.got.filter(([e]) => e === event).map(([, n]) => n);

before(async () => {
  setMembers([0, 1]);
  nodes.push(await startNode(0), await startNode(1));
  for (const node of nodes) await sees(node, [0, 1], `${node.url} linked to its one peer`);
});
lifecycle(pool, {
  servers: () => nodes,
  label: "at the end of the members tests",
  cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
});

it("a node added to the members file joins while a room gets messages without a pause", async () => {
  const room = "room:live";
  const steady = [
    await member(nodes[0], room),
    await member(nodes[1], room),
    await member(nodes[1], room, "polling"),
  ];
  const publisher = await member(nodes[0], room);
  let sent = 0;
  const publish = setInterval(() => {
    publisher.emit("roomcast:emit", { room, event: "tick", args: [sent++] });
  }, 10);
  try {
    await sleep(300);
    // The new node starts knowing everyone; the others learn of it from their files.
    const t0 = Date.now();
    setMembers([0, 1, 2]);
    nodes.push(await startNode(2));
    for (const node of nodes) await sees(node, [0, 1, 2], `${node.url} sees 3 members`);
    const took = Date.now() - t0;
    assert.ok(took < JOIN_WITHIN_MS, `joined after ${took} ms`);
    assert.equal(await metric(nodes[0], "roomcast_members"), 3);
    assert.equal(await metric(nodes[0], "roomcast_peers_connected"), 2);
    // A member on the new node gets the room's messages from now on, each once, in order.
    const newcomer = await member(nodes[2], room);
    await sleep(300);
    clearInterval(publish);
    const total = sent;
    await eventually(
      () => steady.every((s) => numbers(s, "tick").length >= total),
      10_000,
      `every steady member got ${total} ticks`,
    ).catch(() => {});
    await sleep(300);
    const all = [...Array(total).keys()];
    for (const [i, s] of steady.entries()) {
      assert.deepEqual(numbers(s, "tick"), all, `steady member ${i}: every tick once, in order`);
    }
    const late = numbers(newcomer, "tick");
    assert.ok(late.length > 0, "the newcomer got ticks");
    const first = late[0];
    assert.deepEqual(late, all.slice(first), "the newcomer's ticks: once each, in order, none missing");
    assert.equal(numbers(publisher, "tick").length, 0, "the sender gets none of its own");

    // One broadcast now reaches members on every node exactly once.
    const res = await publisher.timeout(3000).emitWithAck("roomcast:emit", { room, event: "final", args: [] });
    assert.deepEqual(res, { ok: true, recipients: 1 });
    for (const s of [...steady, newcomer]) {
      await eventually(() => numbers(s, "final").length >= 1, 5000, "final broadcast");
    }
    await sleep(300);
    for (const s of [...steady, newcomer]) assert.equal(numbers(s, "final").length, 1);
  } finally {
    clearInterval(publish);
  }
});

it("a node removed from the members file leaves routing and the others go on", async () => {
  const room = "room:after";
  const a = await member(nodes[0], room);
  const b = await member(nodes[1], room);
  const c = await member(nodes[2], room, "polling");
  const epoch = await metric(nodes[0], "roomcast_membership_epoch");
  setMembers([0, 2]);
  await sees(nodes[0], [0, 2], "node 0 without node 1");
  await sees(nodes[2], [0, 2], "node 2 without node 1");
  assert.equal(await metric(nodes[0], "roomcast_members"), 2);
  assert.equal(await metric(nodes[0], "roomcast_membership_epoch"), epoch + 1);
  assert.ok((await metric(nodes[0], "roomcast_discovery_lookups_total")) > 0);
  assert.equal(await metric(nodes[0], "roomcast_discovery_failures_total"), 0);
  // Node 1 is out of routing: a broadcast from node 0 reaches node 2 only.
  await a.timeout(3000).emitWithAck("roomcast:emit", { room, event: "news", args: [1] });
  await eventually(() => numbers(c, "news").length === 1, 5000, "news on node 2");
  await sleep(300);
  assert.deepEqual([numbers(b, "news"), numbers(c, "news")], [[], [1]]);
  // And from node 2 back to node 0.
  await c.timeout(3000).emitWithAck("roomcast:emit", { room, event: "back", args: [2] });
  await eventually(() => numbers(a, "back").length === 1, 5000, "back on node 0");
  assert.deepEqual(numbers(b, "back"), []);

  // Node 1 keeps itself in its ring (every node is a member of its own) but links to nobody.
  await eventually(async () => (await stats(nodes[1])).nodes === 1, JOIN_WITHIN_MS, "node 1 unlinked");
  assert.ok((await stats(nodes[1])).members.includes("hub-1"));
});
