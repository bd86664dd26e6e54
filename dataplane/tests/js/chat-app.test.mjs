// The example application (examples/chat-app) end to end: the real roomcast-dataplane binary
// with webhooks pointing at the app and the management API on, the app as its own Node
// process (as a user runs it), and real socket.io-client users chatting through the hub.
//
// run.sh installs the app's npm packages (npm ci in examples/chat-app) before this runs.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { binaryPath, ClientPool, connected, connectError, once, eventually, sleep } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../../..");
const APP_DIR = path.join(REPO, "examples/chat-app");
const SECRET = "chat-test-webhook-secret";
const TOKEN = "chat-test-management-token-0123";
const JWT_SECRET = "chat-test-jwt-secret-0123456789abcdef";
const VERBOSE = !!process.env.ROOMCAST_TEST_VERBOSE;
/** Time given to stray deliveries before counting what each client received. */
const SETTLE_MS = 300;

/** Spawns a process and waits until its stdout matches every regex; returns the matches. */
async function spawnReady(label, cmd, args, { env = {}, cwd, ready }) {
  const proc = spawn(cmd, args, {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { RUST_BACKTRACE: "1", ...process.env, ROOMCAST_CONFIG: "", ...env },
  });
  let stdout = "";
  let stderr = "";
  let exited = null;
  const exitP = new Promise((resolve) =>
    proc.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    }),
  );
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (c) => {
    if (VERBOSE) process.stderr.write(`[${label}] ${c}`);
    stderr = (stderr + c).slice(-64 * 1024);
  });
  proc.stdout.setEncoding("utf8");
  proc.stdout.on("data", (c) => {
    if (VERBOSE) process.stderr.write(`[${label}] ${c}`);
    stdout = (stdout + c).slice(-64 * 1024);
  });
  const matches = await new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      proc.kill("SIGKILL");
      reject(new Error(`${label}: ${why}\n  stdout: ${stdout}\n  stderr: ${stderr}`));
    };
    const timer = setTimeout(() => fail("not ready within 20 s"), 20_000);
    const check = () => {
      const found = ready.map((re) => re.exec(stdout));
      if (found.every(Boolean)) {
        clearTimeout(timer);
        proc.stdout.off("data", check);
        resolve(found);
      }
    };
    proc.stdout.on("data", check);
    exitP.then(({ code, signal }) => fail(`exited before it was ready (code ${code}, signal ${signal})`));
  });
  return {
    matches,
    stderr: () => stderr,
    get exited() {
      return exited;
    },
    async stop() {
      if (exited) return exited;
      proc.kill("SIGTERM");
      const res = await Promise.race([exitP, sleep(8000).then(() => null)]);
      if (res) return res;
      proc.kill("SIGKILL");
      return exitP;
    },
  };
}

/** A port free right now on 127.0.0.1 (the app is started on it just after). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The hub (config as examples/chat-app/hub.yaml, but on free ports) and the app pointing at
 * each other. `jwt`: turn on HS256 client authentication on the hub.
 */
