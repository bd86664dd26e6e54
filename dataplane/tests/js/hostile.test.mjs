// Hostile clients against the real binary, each attack beside a bystander that must not
// notice: reading another socket's private emits through a room named after its id,
// oversized names and auth objects, a flood of dynamic namespaces, one attachment
// referenced many times. Limits are set low in the configuration to reach them cheaply.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import {
  startHubWithApi,
  apiCall,
  ClientPool,
  connected,
  connectError,
  eventually,
  rawEioWs,
  sleep,
  lifecycle,
} from "./harness.mjs";

const pool = new ClientPool();
const TOKEN = "hostile-test-token-0123456789abcdef";
let hub;

before(async () => {
  hub = await startHubWithApi(
    {
      socketio: {
        namespaces: [
          { name: "/", relay: true, policies: { join: ["*"], emitToJoined: true } },
          { name: "/dyn-*", relay: true },
        ],
      },
      limits: { maxRoomNameBytes: 32, maxNamespaceNameBytes: 32, maxDynamicNamespaces: 2, maxAuthBytes: 256 },
    },
    TOKEN,
  );
});
lifecycle(pool, { servers: () => [hub], label: "at the end of hostile-client tests" });

const call = (s, event, ...args) => s.timeout(3000).emitWithAck(event, ...args);

async function client(nsp = "/", opts = {}) {
  const s = pool.io(hub.url + (nsp === "/" ? "" : nsp), { transports: ["websocket"], ...opts });
  await connected(s);
  return s;
}

/** The bystander is a plain relay client: it still gets its own event echoed in its room. */
async function bystanderOk(by, what) {
  const peer = await client();
  assert.deepEqual(await call(peer, "roomcast:join", "bystanders"), { ok: true }, `${what}: join`);
  assert.deepEqual(await call(by, "roomcast:join", "bystanders"), { ok: true }, `${what}: join`);
  const got = new Promise((resolve) => by.once("hello", resolve));
  await call(peer, "roomcast:emit", { room: "bystanders", event: "hello", args: [what] });
  assert.equal(await Promise.race([got, sleep(3000).then(() => "nothing")]), what, `${what}: bystander`);
  peer.disconnect();
}

const emitTo = (socketIds, event, arg) =>
  apiCall(hub, "POST", "/v1/namespaces/%2F/emit", { event, args: [arg], socketIds });

it("a client cannot join a room named after another socket's id to read its private emits", async () => {
  const by = await client();
  const victim = await client();
  const attacker = await client("/", { transports: ["polling"] });
  const stolen = [];
  attacker.on("secret", (x) => stolen.push(x));
  const viaPolicy = await call(attacker, "roomcast:join", victim.id);
  assert.equal(viaPolicy.ok, false, JSON.stringify(viaPolicy));
  assert.equal(viaPolicy.error, "reserved");
  const viaRelay = await call(attacker, "join", victim.id);
  assert.equal(viaRelay.ok, false, JSON.stringify(viaRelay));
  // Its own id is refused too (a session id has the same shape): no room of that shape at all.
  assert.equal((await call(attacker, "roomcast:join", attacker.id)).error, "reserved");
  const got = new Promise((resolve) => victim.once("secret", resolve));
  await emitTo([victim.id], "secret", "for the victim only");
  assert.equal(await got, "for the victim only");
  await sleep(300);
  assert.deepEqual(stolen, [], "the attacker received nothing");
  // Ordinary rooms still work for everyone.
  assert.deepEqual(await call(attacker, "roomcast:join", "lobby"), { ok: true });
  await bystanderOk(by, "after socket-id rooms");
});

it("room and namespace names, and auth objects, are bounded", async () => {
  const by = await client();
  const s = await client();
  const long = "r".repeat(33);
  const refused = await call(s, "roomcast:join", long);
  assert.equal(refused.ok, false);
  assert.equal(refused.error, "limit");
  assert.match(refused.message, /room name is too long/);
  assert.deepEqual(await call(s, "roomcast:join", "r".repeat(32)), { ok: true }, "at the limit");

  const longNsp = pool.io(`${hub.url}/dyn-${"n".repeat(40)}`, { transports: ["websocket"] });
  assert.equal((await connectError(longNsp)).message, "Invalid namespace");

  const fat = pool.io(hub.url, { transports: ["websocket"], auth: { blob: "x".repeat(300) } });
  const err = await connectError(fat);
  assert.equal(err.message, "Auth payload too large");
  assert.deepEqual(err.data, { limit: 256 });
  await client("/", { auth: { blob: "x".repeat(100) } });
  await bystanderOk(by, "after long names");
});

it("dynamic namespaces are bounded; empty ones make room", async () => {
  const by = await client();
  const one = await client("/dyn-1");
  const two = await client("/dyn-2");
  const three = pool.io(`${hub.url}/dyn-3`, { transports: ["websocket"], reconnection: false });
  const err = await connectError(three);
  assert.equal(err.message, "Namespace limit reached");
  assert.deepEqual(err.data, { limit: 2 });
  assert.ok(two.connected, "a live dynamic namespace is unaffected");
  one.disconnect();
  await eventually(async () => {
    const again = pool.io(`${hub.url}/dyn-3`, { transports: ["websocket"], reconnection: false, forceNew: true });
    try {
      await connected(again, 2000);
      return true;
    } catch {
      again.close();
      return false;
    }
  }, 5000, "a new dynamic namespace once /dyn-1 is empty");
  await bystanderOk(by, "after dynamic namespaces");
});

it("one attachment referenced many times closes the session instead of being expanded", async () => {
  const by = await client();
  const { ws } = await rawEioWs(hub);
  ws.send("40");
  assert.match(await ws.next(5000, "CONNECT reply"), /^40\{"sid"/);
  const refs = Array.from({ length: 4000 }, () => ({ _placeholder: true, num: 0 }));
  ws.send(`451-${JSON.stringify(["boom", ...refs])}`);
  ws.send(Buffer.alloc(256 * 1024, 7));
  await ws.waitClose(5000, "session closed on a repeated placeholder");
  await bystanderOk(by, "after the placeholder bomb");
});
