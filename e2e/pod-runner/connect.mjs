// Connects a real socket.io-client to each URL given and exits 0 once every one of them has a
// Socket.IO connection (and the Engine.IO upgrade to WebSocket went through); 1 otherwise.
//   node e2e/pod-runner/connect.mjs http://127.0.50.1:3000 http://127.0.50.2:3000 ...
// socket.io-client comes from dataplane/tests/js/node_modules (npm ci from its lockfile).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../dataplane/tests/js/package.json"));
const { io } = require("socket.io-client");

const TIMEOUT_MS = 10_000;

function connect(url) {
  return new Promise((resolve, reject) => {
    // auth.name: the example chat app (the hub's upstream in e2e) accepts only named clients.
    const socket = io(url, { reconnection: false, timeout: TIMEOUT_MS, forceNew: true, auth: { name: "probe" } });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`${url}: no connection within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    socket.on("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      reject(new Error(`${url}: connect_error: ${err.message}`));
    });
    socket.on("connect", () => {
      const check = () => {
        const transport = socket.io.engine.transport.name;
        if (transport !== "websocket") return false;
        clearTimeout(timer);
        console.log(`connected ${url} id=${socket.id} transport=${transport}`);
        socket.close();
        resolve();
        return true;
      };
      if (!check()) socket.io.engine.once("upgrade", check);
    });
  });
}

const urls = process.argv.slice(2);
if (urls.length === 0) {
  console.error("usage: node connect.mjs URL...");
  process.exit(2);
}
const results = await Promise.allSettled(urls.map(connect));
const failed = results.filter((r) => r.status === "rejected");
for (const f of failed) console.error(f.reason.message);
process.exit(failed.length === 0 ? 0 : 1);
