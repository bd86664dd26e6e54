// A connection flood for flood.test.mjs, in a process of its own so that its work does not
// delay the test's bystander: opens COUNT WebSocket connections to URL with CONCURRENCY
// handshakes in flight, each one an Engine.IO handshake, a Socket.IO CONNECT and a `join`
// with its ack (what a stock client does when it arrives), spread over the source addresses
// in SOURCES. Prints `STARTED` when the first connection opens, then one JSON line
// { connected, failed, ms, errors } when every connection is either up or failed, and
// keeps them open until stdin closes.
//
//   node flood-gen.mjs URL COUNT CONCURRENCY SOURCES

import { WebSocket } from "ws";

const [url, countArg, concurrencyArg, sourcesArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg);
const sources = sourcesArg.split(",");
const wsUrl = `${url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
const open = [];
const errors = new Map();
const HANDSHAKE_MS = 30_000;

/** One client: resolves once its join was acknowledged; rejects on any failure. */
function client(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false, localAddress: sources[i % sources.length] });
    open.push(ws);
    const timer = setTimeout(() => reject(new Error("handshake timed out")), HANDSHAKE_MS);
    ws.on("error", (e) => reject(e));
    ws.on("close", () => reject(new Error("closed during the handshake")));
    ws.on("message", (data) => {
      const msg = data.toString();
      if (msg === "2") return ws.send("3");
      if (msg.startsWith("0{")) return ws.send("40");
      if (msg.startsWith("40")) return ws.send(`421["join","flood-${i % 50}"]`);
      if (msg.startsWith("431")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

const started = Date.now();
let next = 0;
let connected = 0;
let failed = 0;
let announced = false;
async function worker() {
  while (next < count) {
    const i = next++;
    try {
      await client(i);
      connected++;
      if (!announced) {
        announced = true;
        console.log("STARTED");
      }
    } catch (e) {
      failed++;
      errors.set(e.message, (errors.get(e.message) || 0) + 1);
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
console.log(JSON.stringify({ connected, failed, ms: Date.now() - started, errors: Object.fromEntries(errors) }));
process.stdin.resume();
process.stdin.on("end", () => {
  for (const ws of open) ws.terminate();
  process.exit(0);
});
