// The main binary `roomcast-dataplane` with its default relay app: join/leave rooms, any
// other event is relayed to the sender's rooms (or to the whole namespace when the sender
// joined no room), the sender never gets its own event back, acks answer {ok:true}.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { startServer, ClientPool, once, sleep, eventually, assertBytes, lifecycle } from "./harness.mjs";

let server;
const pool = new ClientPool();

before(async () => {
  server = await startServer({ bin: "main" });
});
lifecycle(pool, { servers: () => [server], label: "at the end of relay tests" });

function record(sockets, event) {
  const got = new Map(sockets.map((s) => [s, []]));
  for (const s of sockets) s.on(event, (...args) => got.get(s).push(args));
  return got;
}

const join = (s, room) =>
  new Promise((resolve, reject) => {
    s.timeout(5000).emit("join", room, (err, ...res) => (err ? reject(err) : resolve(res)));
  });
const leave = (s, room) =>
  new Promise((resolve, reject) => {
    s.timeout(5000).emit("leave", room, (err, ...res) => (err ? reject(err) : resolve(res)));
  });

/**
 * The relay answers an ack with {ok:true}; it may add `delivered` (recipients), which must
 * then be exact.
 */
function assertRelayAck(res, delivered) {
  assert.equal(typeof res, "object", `relay ack: ${JSON.stringify(res)}`);
  const { delivered: d, ...rest } = res;
  assert.deepEqual(rest, { ok: true }, `relay ack: ${JSON.stringify(res)}`);
  if (d !== undefined) assert.equal(d, delivered, "relay ack counts the recipients");
}

const conn = (nsp = "", transports = ["websocket"]) =>
  pool.connect(`${server.url}${nsp}`, { transports }, { welcome: false });

describe("roomcast-dataplane default relay app", () => {
  it("two clients in a room: an event from one reaches the other, not the sender; ack is {ok:true}", async () => {
    const a = await conn();
    const b = await conn("", ["polling"]);
    assert.notEqual(a.id, a.io.engine.id);
    await join(a, "lobby");
    await join(b, "lobby");
    const got = record([a, b], "chat");
    assertRelayAck(await a.timeout(5000).emitWithAck("chat", "hello", { n: 1 }), 1);
    await eventually(() => got.get(b).length, 5000, "b receives chat");
    await sleep(200);
    assert.deepEqual(got.get(b), [["hello", { n: 1 }]]);
    assert.deepEqual(got.get(a), [], "sender does not get its own event");
    // and the other way round, without an ack, with binary
    b.emit("chat", Buffer.from([1, 2, 3]));
    await eventually(() => got.get(a).length, 5000, "a receives chat");
    assertBytes(got.get(a)[0][0], [1, 2, 3], "binary relayed");
  });

  it("room events do not leak to sockets outside the room", async () => {
    const a = await conn();
    const b = await conn();
    const c = await conn();
    await join(a, "r1");
    await join(b, "r1");
    await join(c, "r2");
    const got = record([a, b, c], "msg");
    a.emit("msg", "for r1");
    await eventually(() => got.get(b).length, 5000, "b receives");
    await sleep(200);
    assert.deepEqual(got.get(b), [["for r1"]]);
    assert.deepEqual(got.get(c), [], "c is in another room");
    assert.deepEqual(got.get(a), []);
  });

  it("a sender in no room broadcasts to the whole namespace except itself", async () => {
    // a namespace of its own, so that sockets of earlier tests cannot be counted
    const a = await conn("/t-shout");
    const b = await conn("/t-shout");
    const c = await conn("/t-shout");
    await join(b, "somewhere");
    const got = record([a, b, c], "shout");
    assertRelayAck(await c.timeout(5000).emitWithAck("shout", 42), 2);
    await eventually(() => got.get(a).length && got.get(b).length, 5000, "a and b receive");
    await sleep(200);
    assert.deepEqual(got.get(a), [[42]]);
    assert.deepEqual(got.get(b), [[42]]);
    assert.deepEqual(got.get(c), []);
  });

  it("a sender in two rooms: a socket in both gets one copy", async () => {
    const a = await conn();
    const b = await conn();
    await join(a, "x");
    await join(a, "y");
    await join(b, "x");
    await join(b, "y");
    const got = record([b], "dup");
    a.emit("dup", 1);
    await eventually(() => got.get(b).length, 5000, "b receives");
    await sleep(200);
    assert.deepEqual(got.get(b), [[1]]);
  });

  it("leave stops delivery", async () => {
    const a = await conn();
    const b = await conn();
    await join(a, "l");
    await join(b, "l");
    await leave(b, "l");
    // b left its only room, and a's room has no one else: nobody receives
    const got = record([b], "after-leave");
    assertRelayAck(await a.timeout(5000).emitWithAck("after-leave", 1), 0);
    await sleep(300);
    assert.deepEqual(got.get(b), []);
  });

  it("any namespace works and namespaces are isolated", async () => {
    const a = await conn("/team-a");
    const b = await conn("/team-a", ["polling"]);
    const other = await conn("/team-b");
    const root = await conn();
    const got = record([b, other, root], "hi");
    assertRelayAck(await a.timeout(5000).emitWithAck("hi", "team"), 1);
    await eventually(() => got.get(b).length, 5000, "b receives");
    await sleep(200);
    assert.deepEqual(got.get(b), [["team"]]);
    assert.deepEqual(got.get(other), []);
    assert.deepEqual(got.get(root), []);
  });

  it("upgrade from polling works against the main binary", async () => {
    const a = pool.io(server.url, {});
    await once(a, "connect", 10_000);
    await eventually(() => a.io.engine.transport.name === "websocket", 10_000, "upgrade to websocket");
    const b = await conn();
    const got = record([b], "up");
    a.emit("up", "after-upgrade");
    await eventually(() => got.get(b).length, 5000, "b receives");
    assert.deepEqual(got.get(b), [["after-upgrade"]]);
  });
});
