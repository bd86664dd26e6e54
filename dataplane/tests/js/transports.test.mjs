// Transports with the real socket.io-client / engine.io-client: polling only, websocket
// only, polling then upgrade, and the engine.io-client on its own.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { Socket as EngineSocket } from "engine.io-client";
import {
  startServer,
  ClientPool,
  once,
  echo,
  eventually,
  assertBytes,
  pollGet,
  pollingHandshake,
  assertEioError,
  withTimeout,
  writeConfig,
  http,
  eioUrl,
  sleep,
  lifecycle,
} from "./harness.mjs";

let server;
const pool = new ClientPool();

before(async () => {
  server = await startServer({ bin: "testkit" });
});
lifecycle(pool, { servers: () => [server], label: "at the end of transports tests" });

describe("socket.io-client transports", () => {
  it("polling only: connects, stays on polling, echo round trip", async () => {
    const s = await pool.connect(server.url, { transports: ["polling"], upgrade: false });
    assert.equal(s.io.engine.transport.name, "polling");
    assert.equal(s.welcome.id, s.id, "welcome.id is the socket id");
    assert.equal(s.welcome.nsp, "/");
    const [a, b, c] = await echo(s, "hello", 42, { nested: ["x", null, true] });
    assert.deepEqual([a, b, c], ["hello", 42, { nested: ["x", null, true] }]);
    // several round trips in a row over polling, in order
    const got = [];
    s.on("echo", (n) => got.push(n));
    for (let i = 0; i < 20; i++) s.emit("echo", i);
    await eventually(() => got.length >= 20, 5000, "20 echoes over polling");
    assert.deepEqual(got, [...Array(20).keys()]);
    assert.equal(s.io.engine.transport.name, "polling");
  });

  it("websocket only: connects over websocket, echo round trip", async () => {
    const s = await pool.connect(server.url, { transports: ["websocket"] });
    assert.equal(s.io.engine.transport.name, "websocket");
    const [a] = await echo(s, "über ✓ 😀");
    assert.equal(a, "über ✓ 😀", "UTF-8 preserved");
  });

  it("polling then upgrade to websocket, echo before and after", async () => {
    const s = pool.io(server.url, { transports: ["polling", "websocket"], upgrade: true });
    let firstTransport = null;
    let upgradedTo = null;
    s.io.once("open", () => {
      firstTransport = s.io.engine.transport.name;
      s.io.engine.once("upgrade", (t) => (upgradedTo = t.name));
    });
    await once(s, "connect", 10_000);
    assert.equal(firstTransport, "polling", "the session opened on polling");
    const [before] = await echo(s, "before-upgrade");
    assert.equal(before, "before-upgrade");
    await eventually(() => upgradedTo !== null, 10_000, "engine upgrade event");
    assert.equal(upgradedTo, "websocket");
    assert.equal(s.io.engine.transport.name, "websocket");
    const [afterUp] = await echo(s, "after-upgrade");
    assert.equal(afterUp, "after-upgrade");
    // after the upgrade, the polling transport of that sid is gone for good
    const res = await pollGet(server, s.io.engine.id);
    assert.equal(res.status, 400, `polling GET after upgrade must fail, got ${res.status} ${res.body}`);
  });

  it("messages in flight during the upgrade are neither lost nor reordered", async () => {
    const s = pool.io(server.url, { transports: ["polling", "websocket"] });
    const got = [];
    s.on("echo", (n) => got.push(n));
    await once(s, "connect", 10_000);
    const N = 200;
    for (let i = 0; i < N; i++) {
      s.emit("echo", i);
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    await eventually(() => got.length >= N, 10_000, `${N} echoes`);
    await eventually(() => s.io.engine.transport.name === "websocket", 10_000, "upgrade");
    assert.deepEqual(got, [...Array(N).keys()]);
  });

  it("socket.id is not the engine id, and a socket id cannot be used as a session id", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const s = await pool.connect(server.url, { transports });
      assert.ok(s.id && s.io.engine.id, "both ids present");
      assert.notEqual(s.id, s.io.engine.id, `socket.id must differ from engine id (${transports})`);
      const res = await pollGet(server, s.id);
      assertEioError(res, 400, 1, "Session ID unknown", "socket id used as sid");
    }
  });

  it("handshake advertises the default values of the reference server", async () => {
    const { open } = await pollingHandshake(server);
    assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
    assert.equal(typeof open.sid, "string");
    assert.ok(open.sid.length >= 8, `sid long enough: ${open.sid}`);
  });
});

