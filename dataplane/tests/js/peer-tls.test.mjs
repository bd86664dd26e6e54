// Mutual TLS on the peer port (cluster.tls), tried as an attacker would: while a three-node
// cluster carries a steady stream of broadcasts to bystander clients, a process on the
// machine connects to a member's peer port and tries to become a member (plaintext HTTP/2,
// TLS without a certificate, a certificate of another CA, this hub's certificate of another
// member claiming a different id). Every attempt is refused and counted, and the bystanders
// receive every broadcast exactly once. Then the CA rotates on files under traffic, with a
// member restarted after each step, and no broadcast is lost.

import { it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import {
  ClientPool,
  binaryPath,
  call,
  eventually,
  lifecycle,
  memberTls,
  metric,
  roomMember,
  sleep,
  startClusterNode,
  apiCall,
  presetPort,
} from "./harness.mjs";

const TOKEN = "peer-tls-token-0123456789abcdef";
const pool = new ClientPool();
let nodes = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-peer-tls-"));
lifecycle(pool, {
  servers: () => nodes,
  label: "at the end of the peer TLS tests",
  cleanup: () => fs.rmSync(tmp, { recursive: true, force: true }),
});

const certs = (...args) => execFileSync(binaryPath("main"), ["certs", ...args], { stdio: "ignore" });
const linked = async (node) => (await apiCall(node, "GET", "/v1/stats")).nodes;

/** Starts hub-0..hub-N-1 on `ips` with `tlsOf(i)` as cluster.tls; waits until all are linked. */
async function startCluster(ips, tlsOf) {
  const peerPort = presetPort();
  const members = ips.map((ip, i) => `hub-${i}=${ip}:${peerPort}`);
  const startNode = (i) =>
    startClusterNode({ id: `hub-${i}`, ip: ips[i], peerPort, members, token: TOKEN, cluster: { tls: tlsOf(i) } });
  const started = await Promise.all(ips.map((_, i) => startNode(i)));
  for (const node of started) {
    await eventually(async () => (await linked(node)) === ips.length, 10_000, `${node.url} linked to every peer`);
  }
  return { started, startNode, peerPort };
}

/**
 * Bystanders: a member of room:by on each of `on` (nodes), and a sender on `from` that emits
 * ["tick", n] to room:by every 20 ms until `stop()`, which asserts that every bystander got
 * 0..n-1 exactly once and in order, and nothing else.
 */
async function traffic(from, on) {
  const sender = await roomMember(pool, from.url, ["room:by"], { transports: ["websocket"] });
  const members = [];
  for (const node of on) members.push(await roomMember(pool, node.url, ["room:by"], { transports: ["websocket"] }));
  let n = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const res = await call(sender, "roomcast:emit", { room: "room:by", event: "tick", args: [n] });
      assert.equal(res.ok, true, JSON.stringify(res));
      n += 1;
      await sleep(20);
    }
  })();
  const ticks = (s) => s.got.filter(([e]) => e === "tick").map(([, k]) => k);
  return {
    sent: () => n,
    async stop() {
      running = false;
      await loop;
      // (The sender does not get its own emits.)
      const all = members;
      await eventually(() => all.every((s) => ticks(s).length >= n), 5000, "every tick delivered");
      await sleep(200);
      const want = Array.from({ length: n }, (_, k) => k);
      for (const s of all) assert.deepEqual(ticks(s), want, "every tick once, in order");
      // Nothing else (an injected event) reached them.
      for (const s of all) assert.deepEqual(s.got.filter(([e]) => e !== "tick"), []);
      return n;
    },
  };
}

