// Hostile clients at the transport level (issue 12): oversized handshake headers, payloads of
// many tiny packets, slowloris POST bodies, clients that never read during an upgrade probe or
// a close, connections that never finish their headers, and many sessions from one address.
// Each attack runs with real sockets; bystander clients connected before it must be unaffected.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import fs from "node:fs";
import path from "node:path";
import {
  startServer,
  writeConfig,
  ClientPool,
  bystander,
  sleep,
  eventually,
  eioUrl,
  http,
  freshHttp,
  assertEioError,
  pollingHandshake,
  pollGet,
  pollPost,
  assertPollingClosed,
  RawWs,
  echo,
  SEP,
  metricsUrl,
} from "./harness.mjs";

const pool = new ClientPool();
const cleanups = [];
afterEach(() => {
  pool.closeAll();
  for (const f of cleanups.splice(0)) f();
});

/** The testkit with `config` (JSON, merged over the testkit's namespaces). */
function withTestkit(config) {
  const ctx = {};
  before(async () => {
    const file = writeConfig({ listen: "127.0.0.1:0", socketio: { namespaces: ["/"] }, ...config });
    ctx.server = await startServer({ bin: "testkit", args: ["--config", file] });
  });
  after(async () => {
    pool.closeAll();
    ctx.server?.assertHealthy("at the end of its tests");
    await ctx.server?.stop();
  });
  return ctx;
}

/** Bystanders on both transports, connected before an attack. */
async function bystanders(server) {
  const ws = await bystander(pool, server, { transports: ["websocket"] });
  const poll = await bystander(pool, server, { transports: ["polling"], upgrade: false });
  return {
    async check(context) {
      await ws.check(context);
      await poll.check(context);
    },
  };
}

/** A raw TCP connection to the server, destroyed after the test. */
async function rawConnect(server, port = server.port) {
  const sock = net.connect({ host: server.host, port });
  sock.on("error", () => {});
  cleanups.push(() => sock.destroy());
  await new Promise((resolve, reject) => sock.once("connect", resolve).once("error", reject));
  return sock;
}

/** Resolves with the milliseconds until the server closes `sock` (reading everything). */
function closedAfter(sock, ms, what) {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    let data = "";
    const timer = setTimeout(() => reject(new Error(`${what}: still open after ${ms} ms (got ${JSON.stringify(data.slice(0, 200))})`)), ms);
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.once("close", () => {
      clearTimeout(timer);
      resolve({ elapsed: Date.now() - t0, data });
    });
  });
}

/** A masked client WebSocket frame. */
function wsFrame(opcode, payload) {
  const data = Buffer.from(payload);
  const len = data.length;
  let header;
  if (len < 126) header = Buffer.from([0x80 | opcode, 0x80 | len]);
  else if (len < 65536) {
    header = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0]);
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  return Buffer.concat([header, mask, data.map((b, i) => b ^ mask[i % 4])]);
}

/**
 * Server frames (unmasked, small; payloads as text) read from `sock` as they arrive, after
 * the response head. Reads on until `sock` is paused or closed.
 */
function frameReader(sock) {
  let buf = Buffer.alloc(0);
  let head = null;
  const texts = [];
  let wake = () => {};
  sock.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (head === null) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return wake();
      head = buf.subarray(0, end).toString("latin1");
      buf = buf.subarray(end + 4);
    }
    for (;;) {
      if (buf.length < 2) break;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) break;
        len = buf.readUInt16BE(2);
        off = 4;
      }
      if (buf.length < off + len) break;
      texts.push(buf.subarray(off, off + len).toString("utf8"));
      buf = buf.subarray(off + len);
    }
    wake();
  });
  return {
    /** The response head, once it came. */
    head: () => head,
    /** Waits for the response head and the `n`th frame (1-based); returns all frames so far. */
    async frames(n, ms = 5000) {
      const deadline = Date.now() + ms;
      while (head === null || texts.length < n) {
        const left = deadline - Date.now();
        assert.ok(left > 0, `only ${texts.length} of ${n} frames (head ${JSON.stringify(head)})`);
        await Promise.race([new Promise((r) => (wake = r)), sleep(left)]);
      }
      return texts.slice();
    },
  };
}

/**
 * A raw WebSocket upgrade on a raw socket: resolves with the socket once the 101 and the
 * server's first `frames` text frames (unmasked, small) arrived; returns { sock, texts }.
 */