describe("engine.io-client on its own", () => {
  for (const transports of [["polling"], ["websocket"]]) {
    it(`raw Socket.IO packets over engine.io-client (${transports[0]}), text and binary`, async () => {
      const e = new EngineSocket(server.url, { path: "/socket.io/", transports });
      try {
        await once(e, "open", 10_000, "engine open");
        assert.equal(e.transport.name, transports[0]);
        const messages = [];
        e.on("message", (m) => messages.push(m));
        e.send("0"); // Socket.IO CONNECT to "/"
        await eventually(() => messages.length >= 2, 5000, "CONNECT reply + welcome");
        assert.match(messages[0], /^0\{"sid":"[^"]+"\}$/);
        const { sid } = JSON.parse(messages[0].slice(1));
        assert.notEqual(sid, e.id, "Socket.IO sid differs from engine sid");
        assert.ok(messages[1].startsWith('2["welcome",'), messages[1]);
        messages.length = 0;

        e.send('2["echo","plain"]');
        await eventually(() => messages.length >= 1, 5000, "echo");
        assert.equal(messages.shift(), '2["echo","plain"]');

        // BINARY_EVENT with one attachment: header then the binary message
        e.send('51-["echo",{"_placeholder":true,"num":0}]');
        e.send(Uint8Array.from([0, 1, 2, 254, 255]));
        await eventually(() => messages.length >= 2, 5000, "binary echo");
        assert.equal(messages[0], '51-["echo",{"_placeholder":true,"num":0}]');
        assertBytes(messages[1], [0, 1, 2, 254, 255], "binary attachment echoed");
      } finally {
        e.close();
      }
    });
  }

  it("engine.io-client sees the server's ping and stays open", async () => {
    const srv = await startServer({ bin: "testkit", args: ["--ping-interval", "200", "--ping-timeout", "400"] });
    const e = new EngineSocket(srv.url, { path: "/socket.io/", transports: ["websocket"] });
    try {
      await once(e, "open", 10_000);
      let pings = 0;
      e.on("ping", () => pings++);
      await withTimeout(
        eventually(() => pings >= 3, 5000, "3 pings"),
        6000,
        "pings",
      );
      assert.equal(e.readyState, "open");
      // the client answers pings automatically, so the session survives several intervals
      e.send("0");
      const [m] = await once(e, "message", 5000);
      assert.match(m, /^0\{"sid":/);
    } finally {
      e.close();
      srv.assertHealthy();
      await srv.stop();
    }
  });
});

describe("HTTP details", () => {
  it("CORS: polling answers carry Access-Control-Allow-Origin; preflight succeeds", async () => {
    const origin = "http://app.example.test";
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin } });
    assert.equal(res.status, 200);
    await res.text();
    const allow = res.headers.get("access-control-allow-origin");
    assert.ok(allow === "*" || allow === origin, `access-control-allow-origin: ${allow}`);
    const pre = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
    await pre.text();
    assert.ok([200, 204].includes(pre.status), `preflight status ${pre.status}`);
    const preAllow = pre.headers.get("access-control-allow-origin");
    assert.ok(preAllow === "*" || preAllow === origin, `preflight allow-origin: ${preAllow}`);
    assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
  });
});

