// What only a hub has: several app instances, the links (errors, drain, a node going away),
// hub socket ids, the management API acting on the app's sockets, batches within the hub's
// limit. A 3-node hub of the real binary (ROOMCAST_BIN_DIR).
import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  ClientPool,
  binaryPath,
  apiCall,
  connected,
  eventually,
  once,
  sleep,
  toBuffer,
} from "../../../dataplane/tests/js/harness.mjs";
import { useRoomcast } from "@roomcast/socket.io";
import { hubEnv, socketIo, startHub } from "./support/env.mjs";

const IPS = ["127.0.0.41", "127.0.0.42", "127.0.0.43"];
const MAX_BATCH_BYTES = 16 * 1024;
const sio = await socketIo();
let hub = null;
const env = hubEnv(sio, () => hub, { instances: 2 });

before(async () => {
  hub = await startHub({ ips: IPS, appLink: { maxBatchBytes: MAX_BATCH_BYTES } });
});
after(async () => {
  for (const node of hub?.nodes ?? []) node.assertHealthy("at the end of hub.test.mjs");
  await hub?.stop();
});

const pool = new ClientPool();
let app = null;
afterEach(async () => {
  pool.closeAll();
  if (app) await app.stop();
  app = null;
});

async function client(k = 0, opts = {}, nsp = "") {
  const s = pool.io(app.url(k) + nsp, opts);
  await connected(s, 10_000, `client ${k}${nsp}`);
  return s;
}

