// The hub every client suite of the stock-clients tier talks to, and a small control API for
// the suites (whatever their language) to drive it.
//
//   node e2e/clients/stack.mjs --ready FILE [--ip-base 127.0.0.80]
//
// Starts 3 members of the real `roomcast-dataplane` binary (hub-0..2 on 127.0.0.81-.83, fixed
// client ports so a member restarted after a kill is behind the proxy again) and the
// round-robin proxy `rr-proxy` on 127.0.0.80, with the configuration below: JWT client auth
// (HS256), namespaces `/` and `/clients` with the development relay and client room policies,
// the management API on every member. Then serves the control API on 127.0.0.80 and writes
// `{"control": URL, "proxy": URL}` to FILE. SIGTERM stops everything; the exit status is 1 if a
// member panicked or died without being killed through the control API.
//
// Control API (JSON in and out, loopback only):
//   GET  /info                         proxy URL, members (id, url, alive), namespaces, JWT issuer/audience
//   POST /token {sub, ...claims, secret?, expiresIn?}   an HS256 token for the hub (secret: sign with another key)
//   POST /mgmt {method, path, body?}   a management API call on a live member: {status, body}
//   POST /kill {socketId}              SIGKILL the member owning that socket: {killed}; returns once the
//                                      survivors took it out of routing
//   POST /restore                      restart killed members (same addresses), wait until all are linked
//   POST /recovery/mgmt {method, path, body?}   a management API call on the recovery hub
//   POST /recovery/cut                 resets every connection through the recovery hub's proxy
//
// Beside the cluster: a single-node hub with connection state recovery on (127.0.0.85), behind a
// proxy that can cut connections (127.0.0.84; `recovery` in /info), for clients that do not
// implement recovery to show they fall back to a fresh session.

import http from "node:http";
import net from "node:net";
import fs from "node:fs";
import crypto from "node:crypto";
import { startServer, writeConfig, eventually, memberTls, CutProxy } from "../../dataplane/tests/js/harness.mjs";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const READY_FILE = opt("--ready");
const IP_BASE = opt("--ip-base", "127.0.0.80");
if (!READY_FILE) {
  console.error("usage: stack.mjs --ready FILE [--ip-base 127.0.0.80]");
  process.exit(2);
}
const base = IP_BASE.split(".").map(Number);
if (base[0] !== 127) throw new Error(`--ip-base must be a loopback address, got ${IP_BASE}`);
const ipAt = (k) => [...base.slice(0, 3), base[3] + k].join(".");
const PROXY_IP = ipAt(0);
const IPS = [ipAt(1), ipAt(2), ipAt(3)];

export const JWT_SECRET = "roomcast-clients-tier-hs256-secret-0123456789";
const ISSUER = "https://issuer.roomcast.test";
const AUDIENCE = "roomcast-clients";
const MGMT_TOKEN = "roomcast-clients-tier-management-token";
const NAMESPACES = ["/", "/clients"];

const log = (...a) => console.error("[stack]", ...a);

/** A port that was free on `ip` a moment ago. */
function freePort(ip) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, ip, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");

function hs256(payload, secret = JWT_SECRET) {
  const input = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  return `${input}.${crypto.createHmac("sha256", secret).update(input).digest("base64url")}`;
}

/** The member id a socket or session id names (its suffix is the base64url of the member id). */
const ownerOf = (id) => (typeof id === "string" && id.length > 16 ? Buffer.from(id.slice(16), "base64url").toString() : undefined);

// ---------------------------------------------------------------------------
// The hub

