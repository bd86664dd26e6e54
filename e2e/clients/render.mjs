// Turns the results of a run of the stock-clients tier into its results JSON and the table of
// docs/clients.md, and checks (or rewrites) the committed table.
//
//   node e2e/clients/render.mjs RESULTS_DIR [--check DOC | --write DOC] [--suites a,b]
//
// RESULTS_DIR holds one `SUITE.jsonl` per suite that ran, written by the suite's tests, one
// JSON object a line:
//   {"type":"client","version":"python-socketio 5.18.1", "details": {...}}   what ran (once)
//   {"type":"feature","feature":"websocket"}                                   a feature verified (its test passed)
//   {"type":"difference","text":"..."}                                         a difference observed and asserted
// Writes RESULTS_DIR/results.json (every suite, merged). Fails (exit 1) when a suite of
// clients.json (or of --suites) has no results, lacks a feature it must verify, or has no
// client line. With --check, fails when DOC's generated table differs from this run's; with
// --write, replaces it. The table sits between the two marker lines below.

import fs from "node:fs";
import path from "node:path";

const BEGIN = "<!-- BEGIN GENERATED: e2e/clients/render.mjs from the tier's results; do not edit by hand -->";
const END = "<!-- END GENERATED -->";

const LABELS = {
  websocket: "WebSocket",
  polling: "polling",
  upgrade: "polling → WebSocket upgrade",
  namespace: "custom namespace",
  rooms: "rooms via client policies",
  "ack-client": "acks client → hub",
  "ack-server": "acks hub → client",
  binary: "binary both ways",
  "binary-arraybuffer": "binary `ArrayBuffer` / typed arrays",
  "binary-blob": "binary `Blob`",
  jwt: "JWT in `auth` (claims, refusals)",
  reconnect: "reconnect after its node is killed (3 nodes, round-robin proxy)",
  "recovery-fallback": "connection state recovery on: events' extra offset argument, a fresh session after a cut",
};
const TRANSPORTS = ["websocket", "polling", "upgrade"];

const argv = process.argv.slice(2);
const resultsDir = argv[0];
const flag = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (!resultsDir) {
  console.error("usage: render.mjs RESULTS_DIR [--check DOC | --write DOC] [--suites a,b]");
  process.exit(2);
}
const here = path.dirname(new URL(import.meta.url).pathname);
const manifest = JSON.parse(fs.readFileSync(path.join(here, "clients.json"), "utf8"));
const only = flag("--suites")?.split(",").filter(Boolean);
const suites = manifest.suites.filter((s) => !only || only.includes(s.suite));

const errors = [];
const merged = { generatedBy: "e2e/clients/render.mjs", suites: [] };
for (const s of suites) {
  const file = path.join(resultsDir, `${s.suite}.jsonl`);
  if (!fs.existsSync(file)) {
    errors.push(`${s.suite}: no results (${file}); the suite did not run`);
    continue;
  }
  const lines = fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l, i) => {
      try {
        return JSON.parse(l);
      } catch {
        errors.push(`${s.suite}: line ${i + 1} of ${file} is not JSON: ${l}`);
        return {};
      }
    });
  const client = lines.find((l) => l.type === "client");
  if (!client) errors.push(`${s.suite}: no client line (version) in the results`);
  const verified = new Set(lines.filter((l) => l.type === "feature").map((l) => l.feature));
  for (const f of verified) if (!LABELS[f]) errors.push(`${s.suite}: unknown feature ${f}`);
  const missing = s.features.filter((f) => !verified.has(f));
  if (missing.length) errors.push(`${s.suite}: not verified: ${missing.join(", ")}`);
  const differences = [...new Set(lines.filter((l) => l.type === "difference").map((l) => l.text))].sort();
  merged.suites.push({
    suite: s.suite,
    client: s.client,
    version: client?.version,
    details: client?.details ?? {},
    features: Object.keys(LABELS).filter((f) => verified.has(f)),
    missing,
    differences,
  });
}
fs.writeFileSync(path.join(resultsDir, "results.json"), JSON.stringify(merged, null, 2) + "\n");

const cell = (s) => String(s).replace(/\|/g, "\\|").replace(/\n/g, " ");
function table(rows) {
  const out = [
    "| client | version tested | transports | features verified | known differences |",
    "|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const transports = TRANSPORTS.filter((t) => r.features.includes(t)).map((t) => LABELS[t]);
    const features = r.features.filter((f) => !TRANSPORTS.includes(f)).map((f) => LABELS[f]);
    out.push(
      `| ${cell(r.client)} | ${cell(r.version ?? "?")} | ${cell(transports.join(", ") || "none")} | ${cell(features.join(", "))} | ${
        r.differences.length ? r.differences.map(cell).join("<br>") : "none found"
      } |`,
    );
  }
  return out.join("\n");
}
const rendered = table(merged.suites);

const check = flag("--check");
const write = flag("--write");
const doc = check ?? write;
if (doc && !only) {
  const text = fs.readFileSync(doc, "utf8");
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a < 0 || b < a) {
    errors.push(`${doc}: the generated-table markers are missing:\n  ${BEGIN}\n  ${END}`);
  } else {
    const current = text.slice(a + BEGIN.length, b).trim();
    if (write) {
      if (current !== rendered) {
        fs.writeFileSync(doc, `${text.slice(0, a + BEGIN.length)}\n${rendered}\n${text.slice(b)}`);
        console.error(`render: rewrote the table of ${doc}`);
      } else {
        console.error(`render: ${doc} is up to date`);
      }
    } else if (current !== rendered) {
      const cur = current.split("\n");
      const now = rendered.split("\n");
      const diff = [];
      for (let i = 0; i < Math.max(cur.length, now.length); i++) {
        if (cur[i] !== now[i]) diff.push(`  committed: ${cur[i] ?? "(none)"}\n  this run:  ${now[i] ?? "(none)"}`);
      }
      errors.push(
        `${doc}: the committed table differs from this run's results:\n${diff.join("\n")}\n` +
          `  regenerate it with: ROOMCAST_CLIENTS_WRITE_DOCS=1 make test-clients (or bash e2e/clients/run.sh --write-docs)`,
      );
    } else {
      console.error(`render: ${doc} matches this run's results`);
    }
  }
} else if (doc) {
  console.error(`render: only some suites ran (${only.join(", ")}); ${doc} not compared`);
}

console.log(rendered);
if (errors.length) {
  for (const e of errors) console.error(`render: FAIL ${e}`);
  process.exit(1);
}
