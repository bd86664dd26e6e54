// Benchmark peer: stock Node socket.io 4.8 (ws + bufferutil), same behaviour as
// bench/socketioxide-server:
//   join(room, ack?)            -> socket joins room; ack("ok")
//   publish(room, payload, ack?) -> io.to(room).emit("message", payload); ack("ok")
// Usage: node server.mjs [PORT]   (default 3001). Listens on 127.0.0.1 only and prints
// "listening on http://127.0.0.1:PORT" once ready. Heartbeats: socket.io defaults
// (pingInterval 25 s, pingTimeout 20 s) unless BENCH_PING_INTERVAL_MS is set.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3001);
const httpServer = createServer();
// BENCH_PING_INTERVAL_MS only shortens heartbeats for smoke runs; benchmarks use the default.
const pingInterval = Number(process.env.BENCH_PING_INTERVAL_MS ?? 25000);
const io = new Server(httpServer, {
  transports: ["polling", "websocket"],
  serveClient: false,
  pingInterval,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (room, payload, ack) => {
    io.to(String(room)).emit("message", payload);
    if (typeof ack === "function") ack("ok");
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${port}`);
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
