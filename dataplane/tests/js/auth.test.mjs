// Client authentication: the main binary verifies a JWT at the Socket.IO handshake
// (auth.token, access_token query or Authorization: Bearer). Refusals are connect_error
// with a message and data.reason; verified claims land on the socket (seen through the
// management API's fetchSockets). Tokens are signed here with node:crypto; the JWKS hub
// fetches its keys from an HTTP server run by this test, including a key rotation.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { writeConfig, startServer, ClientPool, connected, connectError, eventually, sleep } from "./harness.mjs";

const SECRET = "roomcast-auth-test-secret-0123456789";
const ISSUER = "https://issuer.roomcast.test";
const AUDIENCE = "roomcast-test";
const MGMT_TOKEN = "management-token-for-auth-tests";
const MIN_REFRESH_MS = 1000;

// ---------------------------------------------------------------------------
// Tokens

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

/** Standard valid claims, overridable; a value of undefined removes the claim. */
function claims(over = {}) {
  const c = { sub: "alice", name: "Alice", iss: ISSUER, aud: AUDIENCE, iat: now(), exp: now() + 600, ...over };
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
  return c;
}

function hs256(payload, secret = SECRET, header = {}) {
  const input = `${b64url({ alg: "HS256", typ: "JWT", ...header })}.${b64url(payload)}`;
  return `${input}.${crypto.createHmac("sha256", secret).update(input).digest("base64url")}`;
}

/** RS256 or ES256 (JOSE signature encoding) with a node:crypto private key. */
function signAsym(alg, privateKey, kid, payload) {
  const header = { alg, typ: "JWT", ...(kid ? { kid } : {}) };
  const input = `${b64url(header)}.${b64url(payload)}`;
  const key = alg === "ES256" ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey;
  return `${input}.${crypto.sign("sha256", Buffer.from(input), key).toString("base64url")}`;
}

/** A key pair and its public JWK (with kid, alg, use). */
function keyPair(alg, kid) {
  const { publicKey, privateKey } =
    alg === "ES256"
      ? crypto.generateKeyPairSync("ec", { namedCurve: "P-256" })
      : crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  return { alg, kid, privateKey, jwk, sign: (payload) => signAsym(alg, privateKey, kid, payload) };
}

// ---------------------------------------------------------------------------
// Servers

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-auth-"));
}

/** A port that was free a moment ago (for the management listener). */
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

/** A JWKS endpoint: serves `jwks.keys`, counts requests; `jwks.status` can break it. */
function startJwks() {
  const jwks = { keys: [], hits: 0, status: 200, server: null, url: null };
  jwks.server = http.createServer((req, res) => {
    jwks.hits += 1;
    if (jwks.status !== 200) {
      res.writeHead(jwks.status, { "content-type": "text/plain" });
      return res.end("unavailable");
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: jwks.keys }));
  });
  return new Promise((resolve) =>
    jwks.server.listen(0, "127.0.0.1", () => {
      jwks.url = `http://127.0.0.1:${jwks.server.address().port}/.well-known/jwks.json`;
      resolve(jwks);
    }),
  );
}