async function rawUpgrade(server, query, frames = 0) {
  const sock = await rawConnect(server);
  const reader = frameReader(sock);
  const url = new URL(eioUrl(server, query, { ws: true }));
  sock.write(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${Buffer.from("roomcast-hostile").toString("base64")}\r\n\r\n`,
  );
  const texts = await reader.frames(frames);
  assert.match(reader.head(), /^HTTP\/1.1 101/, "upgrade accepted");
  return { sock, texts };
}

/** The server side's TCP state ("01" = ESTABLISHED) of the connection from local port `clientPort`, or null once gone. */
function serverSideState(server, clientPort) {
  const lines = fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1);
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const local = parseInt(f[1].split(":")[1], 16);
    const remote = parseInt(f[2].split(":")[1], 16);
    if (local === server.port && remote === clientPort) return f[3];
  }
  return null;
}

// ---------------------------------------------------------------------------

describe("limits.maxHandshakeHeaderBytes 4096", () => {
  const ctx = withTestkit({ limits: { maxHandshakeHeaderBytes: 4096 } });

  it("a handshake with more header bytes gets HTTP 431 (polling and WebSocket); one under the limit connects", async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    const big = { "x-padding": "a".repeat(5000) };
    const res = await freshHttp(eioUrl(server, { EIO: "4", transport: "polling" }), { headers: big });
    assertEioError(res, 431, 3, "Request headers too large", "polling handshake with 5 KB of headers");
    // many small headers count too
    const many = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`x-h${i}`, "b".repeat(80)]));
    assertEioError(
      await freshHttp(eioUrl(server, { EIO: "4", transport: "polling" }), { headers: many }),
      431,
      3,
      "Request headers too large",
      "polling handshake with 60 headers",
    );
    const ws = new RawWs(eioUrl(server, { EIO: "4", transport: "websocket" }, { ws: true }), { ws: { headers: big } });
    cleanups.push(() => ws.terminate());
    const r = await ws.waitRefusedOrClosed(5000);
    assert.ok(r.refused, `the WebSocket handshake must be refused: ${JSON.stringify(r)}`);
    assert.equal(r.refused.status, 431);
    assert.deepEqual(JSON.parse(r.refused.body), { code: 3, message: "Request headers too large" });
    // under the limit: fine
    const ok = await freshHttp(eioUrl(server, { EIO: "4", transport: "polling" }), { headers: { "x-padding": "a".repeat(2000) } });
    assert.equal(ok.status, 200, ok.body);
    // requests of open sessions are not handshakes: not limited by it
    const { sid } = await pollingHandshake(server);
    const post = await pollPost(server, sid, "6", { headers: big });
    assert.equal(post.status, 200, post.body);
    await by.check("after oversized handshake headers");
  });
});

describe("polling payloads are decoded lazily", () => {
  const ctx = withTestkit({});

  it("a 1 MB payload of tiny packets is accepted without allocating them all; bad records after good ones close the session", async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    const hwm = () => Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${server.proc.pid}/status`, "utf8"))[1]);
    const before = hwm();
    const { sid } = await pollingHandshake(server);
    // 333,333 noop packets: a Vec of decoded packets would take ~13 MB
    const body = Array(333_333).fill("6").join(SEP);
    assert.ok(body.length <= 1_000_000);
    const res = await pollPost(server, sid, body, { ms: 20_000 });
    assert.equal(res.status, 200, res.body);
    const grown = hwm() - before;
    assert.ok(grown < 8 * 1024, `peak RSS grew by ${grown} kB for a 1 MB payload of noops`);
    // the session is alive: a ping/pong round trip is not needed, a message is echoed
    assert.equal((await pollPost(server, sid, "40")).status, 200);
    const connect = await pollGet(server, sid);
    assert.match(connect.body, /^40\{"sid"/);
    // good records before a bad one are handled (as by the reference server), then the session closes
    const watcher = await pool.connect(server.url, { transports: ["websocket"] }, { welcome: false });
    const seen = [];
    watcher.onAny((event) => seen.push(event));
    const bad = await pollPost(
      server,
      sid,
      `42["broadcast",{"event":"before"}]${SEP}9bad${SEP}42["broadcast",{"event":"after"}]`,
    );
    assertEioError(bad, 400, 3, "Bad request", "payload with a bad record");
    await eventually(() => seen.includes("before"), 5000, "the record before the bad one");
    await sleep(200);
    assert.ok(!seen.includes("after"), `the record after the bad one is not handled: ${seen}`);
    await assertPollingClosed(server, sid, "after a bad record");
    await by.check("after lazily decoded payloads");
  });
});

