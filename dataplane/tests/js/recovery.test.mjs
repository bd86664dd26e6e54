// Connection state recovery (docs/recovery.md) with the stock socket.io-client: a client whose
// TCP connection is cut (reset by a test proxy) mid-stream comes back with the same socket id,
// rooms and data, `socket.recovered` true, and every message sent meanwhile exactly once, in
// order; on the same node and on another one. Past the window, or past the bounds, it gets a
// fresh session instead. A rolling restart of a 3-node hub under traffic loses nothing.

import { it, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  startServer,
  startCluster,
  startHubWithApi,
  CutProxy,
  writeConfig,
  apiCall as api,
  metricsUrl,
  call,
  ClientPool,
  connected,
  eventually,
  sleep,
  withTimeout,
} from "./harness.mjs";

const pool = new ClientPool();
let running = [];

afterEach(async () => {
  pool.closeAll();
  await Promise.all(running.map((p) => p.stop()));
  running = [];
});

const TOKEN = "recovery-test-token-0123456789abcdef";
const ROOM = "room:stream";

const recovery = (extra = {}) => ({ enabled: true, maxDisconnectionDuration: 10_000, ...extra });
const namespaces = [{ name: "/", relay: true, policies: { join: ["room:*"], emitToJoined: true } }];

/** A stock client through `proxy`, reconnecting fast, that records the `seq` numbers it gets. */
async function subscriber(proxy, { join = true, transports = ["websocket"] } = {}) {
  const s = pool.io(proxy.url, {
    transports,
    reconnection: true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
  });
  s.seq = [];
  s.connects = 0;
  s.on("seq", (n, offset) => {
    assert.equal(typeof offset, "string", "recovery tags events with an offset");
    s.seq.push(n);
  });
  s.log = [];
  s.on("connect", () => {
    s.connects++;
    s.log.push(`connect ${s.recovered ? "recovered" : "fresh"} after ${s.seq.at(-1)}`);
  });
  s.on("disconnect", (why) => s.log.push(`disconnect: ${why}`));
  s.on("connect_error", (e) => s.log.push(`connect_error: ${e.message}`));
  s.io.on("reconnect_attempt", (n) => s.log.push(`attempt ${n}`));
  await connected(s);
  if (join) assert.deepEqual(await call(s, "roomcast:join", ROOM), { ok: true });
  return s;
}

const emitSeq = (node, n, extra = {}) =>
  api(node, "POST", "/v1/namespaces/%2F/emit", { event: "seq", args: [n], rooms: [ROOM], ...extra });

const range = (a, b) => [...Array(b - a).keys()].map((i) => a + i);

/**
 * Every message of `expected` exactly once, and the messages of each origin node in the order
 * it sent them (the order guarantee of a hub: per sender; `origin(n)` is message n's node).
 */
function assertExactlyOnce(got, expected, origin, what, maybe = new Set()) {
  const missing = expected.filter((n) => !got.includes(n) && !maybe.has(n));
  const twice = got.filter((n, i) => got.indexOf(n) !== i);
  assert.deepEqual(
    [...got].sort((a, b) => a - b),
    expected.filter((n) => !maybe.has(n) || got.includes(n)),
    `${what}: every message exactly once (missing ${missing.map((n) => `${n}@${origin(n)}`)}; twice ${twice})`,
  );
  const byOrigin = new Map();
  for (const n of got) {
    const o = origin(n);
    const last = byOrigin.get(o) ?? -1;
    assert.ok(n > last, `${what}: ${n} after ${last} from the same node`);
    byOrigin.set(o, n);
  }
}

async function singleNode(config = {}) {
  const hub = await startHubWithApi(
    { socketio: { namespaces, connectionStateRecovery: recovery(config) }, metrics: { listen: "127.0.0.1:0" } },
    TOKEN,
  );
  running.push(hub);
  const [host, port] = hub.url.replace("http://", "").split(":");
  const proxy = await new CutProxy([{ host, port: Number(port) }]).start("127.0.0.70");
  running.push(proxy);
  return { hub, proxy };
}

