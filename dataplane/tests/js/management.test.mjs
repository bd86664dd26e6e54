// Management REST API: the real roomcast-dataplane binary, started with a config file that
// turns the API on (127.0.0.1:0, the port read from the second stdout line), driven over
// HTTP while real socket.io-client sockets observe the effects.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  binaryPath,
  startServer,
  writeConfig,
  ClientPool,
  once,
  eventually,
  sleep,
  toBuffer,
  startHubWithApi,
} from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../../..");
const TOKEN = "mgmt-test-token-0123456789abcdef";
const PROBLEM = "https://roomcast.dev/problems/";
const MAX_BODY = 16 * 1024;

/**
 * Starts roomcast-dataplane with a config file (token in a tokenFile) and waits for both
 * ready lines. Returns the harness's server with `api` (the management URL) and `stdout` (the
 * lines printed so far).
 */
async function startHub({ namespaces = ["/", "/chat", "/dyn-*"], maxBodyBytes = MAX_BODY } = {}) {
  return startHubWithApi({ socketio: { namespaces }, management: { maxBodyBytes } }, TOKEN, {
    env: { ROOMCAST_CONFIG: "" },
  });
}

/** One API call; resolves { status, headers, json, text }. */
async function call(hub, method, route, body, { token = TOKEN, headers = {}, raw = false } = {}) {
  const h = { ...headers };
  if (token !== null) h.authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    payload = raw ? body : JSON.stringify(body);
    h["content-type"] ??= "application/json";
  }
  const res = await fetch(hub.api + route, {
    method,
    headers: h,
    body: payload,
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, json, text };
}

const ns = (name) => `/v1/namespaces/${encodeURIComponent(name)}`;