async function startStack({ jwt = false } = {}) {
  for (let attempt = 1; ; attempt++) {
    const appPort = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-chat-app-"));
    const config = path.join(dir, "hub.json");
    fs.writeFileSync(
      config,
      JSON.stringify({
        listen: "127.0.0.1:0",
        socketio: {
          namespaces: [
            {
              name: "/",
              upstream: {
                url: `http://127.0.0.1:${appPort}/roomcast`,
                events: ["connect", "event", "disconnect"],
                timeout: 5000,
                disconnectRetries: 3,
                secret: SECRET,
              },
              allowedEvents: ["join", "leave", "message", "who"],
            },
          ],
        },
        management: { listen: "127.0.0.1:0", token: TOKEN },
        ...(jwt ? { auth: { mode: "jwt", jwt: { algorithms: ["HS256"], hs256Secret: JWT_SECRET } } } : {}),
      }),
    );
    const hub = await spawnReady("hub", binaryPath("main"), ["--config", config], {
      ready: [/^listening on (http:\/\/[0-9.]+:\d+)/m, /^management listening on (http:\/\/[0-9.]+:\d+)$/m],
    });
    const [[, url], [, api]] = hub.matches;
    try {
      const app = await spawnReady("chat-app", process.execPath, ["server.mjs"], {
        cwd: APP_DIR,
        env: {
          PORT: String(appPort),
          HOST: "127.0.0.1",
          ROOMCAST_API: api,
          ROOMCAST_TOKEN: TOKEN,
          WEBHOOK_SECRET: SECRET,
          HUB_URL: url,
        },
        ready: [/^chat-app listening on (http:\/\/[0-9.]+:\d+)/m],
      });
      const appUrl = app.matches[0][1];
      assert.equal(appUrl, `http://127.0.0.1:${appPort}`);
      return {
        url,
        api,
        appUrl,
        hub,
        app,
        assertHealthy() {
          assert.equal(hub.exited, null, `hub exited: ${JSON.stringify(hub.exited)}\n${hub.stderr()}`);
          assert.doesNotMatch(hub.stderr(), /panicked at/, "hub panicked");
          assert.equal(app.exited, null, `app exited: ${JSON.stringify(app.exited)}\n${app.stderr()}`);
        },
        async stop() {
          await Promise.all([hub.stop(), app.stop()]);
        },
      };
    } catch (err) {
      await hub.stop();
      // Someone took the port between freePort() and the app's listen: try again.
      if (attempt < 3 && /EADDRINUSE/.test(err.message)) continue;
      throw err;
    }
  }
}

