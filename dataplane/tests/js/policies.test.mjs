// Client room policies with no backend: `roomcast:join`, `roomcast:leave` and `roomcast:emit`
// against the real binary, allowed and refused, with exact delivery counts.

import { it, before } from "node:test";
import assert from "node:assert/strict";
import { writeConfig, startServer, ClientPool, connected, sleep, lifecycle } from "./harness.mjs";

const pool = new ClientPool();
let hub;
let defaults;


before(async () => {
  hub = await startServer({
    bin: "main",
    args: [
      "--config",
      writeConfig({
        listen: "127.0.0.1:0",
        socketio: {
          namespaces: [
            { name: "/", policies: { join: ["chat:*"], emit: ["announcements"], emitToJoined: true } },
            { name: "/readonly", policies: { join: ["news"], emitToJoined: false } },
            { name: "/nopolicy" },
          ],
        },
      }),
    ],
  });
  defaults = await startServer({ bin: "main" });
});
lifecycle(pool, { servers: () => [hub, defaults], label: "at the end of policy tests" });

const call = (s, event, arg) => s.timeout(3000).emitWithAck(event, arg);

async function clients(url, n) {
  const sockets = Array.from({ length: n }, (_, i) => pool.io(url, { transports: [i % 2 ? "polling" : "websocket"] }));
  await Promise.all(sockets.map((s) => connected(s)));
  return sockets;
}

function counter(sockets, event) {
  const got = new Map(sockets.map((s) => [s, []]));
  for (const s of sockets) s.on(event, (...args) => got.get(s).push(args));
  return got;
}

it("joins rooms that match a join pattern and refuses others", async () => {
  const [a] = await clients(hub.url, 1);
  assert.deepEqual(await call(a, "roomcast:join", "chat:general"), { ok: true });
  const refused = await call(a, "roomcast:join", "admin");
  assert.equal(refused.ok, false);
  assert.equal(refused.error, "forbidden");
  const bad = await call(a, "roomcast:join", 42);
  assert.equal(bad.error, "bad_request");
});

it("emits to joined rooms only to the other members, exactly once each", async () => {
  const [a, b, c, outsider] = await clients(hub.url, 4);
  for (const s of [a, b, c]) assert.deepEqual(await call(s, "roomcast:join", "chat:1"), { ok: true });
  const got = counter([a, b, c, outsider], "msg");
  const res = await call(a, "roomcast:emit", { room: "chat:1", event: "msg", args: ["hello", { n: 1 }] });
  assert.deepEqual(res, { ok: true, recipients: 2 });
  await sleep(200);
  assert.deepEqual(got.get(b), [["hello", { n: 1 }]]);
  assert.deepEqual(got.get(c), [["hello", { n: 1 }]]);
  assert.deepEqual(got.get(a), [], "the sender does not get its own event");
  assert.deepEqual(got.get(outsider), [], "non-members get nothing");
});

it("refuses emits to rooms not joined unless an emit pattern allows them", async () => {
  const [a, b] = await clients(hub.url, 2);
  await call(b, "roomcast:join", "chat:2");
  const got = counter([b], "msg");
  const refused = await call(a, "roomcast:emit", { room: "chat:2", event: "msg", args: [] });
  assert.equal(refused.error, "forbidden");
  // `announcements` matches an emit pattern, so emitting needs no membership; clients may
  // not join it themselves (no join pattern), so it has no members here: zero recipients.
  assert.deepEqual(await call(a, "roomcast:emit", { room: "announcements", event: "msg", args: [1] }), { ok: true, recipients: 0 });
  await sleep(100);
  assert.deepEqual(got.get(b), []);
});

it("stops delivering after roomcast:leave", async () => {
  const [a, b] = await clients(hub.url, 2);
  await call(a, "roomcast:join", "chat:3");
  await call(b, "roomcast:join", "chat:3");
  assert.deepEqual(await call(b, "roomcast:leave", "chat:3"), { ok: true });
  const res = await call(a, "roomcast:emit", { room: "chat:3", event: "msg", args: [] });
  assert.equal(res.recipients, 0);
});

it("refuses emits to joined rooms when emitToJoined is off", async () => {
  const [a] = await clients(hub.url + "/readonly", 1);
  assert.deepEqual(await call(a, "roomcast:join", "news"), { ok: true });
  const res = await call(a, "roomcast:emit", { room: "news", event: "msg", args: [] });
  assert.equal(res.error, "forbidden");
});

it("refuses policy events in namespaces without policies, and malformed emits", async () => {
  const [a] = await clients(hub.url + "/nopolicy", 1);
  assert.equal((await call(a, "roomcast:join", "x")).error, "policies_disabled");
  const [b] = await clients(hub.url, 1);
  await call(b, "roomcast:join", "chat:4");
  assert.equal((await call(b, "roomcast:emit", { room: "chat:4" })).error, "bad_request");
  assert.equal((await call(b, "roomcast:emit", { room: "chat:4", event: "disconnect" })).error, "bad_request");
});

it("the binary's embedded defaults let two clients chat through policies", async () => {
  const [a, b] = await clients(defaults.url, 2);
  await call(a, "roomcast:join", "lobby");
  await call(b, "roomcast:join", "lobby");
  const got = counter([b], "chat");
  assert.deepEqual(await call(a, "roomcast:emit", { room: "lobby", event: "chat", args: ["hi"] }), { ok: true, recipients: 1 });
  await sleep(100);
  assert.deepEqual(got.get(b), [["hi"]]);
});
