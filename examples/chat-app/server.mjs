// Roomcast example application: a chat with rooms, auth and acks.
//
// It has no Socket.IO server of its own. Clients connect to the Roomcast hub; the hub posts
// their connect, events and disconnect to this app as CloudEvents (webhooks), and the app
// acts through the hub's management REST API (join rooms, emit, fetch sockets).
//
//   WEBHOOK_SECRET=... ROOMCAST_TOKEN=... node server.mjs
//
// Environment:
//   PORT            port of this app (default 8080; 0 picks a free one)
//   HOST            address to bind (default 127.0.0.1)
//   ROOMCAST_API    the hub's management API (default http://127.0.0.1:3001)
//   ROOMCAST_TOKEN  bearer token of the management API (required)
//   WEBHOOK_SECRET  key of the X-Roomcast-Signature HMAC (required)
//   HUB_URL         the hub's client URL, given to the browser page (default http://127.0.0.1:3000)
//
// Protocol (what clients do):
//   connect with auth {name}         -> accepted with data {name}, in room "lobby"
//                                       (with JWT auth on the hub, the token's `sub` is the name)
//   emit("join", room, ack)          -> ack {ok: true}
//   emit("leave", room, ack)         -> ack {ok: true}
//   emit("message", {room, text}, ack) -> everyone in the room (sender included) gets
//                                       "message" {from, room, text, at}; ack {ok: true}
//   emit("who", room, ack)           -> ack {ok: true, room, names: [...]}
//   disconnect                       -> the others in its rooms get "left" {name}
// Refusals are acks {ok: false, error, message}.

import crypto from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import express from "express";

const HERE = path.dirname(fileURLToPath(import.meta.url));

const MAX_NAME = 32;
const MAX_ROOM = 64;
const MAX_TEXT = 2000;
const API_TIMEOUT_MS = 3000;

const CE_CONNECT = "dev.roomcast.socket.connect";
const CE_EVENT = "dev.roomcast.socket.event";
const CE_DISCONNECT = "dev.roomcast.socket.disconnect";

/** Thrown by event handlers to refuse with an ack {ok: false, error, message}. */
class Refusal extends Error {
  constructor(error, message) {
    super(message);
    this.error = error;
  }
}

/** How old a signed webhook may be, and how long its id is remembered against replays. */
export const REPLAY_WINDOW_S = 300;

/**
 * Checks the hub's signature: `x-roomcast-signature: v1=<hex>`, the HMAC-SHA256 under the
 * secret of `v1:<x-roomcast-timestamp>:<ce-id>:<ce-type>:<body>`, compared in constant time.
 * Refuses timestamps more than REPLAY_WINDOW_S away from now, and an id already seen within
 * the window (`seen`: a Map of id to expiry, pruned here). Returns null when valid, else why.
 */
export function verifyWebhook(secret, rawBody, headers, seen, now = Date.now() / 1000) {
  const signature = headers["x-roomcast-signature"];
  const timestamp = Number(headers["x-roomcast-timestamp"]);
  const id = headers["ce-id"];
  const type = headers["ce-type"];
  if (typeof signature !== "string" || !signature.startsWith("v1=")) return "no signature";
  if (!Number.isInteger(timestamp) || typeof id !== "string" || typeof type !== "string") return "missing attributes";
  if (Math.abs(now - timestamp) > REPLAY_WINDOW_S) return "stale timestamp";
  const signed = Buffer.concat([Buffer.from(`v1:${timestamp}:${id}:${type}:`), rawBody]);
  const expected = crypto.createHmac("sha256", secret).update(signed).digest();
  const given = Buffer.from(signature.slice("v1=".length), "hex");
  // timingSafeEqual needs equal lengths; a wrong length is a wrong signature.
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return "bad signature";
  for (const [old, expiry] of seen) if (expiry < now) seen.delete(old);
  if (seen.has(id)) return "replayed";
  seen.set(id, now + REPLAY_WINDOW_S);
  return null;
}

