// The end-to-end scenarios of a Roomcast hub running the example chat app (examples/chat-app)
// as its upstream, with real socket.io-client clients, driven through kubectl. The same code
// runs on the local control plane (e2e/pod-runner-tests.sh, through e2e/scenarios/
// service-proxy.mjs standing in for the Services) and in kind (e2e/kind/test.sh, through the
// real Service).
//
//   node e2e/scenarios/run.mjs [PHASE...]     # default: chat scale roll delete-pod
//   node e2e/scenarios/run.mjs delete-hub
//
// Environment: HUB_URL (where clients connect, default http://127.0.0.1:3000), HUB_NAME
// (chat), HUB_NAMESPACE (default), KUBECTL (kubectl), E2E_TIME_SCALE (multiplies every
// timeout; default 1). Exits 0 when every phase passed, 1 at the first failure.
//
// Phases (the hub starts with 3 replicas):
//   chat        12 clients in 3 rooms across the pods: each says one thing in its room; every
//               member gets exactly its room's messages, once; `who` lists the room
//               cluster-wide.
//   scale       under continuous traffic in one room: kubectl scale 3 -> 5 (nobody is
//               disconnected), new clients land on the new pods, then 5 -> 2. WebSocket-only
//               clients on the surviving pods keep their session and miss nothing; clients on
//               the removed pods reconnect, rejoin and receive again.
//   roll        a config change (engine.pingInterval) rolls the pods one at a time (never more
//               than one missing); every client recovers; new sessions get the new interval.
//   delete-pod  pod <hub>-0 is deleted: the StatefulSet recreates it, clients recover, and
//               clients on the new pod and on the other pods hear each other.
//   tls         the mesh runs on mutual TLS with per-pod certificates: every pod holds a
//               certificate for its own name, issued through a CSR and signed by the hub's CA
//               (Secret <hub>-peer-ca), which is the only CA of the trust bundle.
//   rotate-ca   under continuous traffic: the annotation roomcast.io/rotate-peer-ca rotates the
//               CA; the bundle carries old+new, every pod's certificate is re-issued by the new
//               CA, the old CA leaves the bundle; zero deliveries lost (counted), nobody
//               disconnected, no message refused.
//   recover     connection state recovery: the earlier clients leave; spec.connectionStateRecovery
//               set (and replicas back to 3): a new revision rolls in. 12 clients in a room
//               with traffic (20 messages/s through the management API of each Ready pod in
//               turn, by pod IP: the local tier only) and 6 in a room that gets messages only
//               once the first of them is cut off; then a config change rolls the 3 pods. Every
//               client keeps its socket id (every reconnection recovered, at least one each),
//               and gets every acknowledged message exactly once, in order per origin pod; at
//               least one quiet client is cut off with a pid and no offset. Logs the pods'
//               roomcast_recovery_* counters (last sample of each pod, on its metrics port).
//   monitoring  (local tier only: needs PODMONITOR, the chart's rendered PodMonitor as JSON) a
//               real Prometheus scrapes the hub's pods as the chart's PodMonitor would make it:
//               every pod of the cluster (listed through kubectl, described as Kubernetes pod
//               discovery would; pod-monitor.mjs) goes through the PodMonitor's selection and
//               relabeling, in Prometheus. Every second, with the chart's rule file loaded, under
//               the stream of the later phases (started here; its messages go through the app's
//               webhooks).
//               Every query of the chart's dashboard returns data, with sane values (every pod
//               holds clients and 2 peer links up, the webhooks are called); every rule is
//               healthy. ROOMCAST_PROMETHEUS names the server binary (default: on PATH).
//   delete-hub  the SocketIOHub is deleted: every object it owned is garbage-collected.
// Throughout: no client ever gets a message twice, and every session that is up at a
// checkpoint got every message acknowledged since it joined.
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { io, kubectl, kubectlJson, log, podOf, sleep, waitFor } from "./lib.mjs";
import { podMonitorScrapeConfig, podTargets } from "./pod-monitor.mjs";
import { RULE_FILE, evaluateDashboard, loadedRules, startPrometheus } from "../../dataplane/tests/js/prometheus.mjs";

const cfg = {
  url: process.env.HUB_URL ?? "http://127.0.0.1:3000",
  hub: process.env.HUB_NAME ?? "chat",
  ns: process.env.HUB_NAMESPACE ?? "default",
  kubectl: process.env.KUBECTL ?? "kubectl",
  scale: Number(process.env.E2E_TIME_SCALE ?? 1) || 1,
};
const T = (seconds) => seconds * cfg.scale;
const k = (...args) => kubectl(cfg.kubectl, ["-n", cfg.ns, ...args]);
const selector = `roomcast.dev/hub=${cfg.hub}`;

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

// --- clients -----------------------------------------------------------------------------------

/**
 * One chat user: connects with auth {name} (the app accepts it), joins its rooms through the
 * app on every (re)connection, and records every session and every message it receives.
 */
class Member {
  constructor(name, rooms, { websocketOnly = false } = {}) {
    this.name = name;
    this.rooms = rooms;
    this.websocketOnly = websocketOnly;
    /** {id, pod, connectedAt, joinedAt, leftAt, reason} per Socket.IO session. */
    this.sessions = [];
    /** "room|text" -> times received. */
    this.received = new Map();
    this.socket = io(cfg.url, {
      auth: { name },
      forceNew: true,
      transports: websocketOnly ? ["websocket"] : ["polling", "websocket"],
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      timeout: 10_000,
    });
    this.socket.on("connect", () => this.#joinRooms());
    this.socket.on("disconnect", (reason) => {
      const s = this.current;
      if (s && s.leftAt === null) {
        s.leftAt = Date.now();
        s.reason = reason;
      }
    });
    this.socket.on("message", (m) => {
      const key = `${m?.room}|${m?.text}`;
      this.received.set(key, (this.received.get(key) ?? 0) + 1);
    });
  }

  get current() {
    return this.sessions.at(-1);
  }
  get pod() {
    return this.current?.pod;
  }
  /** Connected, and its rooms joined, on the current session. */
  get joined() {
    const s = this.current;
    return !!s && s.joinedAt !== null && s.leftAt === null && this.socket.connected;
  }

  async #joinRooms() {
    const id = this.socket.id;
    const session = { id, pod: podOf(id), connectedAt: Date.now(), joinedAt: null, leftAt: null };
    this.sessions.push(session);
    for (const room of this.rooms) {
      for (;;) {
        if (this.socket.id !== id || !this.socket.connected) return;
        const ack = await this.ask("join", room);
        if (ack?.ok) break;
        await sleep(250);
      }
    }
    if (session.leftAt === null) session.joinedAt = Date.now();
  }

