// Limits and configuration flags, each on its own server instance: max connections,
// max namespaces per session, slow consumers, connect timeout, heartbeat, transports, path.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  ClientPool,
  bystander,
  sleep,
  eventually,
  eioUrl,
  http,
  assertEioError,
  pollingHandshake,
  pollGet,
  pollPost,
  assertPollingClosed,
  RawWs,
  rawEioWs,
  rawSioWs,
  connected,
  connectError,
  echo,
  once,
} from "./harness.mjs";

const pool = new ClientPool();
const raws = [];
const track = (ws) => (raws.push(ws), ws);
afterEach(() => {
  pool.closeAll();
  for (const r of raws.splice(0)) r.terminate();
});

function withServer(args) {
  const ctx = {};
  before(async () => {
    ctx.server = await startServer({ bin: "testkit", args });
  });
  after(async () => {
    ctx.server?.assertHealthy(`(server ${args.join(" ")})`);
    await ctx.server?.stop();
  });
  return ctx;
}

describe("--max-connections 2", () => {
  const ctx = withServer(["--max-connections", "2"]);

  it("third handshake gets HTTP 503 with a JSON error; a freed slot can be reused", async () => {
    const { server } = ctx;
    const by = await bystander(pool, server, { transports: ["websocket"] }); // connection 1
    const { sid } = await pollingHandshake(server); // connection 2

    const third = await http(eioUrl(server, { EIO: "4", transport: "polling" }));
    assert.equal(third.status, 503, `third polling handshake: ${third.status} ${third.body}`);
    let json;
    assert.doesNotThrow(() => (json = JSON.parse(third.body)), `503 body must be JSON: ${third.body}`);
    assert.equal(typeof json.message, "string", `JSON error has a message: ${third.body}`);
    assert.match(third.headers.get("content-type") ?? "", /application\/json/);

    const ws = track(new RawWs(eioUrl(server, { EIO: "4", transport: "websocket" }, { ws: true })));
    const r = await ws.waitRefusedOrClosed(5000);
    if (r.refused) assert.equal(r.refused.status, 503, "third websocket handshake refused with 503");
    else assert.ok(!r.queue.some((m) => String(m).startsWith("0{")), "no session opened for the third websocket");

    const sio = pool.io(server.url, { transports: ["polling"] });
    await connectError(sio);

    await by.check("at the connection limit");

    // close connection 2; a new handshake then succeeds
    const closeRes = await pollPost(server, sid, "1");
    assert.equal(closeRes.status, 200);
    await eventually(
      async () => (await http(eioUrl(server, { EIO: "4", transport: "polling" }))).status === 200,
      5000,
      "a handshake to succeed after a session closed",
      100,
    );
    await by.check("after the slot was reused");
  });
});