async function fetchSockets(mgmtUrl) {
  const res = await fetch(`${mgmtUrl}/v1/namespaces/%2F/sockets`, {
    headers: { authorization: `Bearer ${MGMT_TOKEN}` },
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200, `fetchSockets: ${res.status}`);
  return (await res.json()).sockets;
}

const pool = new ClientPool();
let hub; // HS256 hub, relay app on /
let mgmtUrl;
let jwks;
let jwksHub; // RS256/ES256 hub whose keys come from `jwks`
const rsa1 = keyPair("RS256", "rsa-1");
const ec1 = keyPair("ES256", "ec-1");

before(async () => {
  const dir = tmpDir();
  const secretFile = path.join(dir, "hs256.secret");
  fs.writeFileSync(secretFile, `${SECRET}\n`);
  const mgmtPort = await freePort();
  mgmtUrl = `http://127.0.0.1:${mgmtPort}`;
  hub = await startServer({
    bin: "main",
    args: [
      "--config",
      writeConfig({
        listen: "127.0.0.1:0",
        socketio: {
          namespaces: [
            { name: "/", relay: true },
            { name: "/private", policies: { join: ["user:{sub}", "team:{org}:*"], emitToJoined: true } },
          ],
        },
        auth: {
          mode: "jwt",
          jwt: {
            algorithms: ["HS256"],
            hs256SecretFile: secretFile,
            issuer: ISSUER,
            audience: ["other-app", AUDIENCE],
            disconnectOnExpiry: true,
          },
        },
        management: { listen: `127.0.0.1:${mgmtPort}`, token: MGMT_TOKEN },
      }),
    ],
  });

  jwks = await startJwks();
  jwks.keys = [rsa1.jwk, ec1.jwk];
  jwksHub = await startServer({
    bin: "main",
    args: [
      "--config",
      writeConfig({
        listen: "127.0.0.1:0",
        socketio: { namespaces: [{ name: "/", relay: true }] },
        auth: {
          mode: "jwt",
          jwt: {
            algorithms: ["RS256", "ES256"],
            jwksUrl: jwks.url,
            allowInsecureJwksUrl: true, // the test's JWKS server speaks plain http
            jwksRefreshInterval: 3_600_000,
            jwksMinRefreshInterval: MIN_REFRESH_MS,
            issuer: ISSUER,
            audience: [AUDIENCE],
          },
        },
      }),
    ],
  });
});

afterEach(() => pool.closeAll());

after(async () => {
  pool.closeAll();
  hub?.assertHealthy("at the end of auth tests");
  jwksHub?.assertHealthy("at the end of auth tests");
  await hub?.stop();
  await jwksHub?.stop();
  jwks?.server.close();
});

const join = (s, room) => s.timeout(5000).emitWithAck("join", room);

/** Connects with `opts` and expects connect_error with `reason` (and `message` when given). */
async function refused(server, opts, reason, message) {
  const s = pool.io(server.url, { transports: ["websocket"], ...opts });
  const err = await connectError(s);
  assert.equal(err.data?.reason, reason, `reason for ${JSON.stringify(opts)}: ${JSON.stringify(err.data)} ${err.message}`);
  if (message) assert.equal(err.message, message);
  else assert.ok(err.message && err.message.length > 0, "a message comes with the reason");
  assert.equal(s.connected, false);
  return err;
}

// ---------------------------------------------------------------------------

describe("client auth with an HS256 secret", () => {
  it("a valid token in auth.token connects; the claims land on the socket; the relay app works", async () => {
    const a = await pool.connect(hub.url, { transports: ["websocket"], auth: { token: hs256(claims()) } }, { welcome: false });
    const b = await pool.connect(
      hub.url,
      { transports: ["polling"], auth: { token: hs256(claims({ sub: "bob", aud: ["x", "other-app"] })) } },
      { welcome: false },
    );
    await join(a, "lobby");
    await join(b, "lobby");
    const got = [];
    b.on("chat", (...args) => got.push(args));
    await a.timeout(5000).emitWithAck("chat", "hello");
    await eventually(() => got.length === 1, 5000, "b receives chat");
    assert.deepEqual(got[0], ["hello"]);

    const sockets = await fetchSockets(mgmtUrl);
    const byId = new Map(sockets.map((s) => [s.id, s]));
    assert.equal(byId.get(a.id)?.claims?.sub, "alice");
    assert.equal(byId.get(a.id)?.claims?.name, "Alice");
    assert.equal(byId.get(a.id)?.claims?.iss, ISSUER);
    assert.equal(byId.get(b.id)?.claims?.sub, "bob");
  });

  it("a token in the access_token query parameter connects (polling and websocket)", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const s = pool.io(hub.url, { transports, query: { access_token: hs256(claims({ sub: "query" })) } });
      await connected(s, 10_000, `query token over ${transports}`);
    }
    const subs = (await fetchSockets(mgmtUrl)).map((s) => s.claims?.sub);
    assert.deepEqual(subs.filter((s) => s === "query").length, 2);
  });

  it("a token in Authorization: Bearer connects (polling, extraHeaders)", async () => {
    const s = pool.io(hub.url, {
      transports: ["polling"],
      extraHeaders: { Authorization: `Bearer ${hs256(claims({ sub: "header" }))}` },
    });
    await connected(s, 10_000, "bearer header");
    const mine = (await fetchSockets(mgmtUrl)).find((x) => x.id === s.id);
    assert.equal(mine?.claims?.sub, "header");
  });

  it("refusals carry a message and data.reason", async () => {
    const cases = [
      ["no token", {}, "token_missing", "authentication token missing"],
      ["empty token", { auth: { token: "" } }, "token_missing"],
      ["expired", { auth: { token: hs256(claims({ exp: now() - 30 })) } }, "token_expired", "authentication token expired"],
      ["wrong audience", { auth: { token: hs256(claims({ aud: "someone-else" })) } }, "bad_audience", "token audience not accepted"],
      ["no audience", { auth: { token: hs256(claims({ aud: undefined })) } }, "bad_audience"],
      ["wrong issuer", { auth: { token: hs256(claims({ iss: "https://evil.test" })) } }, "bad_issuer", "token issuer not accepted"],
      ["bad signature", { auth: { token: hs256(claims(), "not-the-secret") } }, "bad_signature", "invalid token signature"],
      ["malformed", { auth: { token: "not.a.jwt" } }, "token_malformed", "malformed authentication token"],
      ["garbage", { auth: { token: "garbage" } }, "token_malformed"],
      ["no exp", { auth: { token: hs256(claims({ exp: undefined })) } }, "token_malformed", "token has no exp claim"],
      ["exp as a string", { auth: { token: hs256(claims({ exp: "99999999999" })) } }, "token_malformed"],
      ["not yet valid", { auth: { token: hs256(claims({ nbf: now() + 600 })) } }, "token_not_yet_valid", "authentication token not valid yet"],
      [
        "alg none",
        { auth: { token: `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims())}.` } },
        "algorithm_not_allowed",
        "token algorithm not allowed",
      ],
      ["RS256 on an HS256-only hub", { auth: { token: rsa1.sign(claims()) } }, "algorithm_not_allowed"],
    ];
    for (const [what, opts, reason, message] of cases) {
      await refused(hub, opts, reason, message).catch((e) => {
        throw new Error(`${what}: ${e.message}`);
      });
    }
  });

  it("an expired token never connects, whichever way it comes", async () => {
    const expired = hs256(claims({ exp: now() - 1 }));
    await refused(hub, { transports: ["polling"], auth: { token: expired } }, "token_expired");
    await refused(hub, { query: { access_token: expired } }, "token_expired");
    await refused(hub, { transports: ["polling"], extraHeaders: { Authorization: `Bearer ${expired}` } }, "token_expired");
    // auth.token comes first: a valid query token does not rescue an expired auth.token
    await refused(hub, { auth: { token: expired }, query: { access_token: hs256(claims()) } }, "token_expired");
  });

  it("after a refusal the client can retry with a new token (socket.auth, connect())", async () => {
    const s = pool.io(hub.url, { transports: ["websocket"], auth: { token: hs256(claims({ aud: "nope" })) } });
    const err = await connectError(s);
    assert.equal(err.data.reason, "bad_audience");
    s.auth = { token: hs256(claims({ sub: "retry" })) };
    s.connect();
    await connected(s, 10_000, "second attempt");
    const mine = (await fetchSockets(mgmtUrl)).find((x) => x.id === s.id);
    assert.equal(mine?.claims?.sub, "retry");
  });
});

