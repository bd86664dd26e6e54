// Out of file descriptors: the main binary runs with RLIMIT_NOFILE 64 (prlimit) and is sent
// more TCP connections than it can accept, on its client and its peer listener. Accepting
// fails with EMFILE while they stay open; the listeners back off (10 ms doubling to 1 s) and
// log once per episode instead of spinning, so the process uses almost no CPU. Bystanders
// connected before are unaffected, and once the connections close the node accepts again.

import { it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { binaryPath, memberTls, writeConfig, ClientPool, connected, eventually, once, sleep, presetPort } from "./harness.mjs";

const HAVE_PRLIMIT = spawnSync("prlimit", ["--version"]).status === 0;
const pool = new ClientPool();

/** CPU time (user + system) of `pid` so far, in clock ticks (usually 100 per second). */
function cpuTicks(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

it("listeners out of file descriptors back off instead of spinning; bystanders are unaffected", async () => {
  // A tier that cannot run fails: prlimit comes with util-linux, on every Debian.
  assert.ok(HAVE_PRLIMIT, "prlimit (util-linux) is required for this test");
  const peerPort = presetPort();
  const config = writeConfig({
    nodeId: "hub-0",
    socketio: { namespaces: [{ name: "/", relay: true }] },
    cluster: { peerListen: `127.0.0.51:${peerPort}`, members: [`hub-0=127.0.0.51:${peerPort}`], tls: memberTls("hub-0") },
  });
  // prlimit execs the binary: the child's pid is the server's.
  const proc = spawn("prlimit", ["--nofile=64:64", binaryPath("main"), "--listen", "127.0.0.51:0", "--config", config], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout.on("data", (d) => (out += d));
  // (without the terminal colours of the log lines)
  proc.stderr.on("data", (d) => (err += d.toString().replace(/\x1b\[[0-9;]*m/g, "")));
  const flood = [];
  try {
    await eventually(() => /listening on http:\/\/[\d.]+:\d+/.test(out), 20_000, "listening line");
    const port = Number(/listening on http:\/\/[\d.]+:(\d+)/.exec(out)[1]);
    const url = `http://127.0.0.51:${port}`;
    const a = await connected(pool.io(url, { transports: ["websocket"] }));
    const b = await connected(pool.io(url, { transports: ["websocket"] }));
    const disconnects = [];
    for (const s of [a, b]) s.on("disconnect", (reason) => disconnects.push(reason));
    for (const s of [a, b]) assert.deepEqual(await s.timeout(3000).emitWithAck("join", "by"), { ok: true });

    // More connections than descriptors, on both listeners; they stay open. The client
    // listener gets its silent connections after `engine.deferAccept` (1 s): the peer flood
    // waits until they have taken every descriptor, else it would take some first.
    for (let i = 0; i < 100; i++) flood.push(net.connect(port, "127.0.0.51").on("error", () => {}));
    await eventually(() => /accept failed.*listener="client"/.test(err), 5000, "the client listener hits EMFILE");
    for (let i = 0; i < 20; i++) flood.push(net.connect(peerPort, "127.0.0.51").on("error", () => {}));
    await eventually(() => (err.match(/accept failed/g) || []).length >= 2, 5000, "both listeners hit EMFILE");
    const before = cpuTicks(proc.pid);
    await sleep(3000);
    const used = cpuTicks(proc.pid) - before;
    // A spinning accept loop burns a whole core (about 300 ticks in 3 s).
    assert.ok(used < 60, `${used} CPU ticks in 3 s while out of descriptors`);
    const warnings = err.match(/accept failed/g) || [];
    assert.equal(warnings.length, 2, `one warning per listener and episode:\n${err.slice(-3000)}`);
    assert.match(err, /listener="client"/);
    assert.match(err, /listener="peer"/);

    // The flood goes away: accepting works again, and says so.
    for (const s of flood) s.destroy();
    await eventually(() => /accepting connections again/.test(err), 5000, "recovery logged");
    const c = await connected(pool.io(url, { transports: ["websocket"] }), 10_000, "a new client after the episode");
    assert.ok(c.connected);
    // The bystanders were never disconnected and still talk.
    const got = once(b, "hello", 5000, "bystander message");
    a.emit("hello", "still here");
    assert.deepEqual(await got, ["still here"]);
    assert.deepEqual(disconnects, []);
    assert.equal(proc.exitCode, null, "the server is still running");
    assert.doesNotMatch(err, /panicked at/);
  } finally {
    for (const s of flood) s.destroy();
    pool.closeAll();
    proc.kill("SIGKILL");
  }
});
