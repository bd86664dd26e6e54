// Room ownership (`cluster.rooms: owned`) on nodes of the real binary on loopback (127.0.0.81
// .. .84), with the member set in members files the test rewrites: each room's owner holds
// which nodes have members, senders cache its answers, and the member set changes under the
// rooms (3 -> 4 -> 3 members), moving their owners. Through all of it, "join, then emit from
// anywhere" reaches every member exactly once, a socket in several target rooms gets one copy,
// and the metrics show transitions told to owners only. A member that keeps the replicated
// view (an older version during a rolling upgrade) still sends and gets every broadcast.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  startClusterNode,
  apiCall as api,
  metric,
  roomMember,
  assertCounts,
  ClientPool,
  eventually,
  lifecycle,
  presetPort,
} from "./harness.mjs";

const TOKEN = "cluster-ownership-token-0123456789abcdef";
const IPS = ["127.0.0.81", "127.0.0.82", "127.0.0.83", "127.0.0.84"];
const PEER_PORT = presetPort();
const ROOMS = 24;
const pool = new ClientPool();
const nodes = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-ownership-"));
const membersFile = (i) => path.join(dir, `members-${i}`);

function setMembers(ids) {
  const text = `${ids.map((i) => `hub-${i}=${IPS[i]}:${PEER_PORT}`).join("\n")}\n`;
  for (let i = 0; i < IPS.length; i++) {
    fs.writeFileSync(`${membersFile(i)}.tmp`, text);
    fs.renameSync(`${membersFile(i)}.tmp`, membersFile(i));
  }
}

function startNode(i, rooms = "owned") {
  return startClusterNode({
    id: `hub-${i}`,
    ip: IPS[i],
    peerPort: PEER_PORT,
    token: TOKEN,
    cluster: {
      members: undefined,
      membersFile: membersFile(i),
      discoveryInterval: 200,
      rooms,
    },
  });
}

async function sees(node, ids) {
  const want = JSON.stringify(ids.map((i) => `hub-${i}`));
  await eventually(
    async () => {
      const s = await api(node, "GET", "/v1/stats");
      return s.nodes === ids.length && JSON.stringify(s.members) === want;
    },
    10_000,
    `${node.url} sees members ${want}`,
  );
}

const live = () => nodes.filter(Boolean);
const sum = async (name) => (await Promise.all(live().map((n) => metric(n, name)))).reduce((a, b) => a + b, 0);
const emit = (node, rooms, event, args = []) =>
  api(node, "POST", "/v1/namespaces/%2F/emit", { rooms, event, args });

/**
 * `ROOMS` rooms with one or two members each, on nodes chosen round-robin among `ids`; each
 * join is acknowledged before the next step. Returns [room, members].
 */
async function populate(tag, ids) {
  const rooms = [];
  for (let r = 0; r < ROOMS; r++) {
    const room = `room:${tag}-${r}`;
    const on = [ids[r % ids.length]];
    if (r % 3 === 0) on.push(ids[(r + 1) % ids.length]);
    const members = [];
    for (const i of on) {
      const s = await roomMember(pool, nodes[i].url, [room], { transports: ["websocket"] });
      s.node = i;
      members.push(s);
    }
    rooms.push([room, members]);
  }
  return rooms;
}

let round = 0;

/** From every node in `ids`, an emit to every room: each member gets one copy per emit. */
async function assertExact(rooms, ids, what) {
  const event = (r) => `round${round}-${r}`;
  round++;
  for (const [r, [room]] of rooms.entries()) {
    for (const i of ids) await emit(nodes[i], [room], event(r), [i]);
  }
  for (const [r, [, members]] of rooms.entries()) {
    await assertCounts(members.map((s) => [s, ids.length]), event(r), `${what}: room ${r}`);
  }
}

before(async () => {
  setMembers([0, 1, 2]);
  for (const i of [0, 1, 2]) nodes[i] = await startNode(i);
  for (const node of live()) await sees(node, [0, 1, 2]);
});
lifecycle(pool, {
  servers: live,
  label: "at the end of the ownership tests",
  cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
});