  /** Emits EVENT with ARG and waits for the app's ack ({ok, ...}); {ok:false} on timeout. */
  async ask(event, arg, timeoutMs = 8000) {
    try {
      return await this.socket.timeout(timeoutMs).emitWithAck(event, arg);
    } catch (err) {
      return { ok: false, error: "timeout", message: err.message };
    }
  }

  close() {
    this.socket.close();
    const s = this.current;
    if (s && s.leftAt === null) {
      s.leftAt = Date.now();
      s.reason = "closed by the test";
    }
  }
}

async function allJoined(members, what, seconds = 60) {
  await waitFor(`${what}: ${members.length} clients connected and in their rooms`, T(seconds), () =>
    members.every((m) => m.joined),
  );
}

function podSpread(members) {
  const by = {};
  for (const m of members) by[m.pod] = (by[m.pod] ?? 0) + 1;
  return by;
}

/**
 * Senders that keep saying numbered messages in ROOM, one at a time each, every INTERVAL ms,
 * while they are joined. Records each attempt: {key, at (when sent), ackAt, ok}.
 */
class Traffic {
  constructor(senders, room, intervalMs = 100) {
    this.senders = senders;
    this.room = room;
    this.intervalMs = intervalMs;
    this.sent = [];
    this.running = false;
  }
  start() {
    this.running = true;
    this.loops = this.senders.map((s) => this.#loop(s));
  }
  async #loop(sender) {
    let seq = 0;
    while (this.running) {
      if (!sender.joined) {
        await sleep(100);
        continue;
      }
      const text = `${sender.name}#${++seq}`;
      const rec = { key: `${this.room}|${text}`, at: Date.now(), ackAt: null, ok: false };
      this.sent.push(rec);
      const ack = await sender.ask("message", { room: this.room, text });
      rec.ackAt = Date.now();
      rec.ok = ack?.ok === true;
      if (!rec.ok) rec.error = ack?.error ?? "no ack";
      await sleep(this.intervalMs);
    }
  }
  async stop() {
    this.running = false;
    await Promise.all(this.loops ?? []);
  }
  okSince(t) {
    return this.sent.filter((r) => r.ok && r.at >= t).length;
  }
}

/**
 * The delivery invariants, at a checkpoint: nobody got a message twice, and every session up
 * now got every message acknowledged (more than `settleMs` ago) that was sent after it joined.
 */
async function checkDelivery(traffic, members, label, settleMs = 2000) {
  await sleep(settleMs);
  const now = Date.now();
  const due = traffic.sent.filter((r) => r.ok && r.ackAt !== null && r.ackAt < now - settleMs);
  for (const m of members) {
    for (const [key, n] of m.received) {
      check(n === 1, `${label}: ${m.name} got ${key} ${n} times`);
    }
    const s = m.current;
    if (!s || s.leftAt !== null || s.joinedAt === null) continue;
    const missing = due.filter((r) => r.at >= s.joinedAt && !m.received.has(r.key));
    check(
      missing.length === 0,
      `${label}: ${m.name} (session on ${s.pod}, joined ${new Date(s.joinedAt).toISOString()}) ` +
        `missed ${missing.length} of the acknowledged messages, e.g. ${missing.slice(0, 3).map((r) => r.key).join(", ")}`,
    );
  }
  const failed = traffic.sent.filter((r) => r.ackAt !== null && !r.ok);
  log(
    `${label}: delivery checked: ${due.length} acknowledged messages, ${failed.length} refused ` +
      `or timed out (${[...new Set(failed.map((r) => r.error))].join(", ") || "none"}), ` +
      `no duplicates, no loss for ${members.filter((m) => m.joined).length} joined clients`,
  );
}

// --- the cluster -------------------------------------------------------------------------------

async function hubPods() {
  const list = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "pods", "-l", selector]);
  const port = (p, name) => (p.spec.containers[0]?.ports ?? []).find((x) => x.name === name)?.containerPort;
  return list.items.map((p) => ({
    name: p.metadata.name,
    uid: p.metadata.uid,
    deleting: !!p.metadata.deletionTimestamp,
    ready: (p.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
    revision: p.metadata.labels?.["controller-revision-hash"],
    ip: p.status?.podIP,
    managementPort: port(p, "management"),
    metricsPort: port(p, "metrics"),
  }));
}

/** The pods when exactly NAMES (sorted) exist, all Ready and none terminating; else null. */
async function exactlyReady(names) {
  const pods = await hubPods();
  const have = pods.map((p) => p.name).sort();
  const ok = have.join(" ") === [...names].sort().join(" ") && pods.every((p) => p.ready && !p.deleting);
  return ok ? pods : null;
}

const podNames = (n) => Array.from({ length: n }, (_, i) => `${cfg.hub}-${i}`);

async function hubReadyReplicas(n) {
  const hub = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "socketiohub", cfg.hub]);
  return hub.status?.readyReplicas === n && hub.status?.replicas === n;
}

/** The Engine.IO handshake of a fresh session (over polling), as JSON. */
async function handshake() {
  const res = await fetch(`${cfg.url}/socket.io/?EIO=4&transport=polling`);
  const body = await res.text();
  check(res.ok && body.startsWith("0{"), `handshake answered ${res.status}: ${body.slice(0, 200)}`);
  return JSON.parse(body.slice(1));
}

// --- phases ------------------------------------------------------------------------------------

const world = { members: [], traffic: null };

