// Test harness: starts the real server binaries, and gives raw HTTP / WebSocket helpers
// for the Engine.IO endpoint plus bookkeeping for socket.io-client instances.
//
// Everything targets 127.0.0.1 only.

import { spawn, execFileSync } from "node:child_process";
import { after, afterEach } from "node:test";
import { access, constants } from "node:fs/promises";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import nodeHttp from "node:http";
import { WebSocket } from "ws";
import { io, Manager } from "socket.io-client";

export { sleep };

/**
 * The lifecycle most test files share: after each test the pool's clients are closed (then
 * `eachTest` runs, if given); after the last, every server `servers()` returns (nulls
 * skipped) must still be healthy and is stopped, then `cleanup` runs.
 */
export function lifecycle(pool, { servers = () => [], label = "at the end of the file", eachTest, cleanup } = {}) {
  afterEach(async () => {
    pool.closeAll();
    await eachTest?.();
  });
  after(async () => {
    pool.closeAll();
    const live = servers().filter(Boolean);
    for (const s of live) s.assertHealthy(label);
    await Promise.all(live.map((s) => s.stop()));
    await cleanup?.();
  });
}

/**
 * Starts roomcast-dataplane (`bin: "main"`) with `config` plus a management API on a free
 * port whose token is read from a file, and waits for both ready lines. The returned server
 * also has `api` (the management URL) and `token`, as `apiCall` expects.
 */
export async function startHubWithApi(config, token, { env = {} } = {}) {
  const file = writeConfig({}, "roomcast-api-");
  const tokenFile = path.join(path.dirname(file), "token");
  fs.writeFileSync(tokenFile, `${token}\n`);
  const management = { listen: "127.0.0.1:0", ...(config.management ?? {}), tokenFile };
  fs.writeFileSync(file, JSON.stringify({ listen: "127.0.0.1:0", ...config, management }));
  const hub = await startServer({ bin: "main", args: ["--config", file], env });
  const line = /^management listening on (http:\/\/[0-9.]+:\d+)$/m;
  await eventually(() => line.test(hub.stdout()), 5000, "management line");
  hub.api = line.exec(hub.stdout())[1];
  hub.token = token;
  return hub;
}

/** Writes a hub configuration (JSON) into a fresh temporary folder; returns the file path. */
export function writeConfig(obj, prefix = "roomcast-test-") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const file = path.join(dir, "config.json");
  fs.writeFileSync(file, JSON.stringify(obj, null, 2));
  return file;
}

const READY_RE = /listening on http:\/\/([0-9.]+):(\d+)/;
const STARTUP_TIMEOUT_MS = 20_000;
const STDERR_KEEP = 64 * 1024;
const VERBOSE = !!process.env.ROOMCAST_TEST_VERBOSE;

const live = new Set();
process.on("exit", () => {
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {}
  }
});

export function binDir() {
  const dir = process.env.ROOMCAST_BIN_DIR;
  if (!dir) {
    throw new Error(
      "ROOMCAST_BIN_DIR is not set; run the tests through dataplane/tests/js/run.sh",
    );
  }
  return dir;
}

/** Path of a server binary: "main" is roomcast-dataplane, anything else is an example. */
export function binaryPath(bin) {
  if (bin === "main" || bin === "roomcast-dataplane") {
    return path.join(binDir(), "roomcast-dataplane");
  }
  return path.join(binDir(), "examples", bin);
}

/**
 * Spawns a server binary with `--listen LISTEN` (default 127.0.0.1:0) plus `args`, waits for
 * its `listening on http://IP:PORT` stdout line (or `readyRe`, whose groups are IP and port)
 * and returns { url, host, port, proc, stop(), exit (a promise of { code, signal }), stdout(),
 * stderr(), assertHealthy() }.
 */
