// The chart's monitoring against a real Prometheus (Debian's `prometheus` package): a 3-node
// hub on loopback (127.0.0.61-63; members from a members file so that discovery is exported
// too; a webhook on /app), scraped every second by Prometheus (on 127.0.0.64), real socket.io
// clients making traffic; then every query of the Grafana dashboard
// (charts/roomcast-operator/files/) evaluated through Prometheus' HTTP API must return data,
// the rule file must load with every rule healthy, and the metrics the nodes export must be
// exactly dataplane/src/metrics/exported.txt (the list scripts/check-monitoring.sh checks the
// dashboard's and the rules' names against).
// ROOMCAST_MONITORING_OUT=FILE also writes every panel query's range over the run as JSON
// (scripts/plot-dashboard.py draws docs/images/dashboard-*.png from it).

import { it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startClusterNode, roomsMode, apiCall, metricsUrl, ClientPool, connected, roomMember, call, eventually, sleep, presetPort } from "./harness.mjs";
import { RULE_FILE, VARIABLES, evaluateDashboard, loadedRules, panels, startPrometheus, substitute } from "./prometheus.mjs";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const EXPORTED = path.join(REPO, "dataplane/src/metrics/exported.txt");
const IPS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
const PEER_PORT = presetPort();
// Prometheus listens on an address of its own, on a port below the ephemeral range.
const PROM_ADDR = `127.0.0.64:${presetPort()}`;
const TOKEN = "monitoring-test-token";
const MAX_CONNECTIONS = 500;
const TRAFFIC_MS = Number(process.env.ROOMCAST_MONITORING_TRAFFIC_MS ?? 20_000);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-monitoring-"));
const pool = new ClientPool();
const nodes = [];
let app;
let prometheus;
let traffic = { start: 0, end: 0 };

/** The application behind /app's webhook: answers after 5-25 ms, fails one request in ten. */
function startApp() {
  const a = { requests: 0, server: null, url: null };
  a.server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      a.requests += 1;
      const fail = a.requests % 10 === 0;
      setTimeout(() => {
        res.writeHead(fail ? 500 : 204);
        res.end();
      }, 5 + Math.floor(Math.random() * 20));
    });
  });
  return new Promise((resolve) =>
    a.server.listen(0, "127.0.0.1", () => {
      a.url = `http://127.0.0.1:${a.server.address().port}/hook`;
      resolve(a);
    }),
  );
}

function startNode(i) {
  const membersFile = path.join(dir, `members-${i}`);
  fs.writeFileSync(membersFile, IPS.map((ip, j) => `hub-${j}=${ip}:${PEER_PORT}`).join("\n") + "\n");
  return startClusterNode({
    id: `hub-${i}`,
    ip: IPS[i],
    peerPort: PEER_PORT,
    token: TOKEN,
    config: {
      limits: { maxConnections: MAX_CONNECTIONS },
      socketio: {
        namespaces: [
          { name: "/", relay: true, policies: { join: ["room:*"], emitToJoined: true } },
          { name: "/app", upstream: { url: app.url, timeout: 1000, disconnectRetries: 0 } },
        ],
      },
      cluster: { peerListen: `${IPS[i]}:${PEER_PORT}`, membersFile, discoveryInterval: 500, heartbeatInterval: 200, heartbeatTimeout: 1000, ...roomsMode() },
    },
  });
}

const promApi = (route, params) => prometheus.api(route, params);

before(async () => {
  app = await startApp();
  nodes.push(...(await Promise.all(IPS.map((_, i) => startNode(i)))));
  for (const node of nodes) {
    await eventually(async () => (await apiCall(node, "GET", "/v1/stats")).nodes === IPS.length, 10_000, `${node.url} linked`);
  }
  // Target labels as the chart's PodMonitor sets them (namespace, pod, hub).
  const targets = await Promise.all(
    nodes.map(async (node, i) => ({
      targets: [new URL(await metricsUrl(node)).host],
      labels: { namespace: "roomcast-test", pod: `chat-${i}`, hub: "chat" },
    })),
  );
  const config = {
    global: { scrape_interval: "1s", evaluation_interval: "1s" },
    rule_files: [RULE_FILE],
    scrape_configs: [{ job_name: "roomcast-hubs", static_configs: targets }],
  };
  prometheus = await startPrometheus({ dir, addr: PROM_ADDR, config });
});