it("each room is in its owner's directory only, and emits from every node reach its members once", async () => {
  const rooms = await populate("a", [0, 1, 2]);
  // Every room with members is in exactly one directory: its owner's (nobody looked any up yet).
  assert.equal(await sum("roomcast_room_directory_rooms"), ROOMS);
  // 24 rooms, 8 of them with a second member: 32 transitions, each told to the owner only.
  assert.equal(await sum("roomcast_room_transitions_total"), ROOMS + ROOMS / 3);
  await assertExact(rooms, [0, 1, 2], "first emits");
  // The first emit from a node to a room it neither owns nor caches goes everywhere and looks
  // the room up; the second round is answered from the caches.
  const misses = await sum("roomcast_room_cache_misses_total");
  const hits = await sum("roomcast_room_cache_hits_total");
  assert.ok(misses > 0, "cold rooms were looked up");
  assert.equal(await sum("roomcast_room_lookups_total"), misses);
  const sent = await sum("roomcast_peer_messages_sent_total");
  for (const [r, [room]] of rooms.entries()) {
    for (const i of [0, 1, 2]) await emit(nodes[i], [room], `again${r}`, []);
  }
  for (const [r, [, members]] of rooms.entries()) {
    await assertCounts(members.map((s) => [s, 3]), `again${r}`, `cached emits: room ${r}`);
  }
  assert.equal(await sum("roomcast_room_cache_misses_total"), misses, "no cold room the second time");
  assert.equal(await sum("roomcast_room_cache_hits_total"), hits + 3 * ROOMS);
  // Warm rooms go only to the member nodes: 16 rooms with one member node, 8 with two, from
  // each of the 3 nodes, minus the copies a node would send itself.
  const copies = (await sum("roomcast_peer_messages_sent_total")) - sent;
  let expected = 0;
  for (let r = 0; r < ROOMS; r++) {
    const on = new Set([r % 3, ...(r % 3 === 0 ? [(r + 1) % 3] : [])]);
    for (const i of [0, 1, 2]) expected += [...on].filter((n) => n !== i).length;
  }
  assert.equal(copies, expected, "warm emits reach exactly the member nodes");
});

it("a socket in several target rooms gets one copy; except rooms work across nodes", async () => {
  const a = await roomMember(pool, nodes[1].url, ["room:x", "room:y"], { transports: ["websocket"] });
  const b = await roomMember(pool, nodes[2].url, ["room:y"], { transports: ["polling"] });
  const c = await roomMember(pool, nodes[2].url, ["room:x", "room:z"], { transports: ["websocket"] });
  await emit(nodes[0], ["room:x", "room:y"], "both");
  await assertCounts([[a, 1], [b, 1], [c, 1]], "both", "multi-room emit");
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { rooms: ["room:x"], except: ["room:z"], event: "but", args: [] });
  await assertCounts([[a, 1], [b, 0], [c, 0]], "but", "except across nodes");
});

it("owners move when a node joins and when one leaves, and no emit misses a member", async () => {
  const before = await populate("b", [0, 1, 2]);
  // A fourth member: about a quarter of the rooms move to it.
  setMembers([0, 1, 2, 3]);
  nodes[3] = await startNode(3);
  for (const node of live()) await sees(node, [0, 1, 2, 3]);
  const moved = await metric(nodes[3], "roomcast_room_directory_rooms");
  assert.ok(moved > 0, "the new node owns some rooms");
  await assertExact(before, [0, 1, 2, 3], "after a node joined");
  const during = await populate("c", [0, 1, 2, 3]);
  await assertExact(during, [0, 1, 2, 3], "rooms joined on 4 members");

  // hub-1 leaves: its members are gone with it; the rooms it owned move to the others.
  setMembers([0, 2, 3]);
  await nodes[1].stop();
  nodes[1] = null;
  for (const i of [0, 2, 3]) await sees(nodes[i], [0, 2, 3]);
  const keep = (rooms) =>
    rooms
      .map(([room, members]) => [room, members.filter((s) => s.node !== 1)])
      .filter(([, members]) => members.length > 0);
  await assertExact(keep(before), [0, 2, 3], "after a node left");
  const after = await populate("d", [0, 2, 3]);
  await assertExact(after, [0, 2, 3], "rooms joined on 3 members again");
  // Every room with members sits in one directory again (hub-1's members are gone).
  const withMembers = keep(before).length + keep(during).length + after.length;
  await eventually(
    async () => (await sum("roomcast_room_directory_rooms")) >= withMembers,
    5000,
    "the directories hold every room with members",
  );
});

it("a member that keeps the replicated view (a rolling upgrade) misses nothing and makes nobody miss", async () => {
  setMembers([0, 1, 2, 3]);
  nodes[1] = await startNode(1, "replicated");
  for (const node of live()) await sees(node, [0, 1, 2, 3]);
  const rooms = await populate("e", [0, 1, 2, 3]);
  await assertExact(rooms, [0, 1, 2, 3], "mixed modes");
  assert.match(nodes[1].stderr(), /a peer uses room ownership and this node does not/);
});