export async function startServer({
  bin = "testkit",
  args = [],
  env = {},
  listen = "127.0.0.1:0",
  readyRe = READY_RE,
} = {}) {
  const exe = binaryPath(bin);
  try {
    await access(exe, constants.X_OK);
  } catch {
    throw new Error(`server binary not found or not executable: ${exe} (build it first)`);
  }
  const fullArgs = ["--listen", listen, ...args];
  const proc = spawn(exe, fullArgs, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { RUST_BACKTRACE: "1", ...process.env, ...env },
  });
  live.add(proc);

  let stderrBuf = "";
  let stdoutBuf = "";
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.once("exit", (code, signal) => {
      exited = { code, signal };
      live.delete(proc);
      resolve(exited);
    });
  });
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (chunk) => {
    if (VERBOSE) process.stderr.write(`[${bin}] ${chunk}`);
    stderrBuf += chunk;
    if (stderrBuf.length > STDERR_KEEP * 2) {
      // keep the head (startup errors) and the tail (latest)
      stderrBuf =
        stderrBuf.slice(0, STDERR_KEEP / 4) +
        "\n[... stderr elided ...]\n" +
        stderrBuf.slice(-STDERR_KEEP);
    }
  });
  // Panics are remembered even when the stderr buffer is trimmed.
  const panics = [];
  proc.stderr.on("data", (chunk) => {
    if (/panicked at/.test(chunk)) panics.push(chunk.slice(0, 2000));
  });

  const describeFailure = (why) =>
    `${why}\n  command: ${exe} ${fullArgs.join(" ")}\n  stdout: ${stdoutBuf.slice(-2000)}\n  stderr: ${stderrBuf.slice(-8000)}`;

  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(describeFailure(`server did not print its listening line within ${STARTUP_TIMEOUT_MS} ms`)));
    }, STARTUP_TIMEOUT_MS);
    proc.stdout.setEncoding("utf8");
    const onData = (chunk) => {
      stdoutBuf += chunk;
      if (stdoutBuf.length > STDERR_KEEP) stdoutBuf = stdoutBuf.slice(-STDERR_KEEP);
      const m = readyRe.exec(stdoutBuf);
      if (m) {
        clearTimeout(timer);
        proc.stdout.off("data", onData);
        resolve({ host: m[1], port: Number(m[2]) });
      }
    };
    proc.stdout.on("data", onData);
    exitPromise.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(describeFailure(`server exited before it was ready (code ${code}, signal ${signal})`)));
    });
    proc.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(describeFailure(`failed to spawn server: ${err.message}`)));
    });
  });
  // keep draining stdout so the child never blocks on a full pipe (and keep its tail)
  proc.stdout.on("data", (chunk) => {
    stdoutBuf += chunk;
    if (stdoutBuf.length > STDERR_KEEP) stdoutBuf = stdoutBuf.slice(-STDERR_KEEP);
  });

  const url = `http://${ready.host}:${ready.port}`;
  return {
    bin,
    url,
    wsUrl: url.replace(/^http/, "ws"),
    host: ready.host,
    port: ready.port,
    proc,
    stdout: () => stdoutBuf,
    stderr: () => stderrBuf,
    get exited() {
      return exited;
    },
    /** Resolves with { code, signal } when the process exits. */
    exit: exitPromise,
    /** Fails if the process died or printed a panic. */
    assertHealthy(context = "") {
      assert.equal(
        exited,
        null,
        describeFailure(`server process exited unexpectedly ${context}: ${JSON.stringify(exited)}`),
      );
      assert.deepEqual(panics, [], `server panicked ${context}:\n${panics.join("\n")}`);
    },
    async stop() {
      if (exited) return exited;
      proc.kill("SIGTERM");
      const res = await Promise.race([exitPromise, sleep(5000).then(() => null)]);
      if (res) return res;
      proc.kill("SIGKILL");
      return exitPromise;
    },
  };
}

// ---------------------------------------------------------------------------
// Peer TLS: one CA per test run, one certificate per member id

/**
 * The folder of this test run's peer CA (`ca/`) and member certificates (`ID/`), made by the
 * binary's `certs` command. run.sh makes the CA once per run (ROOMCAST_TEST_PKI); a file run
 * on its own makes one at first use.
 */
export function testPki() {
  if (!process.env.ROOMCAST_TEST_PKI) {
    process.env.ROOMCAST_TEST_PKI = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-pki-"));
  }
  const dir = process.env.ROOMCAST_TEST_PKI;
  if (!fs.existsSync(path.join(dir, "ca", "ca.key"))) {
    execFileSync(binaryPath("main"), ["certs", "ca", "--out", path.join(dir, "ca")], { stdio: "ignore" });
  }
  return dir;
}

