// The hub side of app links (proto/app.proto), driven by a raw gRPC app written here (not the
// SDK: the SDK has its own suite in sdk/node/test), with stock socket.io clients: sessions
// handed to linked instances, the app's sockets and rooms, broadcasts and hub acks, and what
// a hostile or broken app cannot do (wrong token, foreign socket ids, a slow reader, an
// oversized batch), each time with a bystander that must not notice.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync, spawn } from "node:child_process";
import grpc from "@grpc/grpc-js";
import { rawApp as linkApp } from "./rawapp.mjs";
import {
  startServer,
  writeConfig,
  ClientPool,
  connected,
  once,
  eventually,
  sleep,
  http,
  apiCall,
  startAppLinkHub,
  metric,
  binaryPath,
} from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOKEN = "app-link-token-0123456789";
const API_TOKEN = "management-token-0123456789";

async function startAppHub(appLink = {}, extra = {}) {
  const dir = path.dirname(writeConfig({}, "roomcast-applink-"));
  const tokenFile = path.join(dir, "app-token");
  fs.writeFileSync(tokenFile, `${TOKEN}\n`);
  const apiTokenFile = path.join(dir, "api-token");
  fs.writeFileSync(apiTokenFile, `${API_TOKEN}\n`);
  const config = {
    // A single node has no peer certificate to serve app links with: plaintext, said so.
    appLink: { listen: "127.0.0.1:0", tokenFile, plaintext: true, ...appLink },
    management: { listen: "127.0.0.1:0", tokenFile: apiTokenFile },
    metrics: { listen: "127.0.0.1:0" },
    ...extra,
  };
  const file = path.join(dir, "hub.json");
  fs.writeFileSync(file, JSON.stringify(config));
  const hub = await startServer({ bin: "main", args: ["--config", file] });
  await eventually(() => /app link listening on \S+/.test(hub.stdout()), 5000, "app link line");
  hub.appAddr = /app link listening on (\S+)/.exec(hub.stdout())[1];
  hub.api = /management listening on (http:\/\/\S+)/.exec(hub.stdout())[1];
  hub.token = API_TOKEN;
  return hub;
}

const pool = new ClientPool();
const apps = [];
let hub;

function app(opts) {
  const a = linkApp(hub.appAddr, { token: TOKEN, ...opts });
  apps.push(a);
  return a;
}

async function echoes(s, what) {
  const p = once(s, "echo", 5000, what);
  s.emit("echo", what);
  assert.deepEqual(await p, [what]);
}

afterEach(() => {
  pool.closeAll();
  for (const a of apps.splice(0)) a.close();
});
after(async () => {
  hub?.assertHealthy("after the app link tests");
  await hub?.stop();
});

