// Benchmark peer: stock Node socket.io 4.8 (ws + bufferutil). Same behaviour as
// bench/socketioxide-server and as the relay app built into roomcast-dataplane:
//   join(room, ack?)  -> the socket joins room; ack({ ok: true })
//   any other event   -> relayed with its arguments to every other socket in the sender's
//                        rooms (the whole namespace when it joined none); ack({ ok: true })
// Usage: node server.mjs [PORT] [HOST]   (default 3001, 127.0.0.1; HOST must be a loopback
// address, or the one BENCH_NETNS_HOST names). Prints "listening on http://HOST:PORT" once
// ready. Heartbeats: socket.io defaults (pingInterval 25 s, pingTimeout 20 s) unless
// BENCH_PING_INTERVAL_MS is set.
// With BENCH_REDIS_URL (e.g. redis://127.0.0.1:6390) several of these processes form one
// server through the official Redis adapter (@socket.io/redis-adapter, node-redis clients):
// the multi-node setup socket.io users run, compared with a Roomcast cluster.
// With BENCH_WS_ENGINE=eiows the WebSocket engine is eiows (native, optional: bench/run.sh
// installs it when it builds) instead of ws.
// With BENCH_ROOMCAST_APP_ENDPOINT (and BENCH_ROOMCAST_APP_TOKEN) it serves a Roomcast hub's
// clients through the Node SDK (@roomcast/socket.io, from sdk/node) instead of listening.
// With BENCH_RECOVERY_MS, connection state recovery is on (in-memory adapter only, as socket.io
// supports it) with that maxDisconnectionDuration; SIGUSR2 prints "sessions N" (the sessions
// kept for recovery) on stdout.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3001);
const host = process.argv[3] ?? "127.0.0.1";
// bench/run.sh's netns scenario names the address it gave this process's namespace.
if (!host.startsWith("127.") && host !== process.env.BENCH_NETNS_HOST)
  throw new Error(`${host} is not a loopback address`);
const httpServer = createServer();
// BENCH_PING_INTERVAL_MS only shortens heartbeats for smoke runs; benchmarks use the default.
const pingInterval = Number(process.env.BENCH_PING_INTERVAL_MS ?? 25000);
const wsEngine =
  process.env.BENCH_WS_ENGINE === "eiows" ? (await import("eiows")).default.Server : undefined;
const io = new Server(httpServer, {
  transports: ["polling", "websocket"],
  serveClient: false,
  pingInterval,
  ...(wsEngine ? { wsEngine } : {}),
  ...(process.env.BENCH_RECOVERY_MS
    ? { connectionStateRecovery: { maxDisconnectionDuration: Number(process.env.BENCH_RECOVERY_MS) } }
    : {}),
});
process.on("SIGUSR2", () => console.log(`sessions ${io.of("/").adapter.sessions?.size ?? 0}`));

if (process.env.BENCH_REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.BENCH_REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.onAny((event, ...args) => {
    if (event === "join") return;
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    const rooms = [...socket.rooms].filter((r) => r !== socket.id);
    const target = rooms.length ? socket.to(rooms) : socket.broadcast;
    target.emit(event, ...args);
    if (ack) ack({ ok: true });
  });
});

if (process.env.BENCH_ROOMCAST_APP_ENDPOINT) {
  // The app scenario: the same app code serving a Roomcast hub's clients through the Node SDK
  // (the one added line of a port); it accepts no client connection itself.
  const { useRoomcast } = await import("@roomcast/socket.io");
  await useRoomcast(io, { endpoint: process.env.BENCH_ROOMCAST_APP_ENDPOINT, token: process.env.BENCH_ROOMCAST_APP_TOKEN });
  console.log("linked to the hub");
} else {
  httpServer.listen(port, host, () => {
    console.log(`listening on http://${host}:${port}`);
  });
}

const stop = () => {
  io.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