/** An HS256 JWT. */
function jwtFor(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${head}.${crypto.createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`;
}

const pool = new ClientPool();

/** A connected user that records every `message` and `left` it receives. */
async function user(stack, name, opts = {}) {
  const s = pool.io(stack.url, { auth: { name }, transports: ["websocket"], ...opts });
  s.got = { message: [], left: [] };
  s.on("message", (m) => s.got.message.push(m));
  s.on("left", (m) => s.got.left.push(m));
  await connected(s, 10_000, name);
  return s;
}

const ask = (s, event, arg) => s.timeout(5000).emitWithAck(event, arg);

/** Closes every client and waits until the hub has no socket left and the app was told. */
async function cleanUp(stack) {
  pool.closeAll();
  if (!stack) return;
  await eventually(
    async () => {
      const res = await fetch(`${stack.api}/v1/namespaces/%2F/sockets/fetch`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: "{}",
      });
      return (await res.json()).sockets.length === 0;
    },
    5000,
    "every socket gone",
  );
  // The disconnect webhooks (and the app's `left` emits) of this test's users finish
  // before the next test's users arrive.
  await sleep(SETTLE_MS);
}

describe("chat-app with name auth", () => {
  let stack;
  before(async () => {
    stack = await startStack();
  });
  afterEach(() => cleanUp(stack));
  after(async () => {
    pool.closeAll();
    stack?.assertHealthy();
    await stack?.stop();
  });

  it("refuses a connection without a name, with the app's message", async () => {
    for (const opts of [{}, { auth: { name: "   " } }, { auth: { name: "x".repeat(33) } }]) {
      const err = await connectError(pool.io(stack.url, opts));
      assert.match(err.message, /a name is required/);
      assert.deepEqual(err.data, { reason: "name_required" });
    }
  });

  it("puts users in the lobby, joins rooms, delivers messages to exactly the room's members", async () => {
    const alice = await user(stack, "alice");
    const bob = await user(stack, "bob");
    const carol = await user(stack, "carol", { transports: ["polling"] });
    const everyone = [alice, bob, carol];

    assert.deepEqual(await ask(alice, "join", "kitchen"), { ok: true });
    assert.deepEqual(await ask(bob, "join", "kitchen"), { ok: true });
    assert.deepEqual(await ask(carol, "join", "garden"), { ok: true });

    // The lobby (the room every user starts in) reaches everyone, sender included.
    assert.deepEqual(await ask(carol, "message", { room: "lobby", text: "hello all" }), { ok: true });
    // A room reaches its members only.
    assert.deepEqual(await ask(alice, "message", { room: "kitchen", text: "tea?" }), { ok: true });
    assert.deepEqual(await ask(bob, "message", { room: "kitchen", text: "yes please" }), { ok: true });
    assert.deepEqual(await ask(carol, "message", { room: "garden", text: "roses" }), { ok: true });
    // Not a member: refused, delivered to nobody.
    assert.deepEqual(await ask(carol, "message", { room: "kitchen", text: "let me in" }), {
      ok: false,
      error: "not_in_room",
      message: 'join "kitchen" first',
    });

    await eventually(() => carol.got.message.length >= 2 && alice.got.message.length >= 3, 5000, "messages");
    await sleep(SETTLE_MS);
    const seen = (s) => s.got.message.map((m) => `${m.room}/${m.from}: ${m.text}`);
    assert.deepEqual(seen(alice), ["lobby/carol: hello all", "kitchen/alice: tea?", "kitchen/bob: yes please"]);
    assert.deepEqual(seen(bob), ["lobby/carol: hello all", "kitchen/alice: tea?", "kitchen/bob: yes please"]);
    assert.deepEqual(seen(carol), ["lobby/carol: hello all", "garden/carol: roses"]);

    const tea = alice.got.message[1];
    assert.deepEqual(Object.keys(tea).sort(), ["at", "from", "room", "text"]);
    assert.ok(Math.abs(Date.parse(tea.at) - Date.now()) < 10_000, `at is a recent ISO time: ${tea.at}`);

    // Bad input is refused by the app, events outside the allow-list by the hub.
    assert.equal((await ask(alice, "message", { room: "kitchen", text: "" })).error, "bad_request");
    assert.equal((await ask(alice, "join", 7)).error, "bad_request");
    assert.equal((await ask(alice, "dance", "kitchen")).error, "event_not_allowed");
    for (const s of everyone) assert.equal(s.got.left.length, 0);
  });

  it("answers who is in a room", async () => {
    const alice = await user(stack, "alice");
    const bob = await user(stack, "bob");
    const carol = await user(stack, "carol");
    await ask(bob, "join", "kitchen");
    await ask(alice, "join", "kitchen");
    assert.deepEqual(await ask(carol, "who", "kitchen"), { ok: true, room: "kitchen", names: ["alice", "bob"] });
    assert.deepEqual(await ask(alice, "who", "lobby"), { ok: true, room: "lobby", names: ["alice", "bob", "carol"] });
    assert.deepEqual(await ask(alice, "who", "empty"), { ok: true, room: "empty", names: [] });
    assert.deepEqual(await ask(alice, "leave", "kitchen"), { ok: true });
    assert.deepEqual(await ask(carol, "who", "kitchen"), { ok: true, room: "kitchen", names: ["bob"] });
  });

  it("tells the others in its rooms when a user leaves, once each", async () => {
    const alice = await user(stack, "alice");
    const bob = await user(stack, "bob");
    const carol = await user(stack, "carol");
    const dave = await user(stack, "dave");
    await ask(alice, "join", "kitchen");
    await ask(bob, "join", "kitchen");
    // dave leaves the lobby and has a room of his own: he shares nothing with bob.
    await ask(dave, "join", "attic");
    await ask(dave, "leave", "lobby");

    bob.disconnect();
    await eventually(() => alice.got.left.length >= 1 && carol.got.left.length >= 1, 5000, "left events");
    await sleep(SETTLE_MS);
    // alice shares two rooms with bob and still gets one copy.
    assert.deepEqual(alice.got.left, [{ name: "bob" }]);
    assert.deepEqual(carol.got.left, [{ name: "bob" }]);
    assert.deepEqual(dave.got.left, []);
    assert.deepEqual(await ask(alice, "who", "kitchen"), { ok: true, room: "kitchen", names: ["alice"] });

    // A closed connection (not a polite disconnect) is reported too.
    carol.io.engine.close();
    await eventually(() => alice.got.left.length >= 2, 5000, "left after transport close");
    assert.deepEqual(alice.got.left, [{ name: "bob" }, { name: "carol" }]);
    assert.deepEqual(dave.got.left, []);
  });

  it("refuses webhooks without a valid signature, stale ones and replays", async () => {
    const body = JSON.stringify({ namespace: "/", auth: { name: "eve" }, claims: null, handshake: {} });
    const type = "dev.roomcast.socket.connect";
    const sign = (ts, id, t = type, secret = SECRET) =>
      "v1=" + crypto.createHmac("sha256", secret).update(`v1:${ts}:${id}:${t}:${body}`).digest("hex");
    const post = (signature, { ts, id, t = type } = {}) =>
      fetch(`${stack.appUrl}/roomcast`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-type": t,
          ...(id ? { "ce-id": id } : {}),
          ...(ts !== undefined ? { "x-roomcast-timestamp": String(ts) } : {}),
          ...(signature ? { "x-roomcast-signature": signature } : {}),
        },
        body,
      });
    const now = Math.floor(Date.now() / 1000);
    const at = { ts: now, id: "sig-test-1" };
    const good = sign(now, at.id);
    assert.equal((await post(undefined, at)).status, 401, "no signature");
    assert.equal((await post(sign(now, at.id, type, "not-the-secret"), at)).status, 401, "wrong secret");
    assert.equal((await post(good.slice(0, -2), at)).status, 401, "a shorter signature");
    assert.equal((await post(good.replace("v1=", "sha256="), at)).status, 401, "old scheme");
    assert.equal((await post(good, { ...at, id: "sig-test-other" })).status, 401, "signed for another id");
    assert.equal((await post(sign(now, at.id, "dev.roomcast.socket.event"), at)).status, 401, "signed for another type");
    const stale = now - 600;
    assert.equal((await post(sign(stale, at.id), { ...at, ts: stale })).status, 401, "outside the replay window");
    const res = await post(good, at);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { accept: true, data: { name: "eve" }, rooms: ["lobby"] });
    assert.equal((await post(good, at)).status, 401, "the same request again is a replay");
  });

  it("serves the browser page and the client bundle", async () => {
    const page = await fetch(`${stack.appUrl}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>Roomcast chat<\/title>/);
    assert.equal((await fetch(`${stack.appUrl}/socket.io.min.js`)).status, 200);
    assert.deepEqual(await (await fetch(`${stack.appUrl}/config.json`)).json(), { hubUrl: stack.url });
  });
});