const peerPort = 20000 + Math.floor(Math.random() * 20000);
const members = IPS.map((ip, i) => `hub-${i}=${ip}:${peerPort}`);
const clientPorts = await Promise.all(IPS.map((ip) => freePort(ip)));
const configs = IPS.map((ip, i) =>
  writeConfig(
    {
      nodeId: `hub-${i}`,
      engine: { pingInterval: 5000, pingTimeout: 5000 },
      socketio: {
        namespaces: NAMESPACES.map((name) => ({
          name,
          relay: true,
          policies: { join: ["room:*", "user:{sub}"], emit: ["announce:*"], emitToJoined: true },
        })),
      },
      auth: { mode: "jwt", jwt: { algorithms: ["HS256"], hs256Secret: JWT_SECRET, issuer: ISSUER, audience: [AUDIENCE] } },
      management: { listen: `${ip}:0`, token: MGMT_TOKEN },
      // Mutual TLS between the members, certificates of a CA made for this run.
      cluster: {
        peerListen: `${ip}:${peerPort}`,
        members,
        heartbeatInterval: 200,
        heartbeatTimeout: 1000,
        warmUpTimeout: 0,
        tls: memberTls(`hub-${i}`),
      },
      shutdown: { drainDelay: 0, gracePeriod: 3000 },
    },
    "roomcast-clients-",
  ),
);

/** Members by index: { id, server, api, killed } */
const nodes = IPS.map((ip, i) => ({ id: `hub-${i}`, ip, server: null, api: null, killed: false }));
/** Unexpected exits, reported at the end. */
const problems = [];