describe("shutdown", () => {
  it("SIGTERM: connected clients are disconnected and the process exits 0 promptly", { timeout: 30_000 }, async () => {
    const srv = await startServer({ bin: "testkit" });
    const local = new ClientPool();
    try {
      const ws = await local.connect(srv.url, { transports: ["websocket"] });
      const poll = await local.connect(srv.url, { transports: ["polling"], upgrade: false });
      const d1 = once(ws, "disconnect", 10_000, "websocket client disconnect");
      const d2 = once(poll, "disconnect", 10_000, "polling client disconnect");
      const t0 = Date.now();
      srv.proc.kill("SIGTERM");
      await Promise.all([d1, d2]);
      const exit = await withTimeout(srv.exit, 10_000, "server exit after SIGTERM");
      assert.deepEqual(exit, { code: 0, signal: null }, "graceful exit");
      assert.ok(Date.now() - t0 < 10_000);
      assert.doesNotMatch(srv.stderr(), /panicked at/);
    } finally {
      local.closeAll();
      await srv.stop();
    }
  });

  it("drains: not ready but serving for drainDelay, then sessions closed, new ones refused, exit 0", { timeout: 30_000 }, async () => {
    const config = writeConfig({ shutdown: { drainDelay: 2000, gracePeriod: 8000 } });
    const srv = await startServer({ bin: "main", args: ["--config", config] });
    const local = new ClientPool();
    try {
      const ready = async () => (await http(`${srv.url}/readyz`)).status;
      assert.equal(await ready(), 200);
      const ws = await local.connect(srv.url, { transports: ["websocket"] }, { welcome: false });
      const poll = await local.connect(srv.url, { transports: ["polling"], upgrade: false }, { welcome: false });
      const reasons = [once(ws, "disconnect", 10_000, "ws disconnect"), once(poll, "disconnect", 10_000, "polling disconnect")];
      const t0 = Date.now();
      srv.proc.kill("SIGTERM");
      // Step 1: out of readiness at once, alive, and still serving (new clients included).
      await eventually(async () => (await ready()) === 503, 1500, "readyz 503 after SIGTERM");
      assert.equal((await http(`${srv.url}/healthz`)).status, 200);
      const late = await local.connect(srv.url, { transports: ["websocket"] }, { welcome: false });
      assert.ok(ws.connected && poll.connected, "sessions stay open during the drain delay");
      const lateGone = once(late, "disconnect", 10_000, "late client disconnect");
      // Step 2: after the delay, every session gets an Engine.IO close: stock clients see a
      // transport close (and would reconnect through the load balancer), not a server kick.
      const got = await Promise.all([...reasons, lateGone]);
      assert.ok(Date.now() - t0 >= 1900, `closed only after the drain delay (${Date.now() - t0} ms)`);
      for (const [reason] of got) assert.equal(reason, "transport close");
      // Step 3: the process exits by itself, cleanly, long before the grace period.
      const exit = await withTimeout(srv.exit, 8000, "exit after the drain");
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.doesNotMatch(srv.stderr(), /panicked at/);
    } finally {
      local.closeAll();
      await srv.stop();
    }
  });

  it("drains: new handshakes get 503 once sessions are closing; a polling client that is gone does not hold the drain", { timeout: 30_000 }, async () => {
    const config = writeConfig({ shutdown: { drainDelay: 0, gracePeriod: 8000 } });
    const srv = await startServer({ bin: "main", args: ["--config", config] });
    try {
      // A polling session whose client never polls again cannot collect its close packet: the
      // drain gives it a moment (1 s), not the ping timeout nor the grace period.
      const { sid } = await pollingHandshake(srv);
      assert.ok(sid);
      const t0 = Date.now();
      srv.proc.kill("SIGTERM");
      await sleep(300);
      const res = await http(eioUrl(srv, { EIO: 4, transport: "polling" }));
      assertEioError(res, 503, 4, "Server shutting down", "handshake while draining");
      const exit = await withTimeout(srv.exit, 8000, "exit after the drain");
      const took = Date.now() - t0;
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(took >= 900, `waited a moment for the close packet to be collected (${took} ms)`);
      assert.ok(took < 3000, `but not for the ping timeout or the grace period (${took} ms)`);
    } finally {
      await srv.stop();
    }
  });
});
