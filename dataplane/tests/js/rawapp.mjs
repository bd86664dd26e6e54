// A raw app instance for the app link tests (proto/app.proto over @grpc/grpc-js, not the
// SDK). Imported by applink.test.mjs; run as a script (`node rawapp.mjs ADDR TOKEN INSTANCE`)
// it links, prints `welcomed`, and serves until killed: a separate process the tests can stop.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { eventually } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO = path.join(HERE, "../../proto/app.proto");
export const pkg = grpc.loadPackageDefinition(
  protoLoader.loadSync(PROTO, { longs: Number, defaults: true, oneofs: true }),
).roomcast.app.v1;

/**
 * A raw app instance: links to `addr`, accepts every namespace CONNECT (socket id from the
 * session's suffix), echoes `echo` events, joins rooms on `join` events (answering `joined`
 * once the hub confirms), and records what the hub sends.
 */
export function rawApp(addr, { token, instance = `app-${crypto.randomBytes(3).toString("hex")}`, caFile } = {}) {
  // TLS against the hub's CA when given: any member's certificate (the tests dial by address).
  const creds = caFile
    ? grpc.credentials.createSsl(fs.readFileSync(caFile), null, null, { checkServerIdentity: () => undefined })
    : grpc.credentials.createInsecure();
  const client = new pkg.AppLink(addr, creds);
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  md.set("roomcast-app-instance", instance);
  const call = client.link(md);
  const app = { instance, call, got: [], sessions: new Map(), sockets: new Map(), error: null, ended: false, nextRequest: 1, replies: new Map() };
  app.send = (...messages) => call.write({ messages });
  app.request = (message) => {
    const id = app.nextRequest++;
    const key = Object.keys(message)[0];
    message[key].request = id;
    return new Promise((resolve) => {
      app.replies.set(id, resolve);
      app.send(message);
    });
  };
  app.of = (kind) => app.got.filter((m) => m.kind === kind).map((m) => m[kind]);
  call.on("error", (e) => (app.error = e));
  call.on("end", () => (app.ended = true));
  call.on("data", (batch) => {
    for (const m of batch.messages) {
      app.got.push(m);
      if (m.kind === "open") app.sessions.set(m.open.session, m.open);
      if (m.kind === "reply") app.replies.get(m.reply.request)?.(m.reply);
      if (m.kind !== "packet" || m.packet.text == null) continue;
      const { session, text } = m.packet;
      if (text.startsWith("0")) {
        const sid = crypto.randomBytes(12).toString("base64url") + app.sessions.get(session).socketIdSuffix;
        app.sockets.set(session, sid);
        app.send({ join: { session, namespace: "/", socketId: sid, rooms: [sid] } }, { packet: { session, text: `0{"sid":"${sid}"}` } });
      } else if (text.startsWith('2["echo"')) {
        app.send({ packet: { session, text } });
      } else if (text.startsWith('2["join"')) {
        const room = JSON.parse(text.slice(1))[1];
        app.request({ join: { session, namespace: "/", socketId: app.sockets.get(session), rooms: [room] } }).then(() =>
          app.send({ packet: { session, text: `2["joined",${JSON.stringify(room)}]` } }),
        );
      }
    }
  });
  app.welcome = eventually(() => app.of("welcome").length > 0, 5000, `${instance} welcomed`).then(() => app.of("welcome")[0]);
  app.welcome.catch(() => {}); // awaited by the tests that expect one
  app.close = () => {
    call.end();
    client.close();
  };
  return app;
}


if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [addr, token, instance] = process.argv.slice(2);
  const app = rawApp(addr, { token, instance });
  await app.welcome;
  console.log("welcomed");
}