/**
 * `cluster.tls` of member `id`: its certificate of `pki` (default: this run's CA, see
 * testPki), issued on first use and kept for the run.
 */
export function memberTls(id, pki = testPki()) {
  const out = path.join(pki, id);
  if (!fs.existsSync(path.join(out, "tls.key"))) {
    execFileSync(binaryPath("main"), ["certs", "member", "--ca", path.join(pki, "ca"), "--id", id, "--out", out], {
      stdio: "ignore",
    });
  }
  return {
    caFile: path.join(out, "ca.crt"),
    certFile: path.join(out, "tls.crt"),
    keyFile: path.join(out, "tls.key"),
    reloadInterval: 200,
  };
}

/**
 * A random port for a listener whose port must be known in advance (a cluster's peer port):
 * below Linux's ephemeral range (32768-60999), so no port the OS picks for someone else in the
 * same run (a `listen(0)` on all addresses, an outgoing connection) can already hold it.
 */
export function presetPort() {
  return 20000 + Math.floor(Math.random() * 12000);
}

// ---------------------------------------------------------------------------
// Cluster members of the real binary

/**
 * Starts cluster member `id` of the main binary on `ip` (client, management and metrics ports
 * chosen by the OS, the peer port given), with the management API on and `token` as its bearer token.
 * `config` is merged over the defaults (relay namespace with room policies), `cluster` over the
 * cluster section's. The peer port runs mutual TLS with a certificate of this run's CA
 * (memberTls) unless the cluster section sets `tls` or `plaintext`. Resolves once the
 * peer listener is up; the node gets `api` (the management URL) and `token`.
 */
export async function startClusterNode({
  id,
  ip,
  peerPort,
  members,
  token,
  heartbeatInterval = 200,
  heartbeatTimeout = 1000,
  config = {},
  cluster = {},
  args = [],
}) {
  const whole = {
    nodeId: id,
    socketio: {
      namespaces: [{ name: "/", relay: true, policies: { join: ["room:*"], emitToJoined: true } }],
    },
    management: { listen: `${ip}:0`, tokenFile: "TOKEN_FILE" },
    metrics: { listen: `${ip}:0` },
    cluster: { peerListen: `${ip}:${peerPort}`, members, heartbeatInterval, heartbeatTimeout, ...roomsMode(), ...cluster },
    ...config,
  };
  if (!whole.cluster.tls && !whole.cluster.plaintext) whole.cluster.tls = memberTls(id);
  const file = writeConfig(whole, "roomcast-cluster-");
  // The token file sits beside the config.
  const tokenFile = path.join(path.dirname(file), "token");
  fs.writeFileSync(tokenFile, `${token}\n`);
  const text = fs.readFileSync(file, "utf8").replace('"TOKEN_FILE"', JSON.stringify(tokenFile));
  fs.writeFileSync(file, text);
  const node = await startServer({ bin: "main", listen: `${ip}:0`, args: ["--config", file, ...args] });
  await eventually(() => /management listening on http:\/\/\S+/.test(node.stdout()), 5000, "management line");
  node.api = /management listening on (http:\/\/\S+)/.exec(node.stdout())[1];
  node.token = token;
  // The peer listener reports after the management one; on a slow machine it can lag.
  const peerLine = new RegExp(`peer listening on ${ip.replace(/\./g, "\\.")}:${peerPort}`);
  await eventually(() => peerLine.test(node.stdout()), 5000, `peer listening line of ${ip}`);
  return node;
}

/**
 * A hub of `ips.length` nodes on loopback whose nodes take app links (`appLink` in their
 * configuration, one token file for all; docs/app-sdk.md): the hub the SDK tests, the sio-chat
 * page test and applink.test.mjs link app instances to. Returns { nodes, appAddresses (each
 * node's `app link listening on` address), token, caFile (the trust bundle the app links' TLS
 * certificates chain to), startNode(i), stop() }.
 */