it("a client cut off mid-stream recovers on the same node: same id, rooms and data, every message once", async () => {
  const { hub, proxy } = await singleNode();
  const s = await subscriber(proxy);
  const id = s.id;
  for (const n of range(0, 10)) await emitSeq(hub, n);
  await eventually(() => s.seq.length === 10, 5000, "first part");
  proxy.cutAll();
  for (const n of range(10, 30)) await emitSeq(hub, n);
  await eventually(() => s.connects === 2, 5000, "reconnected");
  assert.equal(s.recovered, true, "socket.recovered");
  assert.equal(s.id, id, "same socket id");
  for (const n of range(30, 40)) await emitSeq(hub, n);
  await eventually(() => s.seq.length >= 40, 5000, "the rest");
  await sleep(100);
  assert.deepEqual(s.seq, range(0, 40), "every message exactly once, in order");
  // Still in its room and reachable by id.
  const sockets = await api(hub, "GET", `/v1/namespaces/%2F/sockets?rooms=${encodeURIComponent(ROOM)}`);
  assert.deepEqual(sockets.sockets.map((x) => x.id), [id]);
});

it("a polling client cut off mid-stream recovers too", async () => {
  const { hub, proxy } = await singleNode();
  const s = await subscriber(proxy, { transports: ["polling"] });
  const id = s.id;
  for (const n of range(0, 5)) await emitSeq(hub, n);
  await eventually(() => s.seq.length === 5, 5000, "first part");
  proxy.cutAll();
  for (const n of range(5, 15)) await emitSeq(hub, n);
  await eventually(() => s.connects === 2, 10_000, "reconnected");
  assert.equal(s.recovered, true);
  assert.equal(s.id, id);
  for (const n of range(15, 20)) await emitSeq(hub, n);
  await eventually(() => s.seq.length >= 20, 5000, "the rest");
  await sleep(100);
  assert.deepEqual(s.seq, range(0, 20));
});

it("forged or malformed recovery claims get fresh sessions and disturb no one", async () => {
  const { hub, proxy } = await singleNode();
  const victim = await subscriber(proxy);
  const bystander = await subscriber(proxy);
  const pid = victim._pid; // where socket.io-client keeps it
  assert.equal(typeof pid, "string", "the victim got a pid");
  const claims = [
    { pid: 42 },
    { pid: "x".repeat(100_000).slice(0, 4000), offset: "y".repeat(3000) },
    { pid: "not a pid", offset: null },
    { pid: victim.id }, // a socket id is public; it is not a pid
    { pid: `${"A".repeat(22)}.hub-0`, offset: "q-1" }, // well formed, made up
    { pid: pid.slice(0, -1) + (pid.endsWith("A") ? "B" : "A") }, // one character off
    { pid, offset: 'x"]}' }, // the victim's pid, a malformed offset: refused before any lookup
  ];
  let n = 0;
  for (const auth of claims) {
    const s = pool.io(hub.url, { transports: ["websocket"], auth });
    await connected(s);
    assert.equal(s.recovered, false, `claim ${JSON.stringify(auth).slice(0, 60)}: a fresh session`);
    assert.notEqual(s.id, victim.id);
    await emitSeq(hub, n++);
    s.disconnect();
  }
  // The pid and offset never reach fetchSockets (they are taken out of auth).
  const listed = await api(hub, "GET", "/v1/namespaces/%2F/sockets");
  assert.ok(!JSON.stringify(listed).includes(pid), "the victim's pid is not shown");
  await eventually(() => victim.seq.length === n && bystander.seq.length === n, 5000, "the stream");
  assert.deepEqual([victim.connects, bystander.connects], [1, 1], "neither was disconnected");
  assert.deepEqual(victim.seq, range(0, n));
  assert.deepEqual(bystander.seq, range(0, n));
  const stats = (await api(hub, "GET", "/v1/stats")).namespaces.find((x) => x.name === "/");
  assert.equal(stats.parked, 0, "no claim parked or ended anyone");
});

it("a client that had received nothing recovers from the session's start", async () => {
  const { hub, proxy } = await singleNode();
  const s = await subscriber(proxy);
  proxy.cutAll();
  for (const n of range(0, 5)) await emitSeq(hub, n);
  await eventually(() => s.connects === 2, 5000, "reconnected");
  assert.equal(s.recovered, true);
  await eventually(() => s.seq.length >= 5, 5000, "missed messages");
  assert.deepEqual(s.seq, range(0, 5));
});