/** Opens an HTTP/2 Link call on `port` (TLS options `tlsOpts`, or plaintext when null). */
function attack(ip, port, tlsOpts, claimed) {
  return new Promise((resolve) => {
    const done = (what) => {
      clearTimeout(timer);
      try {
        session.destroy();
      } catch {}
      resolve(what);
    };
    const timer = setTimeout(() => done({ outcome: "timeout" }), 5000);
    const session = tlsOpts
      ? http2.connect(`https://${ip}:${port}`, {
          createConnection: () => tls.connect({ host: ip, port, ALPNProtocols: ["h2"], ...tlsOpts }),
        })
      : http2.connect(`http://${ip}:${port}`);
    session.on("error", (e) => done({ outcome: "connection error", error: e.code ?? e.message }));
    session.on("close", () => done({ outcome: "closed" }));
    const req = session.request({
      ":method": "POST",
      ":path": "/roomcast.peer.v1.Peer/Link",
      "content-type": "application/grpc",
      te: "trailers",
      "roomcast-member": claimed,
    });
    let status = null;
    req.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) status = headers["grpc-status"];
    });
    req.on("trailers", (trailers) => {
      if (trailers["grpc-status"] !== undefined) status = trailers["grpc-status"];
    });
    req.on("error", (e) => done({ outcome: "stream error", error: e.code ?? e.message, status }));
    req.on("close", () => done(status === null ? { outcome: "closed" } : { outcome: "grpc", status: Number(status) }));
    // A gRPC message frame (flag 0, length 5, junk): never read before the identity check.
    req.write(Buffer.from([0, 0, 0, 0, 5, 1, 2, 3, 4, 5]));
  });
}