/** Calls and asserts a 200; returns the JSON body. */
async function ok(hub, method, route, body) {
  const res = await call(hub, method, route, body);
  assert.equal(res.status, 200, `${method} ${route}: ${res.text}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  return res.json;
}

function assertProblem(res, status, slug, what) {
  assert.equal(res.status, status, `${what}: status (body ${res.text})`);
  assert.equal(res.headers.get("content-type"), "application/problem+json", `${what}: content-type`);
  assert.equal(res.json?.type, PROBLEM + slug, `${what}: type (body ${res.text})`);
  assert.equal(res.json.status, status, `${what}: status member`);
  assert.equal(typeof res.json.title, "string", `${what}: title`);
  assert.ok(res.json.detail, `${what}: detail`);
}

/** Records every `event` a socket receives. */
function record(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

/** Waits until each recorder in `expect` has its count, then checks the others stay empty. */
async function assertReceived(recorders, expected, what) {
  await eventually(
    () => recorders.every((r, i) => r.length >= expected[i]),
    5000,
    `${what}: ${JSON.stringify(expected)} (got ${JSON.stringify(recorders.map((r) => r.length))})`,
  );
  await sleep(150);
  assert.deepEqual(
    recorders.map((r) => r.length),
    expected,
    `${what}: events received per socket`,
  );
}

const pool = new ClientPool();
let hub;

async function client(nsp = "/", opts = {}) {
  return pool.connect(hub.url + (nsp === "/" ? "" : nsp), { transports: ["websocket"], ...opts }, { welcome: false });
}

before(async () => {
  hub = await startHub();
});
afterEach(async () => {
  pool.closeAll();
  // Let the hub see the closes so counts start from zero in the next test.
  await eventually(async () => (await ok(hub, "GET", "/v1/stats")).connections === 0, 5000, "no connections left");
});
after(async () => {
  pool.closeAll();
  const res = await hub?.stop();
  assert.equal(res?.code, 0, `hub exit after SIGTERM: ${JSON.stringify(res)}\n${hub?.stderr()}`);
});

describe("management API", () => {
  it("prints the management line after the client line; healthz and openapi.json need no token", async () => {
    const lines = hub.stdout().split("\n").filter(Boolean);
    assert.match(lines[0], /^listening on http:\/\//);
    assert.match(lines[1], /^management listening on http:\/\/127\.0\.0\.1:\d+$/);
    const health = await call(hub, "GET", "/healthz", undefined, { token: null });
    assert.equal(health.status, 200);
    assert.equal(health.text, "ok");
    const doc = await call(hub, "GET", "/openapi.json", undefined, { token: null });
    assert.equal(doc.status, 200);
    const checkedIn = JSON.parse(fs.readFileSync(path.join(REPO, "docs/management-api.openapi.json"), "utf8"));
    assert.deepEqual(doc.json, checkedIn, "served document equals docs/management-api.openapi.json");
    assert.equal(doc.json.openapi, "3.1.0");
    // The client port does not serve the API.
    const wrongPort = await fetch(`${hub.url}/v1/stats`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.notEqual(wrongPort.status, 200);
  });

  it("emits to the whole namespace and only to it", async () => {
    const a = await client("/");
    const b = await client("/");
    const c = await client("/chat");
    const rec = [a, b, c].map((s) => record(s, "news"));
    const out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "news", args: ["hi", { n: 1 }, [true, null]] });
    assert.deepEqual(out, { recipients: 2 });
    await assertReceived(rec, [1, 1, 0], "namespace emit");
    assert.deepEqual(rec[0][0], ["hi", { n: 1 }, [true, null]]);

    const outChat = await ok(hub, "POST", `${ns("/chat")}/emit`, { event: "news", args: [] });
    assert.equal(outChat.recipients, 1);
    await assertReceived(rec, [1, 1, 1], "emit to /chat");
    assert.deepEqual(rec[2][0], []);
    // The leading slash may be left out of the path.
    assert.equal((await ok(hub, "POST", "/v1/namespaces/chat/emit", { event: "news" })).recipients, 1);
  });

  it("emits to rooms, to socket ids, and except rooms or ids", async () => {
    const [a, b, c, d] = await Promise.all([client(), client(), client(), client()]);
    const rec = [a, b, c, d].map((s) => record(s, "msg"));
    await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [a.id, b.id], join: ["red"] });
    await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [b.id, c.id], join: ["blue"] });

    let out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "msg", args: ["red"], rooms: ["red"] });
    assert.equal(out.recipients, 2);
    await assertReceived(rec, [1, 1, 0, 0], "to red");

    // A socket in two target rooms gets one copy.
    out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "msg", args: ["red+blue"], rooms: ["red", "blue"] });
    assert.equal(out.recipients, 3);
    await assertReceived(rec, [2, 2, 1, 0], "to red and blue");

    out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "msg", args: ["ids"], socketIds: [d.id, a.id] });
    assert.equal(out.recipients, 2);
    await assertReceived(rec, [3, 2, 1, 1], "to socket ids");

    out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "msg", args: ["except"], except: ["blue"] });
    assert.equal(out.recipients, 2);
    await assertReceived(rec, [4, 2, 1, 2], "all except blue");

    out = await ok(hub, "POST", `${ns("/")}/emit`, {
      event: "msg",
      args: ["mix"],
      rooms: ["blue"],
      socketIds: [d.id],
      except: [b.id],
    });
    assert.equal(out.recipients, 2);
    await assertReceived(rec, [4, 2, 2, 3], "blue + d except b");
    assert.deepEqual(rec[3][2], ["mix"]);

    // Nobody selected.
    out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "msg", rooms: ["nobody-here"] });
    assert.equal(out.recipients, 0);
  });

  it("emits volatile events", async () => {
    const a = await client();
    const b = await client();
    const rec = [a, b].map((s) => record(s, "tick"));
    for (let i = 0; i < 5; i++) {
      const out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "tick", args: [i], volatile: true });
      assert.equal(out.recipients, 2);
    }
    await assertReceived(rec, [5, 5], "volatile to ready clients");
    assert.deepEqual(rec[0].map((args) => args[0]), [0, 1, 2, 3, 4]);
  });

  it("carries binary arguments as {_binary: base64} both ways", async () => {
    const a = await client();
    a.on("bin", (label, data, cb) => cb({ label, echoed: data, extra: Buffer.from([0xff, 0]) }));
    const rec = record(a, "file");
    await ok(hub, "POST", `${ns("/")}/emit`, {
      event: "file",
      args: ["x.bin", { _binary: Buffer.from([1, 2, 3]).toString("base64") }, { deep: [{ _binary: "BAU=" }] }],
    });
    await eventually(() => rec.length === 1, 5000, "binary event");
    const [name, data, nested] = rec[0];
    assert.equal(name, "x.bin");
    assert.deepEqual([...toBuffer(data)], [1, 2, 3]);
    assert.deepEqual([...toBuffer(nested.deep[0])], [4, 5]);

    const out = await ok(hub, "POST", `${ns("/")}/emit`, {
      event: "bin",
      args: ["L", { _binary: "CQg=" }],
      ackTimeoutMs: 5000,
    });
    assert.equal(out.recipients, 1);
    assert.equal(out.timedOut, false);
    assert.deepEqual(out.acks, [
      { socketId: a.id, args: [{ label: "L", echoed: { _binary: "CQg=" }, extra: { _binary: "/wA=" } }] },
    ]);
  });

  it("collects broadcast acks from every recipient", async () => {
    const sockets = await Promise.all([client(), client(), client()]);
    for (const [i, s] of sockets.entries()) {
      s.on("ask", (question, cb) => cb(`answer-${i}`, question, s.id));
    }
    await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [sockets[0].id, sockets[1].id], join: ["askers"] });
    const started = Date.now();
    const out = await ok(hub, "POST", `${ns("/")}/emit`, {
      event: "ask",
      args: ["q?"],
      rooms: ["askers"],
      ackTimeoutMs: 10_000,
    });
    assert.ok(Date.now() - started < 5000, "returns as soon as every ack arrived");
    assert.equal(out.recipients, 2);
    assert.equal(out.timedOut, false);
    const byId = Object.fromEntries(out.acks.map((a) => [a.socketId, a.args]));
    assert.deepEqual(byId, {
      [sockets[0].id]: ["answer-0", "q?", sockets[0].id],
      [sockets[1].id]: ["answer-1", "q?", sockets[1].id],
    });

    // To the whole namespace.
    const all = await ok(hub, "POST", `${ns("/")}/emit`, { event: "ask", args: [1], ackTimeoutMs: 10_000 });
    assert.equal(all.recipients, 3);
    assert.equal(all.acks.length, 3);
    assert.deepEqual(new Set(all.acks.map((a) => a.socketId)), new Set(sockets.map((s) => s.id)));
  });

  it("reports a broadcast-ack timeout with the acks that did arrive", async () => {
    const [fast, slow, silent] = await Promise.all([client(), client(), client()]);
    fast.on("ask", (cb) => cb("fast"));
    slow.on("ask", (cb) => setTimeout(() => cb("too late"), 3000));
    silent.on("ask", () => {});
    const started = Date.now();
    const out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "ask", ackTimeoutMs: 400 });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 380, `waited the timeout (${elapsed} ms)`);
    assert.ok(elapsed < 2500, `did not wait for the late ack (${elapsed} ms)`);
    assert.deepEqual(out, { recipients: 3, acks: [{ socketId: fast.id, args: ["fast"] }], timedOut: true });
    // The late ack is dropped harmlessly; the socket still works.
    await sleep(2800);
    const rec = record(slow, "after");
    await ok(hub, "POST", `${ns("/")}/emit`, { event: "after", socketIds: [slow.id] });
    await eventually(() => rec.length === 1, 5000, "event after a late ack");
    hub.assertHealthy();
  });

  it("socketsJoin / socketsLeave select by ids or rooms; emits follow; rooms lists counts", async () => {
    const [a, b, c] = await Promise.all([client(), client(), client()]);
    const rec = [a, b, c].map((s) => record(s, "game"));
    let res = await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [a.id, b.id], join: ["lobby", "game-1"] });
    assert.deepEqual(res, { matched: 2 });
    res = await ok(hub, "POST", `${ns("/")}/sockets/join`, { rooms: ["lobby"], except: [b.id], join: ["vip"] });
    assert.deepEqual(res, { matched: 1 });
    res = await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [c.id], join: ["lobby"] });
    assert.deepEqual(res, { matched: 1 });

    let rooms = await ok(hub, "GET", `${ns("/")}/rooms`);
    assert.deepEqual(rooms, {
      rooms: [
        { name: "game-1", members: 2 },
        { name: "lobby", members: 3 },
        { name: "vip", members: 1 },
      ],
    });
    await ok(hub, "POST", `${ns("/")}/emit`, { event: "game", rooms: ["game-1"] });
    await assertReceived(rec, [1, 1, 0], "emit to game-1 after join");

    res = await ok(hub, "POST", `${ns("/")}/sockets/leave`, { rooms: ["game-1"], leave: ["game-1", "vip"] });
    assert.deepEqual(res, { matched: 2 });
    res = await ok(hub, "POST", `${ns("/")}/sockets/leave`, { socketIds: [c.id], leave: ["lobby"] });
    assert.deepEqual(res, { matched: 1 });
    rooms = await ok(hub, "GET", `${ns("/")}/rooms`);
    assert.deepEqual(rooms, { rooms: [{ name: "lobby", members: 2 }] });
    const out = await ok(hub, "POST", `${ns("/")}/emit`, { event: "game", rooms: ["game-1"] });
    assert.equal(out.recipients, 0);
    await ok(hub, "POST", `${ns("/")}/emit`, { event: "game", rooms: ["lobby"] });
    await assertReceived(rec, [2, 2, 0], "emit to lobby after leave");

    // A disconnected socket leaves its rooms.
    a.disconnect();
    await eventually(
      async () => (await ok(hub, "GET", `${ns("/")}/rooms`)).rooms[0]?.members === 1,
      5000,
      "lobby count after a disconnect",
    );
  });

  it("disconnectSockets without close leaves the connection and other namespaces up", async () => {
    const manager = pool.manager(hub.url, { transports: ["websocket"] });
    const main = pool.track(manager.socket("/"));
    const chat = pool.track(manager.socket("/chat"));
    await Promise.all([once(main, "connect"), once(chat, "connect")]);
    const other = await client();
    const mainGone = once(main, "disconnect");
    const otherRec = [];
    other.on("disconnect", (r) => otherRec.push(r));
    const chatRec = [];
    chat.on("disconnect", (r) => chatRec.push(r));

    const res = await ok(hub, "POST", `${ns("/")}/sockets/disconnect`, { socketIds: [main.id] });
    assert.deepEqual(res, { matched: 1 });
    const [reason] = await mainGone;
    assert.equal(reason, "io server disconnect");
    await sleep(200);
    assert.deepEqual(chatRec, [], "the /chat socket of the same connection stays");
    assert.deepEqual(otherRec, [], "other sockets stay");
    assert.ok(manager.engine.readyState === "open", "the connection stays open");
    const rec = record(chat, "still");
    assert.equal((await ok(hub, "POST", `${ns("/chat")}/emit`, { event: "still" })).recipients, 1);
    await eventually(() => rec.length === 1, 5000, "emit to /chat after the / disconnect");
    const fetched = await ok(hub, "GET", `${ns("/")}/sockets`);
    assert.deepEqual(fetched.sockets.map((s) => s.id), [other.id]);
  });

  it("disconnectSockets with close ends the whole connection", async () => {
    const manager = pool.manager(hub.url, { transports: ["websocket"] });
    const main = pool.track(manager.socket("/"));
    const chat = pool.track(manager.socket("/chat"));
    await Promise.all([once(main, "connect"), once(chat, "connect")]);
    const other = await client();
    await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [main.id], join: ["banned"] });
    const mainGone = once(main, "disconnect");
    const chatGone = once(chat, "disconnect");
    const engineClosed = once(manager.engine, "close");

    const res = await ok(hub, "POST", `${ns("/")}/sockets/disconnect`, { rooms: ["banned"], close: true });
    assert.deepEqual(res, { matched: 1 });
    await Promise.all([mainGone, chatGone, engineClosed]);
    assert.ok(other.connected, "the other client stays");
    await eventually(async () => (await ok(hub, "GET", "/v1/stats")).connections === 1, 5000, "one connection left");
    const stats = await ok(hub, "GET", "/v1/stats");
    const chatStats = stats.namespaces.find((n) => n.name === "/chat");
    assert.equal(chatStats.sockets, 0);

    // {} disconnects every socket of the namespace.
    const otherGone = once(other, "disconnect");
    assert.deepEqual(await ok(hub, "POST", `${ns("/")}/sockets/disconnect`, {}), { matched: 1 });
    assert.equal((await otherGone)[0], "io server disconnect");
  });

  it("fetchSockets describes id, rooms, handshake, auth and data (POST and GET)", async () => {
    const alice = await client("/", {
      auth: { name: "alice", n: 7, token: "alice-secret-token" },
      query: { team: "red", access_token: "alice-query-secret" },
      extraHeaders: { "x-roomcast-test": "yes", cookie: "session=alice-cookie", authorization: "Bearer alice-header-secret" },
      transports: ["polling"],
    });
    const bob = await client("/", { auth: { name: "bob" } });
    await ok(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: [alice.id], join: ["team-red"] });
    const before = Date.now();

    const body = await ok(hub, "POST", `${ns("/")}/sockets/fetch`, { rooms: ["team-red"] });
    assert.equal(body.sockets.length, 1);
    const s = body.sockets[0];
    assert.equal(s.id, alice.id);
    assert.equal(s.namespace, "/");
    assert.deepEqual(s.rooms, [alice.id, "team-red"]);
    // Secrets are redacted by default (socketio.showSecrets lists any to show).
    assert.deepEqual(s.handshake.auth, { name: "alice", n: 7, token: "[redacted]" });
    assert.equal(s.handshake.headers.cookie, "[redacted]");
    assert.equal(s.handshake.headers.authorization, "[redacted]");
    assert.match(s.handshake.query, /(^|&)access_token=\[redacted\](&|$)/);
    assert.match(s.handshake.url, /access_token=\[redacted\]/);
    assert.doesNotMatch(JSON.stringify(body), /alice-(secret|query|cookie|header)/, "no secret in the answer");
    assert.equal(s.handshake.address, "127.0.0.1");
    assert.ok(s.handshake.issued > before - 60_000 && s.handshake.issued <= before + 1000, `issued ${s.handshake.issued}`);
    assert.match(s.handshake.url, /^\/socket\.io\/\?/);
    assert.match(s.handshake.query, /(^|&)team=red(&|$)/);
    assert.match(s.handshake.query, /(^|&)EIO=4(&|$)/);
    assert.equal(s.handshake.headers["x-roomcast-test"], "yes");
    assert.ok("data" in s, "data is reported");
    assert.equal(s.data, null);
    assert.equal(s.claims, undefined, "no claims without client auth");

    const all = await ok(hub, "POST", `${ns("/")}/sockets/fetch`);
    assert.deepEqual(new Set(all.sockets.map((x) => x.id)), new Set([alice.id, bob.id]));
    const byGet = await ok(hub, "GET", `${ns("/")}/sockets?socketIds=${encodeURIComponent(bob.id)}&rooms=team-red`);
    assert.deepEqual(new Set(byGet.sockets.map((x) => x.id)), new Set([alice.id, bob.id]));
    const except = await ok(hub, "GET", `${ns("/")}/sockets?except=team-red`);
    assert.deepEqual(except.sockets.map((x) => x.id), [bob.id]);
    assert.deepEqual(except.sockets[0].handshake.auth, { name: "bob" });
    // A pattern namespace nobody opened is empty; one that a client opened is live.
    assert.deepEqual(await ok(hub, "GET", `${ns("/dyn-1")}/sockets`), { sockets: [] });
    const dyn = await client("/dyn-1");
    const dynSockets = await ok(hub, "GET", `${ns("/dyn-1")}/sockets`);
    assert.deepEqual(dynSockets.sockets.map((x) => [x.id, x.namespace]), [[dyn.id, "/dyn-1"]]);
  });

  it("stats count connections, sockets and rooms per namespace", async () => {
    const manager = pool.manager(hub.url, { transports: ["websocket"] });
    const m1 = pool.track(manager.socket("/"));
    const m2 = pool.track(manager.socket("/chat"));
    await Promise.all([once(m1, "connect"), once(m2, "connect")]);
    const b = await client("/chat");
    await ok(hub, "POST", `${ns("/chat")}/sockets/join`, { join: ["r1", "r2"] });
    const stats = await ok(hub, "GET", "/v1/stats");
    assert.equal(stats.nodes, 1);
    assert.equal(stats.connections, 2);
    const byName = Object.fromEntries(stats.namespaces.map((n) => [n.name, n]));
    assert.deepEqual(byName["/"], { name: "/", sockets: 1, rooms: 0, parked: 0 });
    assert.deepEqual(byName["/chat"], { name: "/chat", sockets: 2, rooms: 2, parked: 0 });
    assert.ok(b.connected);
  });

  it("answers bad input with problem+json: 400, 404, 401, 413, 415, 405", async () => {
    const emit = `${ns("/")}/emit`;
    assertProblem(await call(hub, "POST", emit, "{\"event\": ", { raw: true }), 400, "invalid-json", "truncated JSON");
    assertProblem(await call(hub, "POST", emit, "event=x", { raw: true }), 400, "invalid-json", "not JSON");
    assertProblem(await call(hub, "POST", emit, { args: [] }), 400, "invalid-request", "no event");
    assertProblem(await call(hub, "POST", emit, { event: "x", to: ["a"] }), 400, "invalid-request", "unknown field");
    assertProblem(await call(hub, "POST", emit, { event: "connect" }), 400, "invalid-request", "reserved event");
    assertProblem(await call(hub, "POST", emit, { event: "x", rooms: [] }), 400, "invalid-request", "empty rooms");
    assertProblem(
      await call(hub, "POST", emit, { event: "x", ackTimeoutMs: 10, volatile: true }),
      400,
      "invalid-request",
      "volatile with acks",
    );
    assertProblem(await call(hub, "POST", emit, { event: "x", args: [{ _binary: "%%" }] }), 400, "invalid-request", "bad base64");
    assertProblem(await call(hub, "POST", `${ns("/")}/sockets/join`, { socketIds: ["x"] }), 400, "invalid-request", "join without rooms");

    for (const [method, route, body] of [
      ["POST", `${ns("/nope")}/emit`, { event: "x" }],
      ["POST", `${ns("/nope")}/sockets/join`, { join: ["a"] }],
      ["POST", `${ns("/nope")}/sockets/leave`, { leave: ["a"] }],
      ["POST", `${ns("/nope")}/sockets/disconnect`, {}],
      ["POST", `${ns("/nope")}/sockets/fetch`, {}],
      ["GET", `${ns("/nope")}/sockets`],
      ["GET", `${ns("/nope")}/rooms`],
    ]) {
      assertProblem(await call(hub, method, route, body), 404, "unknown-namespace", `${method} ${route}`);
    }
    assertProblem(await call(hub, "GET", "/v1/nothing"), 404, "not-found", "unknown route");

    for (const [token, what] of [
      [null, "missing token"],
      ["wrong-token-0123456789abcdef", "bad token"],
      [TOKEN.slice(0, -1), "truncated token"],
    ]) {
      for (const [method, route, body] of [
        ["GET", "/v1/stats"],
        ["POST", emit, { event: "x" }],
        ["POST", `${ns("/nope")}/emit`, { event: "x" }],
      ]) {
        const res = await call(hub, method, route, body, { token });
        assertProblem(res, 401, "unauthorized", `${what}: ${method} ${route}`);
        assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/, `${what}: WWW-Authenticate`);
      }
    }
    const basic = await call(hub, "GET", "/v1/stats", undefined, { token: null, headers: { authorization: `Basic ${TOKEN}` } });
    assertProblem(basic, 401, "unauthorized", "basic scheme");

    const big = { event: "x", args: ["y".repeat(MAX_BODY)] };
    assertProblem(await call(hub, "POST", emit, big), 413, "payload-too-large", "oversized body");
    // Unauthenticated and oversized: 401 first, the body is not read.
    assertProblem(await call(hub, "POST", emit, big, { token: null }), 401, "unauthorized", "oversized without token");

    assertProblem(
      await call(hub, "POST", emit, JSON.stringify({ event: "x" }), { raw: true, headers: { "content-type": "text/plain" } }),
      415,
      "unsupported-media-type",
      "text/plain body",
    );
    assertProblem(await call(hub, "GET", emit), 405, "method-not-allowed", "GET on emit");
    hub.assertHealthy();
  });
});

describe("management API lifecycle", () => {
  it("stops with the client endpoint on SIGTERM", async () => {
    const h = await startHub({ namespaces: ["/"] });
    const s = pool.io(h.url, { transports: ["websocket"] });
    await once(s, "connect");
    assert.equal((await call(h, "GET", "/v1/stats")).status, 200);
    const res = await h.stop();
    assert.equal(res.code, 0, `exit ${JSON.stringify(res)}\n${h.stderr()}`);
    await assert.rejects(fetch(`${h.api}/healthz`, { signal: AbortSignal.timeout(2000) }), "management port closed");
    await assert.rejects(fetch(`${h.url}/healthz`, { signal: AbortSignal.timeout(2000) }), "client port closed");
  });

  it("refuses to start with a token file it cannot read", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-mgmt-"));
    const config = path.join(dir, "hub.json");
    fs.writeFileSync(
      config,
      JSON.stringify({
        listen: "127.0.0.1:0",
        management: { listen: "127.0.0.1:0", tokenFile: path.join(dir, "missing") },
      }),
    );
    const proc = spawn(binaryPath("main"), ["--config", config], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    proc.stdout.on("data", (c) => (out += c));
    proc.stderr.on("data", (c) => (err += c));
    const [code] = await once(proc, "exit", 10_000);
    assert.notEqual(code, 0);
    assert.equal(out, "", "nothing listens");
    assert.match(err, /management\.tokenFile/);
  });
});
