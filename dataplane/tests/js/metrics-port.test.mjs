// The metrics listener (`metrics.listen`): `/metrics`, `/healthz` and `/readyz` on a port of
// their own; the client port keeps the probes but serves no metrics; unset, there is no
// metrics listener at all; the probes there follow the drain like the client port's.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, writeConfig, ClientPool, connected, eventually, http, metricsUrl, sleep, withTimeout } from "./harness.mjs";

const pool = new ClientPool();
const servers = [];
after(async () => {
  pool.closeAll();
  await Promise.all(servers.map((s) => s.stop()));
});

async function hub(config) {
  const s = await startServer({ bin: "main", args: ["--config", writeConfig({ listen: "127.0.0.1:0", ...config })] });
  servers.push(s);
  return s;
}

describe("metrics.listen", () => {
  it("serves /metrics and the probes on its own port; the client port 404s /metrics", async () => {
    const s = await hub({ metrics: { listen: "127.0.0.1:0" } });
    const base = await metricsUrl(s);
    assert.notEqual(base, s.url, "a port of its own");
    const client = pool.io(s.url, { transports: ["websocket"] });
    await connected(client);

    const m = await http(`${base}/metrics`);
    assert.equal(m.status, 200);
    assert.equal(m.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert.match(m.body, /^# TYPE roomcast_connections gauge$/m);
    assert.match(m.body, /^roomcast_connections 1$/m, "the connected client is counted");
    for (const port of [base, s.url]) {
      assert.deepEqual(
        [(await http(`${port}/healthz`)).body, (await http(`${port}/readyz`)).status],
        ["ok", 200],
        `probes on ${port}`,
      );
    }
    // Only reads, and only those three paths, on the metrics port.
    assert.equal((await http(`${base}/metrics`, { method: "POST", body: "x" })).status, 405);
    assert.equal((await http(`${base}/socket.io/?EIO=4&transport=polling`)).status, 404);
    // A client cannot read the metrics on the client port any more.
    const onClientPort = await http(`${s.url}/metrics`);
    assert.equal(onClientPort.status, 404);
    assert.doesNotMatch(onClientPort.body, /roomcast_/);
    s.assertHealthy();
  });

  it("unset (the default): no metrics listener, and still no /metrics on the client port", async () => {
    const s = await hub({});
    await sleep(300); // every listening line is printed at once, before serving
    assert.doesNotMatch(s.stdout(), /metrics listening/);
    assert.equal((await http(`${s.url}/metrics`)).status, 404);
    assert.equal((await http(`${s.url}/readyz`)).status, 200);
  });

  it("/readyz on the metrics port fails during the drain while /healthz stays ok, then the process exits 0", { timeout: 20_000 }, async () => {
    const s = await hub({ metrics: { listen: "127.0.0.1:0" }, shutdown: { drainDelay: 1500, gracePeriod: 5000 } });
    const base = await metricsUrl(s);
    assert.equal((await http(`${base}/readyz`)).status, 200);
    s.proc.kill("SIGTERM");
    await eventually(async () => (await http(`${base}/readyz`)).status === 503, 1000, "readyz 503 on the metrics port");
    assert.equal((await http(`${base}/readyz`)).body, "draining");
    assert.equal((await http(`${base}/healthz`)).status, 200);
    assert.equal((await http(`${base}/metrics`)).status, 200, "still scraped while draining");
    assert.deepEqual(await withTimeout(s.exit, 8000, "exit after the drain"), { code: 0, signal: null });
  });
});