after(async () => {
  pool.closeAll();
  await prometheus?.stop();
  await Promise.all(nodes.map((n) => n.stop()));
  app?.server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

it("the nodes export exactly the metrics of dataplane/src/metrics/exported.txt, and the connection limit", async () => {
  const expected = fs
    .readFileSync(EXPORTED, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("# TYPE "));
  for (const node of nodes) {
    const text = await (await fetch(`${await metricsUrl(node)}/metrics`)).text();
    const types = text.split("\n").filter((l) => l.startsWith("# TYPE "));
    assert.deepEqual(types.toSorted(), expected.toSorted(), `# TYPE lines of ${node.url} (update ${EXPORTED})`);
    assert.match(text, new RegExp(`^roomcast_connections_limit ${MAX_CONNECTIONS}$`, "m"));
  }
});

it("every dashboard query has data in a real Prometheus scraping the 3 nodes under traffic", { timeout: 120_000 }, async () => {
  // Traffic: room members on every node, a publisher per node, webhook clients on /app, churn.
  const members = [];
  for (const [i, node] of nodes.entries()) {
    for (let k = 0; k < 5; k++) members.push(await roomMember(pool, node.url, ["room:a", `room:${i}`], { transports: ["websocket"] }));
  }
  const publishers = await Promise.all(nodes.map((n) => roomMember(pool, n.url, ["room:a"], { transports: ["websocket"] })));
  const appClients = await Promise.all(
    nodes.flatMap((n) => [0, 1].map(() => connected(pool.io(`${n.url}/app`, { transports: ["websocket"] })))),
  );
  traffic.start = Date.now() / 1000;
  let sent = 0;
  while (Date.now() / 1000 - traffic.start < TRAFFIC_MS / 1000) {
    for (const p of publishers) {
      const res = await call(p, "roomcast:emit", { room: "room:a", event: "msg", args: [sent] });
      assert.equal(res.ok, true, JSON.stringify(res));
      sent += 1;
    }
    for (const c of appClients) c.emit("chat", { n: sent });
    if (sent % 30 === 0) {
      // A client that stays, in a room of its own (room updates to the peers), and one that
      // leaves (sessions open and close all along), on each node in turn.
      const node = nodes[(sent / 30) % 3];
      members.push(await roomMember(pool, node.url, [`room:late-${sent}`], { transports: ["websocket"] }));
      (await connected(pool.io(node.url, { transports: ["polling"] }))).disconnect();
    }
    await sleep(50);
  }
  traffic.end = Date.now() / 1000;
  await sleep(2500); // two more scrapes
  assert.ok(members.slice(0, 15).every((s) => s.got.length > 0), "every member of room:a got messages");
  assert.ok(app.requests > 0, "the webhook got requests");

  const up = await promApi("/api/v1/query", { query: 'up{job="roomcast-hubs"} == 1' });
  assert.equal(up.result.length, 3, `3 targets up: ${JSON.stringify(up.result)}`);

  // The dashboard's variables resolve (label_values(...) queries).
  assert.deepEqual(await promApi("/api/v1/label/hub/values", { "match[]": "roomcast_connections" }), ["chat"]);

  const results = await evaluateDashboard(prometheus);
  assert.ok(results.length >= panels.length);
  // Sanity of values, not only presence: every node holds clients, all links are up.
  const conns = await promApi("/api/v1/query", { query: substitute(panels[0].targets[0].expr) });
  assert.equal(conns.result.length, 3);
  assert.ok(conns.result.every((r) => Number(r.value[1]) >= 9), JSON.stringify(conns.result));
  const down = await promApi("/api/v1/query", { query: "sum(roomcast_peers - roomcast_peers_connected)" });
  assert.equal(Number(down.result[0].value[1]), 0);

  // The rule file loads into the real server and every rule evaluates. The app fails one
  // webhook request in ten, over the 5% threshold: that alert is pending on every pod (its
  // `for` is 5 minutes); nothing else is.
  assert.equal((await loadedRules(prometheus)).length, 6);
  const alerts = (await promApi("/api/v1/alerts")).alerts;
  assert.deepEqual(
    alerts.map((a) => [a.labels.alertname, a.labels.pod, a.state]).toSorted(),
    ["chat-0", "chat-1", "chat-2"].map((pod) => ["RoomcastWebhookFailureRate", pod, "pending"]),
    JSON.stringify(alerts),
  );

  // A member stops: the other two count a peer link down (the dashboard's panel), and the
  // loaded RoomcastPeerLinkDown rule goes pending for exactly them.
  await nodes[2].stop();
  const downPanel = panels.find((p) => p.title === "Peer links up / down").targets[1];
  await eventually(
    async () => {
      const res = await promApi("/api/v1/query", { query: substitute(downPanel.expr) });
      return res.result.filter((r) => r.value[1] === "1").map((r) => r.metric.pod).toSorted().join() === "chat-0,chat-1";
    },
    15_000,
    "one peer link down on chat-0 and chat-1",
    500,
  );
  await eventually(
    async () => {
      const alerts = (await promApi("/api/v1/alerts")).alerts.filter((a) => a.labels.alertname === "RoomcastPeerLinkDown");
      return alerts.map((a) => `${a.labels.pod}:${a.state}`).toSorted().join() === "chat-0:pending,chat-1:pending";
    },
    10_000,
    "RoomcastPeerLinkDown pending on chat-0 and chat-1",
    500,
  );
  await sleep(3000);
  traffic.end = Date.now() / 1000;

  if (process.env.ROOMCAST_MONITORING_OUT) {
    const out = { source: "3-node hub on loopback scraped every 1 s by Prometheus", variables: VARIABLES, panels: [] };
    for (const panel of panels) {
      const targets = [];
      for (const target of panel.targets) {
        const data = await promApi("/api/v1/query_range", {
          query: substitute(target.expr),
          start: String(traffic.start - 5),
          end: String(traffic.end),
          step: "1",
        });
        targets.push({ expr: target.expr, legendFormat: target.legendFormat, result: data.result });
      }
      out.panels.push({ title: panel.title, unit: panel.fieldConfig.defaults.unit, start: traffic.start, targets });
    }
    fs.writeFileSync(process.env.ROOMCAST_MONITORING_OUT, JSON.stringify(out));
  }
});