describe("claims in client room policies", () => {
  it("room patterns are filled from the verified claims; other namespaces need a token too", async () => {
    const url = `${hub.url}/private`;
    const alice = await pool.connect(url, { transports: ["websocket"], auth: { token: hs256(claims({ sub: "alice", org: "acme" })) } }, { welcome: false });
    const joinP = (room) => alice.timeout(5000).emitWithAck("roomcast:join", room);
    assert.deepEqual(await joinP("user:alice"), { ok: true });
    assert.deepEqual(await joinP("team:acme:general"), { ok: true });
    for (const room of ["user:bob", "team:other:general"]) {
      const res = await joinP(room);
      assert.equal(res.ok, false, `${room}: ${JSON.stringify(res)}`);
      assert.equal(res.error, "forbidden");
    }
    const s = pool.io(url, { transports: ["websocket"] });
    const err = await connectError(s);
    assert.equal(err.data.reason, "token_missing");
  });
});

describe("client auth with a JWKS", () => {
  it("RS256 and ES256 tokens with a known kid connect; claims are checked too", async () => {
    const r = await pool.connect(jwksHub.url, { transports: ["websocket"], auth: { token: rsa1.sign(claims({ sub: "rsa" })) } }, { welcome: false });
    const e = await pool.connect(jwksHub.url, { transports: ["polling"], auth: { token: ec1.sign(claims({ sub: "ec" })) } }, { welcome: false });
    await join(r, "room");
    await join(e, "room");
    const got = [];
    e.on("chat", (...args) => got.push(args));
    await r.timeout(5000).emitWithAck("chat", "over jwks");
    await eventually(() => got.length === 1, 5000, "ec client receives chat");
    await refused(jwksHub, { auth: { token: rsa1.sign(claims({ exp: now() - 60 })) } }, "token_expired");
    await refused(jwksHub, { auth: { token: ec1.sign(claims({ aud: "elsewhere" })) } }, "bad_audience");
    // the right kid but signed by another key
    const impostor = keyPair("RS256", "rsa-1");
    await refused(jwksHub, { auth: { token: impostor.sign(claims()) } }, "bad_signature");
    // HS256 is not allowed on this hub, whatever the secret
    await refused(jwksHub, { auth: { token: hs256(claims()) } }, "algorithm_not_allowed");
  });

  it("a new kid is picked up (key rotation); unknown kids refresh at most once per interval", async () => {
    await sleep(MIN_REFRESH_MS + 50);
    const hitsBefore = jwks.hits;
    // a kid nobody has: one refresh, then refused
    await refused(jwksHub, { auth: { token: keyPair("RS256", "ghost").sign(claims()) } }, "unknown_key", "unknown token signing key");
    assert.equal(jwks.hits, hitsBefore + 1, "one JWKS fetch for the unknown kid");
    // more unknown kids right away: no more fetches
    await refused(jwksHub, { auth: { token: keyPair("ES256", "ghost-2").sign(claims()) } }, "unknown_key");
    assert.equal(jwks.hits, hitsBefore + 1, "rate limited by jwksMinRefreshInterval");

    // rotation: the issuer publishes rsa-2 and drops rsa-1
    const rsa2 = keyPair("RS256", "rsa-2");
    jwks.keys = [rsa2.jwk, ec1.jwk];
    await sleep(MIN_REFRESH_MS + 50);
    const s = await pool.connect(jwksHub.url, { transports: ["websocket"], auth: { token: rsa2.sign(claims({ sub: "rotated" })) } }, { welcome: false });
    assert.ok(s.connected);
    assert.equal(jwks.hits, hitsBefore + 2, "the new kid caused one fetch");
    // rsa-1 left the set with that fetch
    await refused(jwksHub, { auth: { token: rsa1.sign(claims()) } }, "unknown_key");
  });

  it("a JWKS outage keeps the cached keys", async () => {
    await sleep(MIN_REFRESH_MS + 50);
    jwks.status = 503;
    try {
      const hitsBefore = jwks.hits;
      await refused(jwksHub, { auth: { token: keyPair("RS256", "during-outage").sign(claims()) } }, "unknown_key");
      assert.equal(jwks.hits, hitsBefore + 1, "the failed fetch happened");
      await pool.connect(jwksHub.url, { transports: ["websocket"], auth: { token: ec1.sign(claims()) } }, { welcome: false });
    } finally {
      jwks.status = 200;
    }
  });
});