/** A client of the hub's management API. */
export function hubApi(base, token) {
  async function call(method, route, body) {
    const res = await fetch(base.replace(/\/$/, "") + route, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    const text = await res.text();
    if (!res.ok) {
      // Errors are application/problem+json: {type, title, status, detail}.
      let detail = text;
      try {
        detail = JSON.parse(text).detail ?? text;
      } catch {}
      throw new Error(`${method} ${route}: HTTP ${res.status}: ${detail}`);
    }
    return text ? JSON.parse(text) : null;
  }
  const ns = (namespace) => `/v1/namespaces/${encodeURIComponent(namespace)}`;
  return {
    emit: (namespace, body) => call("POST", `${ns(namespace)}/emit`, body),
    join: (namespace, body) => call("POST", `${ns(namespace)}/sockets/join`, body),
    leave: (namespace, body) => call("POST", `${ns(namespace)}/sockets/leave`, body),
    fetchSockets: (namespace, body) => call("POST", `${ns(namespace)}/sockets/fetch`, body),
  };
}

function cleanName(value) {
  if (typeof value === "number") value = String(value);
  if (typeof value !== "string") return null;
  const name = value.trim();
  return name.length > 0 && name.length <= MAX_NAME ? name : null;
}

function roomArg(value) {
  if (typeof value !== "string" || value.trim() === "" || value.length > MAX_ROOM) {
    throw new Refusal("bad_request", `a room name (1 to ${MAX_ROOM} characters) is expected`);
  }
  return value.trim();
}

/**
 * Builds the Express app. `config`: {secret, api: {emit, join, leave, fetchSockets}, hubUrl,
 * log}.
 */
export function createApp({ secret, api, hubUrl = "http://127.0.0.1:3000", log = console }) {
  // --- connect: who may join, with which data and rooms --------------------------------
  function onConnect(body) {
    // With JWT auth on the hub, `claims` holds the verified token and `sub` is the name;
    // otherwise the client says who it is in its `auth` payload.
    const name = body.claims ? cleanName(body.claims.sub) : cleanName(body.auth?.name);
    if (!name) {
      return {
        accept: false,
        message: body.claims
          ? "the token has no usable sub claim"
          : `a name is required: connect with auth {name} (1 to ${MAX_NAME} characters)`,
        data: { reason: "name_required" },
      };
    }
    return { accept: true, data: { name }, rooms: ["lobby"] };
  }

  // --- events: the answer becomes the client's ack -------------------------------------
  const events = {
    async join({ namespace, socketId }, room) {
      room = roomArg(room);
      await api.join(namespace, { socketIds: [socketId], join: [room] });
      return { ok: true };
    },

    async leave({ namespace, socketId }, room) {
      room = roomArg(room);
      await api.leave(namespace, { socketIds: [socketId], leave: [room] });
      return { ok: true };
    },

    async message({ namespace, socketId, data }, msg) {
      const room = roomArg(msg?.room);
      const text = msg?.text;
      if (typeof text !== "string" || text.trim() === "" || text.length > MAX_TEXT) {
        throw new Refusal("bad_request", `a text (1 to ${MAX_TEXT} characters) is expected`);
      }
      // Only members may talk in a room: ask the hub which rooms the sender is in.
      const { sockets } = await api.fetchSockets(namespace, { socketIds: [socketId] });
      if (!sockets[0]?.rooms.includes(room)) {
        throw new Refusal("not_in_room", `join ${JSON.stringify(room)} first`);
      }
      const message = { from: data?.name, room, text, at: new Date().toISOString() };
      await api.emit(namespace, { event: "message", args: [message], rooms: [room] });
      return { ok: true };
    },

    async who({ namespace }, room) {
      room = roomArg(room);
      const { sockets } = await api.fetchSockets(namespace, { rooms: [room] });
      const names = [...new Set(sockets.map((s) => s.data?.name).filter(Boolean))].sort();
      return { ok: true, room, names };
    },
  };

  async function onEvent(body) {
    const handler = Object.hasOwn(events, body.event) ? events[body.event] : null;
    let answer;
    try {
      if (!handler) throw new Refusal("unknown_event", `unknown event ${JSON.stringify(body.event)}`);
      answer = await handler(body, ...(body.args ?? []));
    } catch (err) {
      if (err instanceof Refusal) {
        answer = { ok: false, error: err.error, message: err.message };
      } else {
        log.error(`event ${body.event} of ${body.socketId} failed: ${err.message}`);
        answer = { ok: false, error: "internal", message: "the chat could not do that, try again" };
      }
    }
    // An array is the list of ack arguments; wrap so the client's callback gets one object.
    // No ack asked for: answer nothing (204).
    return body.ackRequested ? [answer] : null;
  }

  // --- disconnect: tell the others --------------------------------------------------------
  async function onDisconnect(body) {
    // `rooms` starts with the socket's own room (its id); the others are chat rooms.
    const rooms = (body.rooms ?? []).filter((r) => r !== body.socketId);
    if (rooms.length === 0 || !body.data?.name) return;
    // A failure here answers 5xx, so the hub retries (disconnectRetries).
    await api.emit(body.namespace, { event: "left", args: [{ name: body.data.name }], rooms });
  }

  const app = express();
  app.disable("x-powered-by");
  const seenWebhooks = new Map();

  // The webhook. The raw body is needed to check the signature, so no JSON parser before it.
  app.post("/roomcast", express.raw({ type: () => true, limit: "2mb" }), async (req, res) => {
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const refused = verifyWebhook(secret, raw, req.headers, seenWebhooks);
    if (refused) {
      log.warn(`refused a webhook from ${req.ip}: ${refused}`);
      return res.status(401).json({ error: refused });
    }
    let body;
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch {
      return res.status(400).json({ error: "body is not JSON" });
    }
    switch (req.get("ce-type")) {
      case CE_CONNECT:
        return res.json(onConnect(body));
      case CE_EVENT: {
        const answer = await onEvent(body);
        return answer === null ? res.status(204).end() : res.json(answer);
      }
      case CE_DISCONNECT:
        await onDisconnect(body);
        return res.status(204).end();
      default:
        return res.status(400).json({ error: `unknown ce-type ${req.get("ce-type")}` });
    }
  });

  // A tiny browser client (optional): the page, the socket.io client bundle, where the hub is.
  app.get("/config.json", (_req, res) => res.json({ hubUrl }));
  app.get("/socket.io.min.js", (_req, res) =>
    res.sendFile(path.join(HERE, "node_modules/socket.io-client/dist/socket.io.min.js")),
  );
  app.use(express.static(path.join(HERE, "public")));
  app.get("/healthz", (_req, res) => res.type("text").send("ok"));

  // Errors (e.g. the hub's API is down while handling a disconnect) answer 502.
  app.use((err, req, res, _next) => {
    log.error(`${req.method} ${req.path}: ${err.message}`);
    if (!res.headersSent) res.status(err.status && err.status < 500 ? err.status : 502).json({ error: err.message });
  });
  return app;
}

// Run as a program (not when imported).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const missing = ["WEBHOOK_SECRET", "ROOMCAST_TOKEN"].filter((k) => !env[k]);
  if (missing.length) {
    console.error(`chat-app: set ${missing.join(" and ")} (the same values as in hub.yaml)`);
    process.exit(2);
  }
  const apiBase = env.ROOMCAST_API || "http://127.0.0.1:3001";
  const app = createApp({
    secret: env.WEBHOOK_SECRET,
    api: hubApi(apiBase, env.ROOMCAST_TOKEN),
    hubUrl: env.HUB_URL || "http://127.0.0.1:3000",
  });
  const host = env.HOST || "127.0.0.1";
  const server = app.listen(Number(env.PORT ?? 8080), host, (err) => {
    if (err) {
      console.error(`chat-app: cannot listen on ${host}:${env.PORT ?? 8080}: ${err.message}`);
      process.exit(1);
    }
    const { address, port } = server.address();
    // Scripts and tests wait for this line.
    console.log(`chat-app listening on http://${address}:${port} (webhook /roomcast, hub API ${apiBase})`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
