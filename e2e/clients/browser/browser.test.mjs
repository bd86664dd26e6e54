// The browser suite of the stock-clients tier: the stock socket.io-client browser bundle on a
// page served by this test, in Debian's headless Chromium driven by puppeteer-core, against the
// 3-member hub behind the round-robin proxy that e2e/clients/stack.mjs runs. Run by
// e2e/clients/run.sh, which sets:
//   ROOMCAST_CLIENTS_CONTROL  the stack's control API
//   ROOMCAST_CLIENTS_RESULTS  the JSON-lines results file of this suite
//   ROOMCAST_CLIENTS_NPM      the cached npm install (node_modules of browser/package-lock.json)
//   CHROMIUM                  the browser binary (default /usr/bin/chromium)
// Each test records the feature it verified once it passed.

import { it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite through e2e/clients/run.sh`);
  return v;
};
const CONTROL = env("ROOMCAST_CLIENTS_CONTROL");
const RESULTS = env("ROOMCAST_CLIENTS_RESULTS");
const NPM = env("ROOMCAST_CLIENTS_NPM");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const HERE = path.dirname(new URL(import.meta.url).pathname);

const require = createRequire(path.join(NPM, "package.json"));
const puppeteer = require("puppeteer-core");
const pkgVersion = (name) => JSON.parse(fs.readFileSync(path.join(NPM, "node_modules", name, "package.json"), "utf8")).version;
const BUNDLE = path.join(NPM, "node_modules/socket.io-client/dist/socket.io.min.js");

const record = (obj) => fs.appendFileSync(RESULTS, JSON.stringify(obj) + "\n");

async function control(method, route, body) {
  const res = await fetch(CONTROL + route, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const json = await res.json();
  assert.equal(res.status, 200, `control ${route}: ${JSON.stringify(json)}`);
  return json;
}
const token = async (claims) => (await control("POST", "/token", claims)).token;
/** A management API call through the control API; asserts HTTP 200 and returns the body. */
async function mgmt(method, route, body) {
  const res = await control("POST", "/mgmt", { method, path: route, body });
  assert.equal(res.status, 200, `${method} ${route}: ${JSON.stringify(res.body)}`);
  return res.body;
}
const ownerOf = (id) => Buffer.from(id.slice(16), "base64url").toString();
const rand = () => Math.random().toString(36).slice(2, 10);

async function eventually(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

let browser;
let page;
let pageServer;
let proxy;

/** Runs a test and records `feature` once it passed. */
const feature = (name, title, fn) =>
  it(title, async () => {
    await fn();
    record({ type: "feature", feature: name });
  });

before(async () => {
  proxy = (await control("GET", "/info")).proxy;
  const pageHtml = fs.readFileSync(path.join(HERE, "page.html"));
  const bundle = fs.readFileSync(BUNDLE);
  pageServer = http.createServer((req, res) => {
    if (req.url === "/" || req.url === "/index.html") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(pageHtml);
    } else if (req.url === "/socket.io.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(bundle);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  await page.goto(`http://127.0.0.1:${pageServer.address().port}/`, { waitUntil: "load" });
  await page.waitForFunction(() => window.rc && typeof window.io === "function", { timeout: 10_000 });
  const chromium = await browser.version();
  record({
    type: "client",
    version: `socket.io-client ${pkgVersion("socket.io-client")} (browser bundle; puppeteer-core ${pkgVersion("puppeteer-core")})`,
    details: { chromium, executable: CHROMIUM, userAgent: await browser.userAgent() },
  });
  console.log(`# ${chromium}, socket.io-client ${pkgVersion("socket.io-client")}, hub behind ${proxy}`);
});

afterEach(async () => {
  await page?.evaluate(() => window.rc.closeAll());
});

after(async () => {
  await browser?.close();
  pageServer?.close();
});

// --- helpers running in the page -----------------------------------------------------------

/** Connects socket `name` in the page; resolves {id, transport}. */
async function connect(name, { nsp = "/", sub = `user-${rand()}`, opts = {}, blob = false, auth } = {}) {
  const t = auth === undefined ? { token: await token({ sub }) } : auth;
  return page.evaluate((name, url, opts, blob) => window.rc.connect(name, url, opts, { blob }), name, proxy + (nsp === "/" ? "" : nsp), { auth: t, ...opts }, blob);
}
const call = (name, event, ...args) => page.evaluate((n, e, a) => window.rc.call(n, e, ...a), name, event, args);
const emit = (name, event, ...args) => page.evaluate((n, e, a) => window.rc.emit(n, e, ...a), name, event, args);
const state = (name) => page.evaluate((n) => window.rc.state(n), name);
const events = (name, event) => page.evaluate((n, e) => window.rc.events(n, e), name, event);
const setAnswer = (event, answer) => page.evaluate((e, a) => (window.rc.answers[e] = a), event, answer);
const join = async (name, room) => assert.deepEqual(await call(name, "roomcast:join", room), { ok: true }, `${name} joins ${room}`);

