// The SDK's parts that need no hub: the batching queue, the encodings, ids and addresses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { OutQueue } from "../dist/queue.js";
import { decodeAckArgs, decodeClusterMessage, encodeClusterMessage } from "../dist/codec.js";
import { hubAckTimeout } from "../dist/adapter.js";
import { makeSocketId } from "../dist/ids.js";
import { parseAddress } from "../dist/link.js";
import { encodeMessage, decodeAppBatch } from "../dist/proto.js";
import { backoffDelay } from "../dist/backoff.js";
import { checkNode, Trust } from "../dist/trust.js";
import { HubConn } from "../dist/engine.js";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const tick = () => new Promise((r) => setImmediate(r));

test("the queue sends what one tick queued in batches of at most maxBatchBytes, in order", async () => {
  const batches = [];
  const q = new OutQueue({ maxBatchBytes: 100, maxQueuedBytes: 10_000, write: (b, done) => (batches.push(b), done()) });
  const parts = Array.from({ length: 25 }, (_, i) => Buffer.alloc(30, i));
  for (const p of parts) assert.equal(q.push(p), "queued");
  assert.equal(batches.length, 0, "nothing is written before the end of the tick");
  await tick();
  assert.ok(batches.every((b) => b.length <= 100), `batch sizes ${batches.map((b) => b.length)}`);
  assert.equal(batches.length, 9, "3 parts of 30 bytes per 100-byte batch");
  assert.deepEqual(Buffer.concat(batches), Buffer.concat(parts));
  assert.equal(q.bytes, 0);
});

test("the queue refuses a message larger than a batch, drops volatile ones and overflows at its bound", async () => {
  let release = [];
  const q = new OutQueue({ maxBatchBytes: 100, maxQueuedBytes: 400, write: (_b, done) => release.push(done) });
  assert.equal(q.push(Buffer.alloc(101)), "too-large");
  assert.equal(q.congested, false);
  for (let i = 0; i < 3; i++) assert.equal(q.push(Buffer.alloc(100)), "queued");
  assert.equal(q.congested, true, "past a quarter of the bound");
  assert.equal(q.push(Buffer.alloc(100)), "queued");
  assert.equal(q.push(Buffer.alloc(1), true), "dropped", "a volatile message past the bound is dropped");
  assert.equal(q.push(Buffer.alloc(1)), "overflow");
  await tick();
  // Written, not yet done: still counted.
  assert.equal(q.bytes, 400);
  for (const done of release) done();
  assert.equal(q.bytes, 0);
  assert.equal(q.push(Buffer.alloc(1), true), "queued");
});

test("the queue keeps at most its window in flight and resumes when writes complete", async () => {
  const pending = [];
  const q = new OutQueue({ maxBatchBytes: 1 << 19, maxQueuedBytes: 64 << 20, write: (b, done) => pending.push([b, done]) });
  for (let i = 0; i < 8; i++) q.push(Buffer.alloc(1 << 19));
  await tick();
  assert.equal(pending.length, 2, "1 MiB window: two 512 KiB batches in flight");
  pending.shift()[1]();
  assert.equal(pending.length, 2, "one more batch once one is done");
});

test("ack arguments: placeholders become their attachments, nested or not", () => {
  const a = Buffer.from([1]);
  const b = Buffer.from([2, 3]);
  const args = decodeAckArgs(
    JSON.stringify([{ _placeholder: true, num: 1 }, { x: [{ _placeholder: true, num: 0 }], y: "s" }, 3]),
    [a, b],
  );
  assert.deepEqual(args, [b, { x: [a], y: "s" }, 3]);
  assert.ok(Buffer.isBuffer(args[0]));
  assert.deepEqual(decodeAckArgs("", []), []);
  assert.throws(() => decodeAckArgs(JSON.stringify([{ _placeholder: true, num: 2 }]), [a]), /names no attachment/);
});

test("cluster messages survive msgpack, binary values included", () => {
  const message = { type: 9, uid: "app-1", nsp: "/", data: { requestId: "r", packet: ["ev", Buffer.from([7]), { n: 1 }] } };
  const back = decodeClusterMessage(encodeClusterMessage(message));
  assert.deepEqual(back, message);
  assert.ok(Buffer.isBuffer(back.data.packet[1]));
});

test("the hub's ack timeout is a little shorter than the emit's", () => {
  assert.equal(hubAckTimeout(1000), 900);
  assert.equal(hubAckTimeout(100), 80);
  assert.equal(hubAckTimeout(60_000), 59_500);
  assert.equal(hubAckTimeout(5), 1);
  assert.equal(hubAckTimeout(undefined), 1);
});

