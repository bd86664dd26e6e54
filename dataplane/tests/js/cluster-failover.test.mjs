// Nodes leaving under traffic: a 3-node cluster (127.0.0.41-.43) behind the round-robin proxy
// (127.0.0.40), one client publishing numbered messages to a room without a pause. One node is
// drained (SIGTERM) or killed (SIGKILL) mid-stream:
// - members connected to the surviving nodes throughout get every message exactly once, in order;
// - the departed node's clients (stock socket.io-client through the proxy, reconnection on)
//   reconnect through the proxy to a survivor, rejoin the room as an app would on `connect`,
//   and get the rest of the stream: never a duplicate, never out of order;
// - the survivors take the departed node out of routing.

import { it, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  startCluster,
  apiCall as api,
  call,
  roomMember,
  ClientPool,
  connected,
  eventually,
  sleep,
  withTimeout,
} from "./harness.mjs";

const IPS = ["127.0.0.41", "127.0.0.42", "127.0.0.43"];
const PROXY_IP = "127.0.0.40";
const ROOM = "room:stream";
const MESSAGES = 300;
const LEAVE_AT = 100;
const pool = new ClientPool();
let running = [];

afterEach(async () => {
  pool.closeAll();
  await Promise.all(running.map((p) => p.stop()));
  running = [];
});

/** The member id a session id names (its suffix is the base64url of the owner's id). */
const ownerOf = (sid) => Buffer.from(sid.slice(16), "base64url").toString();

async function stack() {
  const { nodes, linked } = await startCluster({
    ips: IPS,
    token: "cluster-failover-token-0123456789ab",
    config: { shutdown: { drainDelay: 300, gracePeriod: 5000 } },
  });
  const proxy = await startServer({
    bin: "rr-proxy",
    listen: `${PROXY_IP}:0`,
    args: nodes.flatMap((n) => ["--backend", `${n.host}:${n.port}`]),
    readyRe: /^listening on ([0-9.]+):(\d+)$/m,
  });
  running.push(...nodes, proxy);
  return { nodes, linked, proxy };
}

/** Records the numbers of `seq` events. */
function recordSeq(s) {
  s.seq = [];
  s.on("seq", (n) => s.seq.push(n));
  return s;
}

/**
 * A stock client through the proxy, reconnection on, that (re)joins the room on every
 * connect, as an application does; retried until its session lives on member `on`.
 */
async function movableMember(proxy, on) {
  for (let attempt = 0; attempt < 12; attempt++) {
    const s = pool.io(proxy.url, {
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
    });
    s.joins = 0;
    s.on("connect", () => {
      call(s, "roomcast:join", ROOM).then(() => s.joins++, () => {});
    });
    await connected(s);
    if (ownerOf(s.io.engine.id) === on) {
      await eventually(() => s.joins === 1, 5000, "first join");
      return recordSeq(s);
    }
    s.disconnect();
  }
  throw new Error(`no proxied session landed on ${on}`);
}

/** Publishes MESSAGES numbered events from `publisher`, calling `leave` at LEAVE_AT. */
async function publish(publisher, leave) {
  for (let i = 0; i < MESSAGES; i++) {
    if (i === LEAVE_AT) await leave();
    const res = await call(publisher, "roomcast:emit", { room: ROOM, event: "seq", args: [i] });
    assert.equal(res.ok, true, JSON.stringify(res));
    await sleep(10);
  }
}

const all = [...Array(MESSAGES).keys()];