async function startNode(i) {
  const node = nodes[i];
  const server = await startServer({
    bin: "main",
    listen: `${node.ip}:${clientPorts[i]}`,
    args: ["--config", configs[i]],
    env: { RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  await eventually(() => /management listening on http:\/\/\S+/.test(server.stdout()), 5000, `management line of ${node.id}`);
  node.api = /management listening on (http:\/\/\S+)/.exec(server.stdout())[1];
  node.server = server;
  node.killed = false;
  server.exit.then(({ code, signal }) => {
    if (!node.killed && !stopping) problems.push(`${node.id} exited unexpectedly (code ${code}, signal ${signal})`);
  });
}

async function mgmt(node, method, path, body) {
  const res = await fetch(node.api + path, {
    method,
    headers: { authorization: `Bearer ${MGMT_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

const alive = () => nodes.filter((n) => n.server && !n.killed && n.server.exited === null);

async function waitLinked() {
  const expect = alive().length;
  for (const node of alive()) {
    await eventually(
      async () => {
        const res = await mgmt(node, "GET", "/v1/stats").catch(() => null);
        return res?.status === 200 && res.body.nodes === expect;
      },
      15_000,
      `${node.id} linked to ${expect - 1} peers`,
      100,
    );
  }
}

let stopping = false;
await Promise.all(IPS.map((_, i) => startNode(i)));
await waitLinked();
const proxy = await startServer({
  bin: "rr-proxy",
  listen: `${PROXY_IP}:0`,
  args: nodes.map((n, i) => ["--backend", `${n.ip}:${clientPorts[i]}`]).flat(),
  readyRe: /^listening on ([0-9.]+):(\d+)$/m,
});

// ---------------------------------------------------------------------------
// The recovery hub

const RECOVERY_IP = ipAt(5);
const recoveryHub = await startServer({
  bin: "main",
  listen: `${RECOVERY_IP}:0`,
  args: [
    "--config",
    writeConfig(
      {
        engine: { pingInterval: 5000, pingTimeout: 5000 },
        socketio: {
          namespaces: [{ name: "/", relay: true, policies: { join: ["room:*"], emitToJoined: true } }],
          connectionStateRecovery: { enabled: true, maxDisconnectionDuration: 10000 },
        },
        auth: { mode: "jwt", jwt: { algorithms: ["HS256"], hs256Secret: JWT_SECRET, issuer: ISSUER, audience: [AUDIENCE] } },
        management: { listen: `${RECOVERY_IP}:0`, token: MGMT_TOKEN },
      },
      "roomcast-clients-recovery-",
    ),
  ],
  env: { RUST_LOG: process.env.RUST_LOG ?? "warn" },
});
await eventually(() => /management listening on http:\/\/\S+/.test(recoveryHub.stdout()), 5000, "recovery hub management line");
const recoveryNode = { api: /management listening on (http:\/\/\S+)/.exec(recoveryHub.stdout())[1] };
const [recoveryHost, recoveryPort] = recoveryHub.url.replace("http://", "").split(":");
const cutProxy = await new CutProxy([{ host: recoveryHost, port: Number(recoveryPort) }]).start(ipAt(4));
const recoveryUrl = cutProxy.url;

// ---------------------------------------------------------------------------
// Control API

async function readJson(req) {
  let text = "";
  for await (const chunk of req) text += chunk;
  return text ? JSON.parse(text) : {};
}

const routes = {
  "GET /info": async () => ({
    proxy: proxy.url,
    members: nodes.map((n) => ({ id: n.id, url: n.server?.url, alive: alive().includes(n) })),
    namespaces: NAMESPACES,
    issuer: ISSUER,
    audience: AUDIENCE,
    recovery: recoveryUrl,
  }),
  "POST /recovery/mgmt": async ({ method = "GET", path, body }) => mgmt(recoveryNode, method, path, body),
  "POST /recovery/cut": async () => {
    const cut = cutProxy.pairs.size;
    cutProxy.cutAll();
    return { cut };
  },
  "POST /token": async ({ secret, expiresIn = 600, ...claims }) => {
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + expiresIn, ...claims };
    return { token: hs256(payload, secret ?? JWT_SECRET) };
  },
  "POST /mgmt": async ({ method = "GET", path, body }) => {
    const node = alive()[0];
    if (!node) throw new Error("no live member");
    return mgmt(node, method, path, body);
  },
  "POST /kill": async ({ socketId }) => {
    const owner = ownerOf(socketId);
    const node = nodes.find((n) => n.id === owner);
    if (!node) throw new Error(`no member owns socket id ${JSON.stringify(socketId)} (owner ${owner})`);
    if (!alive().includes(node)) throw new Error(`${owner} is not running`);
    if (alive().length < 2) throw new Error("refusing to kill the last member");
    node.killed = true;
    node.server.proc.kill("SIGKILL");
    await node.server.exit;
    await waitLinked();
    log(`killed ${owner}`);
    return { killed: owner };
  },
  "POST /restore": async () => {
    const restarted = [];
    for (const [i, node] of nodes.entries()) {
      if (node.killed) {
        await startNode(i);
        restarted.push(node.id);
      }
    }
    await waitLinked();
    return { restarted };
  },
};

const control = http.createServer(async (req, res) => {
  const route = routes[`${req.method} ${req.url}`];
  let status = 200;
  let out;
  try {
    if (!route) {
      status = 404;
      out = { error: `no route ${req.method} ${req.url}` };
    } else {
      out = await route(await readJson(req));
    }
  } catch (e) {
    status = 500;
    out = { error: String(e?.stack ?? e) };
    log(`${req.method} ${req.url} failed: ${e?.message ?? e}`);
  }
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(out));
});
await new Promise((resolve) => control.listen(0, PROXY_IP, resolve));
const controlUrl = `http://${PROXY_IP}:${control.address().port}`;
fs.writeFileSync(READY_FILE, JSON.stringify({ control: controlUrl, proxy: proxy.url }));
log(`hub up: proxy ${proxy.url}, members ${nodes.map((n) => n.server.url).join(" ")}, control ${controlUrl}`);

async function shutdown() {
  if (stopping) return;
  stopping = true;
  control.close();
  for (const node of alive()) {
    try {
      node.server.assertHealthy(`(${node.id})`);
    } catch (e) {
      problems.push(e.message);
    }
  }
  try {
    proxy.assertHealthy("(rr-proxy)");
    recoveryHub.assertHealthy("(recovery hub)");
  } catch (e) {
    problems.push(e.message);
  }
  await Promise.all([
    cutProxy.stop(),
    ...alive().map((n) => n.server.stop()),
    proxy.stop(),
    recoveryHub.stop(),
  ]);
  // The members' stderr (RUST_LOG, default warn), for run.sh to show when a suite failed.
  const logs = nodes.map((n) => `=== ${n.id} (${n.server?.url})\n${n.server?.stderr() ?? ""}`);
  fs.writeFileSync(`${READY_FILE}.members.log`, `${logs.join("\n")}\n=== rr-proxy\n${proxy.stderr()}\n`);
  for (const p of problems) log(`PROBLEM: ${p}`);
  process.exit(problems.length ? 1 : 0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