/** Waits until each [socket, count] got `count` `event`s, then checks nothing more came. */
async function expectCounts(pairs, event, what) {
  await eventually(
    async () => {
      for (const [n, c] of pairs) if ((await events(n, event)).length < c) return false;
      return true;
    },
    5000,
    what,
  ).catch(() => {});
  await sleep(300);
  const counts = [];
  for (const [n] of pairs) counts.push((await events(n, event)).length);
  assert.deepEqual(counts, pairs.map(([, c]) => c), `${what}: deliveries per socket`);
}

/**
 * An answer {ok: true, KEY: n}: the hub counts the sockets of the node that served the call
 * only (docs/configuration.md, cluster), so through the proxy n is at most `most`; what each
 * client got is counted separately.
 */
function assertOk(res, key, most, what = key) {
  assert.deepEqual(Object.keys(res).sort(), ["ok", key].sort(), `${what}: ${JSON.stringify(res)}`);
  assert.equal(res.ok, true, what);
  assert.ok(Number.isInteger(res[key]) && res[key] >= 0 && res[key] <= most, `${what}: ${key} ${res[key]} not in 0..${most}`);
}

/** A management emit's answer {recipients: n}, n at most `most` (counted as in assertOk). */
function assertRecipients(res, most, what = "management emit") {
  assert.deepEqual(Object.keys(res), ["recipients"], `${what}: ${JSON.stringify(res)}`);
  assert.ok(Number.isInteger(res.recipients) && res.recipients >= 0 && res.recipients <= most, `${what}: ${res.recipients} not in 0..${most}`);
}

const bytes = (n, seed = 0) => Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

// --- the tests -------------------------------------------------------------------------------

feature("websocket", "WebSocket only: connects through the proxy and round-trips", async () => {
  const s = await connect("a", { opts: { transports: ["websocket"] } });
  assert.equal(s.transport, "websocket");
  await join("a", `room:ws-${rand()}`);
  assert.equal((await state("a")).transport, "websocket");
});

feature("polling", "HTTP long-polling only: connects through the proxy and round-trips", async () => {
  const s = await connect("a", { opts: { transports: ["polling"] } });
  assert.equal(s.transport, "polling");
  await join("a", `room:poll-${rand()}`);
  // A server push while the long-poll GET is pending (on a connection of its own through the proxy).
  const { id } = await state("a");
  assertRecipients(await mgmt("POST", "/v1/namespaces/%2F/emit", { event: "push", args: [1], socketIds: [id] }), 1);
  await expectCounts([["a", 1]], "push", "push over polling");
  assert.equal((await state("a")).transport, "polling");
});