export async function startAppLinkHub({
  ips,
  token = crypto.randomBytes(24).toString("hex"),
  apiToken = "management-token-0123456789",
  appLink = {},
}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-applink-"));
  const tokenFile = path.join(dir, "app-token");
  fs.writeFileSync(tokenFile, `${token}\n`);
  const peerPort = presetPort();
  const members = ips.map((ip, i) => `hub-${i}=${ip}:${peerPort}`);
  const startNode = (i) =>
    startClusterNode({
      id: `hub-${i}`,
      ip: ips[i],
      peerPort,
      members,
      token: apiToken,
      // With appLink the app handles every namespace: none of the hub's own (webhook mode) ones.
      config: { socketio: {}, appLink: { listen: `${ips[i]}:0`, tokenFile, ...appLink } },
    });
  const nodes = await Promise.all(ips.map((_, i) => startNode(i)));
  const line = /app link listening on ([0-9.]+:\d+)/;
  const appAddresses = [];
  for (const node of nodes) {
    await eventually(() => line.test(node.stdout()), 5000, `"app link listening on" line of ${node.url}`);
    appAddresses.push(line.exec(node.stdout())[1]);
  }
  return {
    nodes,
    appAddresses,
    token,
    // App links are TLS with the members' peer certificates: apps check them against this CA.
    caFile: path.join(testPki(), "ca", "ca.crt"),
    startNode,
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `cluster.rooms` from ROOMCAST_TEST_ROOMS (`replicated` or `owned`), for the cluster files
 * run under both (run.sh); nothing when unset (the binary's default).
 */
export function roomsMode() {
  const mode = process.env.ROOMCAST_TEST_ROOMS;
  return mode ? { rooms: mode } : {};
}

/** The `cluster.rooms` mode test clusters run in (the binary's default is `owned`). */
export const ROOMS_MODE = process.env.ROOMCAST_TEST_ROOMS || "owned";

/**
 * Starts members hub-0, hub-1, ... on `ips` (one random peer port, the same on every IP) and
 * waits until each is linked to all the others. `linked(node)` is the node's `/v1/stats`
 * `nodes`; `startNode(i)` (re)starts member i with the same settings.
 */
export async function startCluster({ ips, token, heartbeatTimeout, config }) {
  const peerPort = presetPort();
  const members = ips.map((ip, i) => `hub-${i}=${ip}:${peerPort}`);
  const startNode = (i) =>
    startClusterNode({ id: `hub-${i}`, ip: ips[i], peerPort, members, token, heartbeatTimeout, config });
  const linked = async (node) => (await apiCall(node, "GET", "/v1/stats")).nodes;
  const nodes = await Promise.all(ips.map((_, i) => startNode(i)));
  for (const node of nodes) {
    await eventually(async () => (await linked(node)) === ips.length, 10_000, `${node.url} linked to every peer`);
  }
  return { nodes, startNode, linked };
}

/** A management API call on a node from startClusterNode; asserts 200 and returns the JSON. */
export async function apiCall(node, method, route, body) {
  const res = await fetch(node.api + route, {
    method,
    headers: { authorization: `Bearer ${node.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${method} ${route}: ${text}`);
  return JSON.parse(text);
}

/**
 * The URL of a node's metrics listener (`metrics.listen` in its config), from its
 * `metrics listening on http://IP:PORT` line. Metrics are never served on the client port.
 */
export async function metricsUrl(node) {
  const line = /^metrics listening on (http:\/\/[0-9.]+:\d+)$/m;
  await eventually(() => line.test(node.stdout()), 5000, "metrics listening line (is metrics.listen set?)");
  return line.exec(node.stdout())[1];
}

/** A sample of the node's /metrics (on its metrics port), as a number. */
export async function metric(node, name) {
  const text = await (await fetch(`${await metricsUrl(node)}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const m = new RegExp(`^${name} (\\d+)$`, "m").exec(text);
  assert.ok(m, `${name} in /metrics:\n${text}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------
// Promises with deadlines

/** Resolves with the event's arguments (array), rejects after `ms`. */
export function once(emitter, event, ms = 5000, what = event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      off();
      resolve(args);
    };
    const off = () => {
      if (emitter.off) emitter.off(event, handler);
      else emitter.removeListener(event, handler);
    };
    emitter.on(event, handler);
  });
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** Polls `cond` until true or fails after `ms`. */
export async function eventually(cond, ms = 5000, what = "condition", step = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(step);
  }
}

export function toBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (Array.isArray(x)) return Buffer.from(x);
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  throw new Error(`not binary: ${Object.prototype.toString.call(x)}`);
}

export function assertBytes(actual, expected, msg) {
  assert.ok(
    Buffer.isBuffer(actual) || actual instanceof ArrayBuffer || ArrayBuffer.isView(actual),
    `${msg ?? "value"} should be binary, got ${Object.prototype.toString.call(actual)}: ${JSON.stringify(actual)}`,
  );
  assert.deepEqual([...toBuffer(actual)], [...toBuffer(expected)], msg);
}

// ---------------------------------------------------------------------------
// socket.io-client bookkeeping

/** Creates socket.io-client sockets / managers and closes them all in `closeAll()`. */
export class ClientPool {
  constructor() {
    this.sockets = new Set();
    this.managers = new Set();
  }
  /** io(url, opts) with forceNew so no state is shared between tests. */
  io(url, opts = {}) {
    const s = io(url, { forceNew: true, reconnection: false, timeout: 10_000, ...opts });
    this.sockets.add(s);
    return s;
  }
  manager(url, opts = {}) {
    const m = new Manager(url, { reconnection: false, timeout: 10_000, ...opts });
    this.managers.add(m);
    return m;
  }
  track(s) {
    this.sockets.add(s);
    return s;
  }
  /** io() + wait for "connect"; returns the socket, with `welcome` (the testkit's welcome payload if any). */
  async connect(url, opts = {}, { welcome = true, ms = 10_000 } = {}) {
    const s = this.io(url, opts);
    const welcomeP = welcome ? once(s, "welcome", ms, `welcome on ${url}`) : null;
    welcomeP?.catch(() => {});
    await connected(s, ms, url);
    if (welcomeP) s.welcome = (await welcomeP)[0];
    return s;
  }
  closeAll() {
    for (const s of this.sockets) {
      try {
        s.disconnect();
        s.io?.engine?.close();
      } catch {}
    }
    for (const m of this.managers) {
      try {
        m.engine?.close();
        m._close?.();
      } catch {}
    }
    this.sockets.clear();
    this.managers.clear();
  }
}

/** Waits for a socket.io-client socket to connect; rejects on connect_error. */
export function connected(s, ms = 10_000, what = "socket") {
  if (s.connected) return Promise.resolve(s);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for connect of ${what}`));
    }, ms);
    const onConnect = () => {
      cleanup();
      resolve(s);
    };
    const onError = (err) => {
      cleanup();
      const e = new Error(`connect_error on ${what}: ${err?.message}`);
      e.cause = err;
      reject(e);
    };
    const cleanup = () => {
      clearTimeout(timer);
      s.off("connect", onConnect);
      s.off("connect_error", onError);
    };
    s.on("connect", onConnect);
    s.on("connect_error", onError);
  });
}

/** Waits for connect_error and returns the Error. */
export function connectError(s, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for connect_error`));
    }, ms);
    const onConnect = () => {
      cleanup();
      reject(new Error(`expected connect_error but the socket connected (id ${s.id})`));
    };
    const onError = (err) => {
      cleanup();
      resolve(err);
    };
    const cleanup = () => {
      clearTimeout(timer);
      s.off("connect", onConnect);
      s.off("connect_error", onError);
    };
    s.on("connect", onConnect);
    s.on("connect_error", onError);
  });
}