async function scenario(how) {
  const { nodes, linked, proxy } = await stack();
  const publisher = await roomMember(pool, nodes[0].url, [ROOM], { transports: ["websocket"] });
  const steady = [
    recordSeq(await roomMember(pool, nodes[0].url, [ROOM], { transports: ["polling"] })),
    recordSeq(await roomMember(pool, nodes[1].url, [ROOM], { transports: ["websocket"] })),
    recordSeq(await roomMember(pool, nodes[1].url, [ROOM], { transports: ["polling"] })),
  ];
  const movers = [await movableMember(proxy, "hub-2"), await movableMember(proxy, "hub-2")];
  const leaving = nodes[2];
  let exit;
  await publish(publisher, async () => {
    if (how === "drain") {
      leaving.proc.kill("SIGTERM");
    } else {
      leaving.proc.kill("SIGKILL");
    }
    exit = leaving.exit;
  });
  await eventually(() => steady.every((s) => s.seq.length >= MESSAGES), 10_000, "the stream at the steady members").catch(() => {});
  await sleep(300);
  for (const [i, s] of steady.entries()) {
    assert.deepEqual(s.seq, all, `steady member ${i}: every message once, in order`);
  }
  for (const [i, s] of movers.entries()) {
    // Moved to a survivor, rejoined, and resumed the stream.
    assert.ok(s.joins >= 2, `mover ${i} rejoined after reconnecting (${s.joins} joins)`);
    assert.notEqual(ownerOf(s.io.engine.id), "hub-2", `mover ${i} is on a survivor now`);
    assert.equal(s.seq.at(-1), MESSAGES - 1, `mover ${i} got the end of the stream`);
    for (let k = 1; k < s.seq.length; k++) {
      assert.ok(s.seq[k] > s.seq[k - 1], `mover ${i}: no duplicate or reordering at ${k}: ${s.seq.slice(k - 1, k + 1)}`);
    }
  }
  const code = await withTimeout(exit, 8000, "the departed node's exit");
  assert.deepEqual(code, how === "drain" ? { code: 0, signal: null } : { code: null, signal: "SIGKILL" });
  for (const node of nodes.slice(0, 2)) {
    await eventually(async () => (await linked(node)) === 2, 5000, "the departed node out of routing");
    node.assertHealthy(`after the ${how}`);
  }
  // The survivors still see each other's sockets (the movers included).
  const fetched = await api(nodes[0], "POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: [ROOM] });
  assert.equal(fetched.sockets.length, 1 + steady.length + movers.length, JSON.stringify(fetched));
}

it("a node drained under continuous traffic: no loss or duplicate for the others; its clients move", async () => {
  await scenario("drain");
});

it("a node killed under continuous traffic: survivors go on; its clients reconnect through the proxy", async () => {
  await scenario("kill");
});

// The management API acknowledges an emit once the copies for the other nodes are queued on
// their links. A node drained right after must still deliver them: its links send their queues
// and wait for the peers to have read them before they close. To hold copies in its queues when
// it leaves, the other two nodes are stopped (SIGSTOP, for less than the heartbeat timeout)
// while the leaving node acknowledges 15 MiB of emits (more than HTTP/2 windows and socket
// buffers take) and gets its SIGTERM; they resume once its API has stopped.
it("a drained node's acknowledged emits reach every other node, even those queued when it leaves", async () => {
  const { nodes, linked } = await startCluster({
    ips: IPS,
    token: "cluster-failover-token-0123456789ab",
    heartbeatTimeout: 6000,
    // The backlog reaches the members at once on resume: room for it in their outboxes.
    config: {
      shutdown: { drainDelay: 300, gracePeriod: 5000 },
      limits: { maxOutboundBytes: 64 * 1024 * 1024, maxOutboundFrames: 4096 },
    },
  });
  running.push(...nodes);
  const [n0, n1, leaving] = nodes;
  const members = [
    recordSeq(await roomMember(pool, n0.url, [ROOM], { transports: ["websocket"] })),
    recordSeq(await roomMember(pool, n1.url, [ROOM], { transports: ["polling"] })),
  ];
  const bystander = recordSeq(await roomMember(pool, n1.url, ["room:elsewhere"], { transports: ["websocket"] }));
  const pad = "x".repeat(64 * 1024);
  const emit = (i) => api(leaving, "POST", "/v1/namespaces/%2F/emit", { rooms: [ROOM], event: "seq", args: [i, pad] });
  await emit(0);
  await eventually(() => members.every((s) => s.seq.length === 1), 5000, "the first emit at both members");

  const COUNT = 240;
  n0.proc.kill("SIGSTOP");
  n1.proc.kill("SIGSTOP");
  let exit;
  try {
    for (let i = 1; i <= COUNT; i++) await emit(i);
    leaving.proc.kill("SIGTERM");
    exit = leaving.exit;
    // Its API stops after the drain delay (it holds no session); then its links close.
    await eventually(async () => {
      try {
        await fetch(`${leaving.api}/v1/stats`, { signal: AbortSignal.timeout(200) });
        return false;
      } catch {
        return true;
      }
    }, 3000, "the leaving node's API stopped");
  } finally {
    n0.proc.kill("SIGCONT");
    n1.proc.kill("SIGCONT");
  }
  assert.deepEqual(await withTimeout(exit, 10_000, "the drained node's exit"), { code: 0, signal: null });
  const all = [...Array(COUNT + 1).keys()];
  await eventually(() => members.every((s) => s.seq.length >= all.length), 10_000, "every acknowledged emit at both members").catch(() => {});
  await sleep(300); // a duplicate would show by now
  for (const [m, s] of members.entries()) {
    const missing = all.filter((i) => !s.seq.includes(i));
    assert.deepEqual(missing, [], `member ${m}: acknowledged emits that never arrived`);
    assert.deepEqual(s.seq, all, `member ${m}: every acknowledged emit once, in order`);
  }
  assert.deepEqual(bystander.seq, [], "nothing for a bystander's room");
  for (const node of [n0, n1]) {
    await eventually(async () => (await linked(node)) === 2, 5000, "the departed node out of routing");
    node.assertHealthy("after the drain");
  }
});
