// A typical socket.io chat: a nickname middleware, channels (rooms), a typing indicator,
// private messages by socket id and a user list from fetchSockets. It runs standalone
// (`node server.mjs`: clients connect to this process) and, with ROOMCAST_APP_ENDPOINT and
// ROOMCAST_APP_TOKEN set, as the application of a Roomcast hub (clients connect to the hub;
// run as many copies as you like). The only difference is the `useRoomcast` line.
//
//   PORT          where the page (and, standalone, socket.io) is served (default 3000);
//                 /healthz answers 200 while linked to the hub (or standalone)
//   HUB_URL       with a hub: the URL the page's clients connect to (the hub's Service)

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Server } from "socket.io";
import { useRoomcast } from "@roomcast/socket.io";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const PORT = Number(process.env.PORT ?? 3000);
const HOST = process.env.HOST ?? "127.0.0.1";
const onHub = Boolean(process.env.ROOMCAST_APP_ENDPOINT);

const io = new Server();
// On a hub: the one added line (the trust bundle comes from ROOMCAST_APP_CA_FILE).
const link = onHub ? await useRoomcast(io, { endpoint: process.env.ROOMCAST_APP_ENDPOINT, token: process.env.ROOMCAST_APP_TOKEN }) : null;

const MAX_NAME = 32;
const MAX_TEXT = 2000;
const channelOk = (c) => typeof c === "string" && /^#[a-z0-9-]{1,32}$/.test(c);

io.use((socket, next) => {
  const name = socket.handshake.auth?.name;
  if (typeof name !== "string" || !name.trim() || name.length > MAX_NAME) {
    return next(new Error("a name of 1 to 32 characters is required"));
  }
  socket.data.name = name.trim();
  next();
});

/** Who is in a channel, from every server (fetchSockets reaches the whole hub). */
async function users(channel) {
  const sockets = await io.in(channel).fetchSockets();
  return sockets.map((s) => ({ id: s.id, name: s.data.name })).sort((a, b) => a.name.localeCompare(b.name));
}

io.on("connection", async (socket) => {
  const name = socket.data.name;
  await socket.join("#general");
  socket.to("#general").emit("joined", { channel: "#general", name, id: socket.id });

  socket.on("join", async (channel, ack) => {
    if (!channelOk(channel) || typeof ack !== "function") return;
    await socket.join(channel);
    socket.to(channel).emit("joined", { channel, name, id: socket.id });
    ack({ channel, users: await users(channel) });
  });

  socket.on("leave", async (channel) => {
    if (!channelOk(channel)) return;
    await socket.leave(channel);
    io.to(channel).emit("left", { channel, name, id: socket.id });
  });

  socket.on("message", ({ channel, text } = {}) => {
    if (!channelOk(channel) || !socket.rooms.has(channel) || typeof text !== "string") return;
    io.to(channel).emit("message", { channel, from: name, fromId: socket.id, text: text.slice(0, MAX_TEXT) });
  });

  // Typing indicators may be dropped under load: volatile.
  socket.on("typing", (channel) => {
    if (channelOk(channel) && socket.rooms.has(channel)) socket.to(channel).volatile.emit("typing", { channel, name });
  });

  socket.on("private", ({ to, text } = {}, ack) => {
    if (typeof to !== "string" || typeof text !== "string") return;
    io.to(to).emit("private", { from: name, fromId: socket.id, text: text.slice(0, MAX_TEXT) });
    if (typeof ack === "function") ack({ ok: true });
  });

  socket.on("users", async (channel, ack) => {
    if (channelOk(channel) && typeof ack === "function") ack(await users(channel));
  });

  socket.on("disconnecting", () => {
    for (const room of socket.rooms) {
      if (channelOk(room)) socket.to(room).emit("left", { channel: room, name, id: socket.id });
    }
  });
});

// The page; standalone, socket.io is served here too.
const page = fs.readFileSync(path.join(HERE, "public/index.html"), "utf8");
const bundle = path.join(path.dirname(require.resolve("socket.io-client/package.json")), "dist/socket.io.min.js");
const server = http.createServer((req, res) => {
  if (req.url === "/" || req.url.startsWith("/?")) {
    const hub = onHub ? process.env.HUB_URL ?? "" : "";
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page.replace("__HUB_URL__", JSON.stringify(hub)));
  } else if (req.url === "/healthz") {
    // Ready while linked to at least one hub node (a readiness probe).
    const ok = !link || link.nodes().some((n) => n.state === "open");
    res.writeHead(ok ? 200 : 503).end(ok ? "ok\n" : "no live app link\n");
  } else if (req.url === "/socket.io.min.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    fs.createReadStream(bundle).pipe(res);
  } else {
    res.writeHead(404).end();
  }
});
if (!onHub) io.attach(server);
server.listen(PORT, HOST, () => {
  const { port } = server.address();
  console.log(`sio-chat ${onHub ? `on the hub ${process.env.HUB_URL ?? ""}` : "standalone"}: http://${HOST}:${port}/`);
});

process.on("SIGTERM", async () => {
  server.close();
  await io.close?.();
  process.exit(0);
});