test("socket ids: 16 random base64url characters, then the session's suffix", () => {
  const ids = new Set();
  for (let i = 0; i < 100; i++) {
    const id = makeSocketId("-n1");
    assert.match(id, /^[A-Za-z0-9_-]{16}-n1$/);
    ids.add(id);
  }
  assert.equal(ids.size, 100);
});

test("app link addresses", () => {
  assert.deepEqual(parseAddress("http://127.0.0.1:7000"), { target: "127.0.0.1:7000", secure: false });
  assert.deepEqual(parseAddress("https://hub.example:443/"), { target: "hub.example:443", secure: true });
  assert.deepEqual(parseAddress("hub-0.hub:7000"), { target: "hub-0.hub:7000", secure: false });
  assert.throws(() => parseAddress("hub"), /bad app link address/);
  assert.throws(() => parseAddress("ftp://x:1"), /bad app link address/);
});

test("messages encode one at a time; their concatenation is one batch", () => {
  const a = encodeMessage({ packet: { session: 3, text: "2[\"x\"]", volatile: true } });
  const b = encodeMessage({ join: { session: 3, namespace: "/", socket_id: "abc", rooms: ["r"], request: 9 } });
  const batch = decodeAppBatch(Buffer.concat([a, b]));
  assert.deepEqual(
    batch.messages.map((m) => [m.kind, m[m.kind].session]),
    [["packet", 3], ["join", 3]],
  );
  assert.equal(batch.messages[0].packet.text, '2["x"]');
  assert.equal(batch.messages[0].packet.volatile, true);
  assert.deepEqual(batch.messages[1].join.rooms, ["r"]);
});

test("reconnection delays grow from 100 ms to 5 s, with jitter", () => {
  for (let i = 0; i < 50; i++) {
    const d0 = backoffDelay(0);
    assert.ok(d0 >= 50 && d0 <= 100, `${d0}`);
    const d9 = backoffDelay(9);
    assert.ok(d9 >= 2500 && d9 <= 5000, `${d9}`);
  }
});

test("a node's certificate must name the node a link was opened for; the endpoint's link takes any node of the hub", () => {
  const cert = (san) => ({ subjectaltname: san });
  assert.equal(checkNode("hub-1", cert("DNS:hub-1, DNS:hub-1.hub-peers")), undefined);
  assert.match(checkNode("hub-1", cert("DNS:hub-2"))?.message ?? "", /hub-2's, not hub-1's/);
  assert.equal(checkNode("", cert("DNS:hub-2")), undefined);
  assert.match(checkNode("", cert("IP Address:127.0.0.1"))?.message ?? "", /names no member id/);
  assert.match(checkNode("hub-1", {})?.message ?? "", /names no member id/);
});

test("the trust bundle: PEM required; a file is re-read and a bad new one keeps the last good one", () => {
  const warnings = [];
  const warn = (m) => warnings.push(m);
  assert.throws(() => Trust.from({ ca: "not pem" }, warn), /holds no PEM certificate/);
  assert.throws(() => Trust.from({ caFile: "/nonexistent/ca.crt" }, warn), /cannot read the hub's trust bundle/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-trust-"));
  const file = path.join(dir, "ca.crt");
  const pem = (n) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----\n`;
  fs.writeFileSync(file, pem("A"));
  const trust = Trust.from({ caFile: file }, warn);
  assert.equal(trust.bundle().toString(), pem("A"));
  fs.writeFileSync(file, pem("B")); // a rotation
  assert.equal(trust.bundle().toString(), pem("B"));
  fs.writeFileSync(file, "");
  assert.equal(trust.bundle().toString(), pem("B"));
  fs.rmSync(file);
  assert.equal(trust.bundle().toString(), pem("B"));
  assert.equal(warnings.length, 2);
});

test("a session holds the client's packets while a join is under way, then passes them on in order; a close flushes them first", async () => {
  const link = { node: "hub-0", live: true, writable: true, sendPacket: () => true, sendClose: () => {} };
  const handshake = { headers: [], url: "/socket.io/?EIO=4", address: "127.0.0.1", secure: false, issued: 0, claims_json: "" };
  const conn = new HubConn(link, 1, "aHViLTA", handshake, "websocket");
  const seen = [];
  conn.on("data", (d) => seen.push(d));
  conn.on("close", (reason) => seen.push(`close:${reason}`));
  conn._receive("a");
  conn._hold();
  conn._hold();
  conn._receive("b");
  conn._receive("c");
  conn._release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, ["a"], "still one join under way");
  conn._release();
  assert.deepEqual(seen, ["a"], "passed on after the awaiting code resumed, not at once");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, ["a", "b", "c"]);
  conn._hold();
  conn._receive("d");
  conn._closed("transport close");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, ["a", "b", "c", "d", "close:transport close"]);
  conn._release();
  await new Promise((r) => setImmediate(r));
  assert.equal(seen.length, 5);
});