it("past maxDisconnectionDuration, or past the per-session bounds, the client gets a fresh session", async () => {
  const { hub, proxy } = await singleNode({ maxDisconnectionDuration: 800, maxPacketsPerSession: 5 });
  const late = await subscriber(proxy);
  const lateId = late.id;
  proxy.refusing = true;
  proxy.cutAll();
  await sleep(1500);
  proxy.refusing = false;
  await eventually(() => late.connects === 2, 5000, "reconnected");
  assert.equal(late.recovered, false, "too late: not recovered");
  assert.notEqual(late.id, lateId, "a new socket id");
  late.disconnect();

  const busy = await subscriber(proxy);
  const busyId = busy.id;
  proxy.refusing = true;
  proxy.cutAll();
  for (const n of range(0, 8)) await emitSeq(hub, n);
  proxy.refusing = false;
  await eventually(() => busy.connects === 2, 5000, "reconnected");
  assert.equal(busy.recovered, false, "missed more than maxPacketsPerSession: not recovered");
  assert.notEqual(busy.id, busyId);
  // The ended sessions are gone, only the fresh one remains.
  const stats = await api(hub, "GET", "/v1/stats");
  const root = stats.namespaces.find((n) => n.name === "/");
  assert.deepEqual([root.sockets, root.parked], [1, 0], JSON.stringify(stats));
});

it("the node's buffer and session bounds cost clients their recovery, never memory", async () => {
  // A buffer of about 16 KiB and room for one parked session.
  const { hub, proxy } = await singleNode({ maxBufferBytes: 16_384, maxBytesPerSession: 16_384, maxSessions: 1 });
  const a = await subscriber(proxy);
  const b = await subscriber(proxy);
  const ids = [a.id, b.id];
  proxy.refusing = true;
  proxy.cutAll();
  // One of the two is parked, the other ended at once (maxSessions).
  await eventually(async () => {
    const root = (await api(hub, "GET", "/v1/stats")).namespaces.find((n) => n.name === "/");
    return root.parked === 1 && root.sockets === 0;
  }, 5000, "one parked session");
  // 64 KiB of messages while they are away: more than the buffer keeps.
  const big = "x".repeat(2048);
  for (let n = 0; n < 32; n++) await emitSeq(hub, n, { args: [n, big] });
  proxy.refusing = false;
  await eventually(() => a.connects === 2 && b.connects === 2, 5000, "both reconnected");
  assert.deepEqual([a.recovered, b.recovered], [false, false], "neither recovered: fresh sessions");
  assert.ok(!ids.includes(a.id) && !ids.includes(b.id));
  const text = await (await fetch(`${await metricsUrl(hub)}/metrics`)).text();
  const bytes = Number(/^roomcast_recovery_buffer_bytes (\d+)$/m.exec(text)[1]);
  assert.ok(bytes <= 16_384, `the buffer stays within maxBufferBytes (${bytes})`);
  assert.match(text, /^roomcast_recovery_failed_total\{reason="(truncated|unknown_session)"\} [1-9]/m);
});

const CLUSTER_TOKEN = "recovery-cluster-token-0123456789ab";
const clusterConfig = (extra = {}) => ({
  socketio: { namespaces, connectionStateRecovery: recovery() },
  shutdown: { drainDelay: 200, gracePeriod: 5000 },
  ...extra,
});

it("a client cut off on one node recovers on another: the session, its rooms and emits to its id move", async () => {
  const { nodes } = await startCluster({
    ips: ["127.0.0.71", "127.0.0.72"],
    token: CLUSTER_TOKEN,
    config: clusterConfig(),
  });
  running.push(...nodes);
  const backends = nodes.map((n) => {
    const [host, port] = n.url.replace("http://", "").split(":");
    return { host, port: Number(port) };
  });
  const proxy = await new CutProxy(backends).start("127.0.0.73");
  running.push(proxy);
  proxy.pick = () => 0;
  const s = await subscriber(proxy);
  const id = s.id;
  // Origins on both nodes, alternating.
  for (const n of range(0, 10)) await emitSeq(nodes[n % 2], n);
  await eventually(() => s.seq.length === 10, 5000, "first part");
  proxy.pick = () => 1;
  proxy.cutAll();
  for (const n of range(10, 30)) await emitSeq(nodes[n % 2], n);
  await eventually(() => s.connects === 2, 5000, "reconnected");
  assert.equal(s.recovered, true, "recovered on the other node");
  assert.equal(s.id, id);
  for (const n of range(30, 40)) await emitSeq(nodes[n % 2], n);
  await eventually(() => s.seq.length >= 40, 5000, "the rest");
  await sleep(100);
  assertExactlyOnce(s.seq, range(0, 40), (n) => n % 2, "moved client");
  // It lives on hub-1 now, under an id that names hub-0: an emit to it from either node,
  // and a lookup, find it there.
  s.dm = [];
  s.on("dm", (x) => s.dm.push(x));
  await api(nodes[0], "POST", "/v1/namespaces/%2F/emit", { event: "dm", args: [0], socketIds: [id] });
  await api(nodes[1], "POST", "/v1/namespaces/%2F/emit", { event: "dm", args: [1], socketIds: [id] });
  await eventually(() => s.dm.length === 2, 5000, "emits to the moved socket's id");
  const found = await api(nodes[0], "GET", `/v1/namespaces/%2F/sockets?rooms=${encodeURIComponent(ROOM)}`);
  assert.deepEqual(found.sockets.map((x) => x.id), [id]);
  for (const node of nodes) {
    const stats = await api(node, "GET", "/v1/stats");
    assert.equal(stats.namespaces.find((n) => n.name === "/").parked, 0, "nothing left parked");
  }
});