/** Emits `echo` with args and resolves with the echoed args. */
export async function echo(s, ...args) {
  const p = once(s, "echo", 5000, `echo on ${s.nsp}`);
  s.emit("echo", ...args);
  return p;
}

/**
 * A socket.io-client connected before a bad-input test; `check()` proves it still works
 * (an echo round trip on its existing connection).
 */
export async function bystander(pool, server, opts = {}) {
  const s = await pool.connect(server.url, { transports: ["websocket"], ...opts });
  let disconnects = [];
  s.on("disconnect", (reason) => disconnects.push(reason));
  const engineId = s.io.engine.id;
  return {
    socket: s,
    async check(context = "") {
      assert.deepEqual(disconnects, [], `bystander was disconnected ${context}`);
      assert.equal(s.io.engine.id, engineId, `bystander's engine session changed ${context}`);
      const token = `alive-${Math.random().toString(36).slice(2)}`;
      const [got] = await echo(s, token).catch((e) => {
        throw new Error(`bystander got no echo ${context}: ${e.message}`);
      });
      assert.equal(got, token, `bystander echo ${context}`);
      server.assertHealthy(context);
    },
  };
}

/** emitWithAck with a 3 s deadline. */
export const call = (s, event, arg) => s.timeout(3000).emitWithAck(event, arg);