describe(`hub only (${sio.name}@${sio.version})`, () => {
  test("useRoomcast rejects a wrong token, saying so", async () => {
    const io = new sio.Server();
    const t0 = Date.now();
    await assert.rejects(
      useRoomcast(io, { endpoint: `http://${hub.appAddresses[0]}`, token: "not-the-token-0123456789", caFile: hub.caFile, connectTimeout: 5000 }),
      /refused the app token \(UNAUTHENTICATED\)/,
    );
    assert.ok(Date.now() - t0 < 3000, "refused at once, not after the connect timeout");
  });

  test("app links are TLS: without the hub's trust bundle, or with another CA's, useRoomcast rejects, saying what to give", async () => {
    await assert.rejects(
      useRoomcast(new sio.Server(), { endpoint: `http://${hub.appAddresses[0]}`, token: hub.token, connectTimeout: 1500 }),
      /could not reach the hub's app link .*needs its trust bundle: option `caFile` or ROOMCAST_APP_CA_FILE/,
    );
    const otherCa = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-other-ca-")), "ca");
    execFileSync(binaryPath("main"), ["certs", "ca", "--out", otherCa], { stdio: "ignore" });
    await assert.rejects(
      useRoomcast(new sio.Server(), { endpoint: `http://${hub.appAddresses[0]}`, token: hub.token, caFile: path.join(otherCa, "ca.crt"), connectTimeout: 1500 }),
      /could not reach the hub's app link .*last error: .*(certificate|UNAVAILABLE)/,
    );
    await assert.rejects(
      useRoomcast(new sio.Server(), { endpoint: `http://${hub.appAddresses[0]}`, token: hub.token, caFile: "/nonexistent/ca.crt" }),
      /cannot read the hub's trust bundle \/nonexistent\/ca\.crt/,
    );
  });

  test("useRoomcast rejects an unreachable endpoint after its connect timeout, saying so", async () => {
    const io = new sio.Server();
    const t0 = Date.now();
    await assert.rejects(
      useRoomcast(io, { endpoint: "127.0.0.1:1", token: hub.token, connectTimeout: 800 }),
      /could not reach the hub's app link at 127\.0\.0\.1:1 within 800 ms/,
    );
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 750 && elapsed < 3000, `rejected after ${elapsed} ms`);
  });

  test("socket ids end with the suffix of their node; sessions spread over the instances", async () => {
    app = await env.start((io) => io.of("/other"));
    const clients = [];
    for (let k = 0; k < 6; k++) clients.push(await client(k));
    const suffixes = new Map();
    for (const [k, c] of clients.entries()) {
      const s = app.socket(c.id);
      assert.ok(s, `the server socket of client ${k}`);
      const { socketIdSuffix, node } = s.conn.roomcast;
      assert.equal(node, `hub-${k % 3}`);
      assert.ok(socketIdSuffix.length > 0);
      assert.ok(c.id.endsWith(socketIdSuffix), `${c.id} ends with ${socketIdSuffix}`);
      assert.match(c.id.slice(0, -socketIdSuffix.length), /^[A-Za-z0-9_-]{16}$/);
      if (suffixes.has(node)) assert.equal(suffixes.get(node), socketIdSuffix, `one suffix per node (${node})`);
      suffixes.set(node, socketIdSuffix);
    }
    assert.equal(new Set(suffixes.values()).size, 3, "every node has its own suffix");
    // Two namespaces on one session: both ids carry the session's suffix.
    const m = pool.manager(app.url(1));
    const [a, b] = [pool.track(m.socket("/")), pool.track(m.socket("/other"))];
    await Promise.all([connected(a), connected(b)]);
    assert.notEqual(a.id, b.id);
    assert.ok(a.id.endsWith(suffixes.get("hub-1")) && b.id.endsWith(suffixes.get("hub-1")));
    // The hub handed sessions to both instances, and each sees the other's as remote.
    assert.deepEqual(app.links.map((l) => l.sessions > 0), [true, true], `sessions per instance: ${app.links.map((l) => l.sessions)}`);
    const all = await app.ios[0].fetchSockets();
    assert.equal(all.length, 7);
    const remote = all.filter((s) => !s.server).length;
    assert.equal(remote, app.ios[1].of("/").sockets.size);
    assert.ok(remote > 0 && remote < 7);
  });

  test("serverSideEmit between instances, with and without acks, binary included", async () => {
    const got = [[], [], []];
    app = await env.start(
      (io, i) => {
        io.on("note", (...args) => got[i].push(args));
        io.on("ping-servers", (x, cb) => cb({ from: i, x: x + 1 }));
        io.of("/chat").on("chat-note", (text) => got[i].push(["chat", text]));
      },
      { instances: 3 },
    );
    app.ios[0].serverSideEmit("note", "hello", { n: 1 }, Buffer.from([1, 2]));
    await eventually(() => got[1].length === 1 && got[2].length === 1, 5000, "the note at the other instances");
    await sleep(300);
    assert.deepEqual(got[0], []);
    for (const i of [1, 2]) {
      const [text, obj, buf] = got[i][0];
      assert.deepEqual([text, obj, Buffer.isBuffer(buf), [...toBuffer(buf)]], ["hello", { n: 1 }, true, [1, 2]]);
    }
    const byFrom = (r) => [...r].sort((p, q) => p.from - q.from);
    assert.deepEqual(byFrom(await app.ios[0].serverSideEmitWithAck("ping-servers", 1)), [
      { from: 1, x: 2 },
      { from: 2, x: 2 },
    ]);
    assert.deepEqual(byFrom(await app.ios[2].serverSideEmitWithAck("ping-servers", 10)), [
      { from: 0, x: 11 },
      { from: 1, x: 11 },
    ]);
    app.ios[1].of("/chat").serverSideEmit("chat-note", "in chat");
    await eventually(() => got[0].some((e) => e[0] === "chat") && got[2].some((e) => e[0] === "chat"), 5000, "chat note");
    // A namespace only one instance has: the others answer fetchSockets with nothing, at once.
    const t0 = Date.now();
    assert.deepEqual(await app.ios[0].of("/solo").fetchSockets(), []);
    assert.ok(Date.now() - t0 < 2000, `fetchSockets took ${Date.now() - t0} ms`);
  });

  test("the management API's socketsJoin/Leave and disconnect act on the app's sockets", async () => {
    app = await env.start(() => {});
    const c = await client(0);
    const server = app.socket(c.id);
    const node = hub.nodes[1];
    await apiCall(node, "POST", "/v1/namespaces/%2F/sockets/join", { socketIds: [c.id], join: ["api-room", "api-2"] });
    await eventually(() => server.rooms.has("api-room") && server.rooms.has("api-2"), 5000, "the rooms in socket.rooms");
    assert.deepEqual([...server.rooms].sort(), [c.id, "api-2", "api-room"].sort());
    for (const io of app.ios) {
      assert.deepEqual((await io.in("api-room").fetchSockets()).map((s) => s.id), [c.id]);
    }
    await apiCall(node, "POST", "/v1/namespaces/%2F/sockets/leave", { socketIds: [c.id], leave: ["api-room"] });
    await eventually(() => !server.rooms.has("api-room"), 5000, "api-room left");
    assert.deepEqual([...server.rooms].sort(), [c.id, "api-2"].sort());
    // The app's own broadcast to a room the management API joined reaches the client.
    const news = once(c, "news");
    app.ios[1].to("api-2").emit("news", "via api-2");
    assert.deepEqual(await news, ["via api-2"]);

    const serverGone = once(server, "disconnect");
    const clientGone = once(c, "disconnect");
    await apiCall(node, "POST", "/v1/namespaces/%2F/sockets/disconnect", { socketIds: [c.id] });
    assert.equal((await serverGone)[0], "server namespace disconnect");
    assert.equal((await clientGone)[0], "io server disconnect");

    const d = await client(2, { transports: ["websocket"] });
    const dServer = app.socket(d.id);
    const dGone = once(dServer, "disconnect");
    const dClient = once(d, "disconnect");
    await apiCall(node, "POST", "/v1/namespaces/%2F/sockets/disconnect", { socketIds: [d.id], close: true });
    assert.equal((await dGone)[0], "server namespace disconnect");
    assert.equal((await dClient)[0], "io server disconnect");
  });

  test("a client's upgrade to WebSocket reaches socket.conn", async () => {
    const upgrades = [];
    app = await env.start((io) =>
      io.on("connection", (socket) => {
        socket.data.first = socket.conn.transport.name;
        socket.conn.on("upgrade", (transport) => upgrades.push([socket.id, transport.name]));
      }),
    );
    const c = await client(1, { transports: ["polling", "websocket"] });
    const server = app.socket(c.id);
    assert.equal(server.data.first, "polling");
    await eventually(() => upgrades.length === 1, 5000, "the upgrade event");
    assert.deepEqual(upgrades, [[c.id, "websocket"]]);
    assert.equal(server.conn.transport.name, "websocket");
    assert.equal(await c.timeout(3000).emitWithAck("nothing").catch((e) => e.message), "operation has timed out");
  });

  test("batches stay within the hub's maxBatchBytes: a burst of broadcasts and packets in one tick", async () => {
    app = await env.start((io) =>
      io.on("connection", (socket) =>
        socket.on("burst-me", (n) => {
          for (let i = 0; i < n; i++) socket.emit("direct", i, "y".repeat(1000));
        }),
      ),
    );
    const c = await client(0, { transports: ["websocket"] });
    const broadcasts = [];
    const direct = [];
    c.on("burst", (i) => broadcasts.push(i));
    c.on("direct", (i) => direct.push(i));
    const n = 300; // ~300 KB: about 20 batches of 16 KiB
    for (let i = 0; i < n; i++) app.ios[0].to(c.id).emit("burst", i, "x".repeat(1000));
    c.emit("burst-me", n);
    await eventually(() => broadcasts.length === n && direct.length === n, 10_000, "every message of the bursts");
    const order = [...Array(n).keys()];
    assert.deepEqual(broadcasts, order);
    assert.deepEqual(direct, order);
    assert.deepEqual(app.links.map((l) => l.nodes().every((x) => x.state === "open")), [true, true], "no link was ended");
  });

  test("close() drains: no new sessions, sessions closed, their clients reconnect to another instance", async () => {
    const reasons = [[], []];
    app = await env.start((io, i) => io.on("connection", (socket) => socket.on("disconnect", (r) => reasons[i].push(r))));
    const clients = [];
    for (let k = 0; k < 6; k++) {
      clients.push(await client(k, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0 }));
    }
    const onFirst = app.ios[0].of("/").sockets.size;
    assert.ok(onFirst > 0, "the first instance serves some clients");
    const clientReasons = [];
    for (const c of clients) c.on("disconnect", (r) => clientReasons.push(r));
    const t0 = Date.now();
    await app.links[0].close({ timeout: 5000 });
    assert.ok(Date.now() - t0 < 4000, `drained in ${Date.now() - t0} ms`);
    assert.equal(app.links[0].sessions, 0);
    assert.ok(app.links[0].nodes().every((n) => n.state === "closed"));
    await eventually(() => reasons[0].length === onFirst, 5000, "the drained sockets' disconnect");
    await eventually(() => clientReasons.length >= onFirst, 5000, "the drained clients' disconnect");
    assert.deepEqual(new Set(reasons[0]), new Set(["forced close"]));
    assert.deepEqual(new Set(clientReasons), new Set(["transport close"]));
    assert.equal(clientReasons.length, onFirst);
    // The clients are back, all on the other instance.
    await eventually(() => clients.every((c) => c.connected) && app.ios[1].of("/").sockets.size === 6, 10_000, "clients reconnected");
    assert.equal(app.ios[0].of("/").sockets.size, 0);
    assert.deepEqual(reasons[1], []);
  });

  test("drainOnSigterm: SIGTERM drains the instance, then the process ends", async () => {
    const script = fileURLToPath(new URL("./fixtures/drain-app.mjs", import.meta.url));
    const child = spawn(process.execPath, [script], {
      env: { ...process.env, ROOMCAST_APP_ENDPOINT: hub.appAddresses[2], ROOMCAST_APP_TOKEN: hub.token, ROOMCAST_APP_CA_FILE: hub.caFile, INSTANCE_ID: "sigterm-app" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    try {
      await eventually(() => out.includes("ready"), 10_000, `the app's ready line (output: ${out})`);
      const c = pool.io(hub.nodes[2].url, { reconnection: false });
      await connected(c);
      const id = c.id;
      await eventually(() => out.includes(`connection ${id}`), 5000, "the app's connection line");
      const gone = once(c, "disconnect", 10_000);
      child.kill("SIGTERM");
      assert.equal((await gone)[0], "transport close");
      const result = await Promise.race([exited, sleep(10_000).then(() => "still running")]);
      assert.deepEqual(result, { code: null, signal: "SIGTERM" }, out);
      assert.ok(out.includes(`disconnect ${id} forced close`), out);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("a node that goes away ends its sessions (transport close); its link comes back with it", async () => {
    const reasons = new Map();
    app = await env.start((io) => io.on("connection", (socket) => socket.on("disconnect", (r) => reasons.set(socket.id, r))));
    const clients = [];
    for (let k = 0; k < 6; k++) clients.push(await client(k));
    const onNode2 = clients.filter((_, k) => k % 3 === 2).map((c) => c.id);
    const others = clients.filter((_, k) => k % 3 !== 2);
    // Killed: the links to it break with no word from it (a stopped node would first close
    // its sessions itself, "server shutting down").
    const killed = hub.nodes[2];
    killed.proc.kill("SIGKILL");
    await killed.exit;
    hub.nodes[2] = { ...killed, assertHealthy() {}, stop: async () => {} };
    await eventually(() => onNode2.every((id) => reasons.has(id)), 10_000, "the sockets of hub-2 disconnected");
    assert.deepEqual(onNode2.map((id) => reasons.get(id)), onNode2.map(() => "transport close"));
    await sleep(300);
    assert.ok(others.every((c) => c.connected), "clients of the other nodes stay");
    assert.equal(reasons.size, onNode2.length);
    for (const link of app.links) {
      await eventually(() => link.nodes().find((n) => n.id === "hub-2")?.state !== "open", 5000, "hub-2's link down");
    }
    // hub-2 comes back (on a new app link port): every instance links to it again.
    hub.nodes[2] = await hub.startNode(2);
    const line = /app link listening on ([0-9.]+:\d+)/;
    await eventually(() => line.test(hub.nodes[2].stdout()), 5000, "app link line");
    const address = line.exec(hub.nodes[2].stdout())[1];
    for (const link of app.links) {
      await eventually(
        () => link.nodes().some((n) => n.id === "hub-2" && n.state === "open" && n.address === address),
        15_000,
        `hub-2 relinked at ${address}: ${JSON.stringify(link.nodes())}`,
      );
    }
    const fresh = await client(2);
    assert.equal(app.socket(fresh.id).conn.roomcast.node, "hub-2");
    assert.equal(await fresh.timeout(3000).emitWithAck("x").catch((e) => e.message), "operation has timed out");
  });
});
