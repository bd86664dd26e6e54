// The app-link scenario of the full-path tier (e2e/pod-runner-tests.sh): the sio-chat example's
// socket.io server (examples/sio-chat/server.mjs) running as a Deployment of 2 pods next to its
// 3-pod hub (examples/sio-chat/k8s/), both run by the pod runner, with stock socket.io clients
// that connect through the hub's Service (a service-proxy.mjs stand-in).
//
//   HUB_URL=http://127.0.0.1:4010 HUB_NAME=sio-chat APP=sio-chat KUBECTL=... node e2e/scenarios/app-link.mjs
//
// Checks: the hub's status counts the 2 linked instances (and `kubectl get` shows them under
// APPS); 6 clients on both transports, spread over the hub pods and served by both instances,
// chat in #general (each message reaches every other client exactly once), a private message
// by socket id reaches its one target, the user list (fetchSockets) names everyone; then an app
// pod is deleted under that traffic: its clients are handed to the other instance (they
// reconnect), the Deployment brings back a second instance that links to every hub pod, and a
// new round reaches everyone exactly once again.
import assert from "node:assert/strict";
import { io, kubectl, kubectlJson, log, podOf, sleep, waitFor } from "./lib.mjs";

const HUB_URL = process.env.HUB_URL;
const HUB = process.env.HUB_NAME ?? "sio-chat";
const APP = process.env.APP ?? "sio-chat";
const KUBECTL = process.env.KUBECTL ?? "kubectl";
const SCALE = Number(process.env.E2E_TIME_SCALE ?? 1);
const T = (s) => s * SCALE;
if (!HUB_URL) throw new Error("HUB_URL is required");

const hubStatus = async () => (await kubectlJson(KUBECTL, ["get", "socketiohub", HUB])).status ?? {};
const appPods = async () =>
  (await kubectlJson(KUBECTL, ["get", "pods", "-l", `app.kubernetes.io/name=${APP}`])).items.filter(
    (p) => !p.metadata.deletionTimestamp,
  );
const ready = (p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");

/** A stock client named `name`; resolves once connected. */
async function client(name, transports) {
  const s = io(HUB_URL, { auth: { name }, transports, reconnectionDelay: 200, reconnectionDelayMax: 1000 });
  s.got = { message: [], private: [] };
  s.on("message", (m) => s.got.message.push(m));
  s.on("private", (m) => s.got.private.push(m));
  await new Promise((resolve, reject) => {
    s.once("connect", resolve);
    s.once("connect_error", (e) => reject(new Error(`${name}: ${e.message}`)));
  });
  await inGeneral(s);
  return s;
}

/** Resolves once `s`'s socket is in #general hub-wide (the app joins it on connection). */
async function inGeneral(s) {
  await waitFor(`${s.auth.name} in #general`, T(10), async () => {
    const users = await s.timeout(2000).emitWithAck("users", "#general");
    return users.some((u) => u.id === s.id);
  });
}

/** Every client sends one message to #general tagged `tag`; every client (the sender too) gets each once. */
async function round(clients, tag) {
  for (const s of clients) s.got.message = [];
  for (const [i, s] of clients.entries()) s.emit("message", { channel: "#general", text: `${tag} from ${i}` });
  const want = clients.map((_, j) => `${tag} from ${j}`).sort();
  const got = (s) => s.got.message.filter((m) => m.text.startsWith(`${tag} `)).map((m) => m.text);
  await waitFor(`round ${tag}: every message at every client`, T(20), () => clients.every((s) => got(s).length >= want.length));
  await sleep(300);
  for (const [i, s] of clients.entries()) assert.deepEqual(got(s).sort(), want, `client ${i}: each message of round ${tag} once`);
}

const t0 = Date.now();
await waitFor("2 app pods Running and Ready", T(90), async () => {
  const pods = await appPods();
  return pods.length === 2 && pods.every(ready);
});
await waitFor("the hub counts 2 linked app instances (status.linkedAppInstances)", T(60), async () => {
  const s = await hubStatus();
  return s.linkedAppInstances === 2 && s.appEndpoint === `${HUB}-app.default.svc:5100`;
});
const table = await kubectl(KUBECTL, ["get", "socketiohub", HUB]);
const [header, row] = table.trim().split("\n");
const cols = header.split(/\s{2,}/);
assert.equal(row.split(/\s{2,}/)[cols.indexOf("APPS")], "2", `APPS column:\n${table}`);
log(`ok: kubectl get socketiohub shows APPS 2`);

// Six clients on both transports; the Service stand-in spreads them over the hub pods, the hub
// over the two instances.
const transports = [["websocket"], ["polling"], ["polling", "websocket"]];
const clients = [];
for (let i = 0; i < 6; i++) clients.push(await client(`user${i}`, transports[i % 3]));
const pods = new Set(clients.map((s) => podOf(s.id)));
log(`clients on hub pods: ${[...pods].join(", ")}`);
assert.ok(pods.size >= 2, `clients spread over the hub pods: ${[...pods]}`);
await round(clients, "r1");

// A private message by socket id reaches its one target, from a client served elsewhere.
const [from, to] = [clients[0], clients[5]];
const delivered = await from.timeout(T(5) * 1000).emitWithAck("private", { to: to.id, text: "psst" });
assert.deepEqual(delivered, { ok: true });
await waitFor("the private message at its target", T(10), () => to.got.private.length === 1);
await sleep(300);
assert.equal(to.got.private[0].text, "psst");
assert.ok(clients.every((s) => s === to || s.got.private.length === 0), "no one else got the private message");

// The user list: fetchSockets over the whole hub, both instances' sockets.
const users = await clients[3].timeout(T(5) * 1000).emitWithAck("users", "#general");
assert.deepEqual(users.map((u) => u.name).sort(), clients.map((_, i) => `user${i}`).sort());
assert.deepEqual(new Set(users.map((u) => u.id)), new Set(clients.map((s) => s.id)));
log("ok: chat, private message and user list across hub pods and app instances");

// Delete one app pod: SIGTERM, its server drains (io.close), its clients reconnect and are
// served by the other instance; the Deployment replaces it.
const [victim] = await appPods();
const reconnected = clients.map((s) => {
  let n = 0;
  s.io.on("reconnect", () => n++);
  return () => n;
});
const victimName = victim.metadata.name;
await kubectl(KUBECTL, ["delete", "pod", victimName, "--wait=true", "--timeout=60s"]);
log(`deleted app pod ${victimName}`);
await waitFor("every client connected again", T(30), () => clients.every((s) => s.connected));
for (const s of clients) await inGeneral(s);
const moved = reconnected.filter((n) => n() > 0).length;
log(`${moved} of ${clients.length} clients reconnected after the app pod's drain`);
assert.ok(moved >= 1 && moved < clients.length, `the deleted instance's clients moved, the others stayed (${moved})`);
await round(clients, "r2");
await waitFor("the Deployment's replacement Ready and the hub counting 2 instances again", T(90), async () => {
  const now = await appPods();
  return now.length === 2 && now.every(ready) && !now.some((p) => p.metadata.name === victimName) && (await hubStatus()).linkedAppInstances === 2;
});
// New sessions reach the new instance too: more clients, one more exact round.
for (let i = 6; i < 10; i++) clients.push(await client(`user${i}`, transports[i % 3]));
await round(clients, "r3");
for (const s of clients) s.close();
log(`PASS: app-link scenario took ${((Date.now() - t0) / 1000).toFixed(0)}s`);
process.exit(0);