describe("engine.pollingBodyTimeout 1000", () => {
  const ctx = withTestkit({ engine: { pollingBodyTimeout: 1000 } });

  it("a POST whose body trickles in (slowloris) gets 408 after the timeout and its session is closed", async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    const { sid } = await pollingHandshake(server);
    const sock = await rawConnect(server);
    const closed = closedAfter(sock, 6000, "slowloris POST");
    sock.write(
      `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: ${server.host}\r\n` +
        `Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000\r\n\r\n4`,
    );
    const trickle = setInterval(() => sock.writable && sock.write("x"), 100);
    cleanups.push(() => clearInterval(trickle));
    const { elapsed, data } = await closed;
    clearInterval(trickle);
    assert.ok(elapsed >= 800, `cut too early: ${elapsed} ms`);
    assert.ok(elapsed < 4000, `cut too late: ${elapsed} ms`);
    assert.match(data, /^HTTP\/1.1 408/, `408 answer: ${JSON.stringify(data.slice(0, 300))}`);
    assert.ok(data.includes('{"code":3,"message":"Request body timeout"}'), data);
    await assertPollingClosed(server, sid, "after a slowloris POST");
    // a POST sent at once is unaffected
    const { sid: other } = await pollingHandshake(server);
    assert.equal((await pollPost(server, other, "40")).status, 200);
    await by.check("after a slowloris POST");
  });
});

describe("writes to a client that never reads are bounded (upgradeTimeout 1000, pingTimeout 1000)", () => {
  const ctx = withTestkit({
    engine: { upgradeTimeout: 1000, pingTimeout: 1000 },
    limits: { maxOutboundBytes: 64 * 1024 * 1024, maxOutboundFrames: 8192 },
  });

  it("an upgrade probe flooded with pings while the client reads nothing ends; the session can upgrade again", { timeout: 30_000 }, async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    const { sid } = await pollingHandshake(server);
    const { sock } = await rawUpgrade(server, { EIO: "4", transport: "websocket", sid });
    sock.pause(); // read nothing: the server's pongs fill both socket buffers
    const ping = wsFrame(0x9, "p".repeat(125));
    sock.write(Buffer.concat(Array(100_000).fill(ping))); // 13 MB of pings, 12.7 MB of pongs
    await eventually(
      () => serverSideState(server, sock.localPort) !== "01",
      8000,
      "the server to let go of the probe's connection",
      100,
    );
    // the session is still a polling one, and a real upgrade works now
    const ws = new RawWs(eioUrl(server, { EIO: "4", transport: "websocket", sid }, { ws: true }));
    cleanups.push(() => ws.terminate());
    await ws.open();
    ws.send("2probe");
    assert.equal(await ws.next(5000, "3probe"), "3probe");
    ws.send("5");
    ws.send("40");
    assert.match(await ws.next(5000, "CONNECT reply over the upgraded socket"), /^40\{"sid"/);
    await by.check("after a probe that never read");
  });

  it("a closing WebSocket whose client never reads is dropped after pingTimeout", { timeout: 30_000 }, async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    const { sock, texts } = await rawUpgrade(server, { EIO: "4", transport: "websocket" }, 1);
    assert.match(texts[0], /^0\{.*"sid"/);
    sock.write(wsFrame(0x1, "40"));
    await sleep(200); // the CONNECT reply and the welcome event
    sock.pause();
    // 6.4 MB queued (more than the socket buffers of a client that never read take), then a server-side close, in one TCP write (one read, one write-combining scope)
    sock.write(
      Buffer.concat([wsFrame(0x1, '42["flood",{"count":400,"size":16000}]'), wsFrame(0x1, '42["close-me"]')]),
    );
    await eventually(
      () => serverSideState(server, sock.localPort) !== "01",
      8000,
      "the server to drop a closing connection whose client does not read",
      100,
    );
    await by.check("after a close that could not be written");
  });
});