/**
 * A client of the relay namespace (startClusterNode's default) that joined `rooms` through the
 * room policies; it records every event it gets in `s.got` as [event, ...args].
 */
export async function roomMember(pool, url, rooms, opts = {}) {
  const s = pool.io(url, opts);
  await connected(s);
  for (const room of rooms) assert.deepEqual(await call(s, "roomcast:join", room), { ok: true });
  s.got = [];
  s.onAny((event, ...args) => s.got.push([event, ...args]));
  return s;
}

/** Waits until every socket in `expect` got its count of `event`, then checks nothing more came. */
export async function assertCounts(expect, event, what) {
  const count = (s) => s.got.filter(([e]) => e === event).length;
  await eventually(() => expect.every(([s, n]) => count(s) >= n), 5000, what).catch(() => {});
  await sleep(300);
  assert.deepEqual(
    expect.map(([s]) => count(s)),
    expect.map(([, n]) => n),
    `${what}: deliveries per socket`,
  );
}

/**
 * The first of `members` sends `roomcast:emit` to `room`; every other member must get the
 * event exactly once, and neither the sender nor any outsider.
 */
export async function assertRoomEmit(members, outsiders, room, what) {
  const [sender, ...others] = members;
  const res = await call(sender, "roomcast:emit", { room, event: "msg", args: ["hi", { n: 1 }] });
  assert.equal(res.ok, true, JSON.stringify(res));
  await assertCounts(
    [...others.map((s) => [s, 1]), [sender, 0], ...outsiders.map((s) => [s, 0])],
    "msg",
    what,
  );
  for (const s of others) assert.deepEqual(s.got, [["msg", "hi", { n: 1 }]], `${what}: what arrived`);
}

// ---------------------------------------------------------------------------
// Raw Engine.IO over HTTP

export function eioUrl(server, params = {}, { path: p = "/socket.io/", ws = false } = {}) {
  const base = ws ? server.wsUrl : server.url;
  const q = new URLSearchParams(params).toString();
  return `${base}${p}${q ? "?" + q : ""}`;
}

/** fetch with a deadline; resolves { status, headers, body } (body as text). */
export async function http(url, { method = "GET", body, headers, ms = 5000 } = {}) {
  const res = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(ms) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text };
}

/**
 * An HTTP request on a connection of its own (no keep-alive pool), so a load balancer in
 * front sees a new connection per request; resolves { status, headers, body }.
 */
