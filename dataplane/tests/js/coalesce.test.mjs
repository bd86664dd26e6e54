// Write coalescing (engine.writeCoalescingDelay, engine/coalesce.rs, engine/stagger.rs): under
// fan-out load a socket's writes take turns, each carrying the broadcasts since its last one,
// and none waits longer than the delay. With
// writeCoalescingLoad 0 the hub coalesces whenever broadcasts come closer together than the
// delay, whatever the machine's speed, so the path runs here for sure. Stock socket.io
// clients on both transports must still get every broadcast once and in order, no later than
// the delay allows; a bystander in another room keeps working; a hub with the delay at 0
// never waits; a client that stops reading while rounds wait is cut off as a slow consumer.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { startServer, writeConfig, ClientPool, connected, lifecycle, metric, eventually, sleep, withTimeout, rawEioWs } from "./harness.mjs";

const DELAY_MS = 20;
const EVENTS = 300;
const SUBSCRIBERS = 30;
const pool = new ClientPool();
let coalescing;
let plain;
let bounded;

/** The main binary's relay app (join any room, events go to the sender's rooms), metrics on. */
function relayHub(engine, limits = {}) {
  return startServer({
    bin: "main",
    args: [
      "--config",
      writeConfig({
        engine,
        limits,
        metrics: { listen: "127.0.0.1:0" },
        socketio: { namespaces: [{ name: "*", relay: true, policies: { join: ["*"], emit: [], emitToJoined: true } }] },
      }),
    ],
  });
}

before(async () => {
  coalescing = await relayHub({ writeCoalescingDelay: DELAY_MS, writeCoalescingLoad: 0 });
  plain = await relayHub({ writeCoalescingDelay: 0 });
  bounded = await relayHub({ writeCoalescingDelay: DELAY_MS, writeCoalescingLoad: 0 }, { maxOutboundFrames: 64 });
});
lifecycle(pool, { servers: () => [coalescing, plain, bounded], label: "at the end of the coalescing tests" });

async function member(server, room, transports = ["websocket"]) {
  const s = pool.io(server.url, { transports });
  await connected(s);
  const ack = await s.timeout(5000).emitWithAck("join", room);
  assert.equal(ack?.ok, true, `join ${room}: ${JSON.stringify(ack)}`);
  return s;
}

/** Publishes EVENTS ticks into `room`, one every 2 ms (each in its own WebSocket message),
 * and returns what every subscriber received: [{n, latency}] per subscriber. */
async function fanOut(server, room) {
  const subs = [];
  for (let i = 0; i < SUBSCRIBERS; i++) subs.push(await member(server, room, i === 0 ? ["polling"] : ["websocket"]));
  const got = subs.map((s) => {
    const list = [];
    s.on("tick", (n, sentAt) => list.push({ n, latency: Date.now() - sentAt }));
    return list;
  });
  const publisher = await member(server, room);
  // A bystander pair in another room, talking during the load.
  const [calmA, calmB] = [await member(server, "calm"), await member(server, "calm")];
  const calmGot = [];
  calmB.on("chat", (text) => calmGot.push(text));

  await new Promise((resolve) => {
    let n = 0;
    const timer = setInterval(() => {
      publisher.emit("tick", n, Date.now());
      if (n % 50 === 0) calmA.emit("chat", `calm-${n}`);
      if (++n === EVENTS) {
        clearInterval(timer);
        resolve();
      }
    }, 2);
  });
  await eventually(() => got.every((l) => l.length >= EVENTS), 20_000, "every subscriber gets every tick");
  await eventually(() => calmGot.length >= EVENTS / 50, 5000, "the bystander gets its room's chat");
  await sleep(100);
  return { got, calmGot };
}

