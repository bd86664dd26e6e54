// Shared by the e2e scenarios (run.mjs) and the Service stand-in (service-proxy.mjs).
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
// socket.io-client from the data plane's JS tests (npm ci from their committed lockfile).
const require = createRequire(path.join(here, "../../dataplane/tests/js/package.json"));
export const { io } = require("socket.io-client");

/** Runs kubectl with ARGS; resolves to its stdout, rejects with its stderr. */
export function kubectl(bin, args, { timeout = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kubectl ${args.join(" ")}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

export async function kubectlJson(bin, args) {
  return JSON.parse(await kubectl(bin, [...args, "-o", "json"]));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Retries `check` (sync or async; truthy = done) every `every` ms until it holds or `seconds`
 * pass; then throws naming `what` (and the last error `check` threw, if any).
 */
export async function waitFor(what, seconds, check, every = 250) {
  const start = Date.now();
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) {
        log(`ok (${((Date.now() - start) / 1000).toFixed(1)}s): ${what}`);
        return v;
      }
    } catch (err) {
      last = err;
    }
    if (Date.now() - start > seconds * 1000) {
      throw new Error(`timed out after ${seconds}s waiting for: ${what}${last ? ` (${last.message})` : ""}`);
    }
    await sleep(every);
  }
}

export function log(msg) {
  console.error(`[scenarios] ${msg}`);
}

/**
 * The pod a socket lives on: Roomcast socket ids end with the base64url of the member id of
 * the node that holds the session (the pod name), after 16 random characters.
 */
export function podOf(socketId) {
  if (typeof socketId !== "string" || socketId.length <= 16) return undefined;
  return Buffer.from(socketId.slice(16), "base64url").toString("utf8");
}