it("a rolling restart of a 3-node hub under traffic loses nothing for any client", async () => {
  const ips = ["127.0.0.75", "127.0.0.76", "127.0.0.77"];
  const { nodes, startNode, linked } = await startCluster({ ips, token: CLUSTER_TOKEN, config: clusterConfig() });
  running.push(...nodes);
  const backendOf = (n) => {
    const [host, port] = n.url.replace("http://", "").split(":");
    return { host, port: Number(port) };
  };
  const proxy = await new CutProxy(nodes.map(backendOf)).start("127.0.0.74");
  running.push(proxy);
  const subs = [];
  for (let i = 0; i < 30; i++) subs.push(await subscriber(proxy));
  // Clients of a second room that gets nothing before the roll starts.
  const quiet = [];
  for (let i = 0; i < 6; i++) {
    const q = pool.io(proxy.url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 200 });
    q.got = [];
    q.on("quiet", (n) => q.got.push(n));
    await connected(q);
    assert.deepEqual(await call(q, "roomcast:join", "room:quiet"), { ok: true });
    quiet.push(q);
  }
  const ids = subs.map((s) => s.id);
  const live = [true, true, true];
  let sent = 0;
  const origins = [];
  // Messages whose emit call failed (a node going away mid-call): delivered or not, at most once.
  const uncertain = new Set();
  const quietUncertain = new Set();
  const quietOrigins = [];
  let quietSent = 0;
  let quietOn = false;
  let stop = false;
  // 20 messages a second, each through the management API of the next live node.
  const publisher = (async () => {
    for (let k = 0; !stop; k++) {
      const targets = nodes.map((n, i) => [n, i]).filter(([, i]) => live[i]);
      const [node] = targets[k % targets.length];
      origins[sent] = nodes.indexOf(node);
      await emitSeq(node, sent).catch(() => uncertain.add(sent));
      sent++;
      if (quietOn) {
        quietOrigins[quietSent] = nodes.indexOf(node);
        await api(node, "POST", "/v1/namespaces/%2F/emit", { event: "quiet", args: [quietSent], rooms: ["room:quiet"] })
          .catch(() => quietUncertain.add(quietSent));
        quietSent++;
      }
      await sleep(50);
    }
  })();
  await sleep(500);
  for (const i of [2, 1, 0]) {
    live[i] = false;
    nodes[i].proc.kill("SIGTERM");
    quietOn = true;
    assert.deepEqual(await withTimeout(nodes[i].exit, 10_000, `hub-${i} exit`), { code: 0, signal: null });
    nodes[i] = await startNode(i);
    running.push(nodes[i]);
    for (const node of nodes) {
      await eventually(async () => (await linked(node)) === 3, 10_000, "all linked again");
    }
    // Ready (linked to every peer): the load balancer sends it clients, on its new port.
    proxy.backends[i] = backendOf(nodes[i]);
    live[i] = true;
    await sleep(700);
  }
  await sleep(500);
  stop = true;
  await publisher;
  await eventually(() => subs.every((s) => s.seq.length >= sent), 10_000, "every message everywhere").catch(() => {});
  await eventually(() => quiet.every((q) => q.got.length >= quietSent), 5000, "every quiet message").catch(() => {});
  await sleep(200);
  const all = range(0, sent);
  for (const [i, s] of subs.entries()) {
    assert.equal(s.id, ids[i], `subscriber ${i} kept its socket id (${s.connects} connects; ${s.log.join(", ")})`);
    assertExactlyOnce(s.seq, all, (n) => origins[n], `subscriber ${i} ${s.id} (${s.connects} connects; ${s.log.join(", ")})`, uncertain);
  }
  for (const [i, q] of quiet.entries()) {
    assertExactlyOnce(q.got, range(0, quietSent), (n) => quietOrigins[n], `quiet client ${i}`, quietUncertain);
  }
  assert.ok(sent > 60 && uncertain.size < 5, `traffic through the roll (${sent} sent, ${uncertain.size} uncertain)`);
});