async function chat() {
  await waitFor("3 hub pods Ready", T(120), () => exactlyReady(podNames(3)));
  const rooms = ["red", "green", "blue"];
  const members = Array.from({ length: 12 }, (_, i) => new Member(`talker${i}`, [rooms[i % 3]]));
  await allJoined(members, "chat");
  const spread = podSpread(members);
  log(`chat: clients per pod ${JSON.stringify(spread)}`);
  check(Object.keys(spread).length >= 2, `chat: every client landed on one pod: ${JSON.stringify(spread)}`);

  const acks = await Promise.all(
    members.map((m) => m.ask("message", { room: m.rooms[0], text: `hello from ${m.name}` })),
  );
  acks.forEach((a, i) => check(a?.ok === true, `chat: ${members[i].name}'s message was refused: ${JSON.stringify(a)}`));
  const expected = (m) =>
    members.filter((o) => o.rooms[0] === m.rooms[0]).map((o) => `${m.rooms[0]}|hello from ${o.name}`).sort();
  await waitFor("chat: every member got its room's 4 messages", T(20), () =>
    members.every((m) => m.received.size >= 4),
  );
  await sleep(500); // anything extra (a duplicate, another room's message) would show by now
  for (const m of members) {
    const got = [...m.received.keys()].sort();
    check(got.join() === expected(m).join(), `chat: ${m.name} got ${got.join(", ")}; expected ${expected(m).join(", ")}`);
    check([...m.received.values()].every((n) => n === 1), `chat: ${m.name} got a message twice`);
  }
  // `who` asks the hub for the room's sockets across every pod (fetchSockets).
  for (const room of rooms) {
    const ack = await members[0].ask("who", room);
    const want = members.filter((m) => m.rooms[0] === room).map((m) => m.name).sort();
    check(ack?.ok && JSON.stringify(ack.names) === JSON.stringify(want), `chat: who ${room} = ${JSON.stringify(ack)}; expected ${want}`);
  }
  log("chat: exact counts in 3 rooms across the pods, who lists each room cluster-wide");
  members.forEach((m) => m.close());
}

/** Starts the long-running population of the later phases: clients in room "stream". */
async function startStream() {
  const room = "stream";
  // WebSocket-only clients: their one connection is their session's pod, so "a client on a
  // surviving pod" is exact for them. The others start on polling and upgrade; their
  // connections may pass through another pod (forwarding), which can be a removed one.
  for (let i = 0; i < 9; i++) world.members.push(new Member(`ws${i}`, [room], { websocketOnly: true }));
  for (let i = 0; i < 5; i++) world.members.push(new Member(`up${i}`, [room]));
  await allJoined(world.members, "stream");
  world.traffic = new Traffic(world.members.slice(0, 3), room);
  world.traffic.start();
  await sleep(2000);
}

async function scale() {
  if (!world.traffic) await startStream();
  const { members, traffic } = world;
  log(`scale: clients per pod ${JSON.stringify(podSpread(members))}`);

  // 3 -> 5: nobody is disconnected.
  const before = members.map((m) => m.sessions.length);
  await k("scale", "socketiohub", cfg.hub, "--replicas=5");
  await waitFor("scale: 5 hub pods Ready", T(180), () => exactlyReady(podNames(5)));
  await waitFor("scale: the hub's status says 5 ready", T(30), () => hubReadyReplicas(5));
  members.forEach((m, i) =>
    check(m.sessions.length === before[i] && m.joined, `scale up: ${m.name} was disconnected (${m.current?.reason})`),
  );
  // New clients, some on the new pods.
  const late = [];
  for (let i = 0; i < 12; i++) late.push(new Member(`late${i}`, ["stream"], { websocketOnly: i % 3 !== 0 }));
  members.push(...late);
  await allJoined(members, "scale up");
  const spread = podSpread(members);
  log(`scale: clients per pod after 3 -> 5 ${JSON.stringify(spread)}`);
  const onNew = members.filter((m) => [`${cfg.hub}-3`, `${cfg.hub}-4`].includes(m.pod));
  check(onNew.length > 0, `scale: no client landed on the new pods: ${JSON.stringify(spread)}`);
  await sleep(3000);
  await checkDelivery(traffic, members, "scale 3 -> 5");

  // 5 -> 2.
  const survivors = new Set(podNames(2));
  const sessionsAt = new Map(members.map((m) => [m, m.sessions.length]));
  const moved = members.filter((m) => !survivors.has(m.pod));
  const tDown = Date.now();
  await k("scale", "socketiohub", cfg.hub, "--replicas=2");
  await waitFor("scale: only 2 hub pods left, Ready", T(240), () => exactlyReady(podNames(2)));
  await waitFor("scale: the hub's status says 2 ready", T(30), () => hubReadyReplicas(2));
  await allJoined(members, "scale down");
  const resumedAt = Date.now();
  await sleep(3000);
  await checkDelivery(traffic, members, "scale 5 -> 2");
  for (const m of members) {
    if (m.websocketOnly && survivors.has(m.sessions[sessionsAt.get(m) - 1].pod)) {
      check(m.sessions.length === sessionsAt.get(m), `scale down: ${m.name}, on surviving pod ${m.pod}, was disconnected`);
    }
  }
  for (const m of moved) {
    check(m.sessions.length > sessionsAt.get(m), `scale down: ${m.name} on a removed pod kept its session?`);
    check(survivors.has(m.pod), `scale down: ${m.name} is now on ${m.pod}`);
  }
  const rerouted = members.filter((m) => !m.websocketOnly && !moved.includes(m) && m.sessions.length > sessionsAt.get(m));
  check(traffic.okSince(resumedAt) >= 10, `scale down: only ${traffic.okSince(resumedAt)} messages went through since`);
  log(
    `scale: 3 -> 5 -> 2 in ${((Date.now() - tDown) / 1000).toFixed(0)}s of scale-down; ${moved.length} clients ` +
      `moved off removed pods and resumed; ${rerouted.length} polling-then-upgrade clients of surviving pods ` +
      `reconnected because their connection went through a removed pod`,
  );
}

/**
 * Applies PATCH (a merge patch of the SocketIOHub) and waits until every pod is replaced and
 * Ready again, sampling the pods every 200 ms meanwhile (`onPods` gets each sample): never more
 * than one pod may be missing (a rolling update), and the StatefulSet's rollout must be
 * complete. Returns {n, minReady}.
 */
