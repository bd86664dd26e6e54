// A terminal client for the example chat, using the stock socket.io-client.
//
//   node client.mjs NAME [HUB_URL]          (HUB_URL defaults to http://127.0.0.1:3000)
//   ROOMCAST_JWT=<token> node client.mjs    (when the hub checks JWTs: the name is the token's sub)
//
// Type a line to say it in the current room. Commands:
//   /join ROOM    join ROOM and make it the current room
//   /leave ROOM   leave ROOM
//   /room ROOM    make ROOM the current room (you must have joined it)
//   /who [ROOM]   who is in ROOM (default: the current room)
//   /quit

import readline from "node:readline";
import { io } from "socket.io-client";

const [name, hubUrl = "http://127.0.0.1:3000"] = process.argv.slice(2);
const token = process.env.ROOMCAST_JWT;
if (!name && !token) {
  console.error("usage: node client.mjs NAME [HUB_URL]");
  process.exit(2);
}

const socket = io(hubUrl, { auth: token ? { token } : { name }, reconnection: false });
let room = "lobby";
const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
// In a terminal, incoming lines are printed above the prompt `[room] `.
const tty = process.stdout.isTTY;
const prompt = () => {
  if (!tty) return;
  rl.setPrompt(`[${room}] `);
  rl.prompt(true);
};
const show = (line) => {
  if (tty) {
    readline.clearLine(process.stdout, 0);
    readline.cursorTo(process.stdout, 0);
  }
  console.log(line);
  prompt();
};
const ask = (event, arg) => socket.timeout(5000).emitWithAck(event, arg);
const failed = (res) => (res?.ok ? null : `! ${res?.error}: ${res?.message}`);

socket.on("connect", () => show(`* connected as ${name ?? "(token)"} (socket ${socket.id}), you are in lobby`));
socket.on("connect_error", (err) => {
  console.error(`* refused: ${err.message}${err.data ? " " + JSON.stringify(err.data) : ""}`);
  process.exit(1);
});
socket.on("disconnect", (reason) => {
  console.error(`* disconnected: ${reason}`);
  process.exit(0);
});
socket.on("message", (m) => show(`[${m.room}] ${m.from}: ${m.text}`));
socket.on("left", (m) => show(`* ${m.name} left`));

rl.on("line", async (line) => {
  const [cmd, ...rest] = line.trim().split(/\s+/);
  const arg = rest.join(" ");
  try {
    if (cmd === "/join" && arg) {
      const res = await ask("join", arg);
      if (res?.ok) room = arg;
      show(failed(res) ?? `* joined ${arg}`);
    } else if (cmd === "/leave" && arg) {
      show(failed(await ask("leave", arg)) ?? `* left ${arg}`);
    } else if (cmd === "/room" && arg) {
      room = arg;
      show(`* now talking in ${room}`);
    } else if (cmd === "/who") {
      const res = await ask("who", arg || room);
      show(failed(res) ?? `* in ${res.room}: ${res.names.join(", ")}`);
    } else if (cmd === "/quit") {
      socket.disconnect();
    } else if (line.trim()) {
      const res = await ask("message", { room, text: line.trim() });
      const error = failed(res);
      if (error) show(error);
    }
  } catch (err) {
    show(`! no answer: ${err.message}`);
  }
  prompt();
});
rl.on("close", () => socket.disconnect());