feature("upgrade", "default transports: polling handshake, then upgrade to WebSocket", async () => {
  await connect("a");
  await eventually(async () => (await state("a")).transport === "websocket", 10_000, "upgrade to websocket");
  const room = `room:up-${rand()}`;
  await join("a", room);
  const [sock] = (await mgmt("POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: [room] })).sockets;
  assert.match(sock.handshake.query, /transport=polling/, "the session started on polling");
  const st = await state("a");
  assert.equal(st.upgrades, 1, "the engine upgraded once");
  assert.deepEqual(st.disconnects, [], "no disconnect across the upgrade");
});

feature("namespace", "a custom namespace (/clients) is separate from /", async () => {
  const room = `room:ns-${rand()}`;
  await connect("inNs", { nsp: "/clients" });
  await connect("inNs2", { nsp: "/clients" });
  await connect("inRoot");
  for (const n of ["inNs", "inNs2", "inRoot"]) await join(n, room);
  assertOk(await call("inNs2", "roomcast:emit", { room, event: "msg", args: ["ns"] }), "recipients", 1);
  assertRecipients(await mgmt("POST", "/v1/namespaces/%2Fclients/emit", { event: "news", args: ["api"], rooms: [room] }), 2);
  await expectCounts([["inNs", 1], ["inNs2", 0], ["inRoot", 0]], "msg", "roomcast:emit in /clients");
  await expectCounts([["inNs", 1], ["inNs2", 1], ["inRoot", 0]], "news", "management emit to /clients");
  const sockets = (await mgmt("POST", "/v1/namespaces/%2Fclients/sockets/fetch", { rooms: [room] })).sockets;
  assert.equal(sockets.length, 2);
  assert.ok(sockets.every((s) => s.namespace === "/clients"));
});

feature("rooms", "rooms through the client room policies: join, refusals, emit to the other members once", async () => {
  const room = `room:r-${rand()}`;
  await connect("a", { sub: "alice" });
  await connect("b", { opts: { transports: ["websocket"] } });
  await connect("c", { opts: { transports: ["polling"] } });
  await connect("out");
  for (const n of ["a", "b", "c"]) await join(n, room);
  const refused = await call("a", "roomcast:join", "admin");
  assert.equal(refused.ok, false);
  assert.equal(refused.error, "forbidden");
  // `user:{sub}`: the verified token's claim, not anything the client says.
  await join("a", "user:alice");
  assert.equal((await call("a", "roomcast:join", "user:bob")).error, "forbidden");
  assertOk(await call("a", "roomcast:emit", { room, event: "msg", args: ["hello", { n: 1 }] }), "recipients", 2);
  await expectCounts([["b", 1], ["c", 1], ["a", 0], ["out", 0]], "msg", "roomcast:emit to the room");
  assert.deepEqual(await events("b", "msg"), [["msg", "hello", { n: 1 }]]);
  assert.deepEqual(await call("b", "roomcast:leave", room), { ok: true });
  assertOk(await call("a", "roomcast:emit", { room, event: "msg", args: ["again"] }), "recipients", 1);
  await expectCounts([["b", 1], ["c", 2]], "msg", "after b left");
});

feature("ack-client", "acks client → hub: the hub answers emitWithAck", async () => {
  const room = `room:ack-${rand()}`;
  await connect("a");
  await connect("b");
  await join("a", room);
  await join("b", room);
  // The relay answers any event with how many sockets it reached.
  assertOk(await call("a", "chat", "hi"), "delivered", 1);
  assertOk(await call("a", "roomcast:emit", { room, event: "chat", args: [2] }), "recipients", 1);
  await expectCounts([["b", 2], ["a", 0]], "chat", "the events acknowledged");
  const bad = await call("a", "roomcast:emit", { room });
  assert.equal(bad.ok, false);
  assert.equal(bad.error, "bad_request");
});

feature("ack-server", "acks hub → client: an emit with ackTimeoutMs gets the client's answer", async () => {
  const { id } = await connect("a", { opts: { transports: ["websocket"] } });
  const { id: id2 } = await connect("b", { opts: { transports: ["polling"] } });
  await setAnswer("question", { answer: 42, from: "browser" });
  const res = await mgmt("POST", "/v1/namespaces/%2F/emit", { event: "question", args: [{ n: 41 }], socketIds: [id, id2], ackTimeoutMs: 5000 });
  assert.equal(res.recipients, 2);
  assert.equal(res.timedOut, false);
  assert.deepEqual(
    res.acks.map((a) => a.socketId).sort(),
    [id, id2].sort(),
  );
  for (const a of res.acks) assert.deepEqual(a.args, [{ answer: 42, from: "browser" }]);
});

feature("binary-arraybuffer", "binary: ArrayBuffer and typed arrays both ways, received as ArrayBuffer", async () => {
  const room = `room:bin-${rand()}`;
  const { id: aId } = await connect("a", { opts: { transports: ["websocket"] } });
  await connect("b", { opts: { transports: ["polling"] } });
  await join("a", room);
  await join("b", room);
  const big = bytes(70_000, 3);
  // Client to client through the relay, mixed with JSON, over WebSocket in and polling out.
  assertOk(await call("a", "bin", { __bytes: bytes(16), as: "ArrayBuffer" }, { nested: { __bytes: big, as: "Uint8Array" }, n: 1 }), "delivered", 1);
  await expectCounts([["b", 1]], "bin", "binary relay");
  assert.deepEqual(await events("b", "bin"), [
    ["bin", { __binary: "ArrayBuffer", bytes: bytes(16) }, { nested: { __binary: "ArrayBuffer", bytes: big }, n: 1 }],
  ]);
  // Polling out, WebSocket in.
  assertOk(await call("b", "bin", { __bytes: [0, 255, 128], as: "Uint8Array" }), "delivered", 1);
  await expectCounts([["a", 1]], "bin", "binary relay back");
  assert.deepEqual(await events("a", "bin"), [["bin", { __binary: "ArrayBuffer", bytes: [0, 255, 128] }]]);
  // Hub to client, and the client's binary ack back to the hub.
  await setAnswer("frame", [{ __bytes: [9, 8, 7], as: "ArrayBuffer" }]);
  const res = await mgmt("POST", "/v1/namespaces/%2F/emit", {
    event: "frame",
    args: [{ _binary: Buffer.from([1, 2, 3, 4]).toString("base64") }, "x"],
    socketIds: [aId],
    ackTimeoutMs: 5000,
  });
  assert.equal(res.timedOut, false);
  assert.deepEqual(res.acks[0].args, [[{ _binary: Buffer.from([9, 8, 7]).toString("base64") }]]);
  assert.deepEqual(await events("a", "frame"), [["frame", { __binary: "ArrayBuffer", bytes: [1, 2, 3, 4] }, "x"]]);
});

feature("binary-blob", "binary: Blob sent on WebSocket and on polling, and received as Blob", async () => {
  const room = `room:blob-${rand()}`;
  await connect("ws", { opts: { transports: ["websocket"] } });
  await connect("poll", { opts: { transports: ["polling"] } });
  await connect("recv", { blob: true });
  await eventually(async () => (await state("recv")).transport === "websocket", 10_000, "upgrade of the Blob receiver");
  for (const n of ["ws", "poll", "recv"]) await join(n, room);
  assertOk(await call("ws", "blob", { __bytes: bytes(1000, 1), as: "Blob" }, "ws"), "delivered", 2);
  assertOk(await call("poll", "blob", { __bytes: bytes(1000, 2), as: "Blob" }, "poll"), "delivered", 2);
  await expectCounts([["recv", 2], ["ws", 1], ["poll", 1]], "blob", "Blob relay");
  const got = (await events("recv", "blob")).sort((x, y) => (x[2] < y[2] ? -1 : 1));
  assert.deepEqual(got, [
    ["blob", { __binary: "Blob", bytes: bytes(1000, 2) }, "poll"],
    ["blob", { __binary: "Blob", bytes: bytes(1000, 1) }, "ws"],
  ]);
  assert.deepEqual(await events("ws", "blob"), [["blob", { __binary: "ArrayBuffer", bytes: bytes(1000, 2) }, "poll"]]);
});

feature("jwt", "JWT in auth: claims reach the hub; missing, forged and expired tokens are refused", async () => {
  const sub = `jwt-${rand()}`;
  const { id } = await connect("a", { sub });
  const room = `room:jwt-${rand()}`;
  await join("a", room);
  const [sock] = (await mgmt("POST", "/v1/namespaces/%2F/sockets/fetch", { rooms: [room] })).sockets;
  assert.equal(sock.id, id);
  assert.equal(sock.claims.sub, sub);
  assert.equal(sock.claims.aud, "roomcast-clients");
  const refusal = async (auth) => {
    const err = await connect("x", { auth }).then(
      () => assert.fail("connected without a valid token"),
      (e) => JSON.parse(e.message.replace(/^Error: /, "")),
    );
    return err;
  };
  assert.deepEqual(await refusal({}), { message: "authentication token missing", data: { reason: "token_missing" } });
  assert.equal((await refusal({ token: await token({ sub, secret: "another-secret-another-secret-0000" }) })).data.reason, "bad_signature");
  assert.equal((await refusal({ token: await token({ sub, expiresIn: -3600 }) })).data.reason, "token_expired");
});

feature("reconnect", "reconnects through the proxy after the member it is on is killed", async () => {
  const room = `room:rc-${rand()}`;
  const t = await token({ sub: "mover" });
  // Reconnection on, and the room rejoined on every connect, as an application does.
  const first = await page.evaluate(
    async (url, t, room) => {
      const info = await window.rc.connect("m", url, { auth: { token: t }, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500 });
      const s = window.rc.sockets.m;
      window.rc.joins = 0;
      const rejoin = () => s.emitWithAck("roomcast:join", room).then((r) => r.ok && window.rc.joins++);
      s.on("connect", rejoin);
      await rejoin();
      return info;
    },
    proxy,
    t,
    room,
  );
  await eventually(async () => (await state("m")).transport === "websocket", 10_000, "upgrade before the kill");
  const { killed } = await control("POST", "/kill", { socketId: first.id });
  assert.equal(killed, ownerOf(first.id));
  try {
    const after = await eventually(
      async () => {
        const st = await state("m");
        const joins = await page.evaluate(() => window.rc.joins);
        return st.connected && st.connects >= 2 && joins >= 2 ? st : null;
      },
      20_000,
      "reconnect and rejoin",
    );
    assert.notEqual(after.id, first.id, "a new socket");
    assert.notEqual(ownerOf(after.id), killed, "on a surviving member");
    assert.ok(after.disconnects.length >= 1, "saw the disconnect");
    assertRecipients(await mgmt("POST", "/v1/namespaces/%2F/emit", { event: "after", args: ["back"], rooms: [room] }), 1);
    await expectCounts([["m", 1]], "after", "a room message after the reconnect");
  } finally {
    await control("POST", "/restore");
  }
});
