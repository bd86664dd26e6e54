// Upstream webhooks: the main binary posts CloudEvents (binary content mode) to an app
// server run by this test, for connect, each event and disconnect; answers become connect
// decisions and acks; a down, slow or garbage-answering app degrades only its own clients.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
import { writeConfig, startServer, ClientPool, connected, connectError, eventually, sleep, lifecycle, metric } from "./harness.mjs";

const SECRET = "webhook-test-secret";

/** A fake application: records every request; `behaviour(ce)` decides each answer. */
function startApp() {
  const app = { requests: [], behaviour: null, server: null, url: null };
  app.server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const ce = {
        headers: req.headers,
        type: req.headers["ce-type"],
        body: raw.length ? JSON.parse(raw.toString()) : null,
        raw,
      };
      app.requests.push(ce);
      const answer = (await app.behaviour?.(ce)) ?? { status: 204 };
      if (answer.destroy) return req.socket.destroy();
      res.writeHead(answer.status ?? 200, { "content-type": answer.type ?? "application/json" });
      res.end(answer.body === undefined ? "" : typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body));
    });
  });
  return new Promise((resolve) =>
    app.server.listen(0, "127.0.0.1", () => {
      app.url = `http://127.0.0.1:${app.server.address().port}/hook`;
      resolve(app);
    }),
  );
}


function hubConfig(appUrl, { timeout = 1000, allowedEvents, deadUrl } = {}) {
  return {
    listen: "127.0.0.1:0",
    metrics: { listen: "127.0.0.1:0" },
    socketio: {
      namespaces: [
        { name: "/", upstream: { url: appUrl, timeout, secret: SECRET }, ...(allowedEvents ? { allowedEvents } : {}) },
        { name: "/dead", upstream: { url: deadUrl ?? "http://127.0.0.1:9/none", timeout: 500, disconnectRetries: 0 } },
        { name: "/garbage", upstream: { url: appUrl.replace("/hook", "/garbage"), timeout: 1000 } },
      ],
    },
  };
}

const pool = new ClientPool();
let app;
let server;

before(async () => {
  app = await startApp();
  server = await startServer({
    bin: "main",
    args: ["--config", writeConfig(hubConfig(app.url, { allowedEvents: ["chat", "slow", "order", "bin", "noack"] }))],
  });
});
lifecycle(pool, {
  servers: () => [server],
  label: "at the end of webhook tests",
  eachTest: () => {
    app.behaviour = null;
  },
  cleanup: () => app?.server.close(),
});

const byType = (type) => app.requests.filter((r) => r.type === type);

