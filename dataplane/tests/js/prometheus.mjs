// A real Prometheus (Debian's `prometheus` package) against which the chart's monitoring is
// checked: the JS tier's monitoring.test.mjs (hub nodes on loopback) and the `monitoring` phase
// of the full-path tier (e2e/scenarios/run.mjs, the hub's pods) share it. Both load the chart's
// rule file and evaluate its Grafana dashboard's queries the way Grafana would.
// No test framework here: failures are thrown as Errors that say what was asked.

import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const CHART_FILES = path.join(REPO, "charts/roomcast-operator/files");
export const RULE_FILE = path.join(CHART_FILES, "prometheus-rules.yaml");
const DASHBOARD = path.join(CHART_FILES, "dashboard-roomcast-hubs.json");

/** The dashboard's panels that hold queries (rows hold none). */
export const panels = JSON.parse(fs.readFileSync(DASHBOARD, "utf8")).panels.filter((p) => p.type !== "row");

/** How many rules the rule file has (what a loaded rule file must show). */
export const ruleCount = (fs.readFileSync(RULE_FILE, "utf8").match(/^\s*- (alert|record):/gm) ?? []).length;

/** What Grafana substitutes for the dashboard's variables here: every namespace and hub, and a
 * rate window of a few 1 s scrapes. */
export const VARIABLES = { $namespace: ".*", $hub: ".*", $__rate_interval: "5s" };

export function substitute(expr, variables = VARIABLES) {
  return Object.entries(variables).reduce((e, [k, v]) => e.split(k).join(v), expr);
}

/** The server binary (ROOMCAST_PROMETHEUS, else `prometheus` on PATH); throws saying how to get it. */
export function prometheusBinary() {
  const bin = process.env.ROOMCAST_PROMETHEUS ?? "prometheus";
  try {
    execFileSync(bin, ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error(`${bin} not found: apt-get install prometheus (the test scripts install it when they run as root)`);
  }
  return bin;
}

/**
 * Starts Prometheus on ADDR (host:port) with CONFIG (an object, written as the config file in
 * DIR, which also holds its TSDB) and waits until it is ready. Returns {url, api, stop}: `api`
 * resolves to the `data` of an HTTP API answer and throws unless its status is success; `stop`
 * resolves once the process exited. It is killed when this process exits, stopped or not.
 */
export async function startPrometheus({ dir, addr, config, readyMs = 20_000 }) {
  const bin = prometheusBinary();
  const file = path.join(dir, "prometheus.yml");
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  const child = spawn(bin, [`--config.file=${file}`, `--storage.tsdb.path=${path.join(dir, "tsdb")}`, `--web.listen-address=${addr}`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (c) => (log = (log + c).slice(-8000)));
  const kill = () => child.kill("SIGTERM");
  process.on("exit", kill);
  const url = `http://${addr}`;
  const api = async (route, params = {}) => {
    const res = await fetch(`${url}${route}?${new URLSearchParams(params)}`, { signal: AbortSignal.timeout(5000) });
    const body = await res.json();
    if (body.status !== "success") throw new Error(`prometheus ${route} ${JSON.stringify(params)}: ${JSON.stringify(body)}`);
    return body.data;
  };
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const stop = () => {
    process.off("exit", kill);
    kill();
    return exited;
  };
  const deadline = Date.now() + readyMs;
  while (!(await fetch(`${url}/-/ready`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus not ready on ${addr} (exit code ${child.exitCode}):\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, api, stop };
}

/**
 * Every query of every panel, variables substituted, evaluated now through PROM's API:
 * [{panel, query, result}]. Throws at the first query that returns nothing.
 */
export async function evaluateDashboard(prom, variables = VARIABLES) {
  const out = [];
  for (const panel of panels) {
    for (const target of panel.targets) {
      const query = substitute(target.expr, variables);
      const { result } = await prom.api("/api/v1/query", { query });
      if (result.length === 0) throw new Error(`panel "${panel.title}": ${query} returned nothing`);
      out.push({ panel: panel.title, query, result });
    }
  }
  return out;
}

/**
 * The loaded rules, once every rule of the rule file has been evaluated: throws when fewer are
 * loaded or one's health is not ok (its last error).
 */
export async function loadedRules(prom) {
  const rules = (await prom.api("/api/v1/rules")).groups.flatMap((g) => g.rules);
  if (rules.length !== ruleCount) throw new Error(`${rules.length} rules loaded, the rule file has ${ruleCount}`);
  for (const r of rules) {
    if (r.health !== "ok") throw new Error(`rule ${r.name}: health ${r.health} (${r.lastError ?? "not evaluated yet"})`);
  }
  return rules;
}