async function rollPods(label, patch, onPods = () => {}) {
  const pods = (await hubPods()).filter((p) => !p.deleting);
  const n = pods.length;
  const oldUids = new Set(pods.map((p) => p.uid));
  let minReady = n;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        const now = await hubPods();
        minReady = Math.min(minReady, now.filter((p) => p.ready && !p.deleting).length);
        onPods(now);
      } catch {}
      await sleep(200);
    }
  })();
  try {
    await k("patch", "socketiohub", cfg.hub, "--type=merge", "-p", JSON.stringify(patch));
    await waitFor(`${label}: all ${n} pods replaced and Ready`, T(240), async () => {
      const now = await exactlyReady(podNames(n));
      return now && now.every((p) => !oldUids.has(p.uid));
    });
  } finally {
    sampling = false;
    await sampler;
  }
  check(minReady >= n - 1, `${label}: ${n - minReady} pods were down at once (a rolling update takes one at a time)`);
  const sts = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "statefulset", cfg.hub]);
  check(sts.status.currentRevision === sts.status.updateRevision, `${label}: the StatefulSet rollout is not complete`);
  return { n, minReady };
}

async function roll() {
  if (!world.traffic) await startStream();
  const { members, traffic } = world;
  const hs = await handshake();
  const interval = hs.pingInterval === 20000 ? 15000 : 20000;
  const { n, minReady } = await rollPods("roll", { spec: { engine: { pingInterval: interval } } });
  const fresh = await handshake();
  check(fresh.pingInterval === interval, `roll: a new session got pingInterval ${fresh.pingInterval}, not ${interval}`);
  await allJoined(members, "roll");
  const resumedAt = Date.now();
  await sleep(3000);
  await checkDelivery(traffic, members, "roll");
  check(traffic.okSince(resumedAt) >= 10, `roll: only ${traffic.okSince(resumedAt)} messages went through since`);
  log(`roll: pingInterval ${hs.pingInterval} -> ${interval}, pods replaced one at a time (at least ${minReady} of ${n} Ready throughout)`);
}

async function deletePod() {
  if (!world.traffic) await startStream();
  const { members, traffic } = world;
  const pods = await hubPods();
  const n = pods.length;
  const victim = `${cfg.hub}-0`;
  const old = pods.find((p) => p.name === victim);
  check(old, `delete-pod: no pod ${victim}`);
  await k("delete", "pod", victim, "--wait=false");
  await waitFor(`delete-pod: ${victim} recreated and Ready`, T(120), async () => {
    const now = await exactlyReady(podNames(n));
    return now?.find((p) => p.name === victim && p.uid !== old.uid);
  });
  await allJoined(members, "delete-pod");
  // Clients on the new pod and on another pod hear each other: its links are up both ways.
  const probes = [];
  const others = podNames(n).filter((p) => p !== victim);
  await waitFor(`delete-pod: probe clients on ${victim} and on ${others.join("/")}`, T(60), async () => {
    const have = new Set(probes.filter((p) => p.joined).map((p) => p.pod));
    if (have.has(victim) && others.some((o) => have.has(o))) return true;
    if (probes.length < 16 && probes.every((p) => p.joined)) {
      probes.push(new Member(`probe${probes.length}`, ["probe"], { websocketOnly: true }));
    }
    return false;
  });
  const a = probes.find((p) => p.joined && p.pod === victim);
  const b = probes.find((p) => p.joined && others.includes(p.pod));
  for (const [from, to] of [[a, b], [b, a]]) {
    const ack = await from.ask("message", { room: "probe", text: `from ${from.name}` });
    check(ack?.ok, `delete-pod: ${from.name} on ${from.pod} could not speak: ${JSON.stringify(ack)}`);
    await waitFor(`delete-pod: ${to.name} on ${to.pod} hears ${from.name} on ${from.pod}`, T(10), () =>
      to.received.has(`probe|from ${from.name}`),
    );
  }
  probes.forEach((p) => p.close());
  const resumedAt = Date.now();
  await sleep(3000);
  await checkDelivery(traffic, members, "delete-pod");
  check(traffic.okSince(resumedAt) >= 10, `delete-pod: only ${traffic.okSince(resumedAt)} messages went through since`);
}

// --- connection state recovery ------------------------------------------------------------------

/**
 * A stock client of a hub with connection state recovery on (docs/recovery.md): joins ROOM
 * through the app once, then relies on recovery to keep it; records every connection (id,
 * `recovered`), every EVENT's numbered argument, and what it held when first cut off.
 */
class Recovering {
  constructor(name, room, event, { websocketOnly = true } = {}) {
    Object.assign(this, { name, room, event, websocketOnly });
    this.connects = []; // {id, recovered, pid, at}
    this.got = [];
    this.arrivals = new Map(); // n -> [{at, offset}], for the evidence of a duplicate
    this.events = 0; // any event, of any name
    this.untagged = 0; // EVENTs whose last argument was no offset
    this.firstCut = null; // {events, pid, offset} when the first connection dropped
    this.log = [];
    this.socket = io(cfg.url, {
      auth: { name },
      forceNew: true,
      transports: websocketOnly ? ["websocket"] : ["polling", "websocket"],
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
      timeout: 10_000,
    });
    const s = this.socket;
    s.onAny(() => this.events++);
    s.on(event, (n, offset) => {
      if (typeof offset !== "string") this.untagged++;
      this.got.push(n);
      if (!this.arrivals.has(n)) this.arrivals.set(n, []);
      this.arrivals.get(n).push({ at: Date.now(), offset });
    });
    s.on("connect", () => {
      this.connects.push({ id: s.id, recovered: s.recovered, pid: s._pid, at: Date.now() });
      this.log.push(`${stamp()} ${s.recovered ? "recovered" : "fresh"} ${s.id} after ${this.got.at(-1) ?? "nothing"} (offset ${s._lastOffset})`);
      // Rooms come back with a recovered session; a fresh one (a failure, reported at the end)
      // joins again so that the rest of the run still means something.
      if (!s.recovered) this.#join(s.id);
    });
    s.on("disconnect", (reason) => {
      this.log.push(`${stamp()} disconnect (${reason})`);
      this.firstCut ??= { events: this.events, pid: s._pid, offset: s._lastOffset };
    });
    s.on("connect_error", (e) => this.log.push(`${stamp()} connect_error: ${e.message}`));
  }
  async #join(id) {
    while (this.socket.id === id && this.socket.connected) {
      try {
        const ack = await this.socket.timeout(8000).emitWithAck("join", this.room);
        if (ack?.ok) {
          this.joinedId = id;
          return;
        }
      } catch {}
      await sleep(250);
    }
  }
  get joined() {
    return this.socket.connected && this.joinedId === this.socket.id;
  }
  get reconnects() {
    return this.connects.length - 1;
  }
  close() {
    this.socket.close();
  }
}