describe("client auth with a JWKS that is down at start", () => {
  it("refuses with jwks_unavailable, then works once the JWKS answers", async () => {
    const down = await startJwks();
    down.status = 503;
    const key = keyPair("ES256", "late");
    down.keys = [key.jwk];
    const server = await startServer({
      bin: "main",
      args: [
        "--config",
        writeConfig({
          listen: "127.0.0.1:0",
          auth: {
            mode: "jwt",
            jwt: {
              algorithms: ["ES256"],
              jwksUrl: down.url,
              allowInsecureJwksUrl: true,
              jwksMinRefreshInterval: 200,
              jwksRefreshInterval: 600_000,
            },
          },
        }),
      ],
    });
    try {
      assert.ok(down.hits >= 1, "fetched at start");
      // Neither audience nor issuer: any token of the JWKS's keys would do; said at startup.
      assert.match(server.stderr(), /jwksUrl is set without both auth\.jwt\.audience and auth\.jwt\.issuer/);
      assert.match(server.stderr(), /plain http/);
      await refused(server, { auth: { token: key.sign(claims()) } }, "jwks_unavailable", "token signing keys unavailable");
      down.status = 200;
      await sleep(250);
      await pool.connect(server.url, { transports: ["websocket"], auth: { token: key.sign(claims()) } }, { welcome: false });
      server.assertHealthy("after the JWKS came up");
    } finally {
      pool.closeAll();
      await server.stop();
      down.server.close();
    }
  });
});

