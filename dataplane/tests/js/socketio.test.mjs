// Socket.IO features with the real socket.io-client against the testkit example:
// binary, acks both ways, namespaces (static, dynamic, private), connect errors,
// multiplexing, reconnection, server-side disconnects.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  ClientPool,
  once,
  echo,
  sleep,
  eventually,
  assertBytes,
  connectError,
  connected,
  lifecycle,
} from "./harness.mjs";

let server;
const pool = new ClientPool();

before(async () => {
  server = await startServer({ bin: "testkit" });
});
lifecycle(pool, { servers: () => [server], label: "at the end of socketio tests" });

const TRANSPORTS = [["polling"], ["websocket"]];

for (const transports of TRANSPORTS) {
  const t = transports[0];
  describe(`binary and acks over ${t}`, () => {
    it("binary payloads client → server → client (top-level and nested)", async () => {
      const s = await pool.connect(server.url, { transports });
      const big = Buffer.alloc(64 * 1024, 7);
      big[0] = 1;
      big[big.length - 1] = 255;
      const u8 = Uint8Array.from([9, 8, 7, 0, 255]);
      const args = [
        Buffer.from([1, 2, 3]),
        u8,
        { nested: { deep: [Buffer.from("abc"), "text", 5] }, list: [Buffer.alloc(0)] },
        "plain",
        big,
      ];
      const got = await echo(s, ...args);
      assert.equal(got.length, 5);
      assertBytes(got[0], [1, 2, 3], "arg 0");
      assertBytes(got[1], [9, 8, 7, 0, 255], "arg 1 (Uint8Array)");
      assertBytes(got[2].nested.deep[0], Buffer.from("abc"), "nested buffer");
      assert.equal(got[2].nested.deep[1], "text");
      assert.equal(got[2].nested.deep[2], 5);
      assertBytes(got[2].list[0], [], "empty buffer");
      assert.equal(got[3], "plain");
      assertBytes(got[4], big, "64 KiB buffer");
    });

    it("client → server ack with emitWithAck (plain and binary)", async () => {
      const s = await pool.connect(server.url, { transports });
      const r1 = await s.timeout(5000).emitWithAck("ack", { a: 1, b: [true, null] });
      assert.deepEqual(r1, { a: 1, b: [true, null] });
      const r2 = await s.timeout(5000).emitWithAck("ack", Buffer.from([5, 6, 7]));
      assertBytes(r2, [5, 6, 7], "binary ack payload");
      // several ack arguments, with a callback
      const all = await new Promise((resolve, reject) => {
        s.timeout(5000).emit("ack", "x", 2, { nested: Uint8Array.from([1]) }, (err, ...res) =>
          err ? reject(err) : resolve(res),
        );
      });
      assert.equal(all.length, 3);
      assert.equal(all[0], "x");
      assert.equal(all[1], 2);
      assertBytes(all[2].nested, [1], "nested binary in ack");
      // many concurrent acks resolve to their own ids
      const many = await Promise.all(
        [...Array(50).keys()].map((i) => s.timeout(5000).emitWithAck("ack", i)),
      );
      assert.deepEqual(many, [...Array(50).keys()]);
    });

    it("server → client ack: response delivered (plain and binary)", async () => {
      const s = await pool.connect(server.url, { transports });
      s.on("ask", (a, b, cb) => {
        assert.equal(typeof cb, "function", "server asked for an ack");
        cb(`got-${a}`, Buffer.from([b, b + 1]));
      });
      const res = await s.timeout(5000).emitWithAck("request-ack", {
        event: "ask",
        args: ["q", 10],
        timeout: 3000,
      });
      assert.equal(res.ok, true, JSON.stringify(res));
      assert.equal(res.response.length, 2);
      assert.equal(res.response[0], "got-q");
      assertBytes(res.response[1], [10, 11], "binary in client's ack");
    });

    it("server → client ack: binary arguments in the server's event", async () => {
      const s = await pool.connect(server.url, { transports });
      s.on("ask-bin", (buf, cb) => cb({ len: Buffer.from(buf).length }));
      const res = await s.timeout(5000).emitWithAck("request-ack", {
        event: "ask-bin",
        args: [Buffer.alloc(1000, 3)],
        timeout: 3000,
      });
      assert.deepEqual(res, { ok: true, response: [{ len: 1000 }] });
    });

    it("server → client ack times out when the client never acks; late ack is ignored", async () => {
      const s = await pool.connect(server.url, { transports });
      let lateCb;
      s.on("no-answer", (cb) => {
        lateCb = cb;
      });
      const started = Date.now();
      const res = await s.timeout(5000).emitWithAck("request-ack", {
        event: "no-answer",
        args: [],
        timeout: 300,
      });
      const elapsed = Date.now() - started;
      assert.deepEqual(res, { ok: false, error: "timeout" });
      assert.ok(elapsed >= 250, `timed out too early (${elapsed} ms)`);
      assert.ok(elapsed < 3000, `timed out too late (${elapsed} ms)`);
      assert.equal(typeof lateCb, "function");
      lateCb("too late"); // an ACK for an expired id must be ignored, not break the session
      await sleep(100);
      const [e] = await echo(s, "still-here");
      assert.equal(e, "still-here");
      assert.ok(s.connected);
    });
  });
}

