// A terminal chat for a hub with NO application behind it: `make run` (the built-in
// development configuration: client room policies and the relay on, every namespace open).
//
//   node hub-only-client.mjs NAME [ROOM] [HUB_URL]     (defaults: lobby, http://127.0.0.1:3000)
//
// Type a line to send it to ROOM with the policy event `roomcast:emit`. Commands:
//   /join ROOM          roomcast:join ROOM (and make it the current room)
//   /leave ROOM         roomcast:leave ROOM
//   /to ROOM TEXT       roomcast:emit to another room (refused unless you joined it)
//   /relay TEXT         a plain event, which the relay sends to everyone else in your rooms
//   /quit

import readline from "node:readline";
import { io } from "socket.io-client";

const [name, firstRoom = "lobby", hubUrl = "http://127.0.0.1:3000"] = process.argv.slice(2);
if (!name) {
  console.error("usage: node hub-only-client.mjs NAME [ROOM] [HUB_URL]");
  process.exit(2);
}
let room = firstRoom;
const socket = io(hubUrl, { reconnection: false });
const ask = (event, arg) => socket.timeout(5000).emitWithAck(event, arg);
const say = (to, text) => ask("roomcast:emit", { room: to, event: "chat", args: [{ from: name, room: to, text }] });

socket.once("connect", async () => {
  console.log(`* connected (socket ${socket.id})`);
  console.log(`* roomcast:join ${room} ->`, await ask("roomcast:join", room));
  // Read what you type once in the room.
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", onLine);
  rl.on("close", () => socket.disconnect());
});
socket.on("connect_error", (err) => {
  console.error(`* cannot connect to ${hubUrl}: ${err.message}`);
  process.exit(1);
});
socket.on("disconnect", (reason) => {
  console.error(`* disconnected: ${reason}`);
  process.exit(0);
});
// roomcast:emit delivers `chat` events; the relay delivers whatever event name was sent.
socket.on("chat", (m) => console.log(`[${m.room}] ${m.from}: ${m.text}`));
socket.on("relayed", (m) => console.log(`(relay) ${m.from}: ${m.text}`));

async function onLine(line) {
  const [cmd, arg = "", ...rest] = line.trim().split(/\s+/);
  try {
    if (cmd === "/join") {
      const res = await ask("roomcast:join", arg);
      if (res.ok) room = arg;
      console.log(`* roomcast:join ${arg} ->`, res);
    } else if (cmd === "/leave") {
      console.log(`* roomcast:leave ${arg} ->`, await ask("roomcast:leave", arg));
    } else if (cmd === "/to") {
      console.log(`* roomcast:emit to ${arg} ->`, await say(arg, rest.join(" ")));
    } else if (cmd === "/relay") {
      const text = line.trim().slice("/relay".length).trim();
      console.log("* relayed ->", await ask("relayed", { from: name, text }));
    } else if (cmd === "/quit") {
      socket.disconnect();
    } else if (line.trim()) {
      const res = await say(room, line.trim());
      if (!res.ok) console.log("* refused:", res);
    }
  } catch (err) {
    console.log(`* no answer: ${err.message}`);
  }
}
