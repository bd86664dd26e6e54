// Raw-protocol bad input: every case asserts the spec's (or the reference server's) answer,
// and that bystander socket.io-clients connected beforehand (one on websocket, one on
// polling) still get an echo afterwards, and that the server did not crash.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import nodeHttp from "node:http";
import {
  startServer,
  ClientPool,
  bystander,
  sleep,
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
  SEP,
} from "./harness.mjs";

const MAX_PAYLOAD = 10_000;
let server;
const pool = new ClientPool();
let byWs;
let byPoll;
const raws = [];

before(async () => {
  server = await startServer({ bin: "testkit", args: ["--max-payload", String(MAX_PAYLOAD)] });
  byWs = await bystander(pool, server, { transports: ["websocket"] });
  byPoll = await bystander(pool, server, { transports: ["polling"], upgrade: false });
});
afterEach(() => {
  for (const r of raws.splice(0)) r.terminate();
});
after(async () => {
  pool.closeAll();
  server?.assertHealthy("at the end of bad-input tests");
  await server?.stop();
});

async function bystandersOk(context) {
  await byWs.check(context);
  await byPoll.check(context);
}

function track(ws) {
  raws.push(ws);
  return ws;
}

/** WebSocket upgrade that must be refused (HTTP 4xx) or closed before any open packet. */
async function assertWsRejected(query, what, { status = 400 } = {}) {
  const ws = track(new RawWs(eioUrl(server, query, { ws: true })));
  const r = await ws.waitRefusedOrClosed(5000);
  if (r.refused) {
    assert.equal(r.refused.status, status, `${what}: upgrade refused with HTTP ${r.refused.status} ${r.refused.body}`);
  } else {
    const opens = r.queue.filter((m) => typeof m === "string" && m.startsWith("0"));
    assert.deepEqual(opens, [], `${what}: the server must not open a session`);
  }
}