describe("--max-namespaces 2", () => {
  const ctx = withServer(["--max-namespaces", "2"]);

  it("a third namespace on one session is refused (CONNECT_ERROR or close), others unaffected", async () => {
    const { server } = ctx;
    const by = await bystander(pool, server);
    const { ws } = await rawSioWs(server, "/");
    track(ws);
    ws.send("40/custom,");
    const r2 = await ws.next(5000, "CONNECT reply for /custom");
    assert.match(r2, /^40\/custom,\{"sid":/);
    await ws.next(5000, "welcome on /custom");
    ws.send("40/dyn-third,");
    let reply;
    try {
      reply = await ws.next(5000, "answer to the third CONNECT");
    } catch (e) {
      if (!ws.closed) throw e;
    }
    if (reply !== undefined) {
      assert.ok(
        reply.startsWith("44/dyn-third,{"),
        `third namespace must get CONNECT_ERROR, got ${reply}`,
      );
      const err = JSON.parse(reply.slice("44/dyn-third,".length));
      assert.equal(typeof err.message, "string");
      // the first two namespaces still work on this session
      ws.send('42["echo","root"]');
      assert.equal(await ws.next(5000, "echo on /"), '42["echo","root"]');
      ws.send('42/custom,["echo","c"]');
      assert.equal(await ws.next(5000, "echo on /custom"), '42/custom,["echo","c"]');
      // leaving one frees a slot
      ws.send("41/custom,");
      await sleep(100);
      ws.send("40/dyn-third,");
      assert.match(await ws.next(5000, "CONNECT reply after a slot was freed"), /^40\/dyn-third,\{"sid":/);
    }
    await by.check("after too many namespaces");
  });

  it("socket.io-client: third namespace on one Manager gets connect_error", async () => {
    const { server } = ctx;
    const m = pool.manager(server.url, { transports: ["websocket"] });
    const a = pool.track(m.socket("/"));
    const b = pool.track(m.socket("/custom"));
    await Promise.all([connected(a), connected(b)]);
    const c = pool.track(m.socket("/dyn-x"));
    const outcome = await Promise.race([
      connectError(c).then((e) => ({ error: e })),
      once(a, "disconnect", 5000).then(([reason]) => ({ disconnected: reason })),
    ]);
    assert.ok(outcome.error || outcome.disconnected, "third namespace refused");
    assert.equal(c.connected, false);
  });
});

describe("slow consumer (--max-outbound-frames 256)", () => {
  const ctx = withServer(["--max-outbound-frames", "256"]);

  it("a WebSocket client that never reads while flooded is disconnected; bystander is fine", { timeout: 60_000 }, async () => {
    const { server } = ctx;
    const by = await bystander(pool, server, { transports: ["websocket"] });
    const byPoll = await bystander(pool, server, { transports: ["polling"], upgrade: false });
    const { ws } = await rawSioWs(server, "/");
    track(ws);
    const COUNT = 3000;
    const SIZE = 20_000;
    ws.ws._socket.pause(); // stop reading: the kernel buffers fill, then the server's queue
    ws.send(`42["flood",{"count":${COUNT},"size":${SIZE}}]`);
    await sleep(2000);
    // the server is not blocked by the slow reader
    await by.check("while a slow consumer is flooded");
    await byPoll.check("while a slow consumer is flooded");
    ws.ws._socket.resume();
    let floods = 0;
    let other = [];
    for (;;) {
      let m;
      try {
        m = await ws.next(15_000, "flood or close");
      } catch (e) {
        if (ws.closed) break;
        throw new Error(`slow consumer was not disconnected (received ${floods} of ${COUNT} floods): ${e.message}`);
      }
      if (typeof m === "string" && m.startsWith('42["flood"')) floods++;
      else other.push(String(m).slice(0, 50));
    }
    assert.ok(floods < COUNT, `slow consumer must be cut off before all ${COUNT} frames (got ${floods})`);
    await by.check("after the slow consumer was cut");
    await byPoll.check("after the slow consumer was cut");
  });

  it("a fast consumer receives a burst within the limit completely", async () => {
    const { server } = ctx;
    for (const transports of [["websocket"], ["polling"]]) {
      const s = await pool.connect(server.url, { transports, upgrade: false });
      let n = 0;
      let bad = 0;
      s.on("flood", (str) => {
        n++;
        if (typeof str !== "string" || str.length !== 1000) bad++;
      });
      s.emit("flood", { count: 100, size: 1000 });
      await eventually(() => n >= 100, 10_000, `100 floods over ${transports[0]}`);
      await sleep(200);
      assert.equal(n, 100);
      assert.equal(bad, 0);
      assert.ok(s.connected);
    }
  });
});

describe("--connect-timeout 500", () => {
  const ctx = withServer(["--connect-timeout", "500"]);

  it("a session that never sends CONNECT is closed (websocket and polling)", async () => {
    const { server } = ctx;
    const { ws } = await rawEioWs(server);
    track(ws);
    const t0 = Date.now();
    await ws.waitClose(5000, "close for missing CONNECT");
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 300, `closed too early (${elapsed} ms)`);

    const { sid } = await pollingHandshake(server);
    await sleep(1000);
    await assertPollingClosed(server, sid, "polling session without CONNECT");
  });

  it("a session that sends CONNECT in time stays", async () => {
    const { server } = ctx;
    const s = await pool.connect(server.url, { transports: ["websocket"] });
    await sleep(1000);
    assert.ok(s.connected);
    assert.deepEqual(await echo(s, 1), [1]);
  });
});

describe("heartbeat flags (--ping-interval 200 --ping-timeout 300 --max-payload 5555)", () => {
  const ctx = withServer(["--ping-interval", "200", "--ping-timeout", "300", "--max-payload", "5555"]);

  it("handshake advertises the flags", async () => {
    const { open } = await pollingHandshake(ctx.server);
    assert.deepEqual(
      { pingInterval: open.pingInterval, pingTimeout: open.pingTimeout, maxPayload: open.maxPayload, upgrades: open.upgrades },
      { pingInterval: 200, pingTimeout: 300, maxPayload: 5555, upgrades: ["websocket"] },
    );
    assert.equal(typeof open.sid, "string");
    const { open: wsOpen, ws } = await rawEioWs(ctx.server);
    track(ws);
    assert.deepEqual(wsOpen.upgrades, [], "no upgrades from websocket");
  });

  it("a WebSocket client that does not answer pings is closed; one that does stays", async () => {
    const { server } = ctx;
    const { ws: silent } = await rawEioWs(server, { autoPong: false });
    track(silent);
    silent.send("40");
    const msgs = [];
    for (;;) {
      try {
        msgs.push(await silent.next(3000, "close for ping timeout"));
      } catch (e) {
        if (silent.closed) break;
        throw e;
      }
    }
    assert.ok(msgs.includes("2"), `a ping was sent: ${JSON.stringify(msgs)}`);

    const { ws: live } = await rawSioWs(server, "/", { autoPong: true });
    track(live);
    await sleep(1500);
    assert.equal(live.closed, null, "answering client stays connected");
    assert.ok(live.pings >= 4, `pings received: ${live.pings}`);
  });

  it("a polling session with no pong is closed after pingInterval + pingTimeout", async () => {
    const { server } = ctx;
    const { sid } = await pollingHandshake(server);
    const ping = await pollGet(server, sid);
    assert.equal(ping.body, "2");
    await sleep(200 + 300 + 200);
    const res = await pollGet(server, sid);
    assertEioError(res, 400, 1, "Session ID unknown", "GET after ping timeout");
  });

  it("polling ping/pong keeps a session alive", async () => {
    const { server } = ctx;
    const { sid } = await pollingHandshake(server);
    for (let i = 0; i < 3; i++) {
      const r = await pollGet(server, sid);
      assert.equal(r.status, 200);
      assert.equal(r.body, "2");
      assert.equal((await pollPost(server, sid, "3")).status, 200);
    }
  });
});

describe("--transports websocket", () => {
  const ctx = withServer(["--transports", "websocket"]);
  it("polling is refused with Transport unknown; websocket works", async () => {
    const { server } = ctx;
    assertEioError(
      await http(eioUrl(server, { EIO: "4", transport: "polling" })),
      400,
      0,
      "Transport unknown",
      "polling disabled",
    );
    const s = await pool.connect(server.url, { transports: ["websocket"] });
    assert.deepEqual(await echo(s, "ws"), ["ws"]);
  });
});

describe("--transports polling", () => {
  const ctx = withServer(["--transports", "polling"]);
  it("no upgrades offered, websocket refused, default client stays on polling", async () => {
    const { server } = ctx;
    const { open } = await pollingHandshake(server);
    assert.deepEqual(open.upgrades, []);
    const ws = track(new RawWs(eioUrl(server, { EIO: "4", transport: "websocket" }, { ws: true })));
    const r = await ws.waitRefusedOrClosed(5000);
    if (r.refused) assert.equal(r.refused.status, 400);
    else assert.ok(!r.queue.some((m) => String(m).startsWith("0{")), "no websocket session");
    const s = await pool.connect(server.url, {});
    await sleep(500);
    assert.equal(s.io.engine.transport.name, "polling");
    assert.deepEqual(await echo(s, "p"), ["p"]);
  });
});

describe("--path /rc/", () => {
  const ctx = withServer(["--path", "/rc/"]);
  it("serves on the configured path only", async () => {
    const { server } = ctx;
    const s = await pool.connect(server.url, { path: "/rc/", transports: ["polling", "websocket"] });
    assert.deepEqual(await echo(s, "path"), ["path"]);
    const res = await http(eioUrl(server, { EIO: "4", transport: "polling" }, { path: "/socket.io/" }));
    assert.notEqual(res.status, 200, "default path is not served");
    const ok = await http(eioUrl(server, { EIO: "4", transport: "polling" }, { path: "/rc/" }));
    assert.equal(ok.status, 200);
  });
});