/**
 * Sends numbered events to rooms through the management API of each Ready, non-terminating pod
 * in turn, one call at a time, every `intervalMs`: the pod (uid) that took a message is its
 * origin, whose order every client must see. Records {n, origin, ok} per message and event.
 */
class Publisher {
  constructor(token, pods, intervalMs = 50) {
    Object.assign(this, { token, pods, intervalMs });
    this.sent = new Map(); // event -> [{n, origin, ok}]
    this.extra = []; // {event, room}: sent along once turned on
  }
  async #emit(pod, event, room) {
    const list = this.sent.get(event) ?? this.sent.set(event, []).get(event);
    const rec = { n: list.length, origin: pod.uid, pod: pod.name, ok: false, at: Date.now() };
    list.push(rec);
    try {
      const res = await fetch(`http://${pod.ip}:${pod.managementPort}/v1/namespaces/%2F/emit`, {
        method: "POST",
        headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
        body: JSON.stringify({ event, args: [rec.n], rooms: [room] }),
        signal: AbortSignal.timeout(5000),
      });
      rec.ok = res.ok;
      rec.ackAt = Date.now();
      if (!res.ok) rec.error = `HTTP ${res.status}`;
    } catch (err) {
      rec.error = err.message;
    }
  }
  start(event, room) {
    this.running = true;
    this.loop = (async () => {
      for (let k = 0; this.running; k++) {
        const targets = this.pods().filter((p) => p.ready && !p.deleting && p.ip && p.managementPort);
        if (targets.length) {
          const pod = targets[k % targets.length];
          await this.#emit(pod, event, room);
          for (const x of this.extra) await this.#emit(pod, x.event, x.room);
        }
        await sleep(this.intervalMs);
      }
    })();
  }
  async stop() {
    this.running = false;
    await this.loop;
  }
  of(event) {
    return this.sent.get(event) ?? [];
  }
}

/**
 * Every acknowledged message exactly once (a failed emit: at most once), and each origin's
 * messages in the order it took them. Returns null when so, else what is wrong.
 */
function deliveryProblem(got, sent) {
  const seen = new Map();
  for (const n of got) seen.set(n, (seen.get(n) ?? 0) + 1);
  const missing = sent.filter((r) => r.ok && !seen.has(r.n));
  const twice = [...seen].filter(([, c]) => c > 1).map(([n]) => n);
  const unknown = got.filter((n) => !sent[n]);
  const last = new Map();
  const disorder = [];
  for (const n of got) {
    const o = sent[n]?.origin;
    if (last.has(o) && last.get(o) > n) disorder.push(`${n} after ${last.get(o)} (both from ${sent[n].pod})`);
    last.set(o, Math.max(last.get(o) ?? -1, n));
  }
  if (!missing.length && !twice.length && !unknown.length && !disorder.length) return null;
  const fmt = (rs) => rs.slice(0, 10).map((r) => `${r.n}@${r.pod}`).join(" ");
  return (
    `missing ${missing.length} (${fmt(missing)}), twice ${twice.length} (${twice.slice(0, 10).join(" ")}), ` +
    `unknown ${unknown.length}, out of order ${disorder.length} (${disorder.slice(0, 5).join("; ")})`
  );
}

const stamp = (t = Date.now()) => new Date(t).toISOString().slice(11, 23);

/** When message N of SENT was sent, to which pod, and when (and with which offset) C got it. */
function arrivalsOf(c, sent, n) {
  const r = sent[n];
  const got = (c.arrivals.get(n) ?? []).map((a) => `${stamp(a.at)} (offset ${a.offset})`).join(" and ");
  return `${n}: sent to ${r?.pod} ${r?.origin} at ${stamp(r?.at)}, acknowledged ${r?.ok ? stamp(r.ackAt) : `never (${r?.error})`}; received ${got || "never"}`;
}

/** The roomcast_recovery_* samples of a pod's /metrics ("name{labels}" -> value), or null. */
async function recoveryMetrics(pod) {
  try {
    const res = await fetch(`http://${pod.ip}:${pod.metricsPort}/metrics`, { signal: AbortSignal.timeout(1000) });
    if (!res.ok) return null;
    const out = {};
    for (const line of (await res.text()).split("\n")) {
      const m = /^(roomcast_recovery_\w+(?:\{[^}]*\})?) (\d+)$/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  } catch {
    return null;
  }
}