export function freshHttp(url, { method = "GET", body, headers = {}, ms = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request(url, { method, headers, agent: false, timeout: ms }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: new Headers(res.headers), body: text }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`timed out after ${ms} ms: ${method} ${url}`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** Asserts an Engine.IO JSON error answer, e.g. 400 {"code":1,"message":"Session ID unknown"}. */
export function assertEioError(res, status, code, message, what = "") {
  assert.equal(res.status, status, `${what}: HTTP status (body: ${res.body})`);
  let json;
  try {
    json = JSON.parse(res.body);
  } catch {
    assert.fail(`${what}: body is not JSON: ${JSON.stringify(res.body)}`);
  }
  assert.deepEqual(json, { code, message }, `${what}: JSON error body`);
  const ct = res.headers.get("content-type") ?? "";
  assert.match(ct, /application\/json/, `${what}: content-type`);
}

export const SEP = "\x1e";

/** Opens a polling session; returns { sid, open } (open = the handshake JSON). */
export async function pollingHandshake(server, extra = {}) {
  const res = await http(eioUrl(server, { EIO: "4", transport: "polling", ...extra }));
  assert.equal(res.status, 200, `polling handshake status (body: ${res.body})`);
  assert.ok(res.body.startsWith("0"), `polling handshake body should start with 0: ${res.body}`);
  const open = JSON.parse(res.body.slice(1).split(SEP)[0]);
  return { sid: open.sid, open };
}

export function pollGet(server, sid, ms = 5000) {
  return http(eioUrl(server, { EIO: "4", transport: "polling", sid }), { ms });
}

export function pollPost(server, sid, body, { headers, ms = 5000 } = {}) {
  return http(eioUrl(server, { EIO: "4", transport: "polling", sid }), {
    method: "POST",
    body,
    headers: { "content-type": "text/plain;charset=UTF-8", ...headers },
    ms,
  });
}

/**
 * Asserts that a polling session is (or soon becomes) closed: GETs until one answers
 * 400 {"code":1}; a 200 on the way may only carry close/noop packets. A GET that hangs
 * means the session is still open, which fails.
 */
export async function assertPollingClosed(server, sid, what = "") {
  for (let i = 0; i < 3; i++) {
    let res;
    try {
      res = await pollGet(server, sid, 3000);
    } catch (e) {
      assert.fail(`${what}: session ${sid} still open (GET hung: ${e.message})`);
    }
    if (res.status === 400) {
      assertEioError(res, 400, 1, "Session ID unknown", `${what}: GET on closed session`);
      return;
    }
    assert.equal(res.status, 200, `${what}: unexpected status ${res.status} ${res.body}`);
    const packets = res.body.split(SEP);
    assert.ok(
      packets.every((p) => p === "1" || p === "6"),
      `${what}: session ${sid} still delivering packets: ${JSON.stringify(res.body)}`,
    );
  }
  assert.fail(`${what}: session ${sid} never answered 400`);
}

// ---------------------------------------------------------------------------
// Raw WebSocket with a message queue

export class RawWs {
  /**
   * @param url ws:// URL
   * @param autoPong answer Engine.IO pings ("2") with "3" and hide them from the queue
   */
  constructor(url, { autoPong = true, ws = {} } = {}) {
    this.url = url;
    this.ws = new WebSocket(url, { perMessageDeflate: false, ...ws });
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.errors = [];
    this.unexpected = null;
    this.pings = 0;
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? data : data.toString("utf8");
      if (autoPong && msg === "2") {
        this.pings++;
        this.ws.send("3");
        return;
      }
      this.queue.push(msg);
      this._wake();
    });
    this.ws.on("error", (e) => {
      this.errors.push(e);
      this._wake();
    });
    this.ws.on("unexpected-response", (req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        this.unexpected = { status: res.statusCode, headers: res.headers, body };
        this._wake();
      });
      res.on("error", () => {});
    });
    // open() waits for this too: a server may say nothing right after the upgrade.
    this.opened = new Promise((resolve) =>
      this.ws.once("open", () => {
        resolve(true);
        this._wake();
      }),
    );
    this.opened.catch(() => {});
    this.closedP = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this._wake();
        resolve(this.closed);
      });
    });
  }
  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  async _until(cond, ms, what) {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = cond();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what} on ${this.url}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
  async open(ms = 5000) {
    return this._until(
      () => {
        if (this.ws.readyState === WebSocket.OPEN) return true;
        if (this.unexpected) throw new Error(`WebSocket refused: HTTP ${this.unexpected.status} ${this.unexpected.body}`);
        if (this.closed) throw new Error(`WebSocket closed before open: ${JSON.stringify(this.closed)}`);
        return undefined;
      },
      ms,
      "open",
    );
  }
  /** Next message (string for text frames, Buffer for binary); fails if the socket closes first. */
  async next(ms = 5000, what = "a message") {
    return this._until(
      () => {
        if (this.queue.length) return this.queue.shift();
        if (this.closed) throw new Error(`closed (${JSON.stringify(this.closed)}) while waiting for ${what}`);
        return undefined;
      },
      ms,
      what,
    );
  }
  /** Waits for the close; resolves { code, reason }. */
  async waitClose(ms = 5000, what = "close") {
    return this._until(() => this.closed ?? undefined, ms, what);
  }
  /** Waits until either the server refuses the upgrade (HTTP status) or closes the socket. */
  async waitRefusedOrClosed(ms = 5000) {
    return this._until(
      () => {
        if (this.unexpected) return { refused: this.unexpected };
        if (this.closed) return { closed: this.closed, queue: this.queue };
        return undefined;
      },
      ms,
      "refusal or close",
    );
  }
  send(data, opts) {
    this.ws.send(data, opts);
  }
  close() {
    try {
      if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
      else this.ws.close();
    } catch {}
  }
  terminate() {
    try {
      this.ws.terminate();
    } catch {}
  }
}

