// Many stock clients at once while both cores are busy: 200 socket.io-clients (a third
// polling-only, the others the default polling-then-WebSocket) connect together and echo 10
// messages each, while two busy-loop processes load the machine. Every client must get all
// its echoes and no disconnect (issue 12, item 5: "a flaky polling path").
//
// ROOMCAST_STRESS_CLIENTS, ROOMCAST_STRESS_MESSAGES and ROOMCAST_STRESS_ARGS (server flags,
// space separated) change the run, for investigation.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startServer, ClientPool, connected, once, withTimeout } from "./harness.mjs";

const CLIENTS = Number(process.env.ROOMCAST_STRESS_CLIENTS ?? 200);
const MESSAGES = Number(process.env.ROOMCAST_STRESS_MESSAGES ?? 10);
const BUSY = 2;

const pool = new ClientPool();
let server;
const busy = [];

before(async () => {
  const args = (process.env.ROOMCAST_STRESS_ARGS ?? "").split(" ").filter(Boolean);
  server = await startServer({ bin: "testkit", args });
  for (let i = 0; i < BUSY; i++) {
    busy.push(spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
  }
});

after(async () => {
  for (const p of busy) p.kill("SIGKILL");
  pool.closeAll();
  server?.assertHealthy("after the stress test");
  await server?.stop();
});

/** One client's life: connect, echo MESSAGES messages one after the other. */
async function client(i) {
  const pollingOnly = i % 3 === 0;
  const opts = pollingOnly ? { transports: ["polling"], upgrade: false } : {};
  const s = pool.io(server.url, { ...opts, timeout: 30_000 });
  const disconnects = [];
  s.on("disconnect", (reason, details) =>
    disconnects.push(`${reason}${details ? ` (${details.description?.message ?? details.description ?? ""})` : ""}`),
  );
  const kind = pollingOnly ? "polling-only" : "default";
  await connected(s, 30_000, `client ${i} (${kind})`);
  for (let n = 0; n < MESSAGES; n++) {
    const p = once(s, "echo", 30_000, `echo ${n} of client ${i} (${kind})`);
    s.emit("echo", i, n);
    const got = await p.catch((e) => {
      throw new Error(`${e.message}; disconnects: ${JSON.stringify(disconnects)}`);
    });
    assert.deepEqual(got, [i, n], `client ${i} echo ${n}`);
  }
  return { i, kind, disconnects, transport: s.io.engine.transport.name };
}

describe(`${CLIENTS} clients x ${MESSAGES} echoes under CPU contention (${BUSY} busy loops)`, () => {
  it("every client gets every echo and no disconnect", { timeout: 120_000 }, async () => {
    const t0 = Date.now();
    const results = await withTimeout(
      Promise.allSettled(Array.from({ length: CLIENTS }, (_, i) => client(i))),
      100_000,
      "all clients",
    );
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    assert.deepEqual(failed, [], `${failed.length} of ${CLIENTS} clients failed`);
    const disconnected = results.filter((r) => r.value.disconnects.length > 0).map((r) => r.value);
    assert.deepEqual(disconnected, [], "clients disconnected during the run");
    const polling = results.filter((r) => r.value.transport === "polling").length;
    assert.ok(polling >= Math.floor(CLIENTS / 3), `polling clients still on polling: ${polling}`);
    console.log(`# ${CLIENTS} clients x ${MESSAGES} echoes in ${Date.now() - t0} ms`);
    server.assertHealthy("after the stress run");
  });
});