async function recover() {
  // The stream of the earlier phases ends here: its clients leave before recovery is on.
  if (world.traffic) await world.traffic.stop();
  world.members.forEach((m) => m.close());

  // 1. Recovery on, with 3 replicas (the earlier phases leave 2): a new StatefulSet revision.
  const stsBefore = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "statefulset", cfg.hub]);
  const t0 = Date.now();
  const patch = { spec: { replicas: 3, connectionStateRecovery: { maxDisconnectionDuration: 30_000 } } };
  await k("patch", "socketiohub", cfg.hub, "--type=merge", "-p", JSON.stringify(patch));
  await waitFor("recover: recovery on (a new revision), 3 pods of it Ready", T(240), async () => {
    const sts = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "statefulset", cfg.hub]);
    const rev = sts.status.updateRevision;
    if (rev === stsBefore.status.updateRevision || sts.status.currentRevision !== rev) return false;
    const pods = await exactlyReady(podNames(3));
    return pods?.every((p) => p.revision === rev);
  });
  log(`recover: recovery turned on and the hub at 3 pods in ${((Date.now() - t0) / 1000).toFixed(0)}s`);

  // 2. Clients through the Service, round robin: room "recover" gets traffic from now on,
  // room "recover-quiet" only once the first pod of the roll has closed its sessions.
  const secret = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "secret", `${cfg.hub}-management`]);
  const token = Buffer.from(secret.data.token, "base64").toString("utf8");
  const subs = [];
  for (let i = 0; i < 12; i++) subs.push(new Recovering(`rec${i}`, "recover", "seq", { websocketOnly: i % 4 !== 3 }));
  const quiet = [];
  for (let i = 0; i < 6; i++) quiet.push(new Recovering(`quiet${i}`, "recover-quiet", "quiet"));
  const all = [...subs, ...quiet];
  await waitFor(`recover: ${all.length} clients connected and in their rooms`, T(60), () => all.every((c) => c.joined));
  for (const c of all) {
    check(typeof c.connects[0]?.pid === "string", `recover: ${c.name} got no pid in its CONNECT answer: recovery is off`);
  }
  const firstPods = podSpread(all.map((c) => ({ pod: podOf(c.socket.id) })));
  log(`recover: clients per pod ${JSON.stringify(firstPods)}`);

  let pods = await hubPods();
  const publisher = new Publisher(token, () => pods);
  publisher.start("seq", "recover");
  const metrics = new Map(); // pod uid -> its last roomcast_recovery_* sample
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await Promise.all(
        pods.filter((p) => p.ip && p.metricsPort).map(async (p) => {
          const m = await recoveryMetrics(p);
          if (m) metrics.set(p.uid, m);
        }),
      );
      await sleep(500);
    }
  })();
  const tTraffic = Date.now();
  await sleep(1500);
  check(quiet.every((q) => q.events === 0), "recover: a quiet client received something before the roll");

  // 3. The roll under traffic: a config change (engine.pingInterval), one pod at a time.
  const quietOn = () => {
    if (!publisher.extra.length) publisher.extra.push({ event: "quiet", room: "recover-quiet" });
  };
  quiet.forEach((q) => q.socket.on("disconnect", quietOn));
  const hs = await handshake();
  const interval = hs.pingInterval === 20000 ? 15000 : 20000;
  const tRoll = Date.now();
  const terminating = new Set();
  const { n, minReady } = await rollPods("recover", { spec: { engine: { pingInterval: interval } } }, (now) => {
    pods = now;
    for (const p of now.filter((x) => x.deleting && !terminating.has(x.uid))) {
      terminating.add(p.uid);
      log(`recover: ${stamp()} ${p.name} (${p.uid}) terminating`);
    }
  });
  const rollSeconds = ((Date.now() - tRoll) / 1000).toFixed(0);
  pods = await hubPods();
  await waitFor("recover: every client connected again", T(30), () => all.every((c) => c.socket.connected));
  await sleep(2000);
  await publisher.stop();
  const trafficSeconds = (Date.now() - tTraffic) / 1000;
  const seq = publisher.of("seq");
  const quietSent = publisher.of("quiet");
  const done = (c, sent) => {
    const got = new Set(c.got);
    return sent.every((r) => !r.ok || got.has(r.n));
  };
  await waitFor("recover: every acknowledged message delivered", T(10), () =>
    subs.every((c) => done(c, seq)) && quiet.every((q) => done(q, quietSent)),
  ).catch((err) => log(`recover: ${err.message} (the check below says what is missing)`));
  await sleep(500); // a duplicate would show by now
  sampling = false;
  await sampler;
  await Promise.all(pods.map(async (p) => {
    const m = await recoveryMetrics(p);
    if (m) metrics.set(p.uid, m);
  }));

  // 4. Every client: one socket id, every reconnection a recovery, every message once, in order.
  const problems = [];
  for (const c of all) {
    const sent = c.event === "seq" ? seq : quietSent;
    const ids = new Set(c.connects.map((x) => x.id));
    const fresh = c.connects.slice(1).filter((x) => !x.recovered).length;
    const where = `${c.name} (${c.connects[0].id}, an id of ${podOf(c.connects[0].id)}; ${c.log.join(", ")})`;
    if (ids.size !== 1 || fresh) problems.push(`${where}: ${ids.size} socket ids, ${fresh} reconnections not recovered`);
    if (c.reconnects < 1) problems.push(`${where}: never reconnected although every pod was replaced`);
    if (c.untagged) problems.push(`${where}: ${c.untagged} events without an offset`);
    const p = deliveryProblem(c.got, sent);
    if (p) {
      const odd = [...c.arrivals].filter(([, a]) => a.length > 1).map(([n]) => n);
      const gone = sent.filter((r) => r.ok && !c.arrivals.has(r.n)).map((r) => r.n);
      const detail = [...odd, ...gone].slice(0, 5).map((x) => arrivalsOf(c, sent, x));
      problems.push(`${where}: ${p}\n    ${detail.join("\n    ")}`);
    }
  }
  const noOffset = quiet.filter((q) => q.firstCut && q.firstCut.events === 0 && q.firstCut.offset === undefined);
  if (!noOffset.length) {
    problems.push(`no quiet client was cut off before receiving anything: ${quiet.map((q) => JSON.stringify(q.firstCut)).join(" ")}`);
  }
  const totals = {};
  for (const m of metrics.values()) for (const [key, v] of Object.entries(m)) totals[key] = (totals[key] ?? 0) + v;
  const metric = (name) => Object.entries(totals).filter(([key]) => key === name || key.startsWith(`${name}{`))
    .map(([key, v]) => `${key.replace("roomcast_recovery_", "")}=${v}`).join(" ");
  log(
    `recover: pod metrics (last sample of each of ${metrics.size} pods seen): ` +
      ["recovered_total", "handed_over_total", "adopted_total", "failed_total", "expired_total", "replayed_packets_total"]
        .map((name) => metric(`roomcast_recovery_${name}`) || `${name}=0`).join(" "),
  );
  all.forEach((c) => c.close());
  check(!problems.length, `recover: ${problems.length} problems:\n  ${problems.join("\n  ")}`);
  const acked = (sent) => sent.filter((r) => r.ok).length;
  check(acked(seq) >= 100, `recover: only ${acked(seq)} messages acknowledged during the phase`);
  check(acked(quietSent) >= 20, `recover: only ${acked(quietSent)} quiet messages acknowledged`);
  const reconnects = all.reduce((sum, c) => sum + c.reconnects, 0);
  log(
    `recover: roll of ${n} pods in ${rollSeconds}s (at least ${minReady} Ready throughout) under ` +
      `${(seq.length / trafficSeconds).toFixed(0)} messages/s: ${all.length} clients (${quiet.length} in a room quiet until ` +
      `the first of them was cut off, ${noOffset.length} of them cut ` +
      `with a pid and no offset), ${reconnects} reconnects, all ${reconnects} recovered with the same socket id; ` +
      `${acked(seq)} + ${acked(quietSent)} messages acknowledged (${seq.length - acked(seq) + quietSent.length - acked(quietSent)} ` +
      `emits failed: delivered at most once), each delivered exactly once, in order per origin pod`,
  );
}