describe("app links: sessions go to linked instances", () => {
  before(async () => {
    hub = await startAppHub();
  });

  it("refuses handshakes (503) while no instance is linked, serves them once one is", async () => {
    const res = await http(`${hub.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 503);
    assert.match(res.body, /No application instance available/);
    const a = app();
    await a.welcome;
    for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
      const s = pool.io(hub.url, { transports });
      await connected(s, 5000, transports.join("+"));
      await echoes(s, `via ${transports.join("+")}`);
    }
    const opens = a.of("open");
    assert.equal(opens.length, 3);
    assert.ok(opens.every((o) => o.socketIdSuffix.length > 0 && o.handshake.url.startsWith("/socket.io/")));
    await eventually(() => a.of("upgraded").length === 1, 5000, "the polling-then-websocket client's upgrade");
  });

  it("a wrong token or instance id is refused, and the refused caller gets no sessions", async () => {
    const bystander = app();
    await bystander.welcome;
    const wrong = app({ token: "not-the-token-at-all" });
    const badId = app({ instance: "bad id/with slash" });
    await eventually(() => wrong.error && badId.error, 5000, "both refused");
    assert.equal(wrong.error.code, grpc.status.UNAUTHENTICATED);
    assert.match(wrong.error.details, /token refused/);
    assert.equal(badId.error.code, grpc.status.INVALID_ARGUMENT);
    const s = pool.io(hub.url, { transports: ["websocket"] });
    await connected(s);
    await echoes(s, "served by the bystander");
    assert.equal(bystander.of("open").length, 1);
    assert.ok((await metric(hub, "roomcast_app_links_refused_total")) >= 2);
    assert.equal(await metric(hub, "roomcast_app_links"), 1);
    assert.equal(await metric(hub, "roomcast_app_sessions"), 1);
  });

  it("balances sessions over instances, and a draining one gets no new sessions", async () => {
    const a = app();
    const b = app();
    await Promise.all([a.welcome, b.welcome]);
    const first = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const s = pool.io(hub.url, { transports: ["websocket"] });
        await connected(s);
        return s;
      }),
    );
    assert.equal(a.of("open").length, 3, "fewest sessions first");
    assert.equal(b.of("open").length, 3);
    a.send({ drain: {} });
    await sleep(200);
    for (let i = 0; i < 3; i++) {
      const s = pool.io(hub.url, { transports: ["websocket"] });
      await connected(s);
    }
    assert.equal(a.of("open").length, 3, "a draining instance gets no new session");
    assert.equal(b.of("open").length, 6);
    // The draining instance's clients are still served.
    await echoes(first[0], "still served while draining");
  });

  it("when an instance's link ends its clients are disconnected and reconnect onto another", async () => {
    const a = app();
    await a.welcome;
    const s = pool.io(hub.url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 100 });
    await connected(s);
    const b = app();
    await b.welcome;
    const gone = once(s, "disconnect", 5000, "disconnect");
    const back = once(s, "connect", 10_000, "reconnect");
    a.close();
    assert.equal((await gone)[0], "transport close");
    await back;
    await echoes(s, "served by the other instance");
    assert.equal(b.of("open").length, 1);
  });
});

describe("app links: rooms, broadcasts and acks are the hub's", () => {
  it("joins are acknowledged, broadcasts reach the room only, acks are collected by the hub", async () => {
    const a = app();
    await a.welcome;
    const member = pool.io(hub.url, { transports: ["websocket"] });
    const outsider = pool.io(hub.url, { transports: ["polling"] });
    await Promise.all([connected(member), connected(outsider)]);
    const joined = once(member, "joined");
    member.emit("join", "news");
    assert.deepEqual(await joined, ["news"]);
    let outsiderGot = 0;
    outsider.on("news", () => outsiderGot++);
    const news = once(member, "news");
    a.send({ broadcast: { namespace: "/", rooms: ["news"], text: '2["news",{"n":1}]' } });
    assert.deepEqual(await news, [{ n: 1 }]);
    // A broadcast with acks to everyone: the hub numbers it above the app's ack ids and
    // collects the replies itself (the app never sees the clients' ACK packets).
    member.on("ask", (cb) => cb("member"));
    outsider.on("ask", (cb) => cb("outsider"));
    const reply = await a.request({ broadcast: { namespace: "/", rooms: [], text: '2["ask"]', ackTimeoutMs: 2000 } });
    assert.equal(reply.error, "");
    assert.equal(reply.recipients, 2);
    assert.equal(reply.timedOut, false);
    assert.deepEqual(reply.acks.map((r) => JSON.parse(r.argsJson)).sort(), [["member"], ["outsider"]].sort());
    const welcome = await a.welcome;
    const acksSeen = a.of("packet").filter((p) => /^3\d+/.test(p.text ?? "") && Number(/^3(\d+)/.exec(p.text)[1]) >= welcome.hubAckBase);
    assert.deepEqual(acksSeen, [], "hub acks are not forwarded to the app");
    assert.equal(outsiderGot, 0, "the room broadcast reached its member only");
  });

  it("the management API's socketsJoin and disconnectSockets are passed to the app", async () => {
    const a = app();
    await a.welcome;
    const s = pool.io(hub.url, { transports: ["websocket"] });
    await connected(s);
    const sid = [...a.sockets.values()][0];
    await apiCall(hub, "POST", "/v1/namespaces/%2F/sockets/join", { socketIds: [sid], join: ["vip"] });
    await eventually(() => a.of("roomsChanged").length === 1, 5000, "RoomsChanged");
    assert.deepEqual(a.of("roomsChanged")[0].joined, ["vip"]);
    await apiCall(hub, "POST", "/v1/namespaces/%2F/sockets/disconnect", { rooms: ["vip"] });
    await eventually(() => a.of("disconnect").length === 1, 5000, "Disconnect");
    assert.equal(a.of("disconnect")[0].socketId, sid);
  });
});

describe("app links: what a broken or hostile app cannot do", () => {
  it("an app cannot claim a socket id of another node or one already in use", async () => {
    const a = app();
    await a.welcome;
    const first = pool.io(hub.url, { transports: ["websocket"] });
    await connected(first);
    const second = pool.io(hub.url, { transports: ["websocket"] });
    await connected(second);
    const [one, two] = [...a.sessions.keys()];
    const foreign = crypto.randomBytes(12).toString("base64url") + Buffer.from("another-node").toString("base64url");
    let reply = await a.request({ join: { session: two, namespace: "/x", socketId: foreign, rooms: [] } });
    assert.match(reply.error, /does not name this node/);
    // The first session's socket id, claimed for the second session in the same namespace.
    reply = await a.request({ join: { session: two, namespace: "/", socketId: a.sockets.get(one), rooms: ["stolen"] } });
    assert.match(reply.error, /already in use/);
    reply = await a.request({ join: { session: 999, namespace: "/", socketId: a.sockets.get(one), rooms: [] } });
    assert.match(reply.error, /unknown or closed session/);
    // A room over limits.maxRoomNameBytes: the others are joined, the refused one is told back
    // as left so that the app's socket.rooms stays the hub's.
    const long = "r".repeat(5000);
    reply = await a.request({ join: { session: one, namespace: "/", socketId: a.sockets.get(one), rooms: ["fine", long] } });
    assert.match(reply.error, /too long/);
    await eventually(() => a.of("roomsChanged").some((c) => c.left.includes(long)), 5000, "the refused room told back");
    assert.deepEqual(a.of("roomsChanged").at(-1).joined, []);
    await echoes(first, "the first client is unaffected");
    await echoes(second, "the second client is unaffected");
  });

  it("one client flooding a frozen app is cut off alone at appLink.maxQueuedBytesPerSession", async () => {
    await hub.stop();
    hub = await startAppHub({ maxBatchBytes: 65536, maxQueuedBytes: 1048576, maxQueuedBytesPerSession: 131072 });
    const frozen = spawn(process.execPath, [path.join(HERE, "rawapp.mjs"), hub.appAddr, TOKEN, "frozen-app"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await once(frozen.stdout, "data", 10_000, "the app's welcome");
      const flooder = pool.io(hub.url, { transports: ["websocket"] });
      const neighbour = pool.io(hub.url, { transports: ["websocket"] });
      await Promise.all([connected(flooder), connected(neighbour)]);
      frozen.kill("SIGSTOP");
      const closed = once(flooder, "disconnect", 20_000, "the flooder cut off");
      const big = "x".repeat(16_000);
      for (let i = 0; i < 2000 && flooder.connected; i++) {
        flooder.emit("echo", big);
        if (i % 20 === 0) await sleep(5);
      }
      await closed;
      await eventually(() => /maxQueuedBytesPerSession reached/.test(hub.stderr()), 5000, "logged");
      frozen.kill("SIGCONT");
      // The app's other client was not touched, and the link lives on.
      await echoes(neighbour, "the neighbour is still served");
      assert.equal(await metric(hub, "roomcast_app_links_overflowed_total"), 0);
      assert.equal(await metric(hub, "roomcast_app_links"), 1);
    } finally {
      frozen.kill("SIGKILL");
    }
  });

  it("a frozen app is cut off at appLink.maxQueuedBytes; a bystander instance and its client are not", async () => {
    await hub.stop();
    hub = await startAppHub({ maxBatchBytes: 65536, maxQueuedBytes: 262144, maxQueuedBytesPerSession: 131072 });
    // An instance in a process of its own, then frozen (SIGSTOP): it reads nothing more.
    const frozen = spawn(process.execPath, [path.join(HERE, "rawapp.mjs"), hub.appAddr, TOKEN, "frozen-app"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await once(frozen.stdout, "data", 10_000, "the frozen app's welcome");
      // Four clients of the app that will freeze (the only instance yet), each under the
      // per-session budget, together over the link's.
      const flooders = Array.from({ length: 4 }, () => pool.io(hub.url, { transports: ["websocket"], reconnection: false }));
      await Promise.all(flooders.map((f) => connected(f)));
      const bystander = app();
      await bystander.welcome;
      const calm = pool.io(hub.url, { transports: ["websocket"] });
      await connected(calm);
      assert.equal(bystander.of("open").length, 1, "the calm client is the bystander instance's");
      frozen.kill("SIGSTOP");
      const closed = Promise.all(flooders.map((f) => once(f, "disconnect", 30_000, "a flooder's session closed")));
      const big = "x".repeat(16_000);
      for (let i = 0; i < 7; i++) {
        for (const f of flooders) f.emit("echo", big);
        await sleep(5);
      }
      await closed;
      await eventually(() => /maxQueuedBytes reached/.test(hub.stderr()), 5000, "the overflow is logged");
      assert.equal(await metric(hub, "roomcast_app_links_overflowed_total"), 1);
      await echoes(calm, "the bystander instance's client is served");
    } finally {
      frozen.kill("SIGKILL");
    }
  });
});

describe("app links: an instance that stops answering", () => {
  it("is noticed by the keepalive pings; its client reconnects onto a live instance", async () => {
    await hub.stop();
    hub = await startAppHub({ keepaliveInterval: 500 });
    const frozen = spawn(process.execPath, [path.join(HERE, "rawapp.mjs"), hub.appAddr, TOKEN, "frozen-app"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await once(frozen.stdout, "data", 10_000, "the app's welcome");
      const s = pool.io(hub.url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 100 });
      await connected(s);
      const live = app();
      await live.welcome;
      const gone = once(s, "disconnect", 10_000, "the frozen instance's client cut off");
      const back = once(s, "connect", 10_000, "its reconnection");
      frozen.kill("SIGSTOP");
      const t0 = Date.now();
      assert.equal((await gone)[0], "transport close");
      assert.ok(Date.now() - t0 < 5000, `cut off after ${Date.now() - t0} ms (keepalive 500 ms)`);
      await back;
      await echoes(s, "served by the live instance");
      assert.equal(live.of("open").length, 1);
    } finally {
      frozen.kill("SIGKILL");
    }
  });
});

describe("app links in a 3-node cluster", () => {
  const IPS = ["127.0.0.91", "127.0.0.92", "127.0.0.93"];
  let cluster;
  const nodes = [];

  before(async () => {
    cluster = await startAppLinkHub({ ips: IPS, token: TOKEN, apiToken: API_TOKEN });
    cluster.nodes.forEach((node, i) => {
      node.appAddr = cluster.appAddresses[i];
      nodes.push(node);
    });
    for (const node of nodes) {
      await eventually(async () => (await apiCall(node, "GET", "/v1/stats")).nodes === IPS.length, 10_000, "linked");
    }
  });
  after(async () => {
    for (const n of nodes) n.assertHealthy("after the cluster app link tests");
    await cluster?.stop();
  });

  it("app links are TLS with the node's peer certificate: a plaintext app or one of another CA is refused, a bystander is served", async () => {
    const bystander = linkApp(nodes[0].appAddr, { token: TOKEN, caFile: cluster.caFile, instance: "tls-bystander" });
    apps.push(bystander);
    await bystander.welcome;
    const before = await metric(nodes[0], "roomcast_app_links_refused_total");
    const otherCa = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-other-ca-")), "ca");
    execFileSync(binaryPath("main"), ["certs", "ca", "--out", otherCa], { stdio: "ignore" });
    const plain = linkApp(nodes[0].appAddr, { token: TOKEN, instance: "plaintext-app" });
    const stranger = linkApp(nodes[0].appAddr, { token: TOKEN, instance: "stranger-app", caFile: path.join(otherCa, "ca.crt") });
    apps.push(plain, stranger);
    await eventually(() => plain.error && stranger.error, 10_000, "both links failed");
    assert.equal(plain.error.code, grpc.status.UNAVAILABLE);
    assert.equal(stranger.error.code, grpc.status.UNAVAILABLE);
    assert.equal(plain.of("welcome").length + stranger.of("welcome").length, 0);
    // Both failed at the handshake, before the token: counted as refused on the node.
    await eventually(async () => (await metric(nodes[0], "roomcast_app_links_refused_total")) >= before + 2, 5000, "refusals counted");
    const s = pool.io(nodes[0].url, { transports: ["websocket"] });
    await connected(s);
    await echoes(s, "served by the TLS bystander");
    assert.ok(bystander.of("open").length >= 1);
  });

  it("every node tells an instance where every node takes app links", async () => {
    const a = linkApp(nodes[0].appAddr, { token: TOKEN, caFile: cluster.caFile });
    apps.push(a);
    const want = nodes.map((n, i) => ({ id: `hub-${i}`, appAddress: n.appAddr }));
    await eventually(
      () => JSON.stringify(a.of("members").at(-1)?.members ?? (a.of("welcome")[0]?.members?.members)) === JSON.stringify(want),
      10_000,
      "the member list with every node's app address",
    );
  });

  it("a broadcast sent on one node's link reaches clients of every node, each once", async () => {
    const links = nodes.map((n) => linkApp(n.appAddr, { token: TOKEN, instance: "one-instance", caFile: cluster.caFile }));
    apps.push(...links);
    await Promise.all(links.map((l) => l.welcome));
    const clients = await Promise.all(
      nodes.map(async (n) => {
        const s = pool.io(n.url, { transports: ["websocket"] });
        await connected(s);
        const joined = once(s, "joined");
        s.emit("join", "everyone");
        await joined;
        return s;
      }),
    );
    const counts = clients.map(() => 0);
    clients.forEach((s, i) => s.on("hello", () => counts[i]++));
    links[1].send({ broadcast: { namespace: "/", rooms: ["everyone"], text: '2["hello"]' } });
    await eventually(() => counts.every((c) => c === 1), 5000, "one hello per client");
    // To one socket, by its id: only that client.
    const [session] = [...links[2].sockets.keys()];
    const target = links[2].sockets.get(session);
    links[0].send({ broadcast: { namespace: "/", rooms: [target], text: '2["hello"]' } });
    await eventually(() => counts[2] === 2, 5000, "the private hello");
    await sleep(200);
    assert.deepEqual(counts, [1, 1, 2]);
  });
});