describe("disconnect on token expiry (auth.jwt.disconnectOnExpiry)", () => {
  it("a socket whose token expires is disconnected at its exp; a bystander with a longer token is not", async () => {
    const bystander = await pool.connect(hub.url, { transports: ["websocket"], auth: { token: hs256(claims({ sub: "long" })) } }, { welcome: false });
    const bystanderDisconnects = [];
    bystander.on("disconnect", (reason) => bystanderDisconnects.push(reason));
    const exp = now() + 3; // 2 to 3 s from now
    const shortLived = await pool.connect(
      hub.url,
      { transports: ["websocket"], auth: { token: hs256(claims({ sub: "short", exp })) } },
      { welcome: false },
    );
    const t0 = Date.now();
    const gone = new Promise((resolve) => shortLived.on("disconnect", (reason) => resolve({ reason, at: Date.now() })));
    await join(shortLived, "expiry");
    await join(bystander, "expiry");
    const { reason, at } = await Promise.race([gone, sleep(6000).then(() => ({ reason: "none", at: Date.now() }))]);
    // A namespace DISCONNECT from the server, as the server's disconnect(): the client does
    // not reconnect by itself.
    assert.equal(reason, "io server disconnect");
    assert.ok(at >= exp * 1000 - 50, `not before exp (${exp * 1000 - at} ms early)`);
    assert.ok(at - t0 <= 4500, `at its exp, within the sweep's slack (${at - t0} ms after connect)`);
    // The bystander is unaffected and still works.
    assert.deepEqual(bystanderDisconnects, []);
    assert.equal(bystander.connected, true);
    const got = [];
    bystander.on("chat", (...args) => got.push(args));
    const other = await pool.connect(hub.url, { transports: ["websocket"], auth: { token: hs256(claims({ sub: "other" })) } }, { welcome: false });
    await join(other, "expiry");
    await other.timeout(5000).emitWithAck("chat", "still here");
    await eventually(() => got.length === 1, 5000, "bystander receives chat");
    const subs = (await fetchSockets(mgmtUrl)).map((x) => x.claims?.sub);
    assert.ok(!subs.includes("short"), `the expired socket is gone: ${subs}`);
    assert.ok(subs.includes("long"));
    hub.assertHealthy("after a token expiry");
  });
});

describe("client auth configuration errors", () => {
  it("the binary refuses a JWKS over plain http without allowInsecureJwksUrl", async () => {
    await assert.rejects(
      startServer({
        bin: "main",
        args: [
          "--config",
          writeConfig({ listen: "127.0.0.1:0", auth: { mode: "jwt", jwt: { jwksUrl: "http://127.0.0.1:9/jwks.json" } } }),
        ],
      }),
      /allowInsecureJwksUrl/,
    );
  });

  it("the binary refuses to start with an unreadable key file", async () => {
    await assert.rejects(
      startServer({
        bin: "main",
        args: [
          "--config",
          writeConfig({ listen: "127.0.0.1:0", auth: { mode: "jwt", jwt: { hs256SecretFile: "/nonexistent/secret" } } }),
        ],
      }),
      /hs256SecretFile/,
    );
  });
});