describe("connect", () => {
  it("accepts with data and initial rooms, as CloudEvents with a valid signature", async () => {
    app.behaviour = (ce) =>
      ce.type === "dev.roomcast.socket.connect" ? { body: { accept: true, data: { user: "ann" }, rooms: ["lobby"] } } : { status: 204 };
    const before = app.requests.length;
    const s = pool.io(server.url, { auth: { name: "ann" } });
    await connected(s);
    const ce = app.requests.slice(before).find((r) => r.type === "dev.roomcast.socket.connect");
    assert.ok(ce, "a connect CloudEvent was posted");
    assert.equal(ce.headers["ce-specversion"], "1.0");
    assert.equal(ce.headers["ce-namespace"], "/");
    assert.match(ce.headers["ce-source"], /^roomcast:\/\//);
    assert.ok(ce.headers["ce-id"]);
    assert.equal(ce.headers["content-type"], "application/json");
    // The signature covers the timestamp, the event id, the type and the body.
    const ts = Number(ce.headers["x-roomcast-timestamp"]);
    assert.ok(Math.abs(ts - Date.now() / 1000) < 60, `timestamp ${ts} is now`);
    const signed = Buffer.concat([Buffer.from(`v1:${ts}:${ce.headers["ce-id"]}:${ce.type}:`), ce.raw]);
    const expected = "v1=" + crypto.createHmac("sha256", SECRET).update(signed).digest("hex");
    assert.equal(ce.headers["x-roomcast-signature"], expected);
    assert.deepEqual(ce.body.auth, { name: "ann" });
    assert.equal(ce.body.handshake.address, "127.0.0.1");
    // The initial room works: an event the app acks proves the socket is live.
    app.behaviour = (ce) => (ce.type === "dev.roomcast.socket.event" ? { body: [ce.body.data] } : { status: 204 });
    const data = await s.timeout(3000).emitWithAck("chat", "hi");
    assert.deepEqual(data, { user: "ann" });
  });

  it("rejects with the app's message and data", async () => {
    app.behaviour = () => ({ body: { accept: false, message: "banned", data: { until: 42 } } });
    const s = pool.io(server.url);
    const err = await connectError(s);
    assert.equal(err.message, "banned");
    assert.deepEqual(err.data, { until: 42 });
  });

  it("answers CONNECT_ERROR when the app is down", async () => {
    const s = pool.io(server.url + "/dead");
    const err = await connectError(s);
    assert.equal(err.message, "upstream unavailable");
    assert.equal(err.data.reason, "upstream_unavailable");
  });

  it("answers CONNECT_ERROR when the app is slow", async () => {
    app.behaviour = async () => {
      await sleep(2000);
      return { body: { accept: true } };
    };
    const s = pool.io(server.url);
    const err = await connectError(s, 5000);
    assert.equal(err.data.reason, "upstream_timeout");
  });

  it("answers CONNECT_ERROR when the app answers garbage or an error status", async () => {
    app.behaviour = () => ({ body: "<html>not json", type: "text/html" });
    let err = await connectError(pool.io(server.url));
    assert.equal(err.data.reason, "upstream_bad_answer");
    app.behaviour = () => ({ status: 500, body: { oops: true } });
    err = await connectError(pool.io(server.url));
    assert.equal(err.data.reason, "upstream_error");
  });
});

describe("events", () => {
  it("turns the answer into the ack, with binary both ways", async () => {
    const s = pool.io(server.url);
    await connected(s);
    app.behaviour = (ce) => {
      if (ce.type !== "dev.roomcast.socket.event") return { status: 204 };
      assert.equal(ce.headers["ce-event"], ce.body.event);
      return { body: [{ echoed: ce.body.args, socket: ce.body.socketId }, { _binary: Buffer.from("pong").toString("base64") }] };
    };
    const [first, bin] = await new Promise((resolve, reject) =>
      s.timeout(3000).emit("bin", "x", Buffer.from([1, 2, 3]), (err, ...args) => (err ? reject(err) : resolve(args))),
    );
    // The app saw the binary argument as {"_binary": base64} ...
    const seen = byType("dev.roomcast.socket.event").at(-1);
    assert.deepEqual(seen.body.args, ["x", { _binary: Buffer.from([1, 2, 3]).toString("base64") }]);
    // ... and the same convention in its answer comes back to the client as binary.
    assert.equal(first.echoed[0], "x");
    assert.deepEqual([...first.echoed[1]], [1, 2, 3]);
    assert.equal(first.socket, s.id);
    assert.equal(Buffer.from(bin).toString(), "pong");
  });

  it("delivers a socket's events in order, even when the app is slow for some", async () => {
    const s = pool.io(server.url);
    await connected(s);
    const seen = [];
    app.behaviour = async (ce) => {
      if (ce.type !== "dev.roomcast.socket.event") return { status: 204 };
      const n = ce.body.args[0];
      if (n % 3 === 0) await sleep(30);
      seen.push(n);
      return { body: n };
    };
    const acks = await Promise.all(Array.from({ length: 12 }, (_, i) => s.timeout(5000).emitWithAck("order", i)));
    assert.deepEqual(acks, Array.from({ length: 12 }, (_, i) => i));
    assert.deepEqual(seen, Array.from({ length: 12 }, (_, i) => i));
  });

  it("gives an error ack when the app is slow, and other sockets are not blocked", async () => {
    const slow = pool.io(server.url);
    const fast = pool.io(server.url);
    await Promise.all([connected(slow), connected(fast)]);
    app.behaviour = async (ce) => {
      if (ce.type !== "dev.roomcast.socket.event") return { status: 204 };
      if (ce.body.event === "slow") await sleep(1500);
      return { body: ["done"] };
    };
    const slowAck = slow.timeout(5000).emitWithAck("slow");
    const started = Date.now();
    const fastAck = await fast.timeout(3000).emitWithAck("chat", "hi");
    assert.equal(fastAck, "done");
    assert.ok(Date.now() - started < 900, "the fast socket was not held up by the slow one");
    const res = await slowAck;
    assert.equal(res.error, "upstream_timeout");
  });

  it("refuses events outside the allow-list without calling the app", async () => {
    const s = pool.io(server.url);
    await connected(s);
    const before = byType("dev.roomcast.socket.event").length;
    const res = await s.timeout(3000).emitWithAck("not-allowed", 1);
    assert.equal(res.error, "event_not_allowed");
    await sleep(100);
    assert.equal(byType("dev.roomcast.socket.event").length, before);
  });

  it("gives an error ack when the app answers garbage", async () => {
    const s = pool.io(server.url + "/garbage");
    app.behaviour = (ce) => (ce.type === "dev.roomcast.socket.event" ? { body: "{{{", type: "text/plain" } : { status: 204 });
    await connected(s);
    const res = await s.timeout(3000).emitWithAck("anything");
    assert.equal(res.error, "upstream_bad_answer");
  });
});

describe("byte bounds", () => {
  it("an answer over limits.maxUpstreamAnswerBytes (1 MiB) is a webhook failure; a bystander is answered", async () => {
    const attacker = pool.io(server.url);
    const bystander = pool.io(server.url);
    await Promise.all([connected(attacker), connected(bystander)]);
    const huge = "x".repeat(2 * 1024 * 1024);
    app.behaviour = (ce) => {
      if (ce.type !== "dev.roomcast.socket.event") return { status: 204 };
      return ce.body.args[0] === "huge" ? { body: [huge] } : { body: ["small"] };
    };
    const failures = await metric(server, "roomcast_upstream_failures_total");
    const res = await attacker.timeout(5000).emitWithAck("chat", "huge");
    assert.equal(res.error, "upstream_error", JSON.stringify(res).slice(0, 300));
    assert.match(res.message, /larger than 1048576 bytes/);
    assert.ok((await metric(server, "roomcast_upstream_failures_total")) > failures, "counted as a failure");
    // The sender and everyone else go on as usual.
    assert.equal(await bystander.timeout(3000).emitWithAck("chat", "hi"), "small");
    assert.equal(await attacker.timeout(3000).emitWithAck("chat", "again"), "small");
    assert.equal(bystander.connected && attacker.connected, true);
    // An answer just under the limit is fine.
    app.behaviour = (ce) => (ce.type === "dev.roomcast.socket.event" ? { body: ["y".repeat(1000 * 1000)] } : { status: 204 });
    assert.equal((await bystander.timeout(5000).emitWithAck("chat", "big")).length, 1000 * 1000);
  });

  it("webhook bodies past limits.maxUpstreamQueueBytes get upstream_backlog; the node recovers", async () => {
    const small = await startServer({
      bin: "main",
      args: [
        "--config",
        writeConfig({
          listen: "127.0.0.1:0",
          socketio: { namespaces: [{ name: "/", upstream: { url: app.url, timeout: 5000 } }] },
          limits: { maxUpstreamQueueBytes: 300_000 },
        }),
      ],
    });
    try {
      const bystander = pool.io(small.url, { transports: ["websocket"] });
      const attacker = pool.io(small.url, { transports: ["websocket"] });
      await Promise.all([connected(bystander), connected(attacker)]);
      let release;
      const held = new Promise((resolve) => (release = resolve));
      let reached = 0;
      app.behaviour = async (ce) => {
        if (ce.type !== "dev.roomcast.socket.event") return { status: 204 };
        if (ce.body.event === "big") {
          reached++;
          await held;
        }
        return { body: ["ok"] };
      };
      // Ten events of 100 kB while the app holds every answer: about 300 kB fit, the rest
      // is refused at once (well under the per-socket bound of 64 events).
      const payload = "z".repeat(100_000);
      const acks = Array.from({ length: 10 }, () => attacker.timeout(10_000).emitWithAck("big", payload));
      const refused = [];
      await eventually(async () => {
        const settled = await Promise.all(acks.map((p) => Promise.race([p, sleep(10).then(() => null)])));
        refused.splice(0, refused.length, ...settled.filter((a) => a?.error === "upstream_backlog"));
        return refused.length >= 7;
      }, 5000, "refusals while the app holds the answers");
      assert.match(refused[0].message, /too many bytes waiting/);
      assert.ok(reached <= 3, `${reached} bodies reached the app at once`);
      // The node's budget is shared: while it is full a bystander's event is refused too,
      // but nobody is disconnected.
      assert.equal(bystander.connected, true);
      release();
      const all = await Promise.all(acks);
      const ok = all.filter((a) => a === "ok").length;
      assert.equal(ok + all.filter((a) => a?.error === "upstream_backlog").length, 10);
      assert.ok(ok >= 1 && ok <= 3, `${ok} accepted`);
      // Once the bodies are answered the budget is free again, for everyone.
      assert.equal(await bystander.timeout(3000).emitWithAck("chat", "hi"), "ok");
      assert.equal(await attacker.timeout(3000).emitWithAck("big", payload), "ok");
      small.assertHealthy("after the byte budget test");
    } finally {
      await small.stop();
    }
  });
});

describe("disconnect", () => {
  it("posts a disconnect with the reason, after the socket's events", async () => {
    const s = pool.io(server.url);
    await connected(s);
    const id = s.id;
    app.behaviour = () => ({ status: 204 });
    s.emit("noack", 1);
    s.disconnect();
    await eventually(() => byType("dev.roomcast.socket.disconnect").some((r) => r.body.socketId === id), 3000, "disconnect event");
    const mine = app.requests.filter((r) => r.body?.socketId === id).map((r) => r.type);
    assert.deepEqual(mine.slice(-2), ["dev.roomcast.socket.event", "dev.roomcast.socket.disconnect"]);
    const ce = byType("dev.roomcast.socket.disconnect").find((r) => r.body.socketId === id);
    assert.equal(ce.body.reason, "client namespace disconnect");
  });

  it("retries a failed disconnect delivery", async () => {
    const s = pool.io(server.url);
    await connected(s);
    const id = s.id;
    let failures = 0;
    app.behaviour = (ce) => {
      if (ce.type === "dev.roomcast.socket.disconnect" && failures < 2) {
        failures++;
        return { status: 503 };
      }
      return { status: 204 };
    };
    s.io.engine.close();
    await eventually(() => byType("dev.roomcast.socket.disconnect").filter((r) => r.body.socketId === id).length === 3, 5000, "three attempts");
    const reasons = byType("dev.roomcast.socket.disconnect").filter((r) => r.body.socketId === id).map((r) => r.body.reason);
    assert.deepEqual(reasons, ["transport close", "transport close", "transport close"]);
  });
});