it("attackers on a member's peer port are refused; the cluster delivers every broadcast once", async () => {
  const ips = ["127.0.0.91", "127.0.0.92", "127.0.0.93"];
  const { started, peerPort } = await startCluster(ips, (i) => memberTls(`hub-${i}`));
  nodes = started;
  // hub-2 accepts the links of hub-0 and hub-1: the attacker claims to be hub-0 there.
  const victim = nodes[2];
  const load = await traffic(nodes[0], nodes);
  await sleep(300);
  const failed0 = await metric(victim, "roomcast_peer_handshakes_failed_total");
  const refused0 = await metric(victim, "roomcast_peer_links_refused_total");
  const ca = fs.readFileSync(memberTls("hub-0").caFile);

  // 1. Plaintext HTTP/2 (what any pod could do before): no TLS, no call.
  const plain = await attack(ips[2], peerPort, null, "hub-0");
  assert.notEqual(plain.outcome, "grpc", JSON.stringify(plain));
  await eventually(async () => (await metric(victim, "roomcast_peer_handshakes_failed_total")) >= failed0 + 1, 5000, "plaintext counted");

  // 2. TLS without a client certificate.
  const failed1 = await metric(victim, "roomcast_peer_handshakes_failed_total");
  const anonymous = await attack(ips[2], peerPort, { ca, servername: "hub-2" }, "hub-0");
  assert.notEqual(anonymous.outcome, "grpc", JSON.stringify(anonymous));
  await eventually(async () => (await metric(victim, "roomcast_peer_handshakes_failed_total")) >= failed1 + 1, 5000, "anonymous counted");

  // 3. A certificate of another CA (another hub's), named hub-0.
  const other = path.join(tmp, "other");
  certs("cluster", "--out", other, "--members", "hub-0");
  const failed2 = await metric(victim, "roomcast_peer_handshakes_failed_total");
  const foreign = await attack(
    ips[2],
    peerPort,
    {
      ca,
      servername: "hub-2",
      cert: fs.readFileSync(path.join(other, "hub-0", "tls.crt")),
      key: fs.readFileSync(path.join(other, "hub-0", "tls.key")),
    },
    "hub-0",
  );
  assert.notEqual(foreign.outcome, "grpc", JSON.stringify(foreign));
  await eventually(async () => (await metric(victim, "roomcast_peer_handshakes_failed_total")) >= failed2 + 1, 5000, "foreign counted");

  // 4. This hub's certificate of hub-1, claiming to be hub-0: TLS is fine, the link is refused
  // (UNAUTHENTICATED) before anything of the stream is read.
  const hub1 = memberTls("hub-1");
  const impostor = await attack(
    ips[2],
    peerPort,
    { ca, servername: "hub-2", cert: fs.readFileSync(hub1.certFile), key: fs.readFileSync(hub1.keyFile) },
    "hub-0",
  );
  assert.deepEqual(impostor, { outcome: "grpc", status: 16 });
  assert.equal(await metric(victim, "roomcast_peer_links_refused_total"), refused0 + 1);
  assert.match(victim.stderr(), /peer link refused: the certificate is not that member's/);

  console.log("refusals:", JSON.stringify({ plain, anonymous, foreign, impostor }));
  // The real links never went down, and every tick arrived once.
  await sleep(300);
  for (const node of nodes) assert.equal(await linked(node), 3);
  const n = await load.stop();
  console.log(`ticks delivered to 3 bystanders during the attacks: ${n} each`);
  assert.ok(n > 20, `${n} ticks sent`);
  await Promise.all(nodes.map((s) => s.stop()));
  nodes = [];
});

/** Writes `text` to `file` atomically (a new file renamed over the old one). */
function put(file, text) {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

it("the CA rotates on files under traffic (old+new bundle, new leaves, new-only bundle) without a lost broadcast", async () => {
  const ips = ["127.0.0.94", "127.0.0.95", "127.0.0.96"];
  const ids = ips.map((_, i) => `hub-${i}`);
  const caA = path.join(tmp, "ca-a");
  const caB = path.join(tmp, "ca-b");
  certs("ca", "--out", caA);
  certs("ca", "--out", caB);
  const dirs = ids.map((id) => path.join(tmp, "rot", id));
  for (const [i, id] of ids.entries()) certs("member", "--ca", caA, "--id", id, "--out", dirs[i]);
  const tlsOf = (i) => ({
    caFile: path.join(dirs[i], "ca.crt"),
    certFile: path.join(dirs[i], "tls.crt"),
    keyFile: path.join(dirs[i], "tls.key"),
    reloadInterval: 200,
  });
  const { started, startNode, peerPort } = await startCluster(ips, tlsOf);
  nodes = started;
  // hub-1 (dialed by hub-0, dialing hub-2) is restarted after each step: each of its links is a
  // new handshake with the new files. The traffic runs between hub-0 and hub-2, whose link
  // stays up throughout.
  const load = await traffic(nodes[0], [nodes[2]]);
  const bundleA = fs.readFileSync(path.join(caA, "ca.crt"), "utf8");
  const bundleB = fs.readFileSync(path.join(caB, "ca.crt"), "utf8");
  const reloads = async (node) => metric(node, "roomcast_peer_tls_reloads_total");

  const step = async (what, write) => {
    const before = await Promise.all([nodes[0], nodes[2]].map(reloads));
    write();
    for (const [k, node] of [nodes[0], nodes[2]].entries()) {
      await eventually(async () => (await reloads(node)) > before[k], 5000, `${what}: ${node.url} reloaded`);
    }
    await nodes[1].stop();
    nodes[1] = await startNode(1);
    for (const node of nodes) {
      await eventually(async () => (await linked(node)) === 3, 10_000, `${what}: ${node.url} linked again`);
    }
    await sleep(300);
  };
  await step("old+new bundle", () => {
    for (const dir of dirs) put(path.join(dir, "ca.crt"), bundleA + bundleB);
  });
  await step("leaves of the new CA", () => {
    for (const [i, id] of ids.entries()) {
      const fresh = path.join(tmp, "fresh", id);
      certs("member", "--ca", caB, "--id", id, "--out", fresh);
      put(path.join(dirs[i], "tls.key"), fs.readFileSync(path.join(fresh, "tls.key")));
      put(path.join(dirs[i], "tls.crt"), fs.readFileSync(path.join(fresh, "tls.crt")));
    }
  });
  await step("new-only bundle", () => {
    for (const dir of dirs) put(path.join(dir, "ca.crt"), bundleB);
  });
  // The old CA is no longer trusted: a certificate of it is refused at the handshake.
  const stale = path.join(tmp, "stale");
  certs("member", "--ca", caA, "--id", "hub-0", "--out", stale);
  const failed = await metric(nodes[2], "roomcast_peer_handshakes_failed_total");
  const outcome = await attack(
    ips[2],
    peerPort,
    {
      ca: bundleB,
      servername: "hub-2",
      cert: fs.readFileSync(path.join(stale, "tls.crt")),
      key: fs.readFileSync(path.join(stale, "tls.key")),
    },
    "hub-0",
  );
  assert.notEqual(outcome.outcome, "grpc", JSON.stringify(outcome));
  await eventually(async () => (await metric(nodes[2], "roomcast_peer_handshakes_failed_total")) > failed, 5000, "stale counted");

  const n = await load.stop();
  console.log(`ticks delivered during the rotation: ${n}`);
  assert.ok(n > 50, `${n} ticks sent`);
});