describe("chat-app with JWT auth on the hub", () => {
  let stack;
  before(async () => {
    stack = await startStack({ jwt: true });
  });
  afterEach(() => cleanUp(stack));
  after(async () => {
    pool.closeAll();
    stack?.assertHealthy();
    await stack?.stop();
  });

  it("names users by the token's sub, not by what they claim", async () => {
    const dave = await user(stack, "mallory", { auth: { token: jwtFor({ sub: "dave" }), name: "mallory" } });
    const erin = await user(stack, "erin", { auth: { token: jwtFor({ sub: "erin" }) } });
    assert.deepEqual(await ask(erin, "who", "lobby"), { ok: true, room: "lobby", names: ["dave", "erin"] });
    const got = once(erin, "message", 5000);
    assert.deepEqual(await ask(dave, "message", { room: "lobby", text: "it is me" }), { ok: true });
    const [m] = await got;
    assert.equal(m.from, "dave");
  });

  it("refuses a token without sub (the app) and no token (the hub)", async () => {
    let err = await connectError(pool.io(stack.url, { auth: { token: jwtFor({}), name: "x" } }));
    assert.equal(err.message, "the token has no usable sub claim");
    assert.deepEqual(err.data, { reason: "name_required" });
    err = await connectError(pool.io(stack.url, { auth: { name: "x" } }));
    assert.equal(err.data.reason, "token_missing");
  });
});
