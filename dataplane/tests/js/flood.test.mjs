// A connection flood against a bystander. A child process (flood-gen.mjs) opens 5,000
// connections as fast as the hub takes them, 200 handshakes in flight, each one an Engine.IO
// handshake, a CONNECT and a `join` with its ack. Meanwhile a socket.io-client connected
// before emits a `join` with an ack every 20 ms. The client endpoint's accept loop runs on a
// runtime worker beside the sessions (node.rs) and every handshake is a task of its own, so
// the flood must take turns with the bystander: it stays connected on the same engine
// session, gets every ack, none later than 1 s, and every flood connection is served.

import { it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ClientPool, connected, eventually, startServer, sleep } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FLOOD = 5000;
const IN_FLIGHT = 200;
const PERIOD_MS = 20;
const MAX_ACK_MS = 1000;

const pool = new ClientPool();

it(`a flood of ${FLOOD} handshakes leaves a bystander's acks on time`, { timeout: 120_000 }, async () => {
  const server = await startServer({ bin: "main", listen: "127.0.0.1:0" });
  let gen;
  try {
    const by = await connected(pool.io(server.url, { transports: ["websocket"], localAddress: "127.0.0.70" }));
    const engineId = by.io.engine.id;
    const disconnects = [];
    by.on("disconnect", (reason) => disconnects.push(reason));

    // The bystander's loop: one join with an ack every 20 ms, each one timed.
    const acks = []; // [sent at, took ms]
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const t0 = performance.now();
        const reply = await by.timeout(10_000).emitWithAck("join", "bystander");
        assert.deepEqual(reply, { ok: true });
        acks.push([t0, performance.now() - t0]);
        await sleep(PERIOD_MS);
      }
    })();

    await sleep(300);
    const sources = ["127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74"].join(",");
    gen = spawn(process.execPath, [path.join(HERE, "flood-gen.mjs"), server.url, String(FLOOD), String(IN_FLIGHT), sources], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    gen.stdout.on("data", (d) => (out += d));
    gen.stderr.on("data", (d) => (err += d));
    await eventually(() => /STARTED/.test(out), 30_000, `the flood's first connection (stderr: ${err})`);
    const floodStart = performance.now();
    await eventually(() => /\{.*\}/.test(out), 90_000, `the flood to end (stderr: ${err})`);
    const floodEnd = performance.now();
    const result = JSON.parse(/\{.*\}/.exec(out)[0]);
    await sleep(200);
    stop = true;
    await loop;

    assert.deepEqual(result.errors, {}, "every flood connection was served");
    assert.equal(result.connected, FLOOD);
    const during = acks.filter(([t]) => t >= floodStart && t <= floodEnd).map(([, ms]) => ms);
    const sorted = [...during].sort((a, b) => a - b);
    const summary = `${during.length} acks during the ${Math.round(floodEnd - floodStart)} ms flood; ` +
      `p50 ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)} ms, max ${sorted.at(-1)?.toFixed(1)} ms`;
    // The loop ran all along: with acks of a few ms, one per ~25 ms of flood.
    const expected = Math.floor((floodEnd - floodStart) / (PERIOD_MS + MAX_ACK_MS));
    assert.ok(during.length >= Math.max(3, expected), `the bystander kept talking: ${summary}`);
    assert.ok(sorted.at(-1) <= MAX_ACK_MS, `no ack took over ${MAX_ACK_MS} ms: ${summary}`);
    assert.deepEqual(disconnects, [], "the bystander stayed connected");
    assert.equal(by.io.engine.id, engineId, "on the same engine session");
    server.assertHealthy("after the flood");
    console.log(`# flood: ${FLOOD} connections in ${result.ms} ms; bystander: ${summary}`);
  } finally {
    gen?.stdin.end();
    if (gen) await Promise.race([new Promise((r) => gen.once("exit", r)), sleep(5000)]);
    gen?.kill("SIGKILL");
    pool.closeAll();
    await server.stop();
  }
});