describe("namespaces", () => {
  it("custom namespace /custom", async () => {
    const s = await pool.connect(`${server.url}/custom`, { transports: ["websocket"] });
    assert.equal(s.welcome.nsp, "/custom");
    assert.equal(s.welcome.id, s.id);
    const [x] = await echo(s, "in-custom");
    assert.equal(x, "in-custom");
  });

  it("dynamic namespaces /dyn-*", async () => {
    const a = await pool.connect(`${server.url}/dyn-alpha`, { transports: ["websocket"] });
    const b = await pool.connect(`${server.url}/dyn-42`, { transports: ["polling"] });
    assert.equal(a.welcome.nsp, "/dyn-alpha");
    assert.equal(b.welcome.nsp, "/dyn-42");
    assert.deepEqual(await echo(a, 1), [1]);
    assert.deepEqual(await echo(b, 2), [2]);
  });

  it("auth payload reaches the server (welcome.auth)", async () => {
    const auth = { token: "abc", nested: { n: 1 } };
    const s = await pool.connect(`${server.url}/custom`, { transports: ["websocket"], auth });
    assert.deepEqual(s.welcome.auth, auth);
  });

  it("invalid namespace → connect_error 'Invalid namespace'", async () => {
    for (const nsp of ["/nope", "/dynx", "/custom/sub"]) {
      const s = pool.io(`${server.url}${nsp}`, { transports: ["websocket"] });
      const err = await connectError(s);
      assert.equal(err.message, "Invalid namespace", `namespace ${nsp}`);
      assert.equal(s.connected, false);
      assert.equal(s.active, false, "no retry after a CONNECT_ERROR");
    }
  });

  it("/private rejects without the token with message and data", async () => {
    const s = pool.io(`${server.url}/private`, { transports: ["websocket"], auth: { token: "wrong" } });
    const err = await connectError(s);
    assert.equal(err.message, "unauthorized");
    assert.deepEqual(err.data, { code: 401 });
    const s2 = pool.io(`${server.url}/private`, { transports: ["polling"] });
    const err2 = await connectError(s2);
    assert.equal(err2.message, "unauthorized");
    assert.deepEqual(err2.data, { code: 401 });
  });

  it("/private accepts the right token", async () => {
    const s = await pool.connect(`${server.url}/private`, {
      transports: ["websocket"],
      auth: { token: "secret" },
    });
    assert.equal(s.welcome.nsp, "/private");
    assert.deepEqual(s.welcome.auth, { token: "secret" });
    assert.deepEqual(await echo(s, "p"), ["p"]);
  });

  it("several namespaces multiplexed on one Manager share one engine session", async () => {
    for (const transports of TRANSPORTS) {
      const m = pool.manager(server.url, { transports });
      const nsps = ["/", "/custom", "/dyn-mux", "/private"];
      const sockets = nsps.map((n) =>
        pool.track(m.socket(n, n === "/private" ? { auth: { token: "secret" } } : {})),
      );
      const welcomes = sockets.map((s) => once(s, "welcome", 10_000));
      await Promise.all(sockets.map((s) => connected(s)));
      const w = (await Promise.all(welcomes)).map(([x]) => x);
      assert.deepEqual(
        w.map((x) => x.nsp),
        nsps,
      );
      const engineIds = new Set(sockets.map((s) => s.io.engine.id));
      assert.equal(engineIds.size, 1, "one engine session");
      const ids = new Set(sockets.map((s) => s.id));
      assert.equal(ids.size, nsps.length, "distinct socket ids per namespace");
      assert.ok(!ids.has(m.engine.id), "no socket id equals the engine id");
      // each namespace's echo comes back on its own socket only
      const seen = sockets.map(() => []);
      sockets.forEach((s, i) => s.on("echo", (x) => seen[i].push(x)));
      sockets.forEach((s, i) => s.emit("echo", nsps[i]));
      await eventually(() => seen.every((x) => x.length >= 1), 5000, "echo on each namespace");
      await sleep(100);
      assert.deepEqual(
        seen,
        nsps.map((n) => [n]),
      );
      // leaving one namespace keeps the others working on the same session
      sockets[1].disconnect();
      await sleep(100);
      assert.deepEqual(await echo(sockets[2], "still"), ["still"]);
      assert.equal(sockets[0].io.engine.id, [...engineIds][0]);
    }
  });

  it("invalid namespace on a multiplexed Manager does not hurt the other namespaces", async () => {
    const m = pool.manager(server.url, { transports: ["websocket"] });
    const good = pool.track(m.socket("/"));
    await connected(good);
    const bad = pool.track(m.socket("/does-not-exist"));
    const err = await connectError(bad);
    assert.equal(err.message, "Invalid namespace");
    assert.deepEqual(await echo(good, "ok"), ["ok"]);
  });
});