/** Opens a raw Engine.IO WebSocket session; returns { ws, open } after the open packet. */
export async function rawEioWs(server, { query = {}, autoPong = true } = {}) {
  const ws = new RawWs(eioUrl(server, { EIO: "4", transport: "websocket", ...query }, { ws: true }), { autoPong });
  await ws.open();
  const first = await ws.next(5000, "Engine.IO open packet");
  assert.equal(typeof first, "string");
  assert.ok(first.startsWith("0{"), `expected open packet, got ${first}`);
  return { ws, open: JSON.parse(first.slice(1)) };
}

/**
 * Raw WebSocket + Socket.IO CONNECT to `nsp` on the testkit; consumes the CONNECT reply and
 * the testkit's `welcome` event. Returns { ws, open, sid }.
 */
export async function rawSioWs(server, nsp = "/", { auth, autoPong = true } = {}) {
  const { ws, open } = await rawEioWs(server, { autoPong });
  const prefix = nsp === "/" ? "" : `${nsp},`;
  ws.send(`40${prefix}${auth ? JSON.stringify(auth) : ""}`);
  const reply = await ws.next(5000, "CONNECT reply");
  assert.ok(reply.startsWith(`40${prefix}{`), `expected CONNECT reply for ${nsp}, got ${reply}`);
  const { sid } = JSON.parse(reply.slice(2 + prefix.length));
  const welcome = await ws.next(5000, "welcome event");
  assert.ok(welcome.startsWith(`42${prefix}["welcome"`), `expected welcome event, got ${welcome}`);
  return { ws, open, sid };
}

/**
 * A TCP proxy that sends each new connection to the backend `pick()` names (round-robin by
 * default) and can reset every connection it carries, as a network failure would.
 */
export class CutProxy {
  constructor(backends) {
    this.backends = backends;
    this.next = 0;
    this.pairs = new Set();
    this.refusing = false;
    this.pick = () => this.next++ % this.backends.length;
  }
  async start(ip) {
    this.server = net.createServer((c) => {
      if (this.refusing) return c.resetAndDestroy();
      c.pause();
      c.on("error", () => c.destroy());
      // A backend that refuses (a node restarting) is skipped for the next one.
      const attempt = (left) => {
        const b = this.backends[this.pick()];
        const u = net.connect(b.port, b.host);
        u.once("error", () => (left > 1 && !c.destroyed ? attempt(left - 1) : c.destroy()));
        u.once("connect", () => {
          const pair = { c, u };
          this.pairs.add(pair);
          const end = () => {
            this.pairs.delete(pair);
            c.destroy();
            u.destroy();
          };
          for (const s of [c, u]) {
            s.on("error", end);
            s.on("close", end);
          }
          c.pipe(u);
          u.pipe(c);
          c.resume();
        });
      };
      attempt(this.backends.length);
    });
    await new Promise((r) => this.server.listen(0, ip, r));
    this.url = `http://${ip}:${this.server.address().port}`;
    return this;
  }
  /** Resets every connection (both sides see an RST). */
  cutAll() {
    for (const { c, u } of this.pairs) {
      c.resetAndDestroy();
      u.resetAndDestroy();
    }
    this.pairs.clear();
  }
  stop() {
    this.cutAll();
    return new Promise((r) => this.server.close(() => r()));
  }
}