// --- peer certificates ---------------------------------------------------------------------------

const pemOf = (b64) => Buffer.from(b64, "base64").toString("utf8");
const certsOf = (pem) => (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));

/** The hub's CA (Secret <hub>-peer-ca) and trust bundle (ConfigMap <hub>-peer-trust). */
async function peerCa() {
  const secret = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "secret", `${cfg.hub}-peer-ca`]);
  const trust = await kubectlJson(cfg.kubectl, ["-n", cfg.ns, "get", "configmap", `${cfg.hub}-peer-trust`]);
  return { ca: new X509Certificate(pemOf(secret.data["tls.crt"])), bundle: certsOf(trust.data["ca.crt"]) };
}

/** Per pod of the hub: the certificate of its newest issued CSR (signer roomcast.io/peer). */
async function issuedLeaves() {
  const list = await kubectlJson(cfg.kubectl, ["get", "csr"]);
  const user = `system:serviceaccount:${cfg.ns}:${cfg.hub}`;
  const newest = new Map();
  for (const c of list.items) {
    if (c.spec.signerName !== "roomcast.io/peer" || c.spec.username !== user || !c.status?.certificate) continue;
    const pod = c.spec.extra?.["authentication.kubernetes.io/pod-name"]?.[0];
    const at = Date.parse(c.metadata.creationTimestamp);
    if (pod && (!newest.has(pod) || newest.get(pod).at <= at)) newest.set(pod, { at, cert: new X509Certificate(pemOf(c.status.certificate)) });
  }
  return newest;
}

/** Every current pod holds a leaf for its own name signed by CA; the pods' names, or null. */
async function leavesSignedBy(ca) {
  const pods = (await hubPods()).filter((p) => !p.deleting);
  const leaves = await issuedLeaves();
  for (const p of pods) {
    const leaf = leaves.get(p.name)?.cert;
    if (!leaf || !leaf.verify(ca.publicKey) || leaf.subjectAltName !== `DNS:${p.name}`) return null;
  }
  return pods.map((p) => p.name);
}

async function tls() {
  await waitFor("tls: 3 hub pods Ready", T(120), () => exactlyReady(podNames(3)));
  const { ca, bundle } = await peerCa();
  check(bundle.length === 1 && bundle[0].fingerprint256 === ca.fingerprint256, "tls: the trust bundle is not exactly the hub CA");
  const pods = await waitFor("tls: every pod holds a certificate for its name from the hub CA", T(30), () => leavesSignedBy(ca));
  log(`tls: ${pods.join(", ")} hold CSR-issued certificates of ${ca.subject.replace(/\n/g, ", ")}`);
}

async function rotateCa() {
  if (!world.traffic) await startStream();
  const { members, traffic } = world;
  const sessionsBefore = members.map((m) => m.sessions.length);
  const { ca: oldCa } = await peerCa();
  const t0 = Date.now();
  const sentBefore = traffic.sent.length;
  await k("annotate", "socketiohub", cfg.hub, `roomcast.io/rotate-peer-ca=${t0}`, "--overwrite");
  const { ca: newCa } = await waitFor("rotate-ca: a new CA, trusted next to the old one", T(30), async () => {
    const now = await peerCa();
    const both = now.bundle.length === 2 && now.bundle.some((c) => c.fingerprint256 === oldCa.fingerprint256);
    return now.ca.fingerprint256 !== oldCa.fingerprint256 && both ? now : null;
  });
  const pods = await waitFor("rotate-ca: every pod re-issued its certificate by the new CA", T(120), () => leavesSignedBy(newCa));
  await waitFor("rotate-ca: the old CA left the trust bundle", T(120), async () => {
    const { bundle } = await peerCa();
    return bundle.length === 1 && bundle[0].fingerprint256 === newCa.fingerprint256;
  });
  // Pods read the bundle every reloadInterval (5 s): let them all load the final one.
  await sleep(12_000);
  await checkDelivery(traffic, members, "rotate-ca");
  // The traffic goes on: count only what was acknowledged 2 s ago (an ack can reach its
  // sender before the broadcast reaches every member).
  const settled = Date.now() - 2000;
  const during = traffic.sent.slice(sentBefore).filter((r) => r.ackAt !== null && r.ackAt < settled);
  const refused = during.filter((r) => r.ackAt !== null && !r.ok);
  check(refused.length === 0, `rotate-ca: ${refused.length} messages refused or timed out during the rotation`);
  members.forEach((m, i) =>
    check(m.sessions.length === sessionsBefore[i] && m.joined, `rotate-ca: ${m.name} was disconnected (${m.current?.reason})`),
  );
  // Count deliveries: each acknowledged message of the rotation, times the joined members.
  const delivered = during.filter((r) => r.ok).reduce((n, r) => n + members.filter((m) => m.received.has(r.key)).length, 0);
  const expected = during.filter((r) => r.ok).length * members.length;
  check(delivered === expected, `rotate-ca: ${delivered} of ${expected} deliveries`);
  log(
    `rotate-ca: CA rotated in ${((Date.now() - t0) / 1000).toFixed(0)}s; ${pods.length} pods re-issued by the new CA; ` +
      `${during.filter((r) => r.ok).length} messages sent during it, ${delivered} of ${expected} deliveries, none lost, nobody disconnected`,
  );
}