describe("disconnects and reconnection", () => {
  for (const transports of TRANSPORTS) {
    it(`client reconnects after the server closes the engine connection (close-me, ${transports[0]})`, async () => {
      const s = await pool.connect(server.url, {
        transports,
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        randomizationFactor: 0,
      });
      const firstId = s.id;
      const firstEngine = s.io.engine.id;
      const disc = once(s, "disconnect", 5000, "disconnect after close-me");
      const reconnect = once(s.io, "reconnect", 10_000, "manager reconnect");
      const welcome2 = once(s, "welcome", 10_000, "welcome after reconnect");
      s.emit("close-me");
      const [reason] = await disc;
      assert.equal(reason, "transport close");
      await reconnect;
      await connected(s);
      const [w] = await welcome2;
      assert.equal(w.id, s.id);
      assert.notEqual(s.id, firstId, "a new socket id after reconnect");
      assert.notEqual(s.io.engine.id, firstEngine, "a new engine session after reconnect");
      assert.deepEqual(await echo(s, "back"), ["back"]);
    });
  }

  it("server-side namespace disconnect (disconnect-me) → 'io server disconnect', no reconnect", async () => {
    const s = await pool.connect(server.url, {
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 100,
    });
    let connects = 0;
    s.on("connect", () => connects++);
    let attempts = 0;
    s.io.on("reconnect_attempt", () => attempts++);
    const disc = once(s, "disconnect", 5000);
    s.emit("disconnect-me");
    const [reason] = await disc;
    assert.equal(reason, "io server disconnect");
    await sleep(600);
    assert.equal(s.connected, false);
    assert.equal(s.active, false);
    assert.equal(connects, 0, "no reconnection");
    assert.equal(attempts, 0, "no reconnection attempt");
  });

  for (const transports of [["polling"], ["websocket"]]) {
    it(`disconnect(true) over ${transports[0]}: the DISCONNECT reaches the client before the close (10 times)`, async () => {
      // Over polling the close packet waits for the next poll (as in the reference server):
      // in the same payload, the client would act on the close first ("transport close").
      for (let i = 0; i < 10; i++) {
        const s = await pool.connect(server.url, { transports, reconnection: true, reconnectionDelay: 50 });
        const disc = once(s, "disconnect", 5000);
        s.emit("disconnect-me-close");
        const [reason] = await disc;
        assert.equal(reason, "io server disconnect", `try ${i}`);
        assert.equal(s.active, false, `try ${i}: no reconnection`);
        s.close();
      }
    });
  }

  it("disconnect-me on one namespace leaves the other namespace of the session connected", async () => {
    const m = pool.manager(server.url, { transports: ["websocket"] });
    const root = pool.track(m.socket("/"));
    const custom = pool.track(m.socket("/custom"));
    await Promise.all([connected(root), connected(custom)]);
    const disc = once(custom, "disconnect", 5000);
    custom.emit("disconnect-me");
    const [reason] = await disc;
    assert.equal(reason, "io server disconnect");
    assert.ok(root.connected);
    assert.deepEqual(await echo(root, "alive"), ["alive"]);
    // and the namespace can be joined again on the same session
    custom.connect();
    await connected(custom);
    assert.deepEqual(await echo(custom, "again"), ["again"]);
  });

  it("client-side disconnect then connect again gets a new socket id", async () => {
    const s = await pool.connect(server.url, { transports: ["websocket"] });
    const id1 = s.id;
    s.disconnect();
    assert.equal(s.connected, false);
    s.connect();
    await connected(s);
    assert.notEqual(s.id, id1);
    assert.deepEqual(await echo(s, "x"), ["x"]);
  });
});
