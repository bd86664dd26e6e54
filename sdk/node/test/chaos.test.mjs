// Two app instances (processes running fixtures/chaos-app.mjs through useRoomcast) serving a
// 3-node hub behind a round-robin TCP proxy, with stock clients on every transport (WebSocket
// only, polling only, polling then WebSocket). Every client publishes numbered messages that
// the app broadcasts to everyone:
//   1. steady: every client gets every message exactly once, each sender's in order;
//   2. an app instance killed (SIGKILL) under traffic, then 3. a hub node killed under
//      traffic: its clients reconnect and are served again; no client ever gets a message
//      twice or a sender's messages out of order, and once they are back a new round reaches
//      every client exactly once.

import { it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io as connect } from "socket.io-client";
import { startServer, eventually, sleep } from "../../../dataplane/tests/js/harness.mjs";
import { startHub } from "./support/env.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const IPS = ["127.0.0.111", "127.0.0.112", "127.0.0.113"];
const PROXY_IP = "127.0.0.110";
const TRANSPORTS = [{ transports: ["websocket"] }, { transports: ["polling"], upgrade: false }, {}];
const CLIENTS = 9;

let hub;
let proxy;
const apps = [];
const clients = [];

function startApp(i) {
  const proc = spawn(process.execPath, [path.join(HERE, "fixtures/chaos-app.mjs")], {
    env: {
      ...process.env,
      ROOMCAST_APP_ENDPOINT: `http://${hub.appAddresses[i]}`,
      ROOMCAST_APP_TOKEN: hub.token,
      ROOMCAST_APP_CA_FILE: hub.caFile,
      INSTANCE_ID: `chaos-${i}`,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.ready = eventually(() => /ready/.test(out), 15_000, `app ${i} linked`);
  return proc;
}

/** A stock client through the proxy that records, per sender, the seqs it received. */
function client(i) {
  const name = `c${i}`;
  const s = connect(proxy.url, {
    ...TRANSPORTS[i % TRANSPORTS.length],
    auth: { name },
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  });
  const c = { name, s, got: new Map(), dup: [], disorder: [], ready: 0, seq: 0 };
  s.on("ready", () => c.ready++);
  s.on("msg", (from, seq) => {
    const seen = c.got.get(from) ?? [];
    if (seen.includes(seq)) c.dup.push(`${from}#${seq}`);
    if (seen.length && seen.at(-1) > seq) c.disorder.push(`${from}: ${seen.at(-1)} then ${seq}`);
    seen.push(seq);
    c.got.set(from, seen);
  });
  return c;
}

const allReady = (n) => eventually(() => clients.every((c) => c.s.connected && c.ready >= n), 30_000, `every client connected and in "all" (${n})`);

/** Every client publishes `count` messages, one every `gap` ms, numbered from `from`. */
async function publish(from, count, gap) {
  for (let k = 0; k < count; k++) {
    for (const c of clients) c.s.emit("pub", from + k);
    await sleep(gap);
  }
}

function assertClean(what) {
  for (const c of clients) {
    assert.deepEqual(c.dup, [], `${what}: ${c.name} got duplicates`);
    assert.deepEqual(c.disorder, [], `${what}: ${c.name} got a sender's messages out of order`);
  }
}

/** Every client got seqs [from, from+count) of every sender exactly once. */
async function assertRound(from, count, what) {
  const want = Array.from({ length: count }, (_, k) => from + k);
  await eventually(
    () => clients.every((c) => clients.every((p) => want.every((seq) => c.got.get(p.name)?.includes(seq)))),
    15_000,
    `${what}: every message to every client`,
  ).catch(() => {});
  for (const c of clients) {
    for (const p of clients) {
      const seqs = (c.got.get(p.name) ?? []).filter((seq) => seq >= from && seq < from + count);
      assert.deepEqual(seqs, want, `${what}: ${c.name}'s messages from ${p.name}`);
    }
  }
  assertClean(what);
}

before(async () => {
  hub = await startHub({ ips: IPS });
  proxy = await startServer({
    bin: "rr-proxy",
    listen: `${PROXY_IP}:0`,
    args: hub.nodes.flatMap((n) => ["--backend", `${n.host}:${n.port}`]),
    readyRe: /^listening on ([0-9.]+):(\d+)$/m,
  });
  apps.push(startApp(0), startApp(1));
  await Promise.all(apps.map((a) => a.ready));
  for (let i = 0; i < CLIENTS; i++) clients.push(client(i));
  await allReady(1);
});

after(async () => {
  for (const c of clients) c.s.close();
  for (const a of apps) a.kill("SIGKILL");
  await proxy?.stop();
  await hub?.stop();
});

it("steady: every message to every client exactly once, in order per sender", { timeout: 60_000 }, async () => {
  await publish(1, 20, 30);
  await assertRound(1, 20, "steady");
});

it("an app instance killed under traffic: its clients come back, nothing twice or out of order", { timeout: 90_000 }, async () => {
  const before = clients.map((c) => c.ready);
  const traffic = publish(100, 40, 30);
  await sleep(300);
  apps[1].kill("SIGKILL");
  await traffic;
  // The killed instance's clients reconnected (a new "ready"), the others never left.
  await eventually(() => clients.every((c) => c.s.connected), 30_000, "every client connected again");
  assert.ok(clients.some((c, i) => c.ready > before[i]), "some clients were the killed instance's and came back");
  assertClean("after the app instance was killed");
  await sleep(500);
  await publish(200, 10, 30);
  await assertRound(200, 10, "after the app instance was killed");
});

it("a hub node killed under traffic: its clients come back, nothing twice or out of order", { timeout: 90_000 }, async () => {
  const traffic = publish(300, 40, 30);
  await sleep(300);
  hub.nodes[1].proc.kill("SIGKILL");
  await traffic;
  await eventually(() => clients.every((c) => c.s.connected), 30_000, "every client connected again");
  assertClean("after a hub node was killed");
  await sleep(1000);
  await publish(400, 10, 30);
  await assertRound(400, 10, "after a hub node was killed");
});