function assertComplete(got, calmGot, what) {
  for (const [i, list] of got.entries()) {
    assert.deepEqual(
      list.map((x) => x.n),
      Array.from({ length: EVENTS }, (_, n) => n),
      `${what}: subscriber ${i} (${i === 0 ? "polling" : "websocket"}) got every tick once, in order`,
    );
  }
  assert.deepEqual(calmGot, Array.from({ length: EVENTS / 50 }, (_, k) => `calm-${k * 50}`), `${what}: bystander`);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe("write coalescing under fan-out load (engine.writeCoalescingDelay)", () => {
  it("rounds wait, every client still gets every broadcast once and in order", { timeout: 60_000 }, async () => {
    const before = await metric(coalescing, "roomcast_write_rounds_coalesced_total");
    // A raw subscriber counts the reads its socket sees: with turns, each write to it carries
    // several broadcasts.
    const { ws: raw } = await rawEioWs(coalescing);
    raw.send("40");
    assert.ok((await raw.next(5000, "CONNECT reply")).startsWith("40{"));
    raw.send('420["join","hot"]');
    assert.ok((await raw.next(5000, "join ack")).startsWith("430"));
    let reads = 0;
    raw.ws._socket.on("data", () => reads++);
    const { got, calmGot } = await withTimeout(fanOut(coalescing, "hot"), 50_000, "fan-out");
    assertComplete(got, calmGot, "coalescing hub");
    const rounds = (await metric(coalescing, "roomcast_write_rounds_coalesced_total")) - before;
    // 300 broadcasts 2 ms apart with a 20 ms delay: up to ten turns, so a socket's write
    // carries up to ten broadcasts.
    assert.ok(rounds >= 5, `coalesced write rounds: ${rounds}`);
    assert.ok(reads <= EVENTS / 3, `a write carries several broadcasts: ${reads} reads for ${EVENTS}`);
    // WebSocket subscribers waited (a broadcast waits for its socket's turn, half the delay
    // at most on average), and only about as long as the delay allows (plus this machine's
    // scheduling).
    const ws = got.slice(1).flatMap((l) => l.map((x) => x.latency));
    assert.ok(median(ws) >= DELAY_MS / 4, `median latency ${median(ws)} ms with a ${DELAY_MS} ms delay`);
    assert.ok(Math.max(...ws) < DELAY_MS + 2000, `max latency ${Math.max(...ws)} ms`);
    console.log(`# ${rounds} coalesced rounds for ${EVENTS} broadcasts, ${reads} reads by a raw subscriber; WebSocket latency median ${median(ws)} ms, max ${Math.max(...ws)} ms`);
    coalescing.assertHealthy("after the coalesced fan-out");
  });

  it("with writeCoalescingDelay 0 no round waits", { timeout: 60_000 }, async () => {
    const { got, calmGot } = await withTimeout(fanOut(plain, "hot"), 50_000, "fan-out");
    assertComplete(got, calmGot, "hub without coalescing");
    assert.equal(await metric(plain, "roomcast_write_rounds_coalesced_total"), 0);
    plain.assertHealthy("after the plain fan-out");
  });

  it("a client that stops reading while rounds wait is still cut off as a slow consumer; the others get everything", { timeout: 60_000 }, async () => {
    // The attack: join the busy room, then never read. Frames held by a waiting round sit in
    // the socket's outbox and count against limits.maxOutboundFrames like any others.
    const { ws } = await rawEioWs(bounded);
    ws.send("40");
    assert.ok((await ws.next(5000, "CONNECT reply")).startsWith("40{"));
    ws.send('420["join","hot"]');
    assert.ok((await ws.next(5000, "join ack")).startsWith("430"));
    ws.ws._socket.pause();

    const subs = [];
    for (let i = 0; i < 3; i++) subs.push(await member(bounded, "hot"));
    const got = subs.map((s) => {
      const list = [];
      s.on("tick", (n) => list.push(n));
      return list;
    });
    const publisher = await member(bounded, "hot");
    const by = await member(bounded, "calm");
    const COUNT = 800;
    const pad = "x".repeat(16 * 1024); // 12.8 MB for the stuck client: more than loopback buffers take
    await new Promise((resolve) => {
      let n = 0;
      const timer = setInterval(() => {
        publisher.emit("tick", n, Date.now(), pad);
        if (++n === COUNT) {
          clearInterval(timer);
          resolve();
        }
      }, 2);
    });
    await eventually(() => got.every((l) => l.length >= COUNT), 20_000, "every reading subscriber gets every tick");
    for (const [i, list] of got.entries()) {
      assert.deepEqual(list, Array.from({ length: COUNT }, (_, n) => n), `subscriber ${i}: every tick once, in order`);
    }
    await eventually(async () => (await metric(bounded, "roomcast_slow_consumers_total")) >= 1, 10_000, "the stuck client cut off");
    assert.ok((await metric(bounded, "roomcast_write_rounds_coalesced_total")) > 0, "rounds waited during the flood");
    ws.ws._socket.resume();
    await eventually(() => ws.closed, 10_000, "the stuck client's connection closed");
    const ack = await by.timeout(3000).emitWithAck("join", "calm-2");
    assert.equal(ack?.ok, true, "the bystander still gets answers");
    bounded.assertHealthy("after the slow consumer");
  });
});