/** A free port on 127.0.0.1 (for Prometheus' web listener). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function monitoring() {
  const pmFile = process.env.PODMONITOR;
  check(pmFile, "monitoring: needs PODMONITOR (the chart's rendered PodMonitor as JSON)");
  if (!world.traffic) await startStream();
  const pods = await waitFor("monitoring: 3 hub pods Ready", T(120), () => exactlyReady(podNames(3)));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-e2e-prometheus-"));
  // Every pod of the cluster (the operator's too): the PodMonitor's selection keeps the hub's.
  const sdFile = path.join(dir, "pods.json");
  fs.writeFileSync(sdFile, JSON.stringify(podTargets((await kubectlJson(cfg.kubectl, ["get", "pods", "-A"])).items)));
  // Scraped every second (the chart's PodMonitor says 30 s): rate() over the dashboard's 5 s
  // window needs two samples in it.
  const scrape = podMonitorScrapeConfig(JSON.parse(fs.readFileSync(pmFile, "utf8")), { sdFile, interval: "1s" });
  const config = { global: { evaluation_interval: "1s" }, rule_files: [RULE_FILE], scrape_configs: [scrape] };
  const prom = await startPrometheus({ dir, addr: `127.0.0.1:${await freePort()}`, config });
  try {
    // Exactly the hub's pods, on their IPs' metrics ports, with the labels the dashboard and
    // the alerts use.
    const want = pods
      .map((p) => `${p.name} ${cfg.ns} ${cfg.hub} http://${p.ip}:${p.metricsPort}/metrics up`)
      .sort()
      .join("\n");
    const targets = () =>
      prom.api("/api/v1/targets", { state: "active" }).then(({ activeTargets }) =>
        activeTargets
          .map((t) => `${t.labels.pod} ${t.labels.namespace} ${t.labels.hub} ${t.scrapeUrl} ${t.health}`)
          .sort()
          .join("\n"),
      );
    await waitFor("monitoring: Prometheus selected the 3 hub pods through the PodMonitor and scrapes them", T(30), async () =>
      (await targets()) === want ? true : Promise.reject(new Error(`targets:\n${await targets()}\nwant:\n${want}`)),
    );
    const series = (results, title, i = 0) => results.filter((r) => r.panel === title)[i].result;
    const results = await waitFor("monitoring: every dashboard query returns data, with traffic in it", T(30), async () => {
      const res = await evaluateDashboard(prom);
      // rate() windows filled with traffic: webhook requests are counted.
      const webhooks = series(res, "Webhook requests and errors").reduce((n, r) => n + Number(r.value[1]), 0);
      return webhooks > 0 ? res : Promise.reject(new Error("no webhook requests in the rate window yet"));
    });
    const connections = series(results, "Connections per pod");
    check(
      connections.map((r) => r.metric.pod).sort().join() === podNames(3).join() && connections.every((r) => Number(r.value[1]) >= 1),
      `monitoring: connections per pod ${JSON.stringify(connections)}`,
    );
    const linksUp = series(results, "Peer links up / down");
    const linksDown = series(results, "Peer links up / down", 1);
    check(
      linksUp.every((r) => r.value[1] === "2") && linksDown.every((r) => r.value[1] === "0"),
      `monitoring: peer links up ${JSON.stringify(linksUp)}, down ${JSON.stringify(linksDown)}`,
    );
    // The dashboard's variables resolve (its label_values(...) queries).
    const hubs = await prom.api(`/api/v1/label/hub/values`, { "match[]": "roomcast_connections" });
    const namespaces = await prom.api(`/api/v1/label/namespace/values`, { "match[]": "roomcast_connections" });
    check(JSON.stringify([hubs, namespaces]) === JSON.stringify([[cfg.hub], [cfg.ns]]), `monitoring: variables ${hubs} / ${namespaces}`);
    const rules = await waitFor("monitoring: the chart's rule file loaded, every rule healthy", T(10), () => loadedRules(prom));
    const alerts = (await prom.api("/api/v1/alerts")).alerts.map((a) => `${a.labels.alertname}/${a.labels.pod}:${a.state}`);
    log(
      `monitoring: ${results.length} queries of the dashboard, all with data (${connections.map((r) => `${r.metric.pod} ${r.value[1]}`).join(", ")} connections); ` +
        `${rules.length} rules healthy; alerts: ${alerts.join(", ") || "none"}`,
    );
  } finally {
    await prom.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function deleteHub() {
  await k("delete", "socketiohub", cfg.hub, "--wait=true", `--timeout=${T(120)}s`);
  const kinds = "statefulsets,services,configmaps,secrets,pods,poddisruptionbudgets,networkpolicies,serviceaccounts,roles,rolebindings";
  await waitFor("delete-hub: every object of the hub is garbage-collected", T(120), async () => {
    const left = (await k("get", kinds, "-l", selector, "-o", "name")).trim();
    return left === "";
  });
}

const phases = { chat, monitoring, tls, "rotate-ca": rotateCa, scale, roll, "delete-pod": deletePod, recover, "delete-hub": deleteHub };

async function main() {
  const wanted = process.argv.slice(2).length ? process.argv.slice(2) : ["chat", "scale", "roll", "delete-pod"];
  for (const p of wanted) check(phases[p], `unknown phase ${p}; phases: ${Object.keys(phases).join(", ")}`);
  for (const p of wanted) {
    const t = Date.now();
    log(`--- ${p}`);
    await phases[p]();
    log(`--- ${p} passed in ${((Date.now() - t) / 1000).toFixed(1)}s`);
  }
  if (world.traffic) {
    await world.traffic.stop();
    log(`traffic: ${world.traffic.sent.filter((r) => r.ok).length} of ${world.traffic.sent.length} messages acknowledged`);
  }
  world.members.forEach((m) => m.close());
}

main().then(
  () => process.exit(0),
  (err) => {
    log(`FAIL: ${err instanceof Failure ? err.message : err.stack}`);
    process.exit(1);
  },
);