describe("header read timeouts (engine, management and metrics headerReadTimeout: 1000)", () => {
  let server;
  const token = "hostile-transport-token-0123456789";
  before(async () => {
    const file = writeConfig({
      listen: "127.0.0.1:0",
      engine: { headerReadTimeout: 1000 },
      socketio: { namespaces: [{ name: "/", relay: true }] },
      management: { listen: "127.0.0.1:0", token, headerReadTimeout: 1000 },
      metrics: { listen: "127.0.0.1:0", headerReadTimeout: 1000 },
    });
    server = await startServer({ bin: "main", args: ["--config", file] });
    await eventually(() => /management listening on http:\/\/\S+/.test(server.stdout()), 5000, "management line");
    const api = new URL(/management listening on (http:\/\/\S+)/.exec(server.stdout())[1]);
    server.api = api;
    server.metrics = new URL(await metricsUrl(server));
  });
  after(async () => {
    pool.closeAll();
    server?.assertHealthy("after the header timeouts");
    await server?.stop();
  });

  for (const which of ["management", "client", "metrics"]) {
    it(`${which} port: a connection that sends nothing, or its headers byte by byte, is dropped`, { timeout: 20_000 }, async () => {
      const port = { management: Number(server.api.port), metrics: Number(server.metrics.port) }[which] ?? server.port;
      const client = pool.io(server.url, { transports: ["websocket"] });
      await new Promise((resolve, reject) => client.once("connect", resolve).once("connect_error", reject));
      const disconnects = [];
      client.on("disconnect", (r) => disconnects.push(r));

      const silent = await rawConnect(server, port);
      const slow = await rawConnect(server, port);
      const silentClosed = closedAfter(silent, 5000, `${which}: silent connection`);
      const slowClosed = closedAfter(slow, 5000, `${which}: headers byte by byte`);
      const head = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(200)}\r\n\r\n`;
      let i = 0;
      const dribble = setInterval(() => {
        if (i < head.length && slow.writable) slow.write(head[i++]);
      }, 50);
      cleanups.push(() => clearInterval(dribble));

      // meanwhile, both ports serve others (on fresh connections: a pooled keep-alive one
      // idle for a second is closed by the 1 s timeout, which is the point)
      const stats = await freshHttp(`${server.api.origin}/v1/stats`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(stats.status, 200, stats.body);
      assert.equal((await freshHttp(`${server.url}/healthz`)).body, "ok");
      assert.equal((await freshHttp(`${server.metrics.origin}/healthz`)).body, "ok");

      const a = await silentClosed;
      const b = await slowClosed;
      clearInterval(dribble);
      for (const [what, r] of [["silent", a], ["byte by byte", b]]) {
        assert.ok(r.elapsed >= 800 && r.elapsed < 4000, `${which} ${what}: closed after ${r.elapsed} ms`);
        assert.ok(!/^HTTP\/1.1 200/.test(r.data), `${which} ${what}: never served: ${r.data.slice(0, 100)}`);
      }
      assert.ok(i < head.length, "the slow client was still sending its headers");
      assert.ok(client.connected, "the bystander stays connected");
      assert.deepEqual(disconnects, []);
    });
  }
});

describe("limits.maxConnectionsPerIp 3", () => {
  const ctx = withTestkit({ limits: { maxConnectionsPerIp: 3 } });

  it("a 4th session from 127.0.0.1 gets HTTP 429 while 127.0.0.2 connects; a freed slot is reused", async () => {
    const { server } = ctx;
    // the bystander comes from another address
    const by = await bystander(pool, server, { transports: ["websocket"], localAddress: "127.0.0.2" });
    const sids = [];
    for (let i = 0; i < 3; i++) sids.push((await pollingHandshake(server)).sid);
    const fourth = await http(eioUrl(server, { EIO: "4", transport: "polling" }));
    assertEioError(fourth, 429, 4, "Too many connections from this address", "4th polling handshake");
    const ws = new RawWs(eioUrl(server, { EIO: "4", transport: "websocket" }, { ws: true }));
    cleanups.push(() => ws.terminate());
    const r = await ws.waitRefusedOrClosed(5000);
    assert.ok(r.refused, `4th WebSocket handshake refused: ${JSON.stringify(r)}`);
    assert.equal(r.refused.status, 429);
    // another address is not limited by 127.0.0.1's sessions
    const other = pool.io(server.url, { transports: ["websocket"], localAddress: "127.0.0.2" });
    await new Promise((resolve, reject) => other.once("connect", resolve).once("connect_error", reject));
    assert.deepEqual(await echo(other, "from .2"), ["from .2"]);
    await by.check("with 127.0.0.1 at its limit");
    // closing one session frees its slot
    assert.equal((await pollPost(server, sids[0], "1")).status, 200);
    await eventually(
      async () => (await http(eioUrl(server, { EIO: "4", transport: "polling" }))).status === 200,
      5000,
      "a handshake from 127.0.0.1 after one of its sessions closed",
      100,
    );
    await by.check("after the slot was reused");
  });
});

/** A WebSocket handshake's head for a fresh Engine.IO session. */
function wsHead(server, extra = "") {
  const url = new URL(eioUrl(server, { EIO: "4", transport: "websocket" }, { ws: true }));
  return (
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Key: ${Buffer.from("roomcast-direct!").toString("base64")}\r\n${extra}\r\n`
  );
}

describe("the direct WebSocket handshake (engine/direct.rs; headerReadTimeout 1000)", () => {
  const ctx = withTestkit({ engine: { headerReadTimeout: 1000 } });

  it("a head in several writes, or with the client's first frames behind it, is answered with 101 and the open packet", async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    // in pieces: the path keeps reading until the head is complete
    const split = await rawConnect(server);
    const splitFrames = frameReader(split);
    const head = wsHead(server);
    for (const piece of [head.slice(0, 5), head.slice(5, 60), head.slice(60)]) {
      split.write(piece);
      await sleep(30);
    }
    const [open] = await splitFrames.frames(1);
    assert.match(splitFrames.head(), /^HTTP\/1.1 101 Switching Protocols\r\n/i);
    // RFC 6455: the accept key of the key sent
    const accept = (await import("node:crypto"))
      .createHash("sha1")
      .update(Buffer.from("roomcast-direct!").toString("base64") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
      .digest("base64");
    assert.match(splitFrames.head(), new RegExp(`sec-websocket-accept: ${accept.replace(/[+/=]/g, "\\$&")}`, "i"));
    // answered on the direct path: hyper would have added a Date header
    assert.doesNotMatch(splitFrames.head(), /\r\ndate:/i);
    const sid = JSON.parse(open.slice(1)).sid;
    assert.ok(open.startsWith("0{") && sid, `open packet: ${open}`);
    assert.deepEqual(JSON.parse(open.slice(1)).upgrades, []);
    split.write(wsFrame(1, "40"));
    const [, connect] = await splitFrames.frames(2);
    assert.match(connect, /^40\{"sid":"/);

    // the client's first frames in the same write as the head: read with it, not lost
    const eager = await rawConnect(server);
    const eagerFrames = frameReader(eager);
    eager.write(Buffer.concat([Buffer.from(head), wsFrame(1, "40")]));
    const texts = await eagerFrames.frames(2);
    assert.match(texts[0], /^0\{/);
    assert.match(texts[1], /^40\{"sid":"/);
    // (an event in the same read as `40` would close the session: its namespace is not
    // connected yet; socket.io clients wait for the `40` answer)
    eager.write(wsFrame(1, '42["echo","early"]'));
    const all = await eagerFrames.frames(4);
    assert.ok(all.slice(2).includes('42["echo","early"]'), `echo after a direct handshake: ${JSON.stringify(all)}`);

    // a 3 KiB head: past the first read buffer (1 KiB), still on the direct path
    const mid = await rawConnect(server);
    const midFrames = frameReader(mid);
    mid.write(wsHead(server, `Cookie: c=${"m".repeat(3 * 1024)}\r\n`));
    assert.match((await midFrames.frames(1))[0], /^0\{/);
    assert.doesNotMatch(midFrames.head(), /\r\ndate:/i);
    await by.check("after direct handshakes");
  });

  it("a head over 8 KiB is served by hyper as before; one whose rest trickles is closed headerReadTimeout after the start", async () => {
    const { server } = ctx;
    const by = await bystanders(server);
    // 10 KiB of cookies: past the direct path's buffer, within maxHandshakeHeaderBytes
    const big = wsHead(server, `Cookie: c=${"x".repeat(10 * 1024)}\r\n`);
    const sock = await rawConnect(server);
    const frames = frameReader(sock);
    sock.write(big);
    const [open] = await frames.frames(1);
    assert.match(frames.head(), /^HTTP\/1.1 101/i);
    assert.match(frames.head(), /\r\ndate:/i, "answered by hyper");
    assert.ok(open.startsWith("0{") && JSON.parse(open.slice(1)).sid, `open packet: ${open}`);
    sock.write(wsFrame(1, "40"));
    assert.match((await frames.frames(2))[1], /^40\{"sid":"/);

    // 4 KiB, 5 KiB more 600 ms later (past the direct path's buffer: hyper takes over), then
    // a byte every 50 ms: hyper gets only what is left of the second, not a second of its own
    const slow = await rawConnect(server);
    const closed = closedAfter(slow, 5000, "a long head trickling after 9 KiB");
    slow.write(big.slice(0, 4 * 1024));
    await sleep(600);
    slow.write(big.slice(4 * 1024, 9 * 1024));
    let i = 9 * 1024;
    const dribble = setInterval(() => {
      if (i < big.length && slow.writable) slow.write(big[i++]);
    }, 50);
    cleanups.push(() => clearInterval(dribble));
    const r = await closed;
    clearInterval(dribble);
    // from the connection's start: 1000 ms, where a fresh timer for hyper would give 1600
    assert.ok(r.elapsed >= 900 && r.elapsed < 1450, `closed after ${r.elapsed} ms (headerReadTimeout 1000)`);
    assert.equal(r.data, "", "no answer to a head that never completed");
    assert.ok(i < big.length, "the slow client was still sending its headers");
    await by.check("after the long heads");
  });
});