const JWT_SECRET = "recovery-jwt-secret-0123456789abcdef";
const b64url = (x) => Buffer.from(JSON.stringify(x)).toString("base64url");
function hs256(claims) {
  const input = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`;
  return `${input}.${crypto.createHmac("sha256", JWT_SECRET).update(input).digest("base64url")}`;
}
const token = (exp = 600) => hs256({ sub: "alice", exp: Math.floor(Date.now() / 1000) + exp });

/** An application receiving the hub's webhooks; records their types and bodies. */
async function startApp() {
  const app = { events: [] };
  app.server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null;
      app.events.push({ type: req.headers["ce-type"].replace("dev.roomcast.socket.", ""), body });
      res.writeHead(req.headers["ce-type"].endsWith(".connect") ? 200 : 204, { "content-type": "application/json" });
      res.end(req.headers["ce-type"].endsWith(".connect") ? JSON.stringify({ accept: true, rooms: [ROOM], data: { plan: "pro" } }) : "");
    });
  });
  await new Promise((r) => app.server.listen(0, "127.0.0.1", r));
  app.url = `http://127.0.0.1:${app.server.address().port}/hook`;
  app.types = () => app.events.map((e) => e.type);
  return app;
}

it("a recovered socket still needs a valid token; the app gets reconnect, not connect, and disconnect only when it expires", async () => {
  const app = await startApp();
  running.push({ stop: () => new Promise((r) => app.server.close(r)) });
  const dir = path.dirname(writeConfig({}, "roomcast-recovery-jwt-"));
  const secretFile = path.join(dir, "hs256.secret");
  fs.writeFileSync(secretFile, `${JWT_SECRET}\n`);
  const hub = await startHubWithApi(
    {
      socketio: {
        namespaces: [{ name: "/", upstream: { url: app.url, events: ["connect", "disconnect", "reconnect"] } }],
        connectionStateRecovery: recovery({ maxDisconnectionDuration: 1500 }),
      },
      auth: { mode: "jwt", jwt: { algorithms: ["HS256"], hs256SecretFile: secretFile } },
    },
    TOKEN,
  );
  running.push(hub);
  const [host, port] = hub.url.replace("http://", "").split(":");
  const proxy = await new CutProxy([{ host, port: Number(port) }]).start("127.0.0.78");
  running.push(proxy);
  let current = token();
  const s = pool.io(proxy.url, {
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    auth: (cb) => cb({ token: current }),
  });
  s.seq = [];
  s.on("seq", (n) => s.seq.push(n));
  const errors = [];
  s.on("connect_error", (e) => errors.push(e.message));
  await connected(s);
  const id = s.id;
  await eventually(() => app.types().includes("connect"), 3000, "connect webhook");
  // Recovered with a valid token: no connect webhook, a reconnect one, no disconnect.
  proxy.cutAll();
  await emitSeq(hub, 1);
  await eventually(() => s.connected && s.recovered, 5000, "recovered");
  assert.equal(s.id, id);
  await eventually(() => app.types().includes("reconnect"), 3000, "reconnect webhook");
  const reconnect = app.events.find((e) => e.type === "reconnect").body;
  assert.equal(reconnect.socketId, id);
  assert.equal(reconnect.missedPackets, 1);
  assert.deepEqual(reconnect.data, { plan: "pro" }, "socket data survives");
  assert.deepEqual(app.types(), ["connect", "reconnect"], "no new connect, no disconnect");
  await eventually(() => s.seq.length === 1, 3000, "the missed message");
  // With an expired token the recovery is refused like any connect; a valid one recovers.
  current = token(-120);
  proxy.cutAll();
  await emitSeq(hub, 2);
  await eventually(() => errors.length > 0, 5000, "connect_error with an expired token");
  assert.equal(s.connected, false);
  current = token();
  s.connect();
  await eventually(() => s.connected, 5000, "reconnected with a valid token");
  assert.equal(s.recovered, true, "the refused attempt did not end the session");
  assert.equal(s.id, id);
  await eventually(() => s.seq.length === 2, 3000, "the message sent while refused");
  assert.deepEqual(s.seq, [1, 2]);
  // Not back in time: the app hears of the disconnection, with its reason, once.
  proxy.refusing = true;
  proxy.cutAll();
  await eventually(() => app.types().includes("disconnect"), 5000, "disconnect webhook after the window");
  const gone = app.events.find((e) => e.type === "disconnect").body;
  assert.equal(gone.socketId, id);
  assert.match(gone.reason, /transport (close|error)/);
  assert.deepEqual(app.types(), ["connect", "reconnect", "reconnect", "disconnect"]);
});