describe("Engine.IO handshake and routing errors", () => {
  it("unknown sid → 400 {code:1, message:'Session ID unknown'} (GET, POST, WebSocket)", async () => {
    const q = { EIO: "4", transport: "polling", sid: "no-such-session" };
    assertEioError(await http(eioUrl(server, q)), 400, 1, "Session ID unknown", "GET");
    assertEioError(
      await http(eioUrl(server, q), { method: "POST", body: "4hello" }),
      400,
      1,
      "Session ID unknown",
      "POST",
    );
    // a sid that looks real (taken from another session with one character changed)
    const { sid } = await pollingHandshake(server);
    const other = sid.slice(0, -1) + (sid.endsWith("A") ? "B" : "A");
    assertEioError(await pollGet(server, other), 400, 1, "Session ID unknown", "near-miss sid");
    await assertWsRejected({ EIO: "4", transport: "websocket", sid: "no-such-session" }, "websocket unknown sid");
    await bystandersOk("after unknown sid");
  });

  it("bad transport → 400 {code:0, message:'Transport unknown'}", async () => {
    for (const q of [{ EIO: "4", transport: "abc" }, { EIO: "4" }, { EIO: "4", transport: "__proto__" }]) {
      assertEioError(await http(eioUrl(server, q)), 400, 0, "Transport unknown", `GET ${JSON.stringify(q)}`);
    }
    assertEioError(
      await http(eioUrl(server, { EIO: "4", transport: "abc" }), { method: "POST", body: "x" }),
      400,
      0,
      "Transport unknown",
      "POST bad transport",
    );
    await assertWsRejected({ EIO: "4", transport: "abc" }, "websocket bad transport");
    await bystandersOk("after bad transport");
  });

  it("missing or bad EIO → 400 {code:5, message:'Unsupported protocol version'}", async () => {
    for (const q of [
      { transport: "polling" },
      { EIO: "3", transport: "polling" },
      { EIO: "abc", transport: "polling" },
      { EIO: "5", transport: "polling" },
    ]) {
      assertEioError(
        await http(eioUrl(server, q)),
        400,
        5,
        "Unsupported protocol version",
        `GET ${JSON.stringify(q)}`,
      );
    }
    await assertWsRejected({ transport: "websocket" }, "websocket without EIO");
    await assertWsRejected({ EIO: "3", transport: "websocket" }, "websocket EIO=3");
    await bystandersOk("after bad EIO");
  });

  it("bad handshake method → 400 {code:2, message:'Bad handshake method'}", async () => {
    for (const method of ["POST", "PUT", "DELETE"]) {
      assertEioError(
        await http(eioUrl(server, { EIO: "4", transport: "polling" }), {
          method,
          body: method === "DELETE" ? undefined : "4x",
        }),
        400,
        2,
        "Bad handshake method",
        method,
      );
    }
    await bystandersOk("after bad handshake method");
  });

  it("second concurrent GET on the same polling sid → 400 and the session is closed", async () => {
    const { sid } = await pollingHandshake(server);
    const first = pollGet(server, sid, 5000);
    await sleep(100);
    const second = await pollGet(server, sid, 5000);
    assert.equal(second.status, 400, `second GET status (body ${second.body})`);
    const firstRes = await first;
    assert.equal(firstRes.status, 200, "the pending GET is answered");
    assert.equal(firstRes.body, "1", "the pending GET gets the close packet");
    await assertPollingClosed(server, sid, "after overlapping GET");
    await bystandersOk("after concurrent GET");
  });

  it("second concurrent POST on the same polling sid → 400 and the session is closed", async () => {
    const { sid } = await pollingHandshake(server);
    const u = new URL(eioUrl(server, { EIO: "4", transport: "polling", sid }));
    // a POST whose body never completes
    const slow = nodeHttp.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8", "content-length": "1000" },
    });
    slow.on("error", () => {});
    const slowRes = new Promise((resolve) => {
      slow.on("response", (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      slow.on("close", () => resolve("closed"));
    });
    slow.write("42[\"echo\",\"");
    slow.flushHeaders();
    await sleep(200);
    try {
      const second = await pollPost(server, sid, '42["echo","x"]');
      assert.equal(second.status, 400, `second POST status (body ${second.body})`);
      await assertPollingClosed(server, sid, "after overlapping POST");
    } finally {
      slow.destroy();
    }
    await Promise.race([slowRes, sleep(1000)]);
    await bystandersOk("after concurrent POST");
  });

  it("POST body over maxHttpBufferSize → 413 and the session is closed", async () => {
    const { sid, open } = await pollingHandshake(server);
    assert.equal(open.maxPayload, MAX_PAYLOAD, "handshake advertises --max-payload");
    let res;
    try {
      res = await pollPost(server, sid, "4" + "a".repeat(MAX_PAYLOAD * 3));
    } catch (e) {
      assert.fail(`no HTTP answer to an oversized POST: ${e.message}`);
    }
    assert.equal(res.status, 413, `status (body ${res.body})`);
    await assertPollingClosed(server, sid, "after oversized POST");
    // a body just under the limit is accepted on a fresh session
    const ok = await pollingHandshake(server);
    const fine = await pollPost(server, ok.sid, "4" + "b".repeat(MAX_PAYLOAD - 100));
    assert.equal(fine.status, 200);
    assert.equal(fine.body, "ok");
    await bystandersOk("after oversized POST");
  });

  it("malformed Engine.IO packet in POST → 400 and the session is closed", async () => {
    for (const body of ["abc", "9", `40${SEP}x`, "\u0000\u0001"]) {
      const { sid } = await pollingHandshake(server);
      let res;
      try {
        res = await pollPost(server, sid, body);
      } catch (e) {
        assert.fail(`no HTTP answer to malformed body ${JSON.stringify(body)}: ${e.message}`);
      }
      assert.equal(res.status, 400, `status for ${JSON.stringify(body)} (body ${res.body})`);
      await assertPollingClosed(server, sid, `after malformed ${JSON.stringify(body)}`);
    }
    await bystandersOk("after malformed Engine.IO packets");
  });

  it("bad base64 in a polling POST (b!!!) → 400", async () => {
    const { sid } = await pollingHandshake(server);
    const res = await pollPost(server, sid, "b!!!");
    assert.equal(res.status, 400, `status (body ${res.body})`);
    await bystandersOk("after bad base64");
  });
});

describe("malformed Socket.IO packets", () => {
  const CASES = [
    ["unknown packet type", "4garbage"],
    ["truncated JSON", "42["],
    ["payload not an array", "42{}"],
    ["empty event array", "42[]"],
    ["invalid ack id", '42abc["echo",1]'],
    ["event to a namespace the socket never joined", '42/custom,["echo","x"]'],
    ["second CONNECT to an already connected namespace", "40"],
    ["binary attachment count without attachments, then text", '451-["echo",{"_placeholder":true,"num":0}]'],
  ];
  for (const [name, frame] of CASES) {
    it(`WebSocket: ${name} (${JSON.stringify(frame)}) closes the session`, async () => {
      const { ws } = await rawSioWs(server, "/");
      track(ws);
      ws.send(frame);
      if (frame.startsWith("451-")) ws.send('42["echo","not an attachment"]');
      const msgs = [];
      const closed = await (async () => {
        for (;;) {
          try {
            msgs.push(await ws.next(5000, "close"));
          } catch (e) {
            if (ws.closed) return ws.closed;
            throw new Error(`session not closed after ${JSON.stringify(frame)}; got ${JSON.stringify(msgs)}: ${e.message}`);
          }
        }
      })();
      assert.ok(closed, "closed");
      assert.ok(
        !msgs.some((m) => typeof m === "string" && m.startsWith("42")),
        `no event may be delivered: ${JSON.stringify(msgs)}`,
      );
      await bystandersOk(`after ${name}`);
    });
  }

  it("polling: 4garbage in a POST closes the session", async () => {
    const { sid } = await pollingHandshake(server);
    assert.equal((await pollPost(server, sid, "40")).status, 200);
    let body = "";
    for (let i = 0; i < 3 && !body.includes('42["welcome"'); i++) body += (await pollGet(server, sid)).body;
    assert.match(body, /^40\{"sid":/);
    assert.ok(body.includes('42["welcome"'), `welcome expected: ${body}`);
    const bad = await pollPost(server, sid, "4garbage").catch(() => null);
    if (bad) assert.ok([200, 400].includes(bad.status), `POST status ${bad.status}`);
    await assertPollingClosed(server, sid, "after 4garbage over polling");
    await bystandersOk("after 4garbage over polling");
  });

  it("a packet other than CONNECT first closes the connection", async () => {
    const { ws } = await rawEioWs(server);
    track(ws);
    ws.send('42["echo","no connect"]');
    await ws.waitClose(5000);
    await bystandersOk("after event before CONNECT");
  });

  it("unexpected binary frame (no pending binary packet) closes the session", async () => {
    const { ws } = await rawSioWs(server, "/");
    track(ws);
    ws.send(Buffer.from([1, 2, 3]));
    await ws.waitClose(5000);
    await bystandersOk("after stray binary frame");
  });
});

describe("WebSocket-level garbage", () => {
  it("invalid UTF-8 in a WebSocket text frame closes the WebSocket", async () => {
    const { ws } = await rawSioWs(server, "/");
    track(ws);
    // "42" + invalid UTF-8 sent with the text opcode
    ws.send(Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x5d]), { binary: false });
    const closed = await ws.waitClose(5000);
    assert.equal(closed.code, 1007, `close code for invalid UTF-8: ${JSON.stringify(closed)}`);
    await bystandersOk("after invalid UTF-8");
  });

  const BAD_FRAMES = [
    // FIN + RSV1-3 + reserved opcode 0xF, masked, empty payload: a complete, invalid frame
    ["reserved opcode and RSV bits", [0xff, 0x80, 1, 2, 3, 4]],
    // a client frame without the mask bit (RFC 6455 5.1: the server MUST close)
    ["unmasked client frame", [0x81, 0x05, 0x34, 0x68, 0x65, 0x6c, 0x6f]],
    // a complete header announcing a 2^62-byte binary frame
    ["absurd frame length", [0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]],
    // a continuation frame with no message started
    ["continuation without a start", [0x80, 0x81, 1, 2, 3, 4, 0x30]],
  ];
  for (const [name, bytes] of BAD_FRAMES) {
    it(`garbage on an open WebSocket (${name}) closes it`, async () => {
      const { ws } = await rawSioWs(server, "/");
      track(ws);
      ws.ws._socket.write(Buffer.from(bytes));
      const closed = await ws.waitClose(5000);
      // 1002 protocol error, or 1009 for a length over the limit.
      assert.ok([1002, 1009].includes(closed.code), `close code: ${JSON.stringify(closed)}`);
      await bystandersOk(`after garbage frame (${name})`);
    });
  }

  it("oversized WebSocket message (> maxPayload) closes that connection", async () => {
    // just under the limit works
    const { ws: okWs } = await rawSioWs(server, "/");
    track(okWs);
    const payload = "x".repeat(MAX_PAYLOAD - 100);
    okWs.send(`42["echo","${payload}"]`);
    assert.equal(await okWs.next(5000, "echo of a large message"), `42["echo","${payload}"]`);

    for (const big of [`42["echo","${"y".repeat(MAX_PAYLOAD * 2)}"]`, Buffer.alloc(MAX_PAYLOAD * 2, 1)]) {
      const { ws } = await rawSioWs(server, "/");
      track(ws);
      ws.send(big);
      const msgs = [];
      for (;;) {
        try {
          msgs.push(await ws.next(5000, "close after oversized message"));
        } catch (e) {
          if (ws.closed) break;
          throw e;
        }
      }
      assert.ok(
        !msgs.some((m) => typeof m === "string" && m.startsWith('42["echo"')),
        "oversized message must not be delivered",
      );
      assert.equal(ws.closed.code, 1009, `close code for an oversized message: ${JSON.stringify(ws.closed)}`);
    }
    await bystandersOk("after oversized WebSocket message");
  });

  it("WebSocket pings get pongs, fragmented messages are reassembled, a client close is answered", async () => {
    const { ws } = await rawSioWs(server, "/");
    track(ws);
    const pong = new Promise((resolve) => ws.ws.once("pong", (data) => resolve(data.toString())));
    ws.ws.ping(Buffer.from("are you there"));
    assert.equal(await pong, "are you there", "pong echoes the ping's payload");
    // One event in three frames, a ping between two of them (RFC 6455 5.4).
    ws.ws.send('42["echo",', { fin: false });
    ws.ws.ping();
    ws.ws.send('"fragm', { fin: false });
    ws.ws.send('ented"]', { fin: true });
    assert.equal(await ws.next(5000, "echo of a fragmented message"), '42["echo","fragmented"]');
    ws.ws.close(1000);
    const closed = await ws.waitClose(5000);
    assert.equal(closed.code, 1000, `the server answers a close with 1000: ${JSON.stringify(closed)}`);
    await bystandersOk("after fragments and pings");
  });

  it("a frame sent in the same TCP write as the upgrade request is read", async () => {
    const key = Buffer.from("roomcast-early-k").toString("base64");
    const url = new URL(eioUrl(server, { EIO: "4", transport: "websocket" }));
    const frame = (text) => {
      const data = Buffer.from(text);
      const mask = Buffer.from([9, 8, 7, 6]);
      return Buffer.concat([Buffer.from([0x81, 0x80 | data.length]), mask, data.map((b, i) => b ^ mask[i % 4])]);
    };
    const sock = net.connect(Number(url.port), url.hostname);
    raws.push({ terminate: () => sock.destroy() });
    await new Promise((resolve, reject) => sock.once("connect", resolve).once("error", reject));
    const request =
      `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
    sock.write(Buffer.concat([Buffer.from(request), frame("40")]));
    let seen = Buffer.alloc(0);
    const deadline = Date.now() + 5000;
    // The 101, the open packet, then the CONNECT reply to the early "40".
    while (!seen.includes(Buffer.from('40{"sid"')) && Date.now() < deadline) {
      const chunk = await Promise.race([
        new Promise((resolve) => sock.once("data", resolve)),
        sleep(deadline - Date.now()).then(() => null),
      ]);
      if (!chunk) break;
      seen = Buffer.concat([seen, chunk]);
    }
    const text = seen.toString("latin1");
    assert.match(text, /^HTTP\/1.1 101/, "upgrade accepted");
    assert.ok(text.includes('0{"sid"'), `open packet: ${JSON.stringify(text)}`);
    assert.ok(text.includes('40{"sid"'), `CONNECT reply to the early frame: ${JSON.stringify(text)}`);
    sock.destroy();
    await bystandersOk("after an early frame");
  });

  it("garbage bytes on a raw TCP connection get an error or a close, never a hang", async () => {
    const inputs = [
      Buffer.from("\x00\x01\x02garbage\xff\xfe\r\n\r\n", "latin1"),
      Buffer.from("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"),
      Buffer.from("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
      Buffer.from("POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    ];
    for (const input of inputs) {
      const answer = await new Promise((resolve, reject) => {
        const sock = net.connect({ host: server.host, port: server.port });
        let data = "";
        const timer = setTimeout(() => {
          sock.destroy();
          reject(new Error(`server neither answered nor closed within 5 s for ${JSON.stringify(input.toString("latin1"))}; got ${JSON.stringify(data)}`));
        }, 5000);
        sock.on("data", (d) => {
          data += d.toString("latin1");
          // an HTTP answer is enough
          if (/^HTTP\/1\.1 [45]\d\d/.test(data) && data.includes("\r\n\r\n")) {
            clearTimeout(timer);
            sock.destroy();
            resolve(data);
          }
        });
        sock.on("error", () => {});
        sock.on("close", () => {
          clearTimeout(timer);
          resolve(data);
        });
        sock.write(input);
      });
      assert.ok(
        answer === "" || /^HTTP\/1\.1 [45]\d\d/.test(answer),
        `expected an HTTP 4xx/5xx or a plain close, got ${JSON.stringify(answer.slice(0, 200))}`,
      );
    }
    // a connection that says nothing at all does not block anyone
    const idle = net.connect({ host: server.host, port: server.port });
    idle.on("error", () => {});
    await sleep(100);
    await bystandersOk("after raw TCP garbage");
    idle.destroy();
  });
});
