// The socket.io API tests, run unchanged against a standalone socket.io Server and against app
// instances serving a Roomcast hub (env.mjs). An app may be several servers (the hub runs two
// instances): setup(io) runs on each, the test acts through the first (app.ios[0]), and
// clients are spread over the hub's nodes (app.url(k)).

import { describe, test, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  ClientPool,
  connected,
  connectError,
  eventually,
  once,
  sleep,
  toBuffer,
} from "../../../../dataplane/tests/js/harness.mjs";

/** Time to wait for something that must not arrive. */
const SETTLE_MS = 300;

/** Records every event a client gets as [event, ...args]. */
function record(s) {
  s.got = [];
  s.onAny((event, ...args) => s.got.push([event, ...args]));
  return s;
}

const events = (s, name) => s.got.filter(([e]) => e === name).map(([, ...args]) => args);

export function apiSuite(env) {
  describe(`socket.io API: ${env.name}`, () => {
    const pool = new ClientPool();
    let app = null;

    async function start(setup) {
      app = await env.start(setup);
      return app;
    }

    async function client(k = 0, opts = {}, nsp = "") {
      const s = pool.io(app.url(k) + nsp, opts);
      await connected(s, 10_000, `client ${k}${nsp}`);
      return s;
    }

    afterEach(async () => {
      pool.closeAll();
      if (app) await app.stop();
      app = null;
    });

    test("middlewares accept, or reject with data; socket.data set by a middleware", async () => {
      await start((io) => {
        io.use((socket, next) => {
          if (socket.handshake.auth.token !== "good") {
            const err = new Error("not authorized");
            err.data = { code: 4001, hint: "use a good token" };
            return next(err);
          }
          socket.data.user = "alice";
          next();
        });
        io.use((socket, next) => {
          socket.data.second = true;
          next();
        });
        io.on("connection", (socket) => socket.emit("hello", socket.data, socket.nsp.name));
      });
      const bad = pool.io(app.url(0), { auth: { token: "bad" } });
      const err = await connectError(bad);
      assert.equal(err.message, "not authorized");
      assert.deepEqual(err.data, { code: 4001, hint: "use a good token" });
      assert.equal(bad.connected, false);

      const good = pool.io(app.url(1), { auth: { token: "good" } });
      const hello = once(good, "hello");
      await connected(good);
      assert.deepEqual(await hello, [{ user: "alice", second: true }, "/"]);
    });

    test("a middleware joins rooms before the connection: accepted, the rooms work; refused, nothing is left", async () => {
      await start((io) => {
        io.use(async (socket, next) => {
          await socket.join(["from-mw", `user:${socket.handshake.auth.user}`]);
          if (socket.handshake.auth.user === "mallory") return next(new Error("banned"));
          next();
        });
        io.on("connection", (socket) => socket.emit("rooms", [...socket.rooms].filter((r) => r !== socket.id).sort()));
      });
      const m = pool.io(app.url(0), { auth: { user: "mallory" } });
      assert.equal((await connectError(m)).message, "banned");
      const a = pool.io(app.url(1), { auth: { user: "alice" } });
      const rooms = once(a, "rooms");
      await connected(a);
      assert.deepEqual(await rooms, [["from-mw", "user:alice"]]);
      const io = app.ios[0];
      assert.deepEqual((await io.in("from-mw").fetchSockets()).map((s) => s.id), [a.id]);
      assert.deepEqual(await io.in("user:mallory").fetchSockets(), []);
      const got = once(a, "to-user");
      io.to("user:alice").emit("to-user", 1);
      assert.deepEqual(await got, [1]);
      record(a);
      io.to("user:mallory").emit("to-mallory");
      io.to("from-mw").emit("to-all-mw");
      await eventually(() => events(a, "to-all-mw").length === 1, 5000, "to-all-mw");
      await sleep(SETTLE_MS);
      assert.deepEqual(events(a, "to-mallory"), []);
    });

    test("static, dynamic (function) and regex namespaces; namespace middlewares; unknown namespaces refused", async () => {
      await start((io) => {
        const where = (socket) => socket.emit("where", socket.nsp.name, socket.handshake.auth);
        io.of("/admin").on("connection", where);
        io.of(/^\/room-\d+$/).on("connection", where);
        io.of((name, auth, next) => next(null, name.startsWith("/dyn-") && auth.ok === true)).on("connection", where);
        io.of("/guarded")
          .use((socket, next) => next(Object.assign(new Error("nope"), { data: { nsp: socket.nsp.name } })))
          .on("connection", where);
      });
      const cases = [
        ["/admin", {}, "/admin"],
        ["/room-42", {}, "/room-42"],
        ["/dyn-abc", { ok: true }, "/dyn-abc"],
      ];
      let k = 0;
      for (const [nsp, auth, name] of cases) {
        const s = pool.io(app.url(k++) + nsp, { auth });
        const where = once(s, "where", 5000, `where on ${nsp}`);
        await connected(s, 10_000, nsp);
        assert.deepEqual(await where, [name, auth], nsp);
      }
      for (const [nsp, auth, message, data] of [
        ["/dyn-x", {}, "Invalid namespace", undefined],
        ["/room-x", {}, "Invalid namespace", undefined],
        ["/nothing", {}, "Invalid namespace", undefined],
        ["/guarded", {}, "nope", { nsp: "/guarded" }],
      ]) {
        const s = pool.io(app.url(k++) + nsp, { auth });
        const err = await connectError(s);
        assert.equal(err.message, message, nsp);
        assert.deepEqual(err.data, data, nsp);
      }
      // Two namespaces on one connection (a Manager multiplexes them).
      const m = pool.manager(app.url(0));
      const a = m.socket("/");
      const b = m.socket("/admin");
      pool.track(a);
      pool.track(b);
      const whereB = once(b, "where");
      await Promise.all([connected(a), connected(b)]);
      assert.deepEqual(await whereB, ["/admin", {}]);
      assert.notEqual(a.id, b.id);
    });

    test("handshake (query, headers, auth, url, address) and socket.data", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.data.n = 1;
          socket.on("info", (cb) =>
            cb({
              query: socket.handshake.query.foo,
              header: socket.handshake.headers["x-custom"],
              auth: socket.handshake.auth,
              url: socket.handshake.url.split("?")[0],
              urlHasQuery: /[?&]foo=bar(&|$)/.test(socket.handshake.url),
              address: /^(::ffff:)?127\./.test(socket.handshake.address),
              secure: socket.handshake.secure,
              xdomain: socket.handshake.xdomain,
              protocol: socket.conn.protocol,
              issued: typeof socket.handshake.issued,
              data: socket.data,
            }),
          );
          socket.on("set", (v, cb) => {
            socket.data.v = v;
            cb();
          });
          socket.on("get", (cb) => cb(socket.data));
        });
      });
      const s = await client(1, { query: { foo: "bar" }, extraHeaders: { "x-custom": "yes" }, auth: { a: 1 } });
      assert.deepEqual(await s.timeout(3000).emitWithAck("info"), {
        query: "bar",
        header: "yes",
        auth: { a: 1 },
        url: "/socket.io/",
        urlHasQuery: true,
        address: true,
        secure: false,
        xdomain: false,
        protocol: 4,
        issued: "number",
        data: { n: 1 },
      });
      await s.timeout(3000).emitWithAck("set", { deep: [1, 2] });
      assert.deepEqual(await s.timeout(3000).emitWithAck("get"), { n: 1, v: { deep: [1, 2] } });
    });

    test("acks in both directions, emitWithAck and its timeout", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("sum", (a, b, cb) => cb(a + b, "done"));
          socket.on("ask", async (cb) => cb(await socket.timeout(3000).emitWithAck("question", "q")));
          socket.on("ask-callback", (cb) => socket.emit("question", "cb", (answer) => cb(answer)));
          socket.on("ask-silent", async (cb) => {
            const t0 = Date.now();
            try {
              await socket.timeout(300).emitWithAck("silent");
              cb("acked");
            } catch (e) {
              cb(e.message, Date.now() - t0 >= 250);
            }
          });
        });
      });
      const s = await client(2);
      s.on("question", (q, cb) => cb(`${q}!`));
      s.on("silent", () => {});
      assert.equal(await s.timeout(3000).emitWithAck("sum", 1, 2), 3);
      const both = await new Promise((resolve) => s.emit("sum", 2, 3, (...args) => resolve(args)));
      assert.deepEqual(both, [5, "done"]);
      assert.equal(await s.timeout(3000).emitWithAck("ask"), "q!");
      assert.equal(await s.timeout(3000).emitWithAck("ask-callback"), "cb!");
      const silent = await new Promise((resolve) => s.emit("ask-silent", (...args) => resolve(args)));
      assert.deepEqual(silent, ["operation has timed out", true]);
      await assert.rejects(s.timeout(300).emitWithAck("nobody-listens"), /operation has timed out/);
    });

    test("handlers registered after `await socket.join()` in the connection handler get the client's first events", async () => {
      // A common pattern: join, then register the handlers. The client emits at once on
      // connect; none of its events may be lost while the joins complete (every transport).
      await start((io) => {
        io.on("connection", async (socket) => {
          await socket.join("a");
          await socket.join(["b", "c"]);
          socket.on("hello", (cb) => cb([...socket.rooms].filter((r) => r !== socket.id).sort()));
        });
      });
      for (const [k, transports] of [["websocket"], ["polling"], ["polling", "websocket"]].entries()) {
        const s = pool.io(app.url(k), { transports });
        const answer = new Promise((resolve, reject) => {
          s.once("connect", () => s.timeout(3000).emit("hello", (err, rooms) => (err ? reject(err) : resolve(rooms))));
        });
        assert.deepEqual(await answer, ["a", "b", "c"], transports.join("+"));
      }
    });

    test("catch-all listeners: onAny and onAnyOutgoing, server and client", async () => {
      const seen = [];
      await start((io) => {
        io.on("connection", (socket) => {
          socket.onAny((event, ...args) => seen.push(["in", event, ...args]));
          socket.onAnyOutgoing((event, ...args) => seen.push(["out", event, ...args]));
          socket.on("trigger", (x) => {
            socket.emit("direct", x, 1);
            io.to(socket.id).emit("via-room", x, 2);
          });
        });
      });
      const s = await client(0);
      const inbound = [];
      const outbound = [];
      s.onAny((event, ...args) => inbound.push([event, ...args]));
      s.onAnyOutgoing((event, ...args) => outbound.push([event, ...args]));
      s.emit("trigger", "x");
      await eventually(() => inbound.length >= 2, 5000, "both events at the client");
      await sleep(SETTLE_MS);
      assert.deepEqual(outbound, [["trigger", "x"]]);
      assert.deepEqual(inbound.sort(), [["direct", "x", 1], ["via-room", "x", 2]]);
      assert.deepEqual(seen, [["in", "trigger", "x"], ["out", "direct", "x", 1], ["out", "via-room", "x", 2]]);
    });

    test("binary payloads: events, broadcasts and acks, both directions", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("bin", (a, b, cb) =>
            cb(Buffer.isBuffer(a), [...a], Buffer.isBuffer(b.nested), Buffer.concat([a, b.nested])),
          );
          socket.on("send-me", () => {
            socket.emit("direct-bin", { x: Buffer.from([9, 8]) }, [Buffer.from([7])]);
            io.to(socket.id).emit("room-bin", Buffer.from([6, 5]), "text");
          });
          socket.on("ask-bin", async (cb) => {
            const answer = await socket.timeout(3000).emitWithAck("give-bin", Buffer.from([1]));
            cb([Buffer.isBuffer(answer), [...toBuffer(answer)]]);
          });
        });
      });
      const s = await client(1);
      const [isA, a, isNested, joined] = await new Promise((resolve) =>
        s.emit("bin", Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) }, (...args) => resolve(args)),
      );
      assert.deepEqual([isA, a, isNested, [...toBuffer(joined)]], [true, [1, 2, 3], true, [1, 2, 3, 4]]);
      const direct = once(s, "direct-bin");
      const room = once(s, "room-bin");
      s.emit("send-me");
      const [d1, d2] = await direct;
      assert.deepEqual([[...toBuffer(d1.x)], [...toBuffer(d2[0])]], [[9, 8], [7]]);
      const [r1, r2] = await room;
      assert.deepEqual([[...toBuffer(r1)], r2], [[6, 5], "text"]);
      s.on("give-bin", (buf, cb) => cb(Buffer.concat([toBuffer(buf), Buffer.from([2])])));
      assert.deepEqual(await s.timeout(3000).emitWithAck("ask-bin"), [true, [1, 2]]);
      // Acks with binary values from a broadcast.
      const responses = await app.ios[0].timeout(3000).emitWithAck("give-bin", Buffer.from([5]));
      assert.equal(responses.length, 1);
      assert.ok(Buffer.isBuffer(responses[0]), "the ack's binary value is a Buffer");
      assert.deepEqual([...responses[0]], [5, 2]);
    });

    test("volatile emits reach an idle client", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("vol-direct", (n) => socket.volatile.emit("v", "direct", n));
          socket.on("vol-room", (n) => io.volatile.to(socket.id).emit("v", "room", n));
          socket.on("vol-all", (n) => io.volatile.emit("v", "all", n));
        });
      });
      const s = await client(2, { transports: ["websocket"] });
      for (const [kind, n] of [["direct", 1], ["room", 2], ["all", 3]]) {
        const got = once(s, "v", 5000, `volatile ${kind}`);
        s.emit(`vol-${kind}`, n);
        assert.deepEqual(await got, [kind, n]);
      }
    });

    test("disconnecting sees the rooms; disconnect reasons (client, server, transport)", async () => {
      const log = [];
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("join", async (rooms, cb) => {
            await socket.join(rooms);
            cb([[...socket.rooms].filter((r) => r !== socket.id).sort(), socket.rooms.has(socket.id)]);
          });
          socket.on("kick", (close) => socket.disconnect(close));
          socket.on("close-conn", () => socket.conn.close());
          socket.on("disconnecting", (reason) =>
            log.push({ id: socket.id, phase: "disconnecting", reason, rooms: [...socket.rooms].filter((r) => r !== socket.id).sort(), own: socket.rooms.has(socket.id) }),
          );
          socket.on("disconnect", (reason) => log.push({ id: socket.id, phase: "disconnect", reason, rooms: socket.rooms.size }));
        });
      });
      const entries = (id) => log.filter((e) => e.id === id).map(({ id: _, ...rest }) => rest);
      const ended = async (s, id, serverReason, clientReason, rooms = []) => {
        await eventually(() => entries(id).length >= 2, 5000, `${serverReason} at the server`);
        assert.deepEqual(entries(id), [
          { phase: "disconnecting", reason: serverReason, rooms, own: true },
          { phase: "disconnect", reason: serverReason, rooms: 0 },
        ]);
        if (clientReason) assert.equal(s.disconnectReason, clientReason);
      };
      const track = (s) => s.on("disconnect", (reason) => (s.disconnectReason = reason));

      // The client leaves.
      const a = track(await client(0));
      assert.deepEqual(await a.timeout(3000).emitWithAck("join", ["a", "b"]), [["a", "b"], true]);
      const aId = a.id;
      a.disconnect();
      await ended(a, aId, "client namespace disconnect", "io client disconnect", ["a", "b"]);

      // The server disconnects the socket, then the whole connection.
      for (const [k, close] of [[1, false], [2, true]]) {
        const s = track(await client(k, { transports: ["websocket"] }));
        const id = s.id;
        const gone = once(s, "disconnect");
        s.emit("kick", close);
        assert.equal((await gone)[0], "io server disconnect");
        await ended(s, id, "server namespace disconnect", "io server disconnect");
      }

      // The transport ends: the client's engine closes.
      const t = track(await client(0, { transports: ["websocket"] }));
      const tId = t.id;
      t.io.engine.close();
      await ended(t, tId, "transport close");

      // The server closes the connection.
      const c = track(await client(1));
      const cId = c.id;
      const cGone = once(c, "disconnect");
      c.emit("close-conn");
      assert.equal((await cGone)[0], "transport close");
      await ended(c, cId, "forced close");
    });

    test("socket.disconnect(true) over HTTP long-polling: the client gets the DISCONNECT before the close", async () => {
      await start((io) => io.on("connection", (socket) => socket.on("kick", () => socket.disconnect(true))));
      const reasons = [];
      for (let k = 0; k < 6; k++) {
        const s = await client(k, { transports: ["polling"] });
        const gone = once(s, "disconnect");
        s.emit("kick");
        reasons.push((await gone)[0]);
      }
      assert.deepEqual(reasons, reasons.map(() => "io server disconnect"));
    });

    test("rooms: to(room), except, socket.to, leave, to(socket.id) private messages, await join", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("join", async (room, cb) => {
            await socket.join(room);
            cb([...socket.rooms].sort());
          });
          socket.on("leave", (room, cb) => {
            socket.leave(room);
            cb([...socket.rooms].sort());
          });
          socket.on("to-room", (room, event) => socket.to(room).emit(event, socket.id));
          socket.on("dm", (to, text) => socket.to(to).emit("dm", socket.id, text));
          socket.on("join-then-emit", async (room) => {
            await socket.join(room);
            io.to(room).emit("joined-and-heard", room);
          });
        });
      });
      const io = app.ios[0];
      const [a, b, c] = [record(await client(0)), record(await client(1)), record(await client(2))];
      assert.deepEqual(await a.timeout(3000).emitWithAck("join", "r1"), [a.id, "r1"].sort());
      assert.deepEqual(await b.timeout(3000).emitWithAck("join", "r1"), [b.id, "r1"].sort());

      io.to("r1").emit("news", 1);
      io.except("r1").emit("not-r1", 2);
      io.to("r1").except(b.id).emit("r1-but-b", 3);
      io.in(["r1", c.id]).emit("r1-or-c", 4);
      a.emit("to-room", "r1", "from-a");
      a.emit("dm", c.id, "psst");
      io.to(b.id).emit("private", "for b");
      await eventually(() => events(c, "dm").length === 1 && events(b, "private").length === 1 && events(b, "from-a").length === 1, 5000, "room deliveries");
      await sleep(SETTLE_MS);
      assert.deepEqual(events(a, "news"), [[1]]);
      assert.deepEqual(events(b, "news"), [[1]]);
      assert.deepEqual(events(c, "news"), []);
      assert.deepEqual([events(a, "not-r1"), events(b, "not-r1"), events(c, "not-r1")], [[], [], [[2]]]);
      assert.deepEqual([events(a, "r1-but-b"), events(b, "r1-but-b"), events(c, "r1-but-b")], [[[3]], [], []]);
      assert.deepEqual([events(a, "r1-or-c"), events(b, "r1-or-c"), events(c, "r1-or-c")], [[[4]], [[4]], [[4]]]);
      assert.deepEqual([events(a, "from-a"), events(b, "from-a"), events(c, "from-a")], [[], [[a.id]], []]);
      assert.deepEqual([events(a, "dm"), events(b, "dm"), events(c, "dm")], [[], [], [[a.id, "psst"]]]);
      assert.deepEqual([events(a, "private"), events(b, "private"), events(c, "private")], [[], [["for b"]], []]);

      // After a leave, the room no longer reaches the socket.
      assert.deepEqual(await a.timeout(3000).emitWithAck("leave", "r1"), [a.id]);
      io.to("r1").emit("after-leave");
      await eventually(() => events(b, "after-leave").length === 1, 5000, "after-leave at b");
      await sleep(SETTLE_MS);
      assert.deepEqual(events(a, "after-leave"), []);

      // `await socket.join()` then a broadcast to the room: the joiner hears it.
      const heard = once(c, "joined-and-heard");
      c.emit("join-then-emit", "fresh-room");
      assert.deepEqual(await heard, ["fresh-room"]);
    });

    test("io.timeout().emit and emitWithAck: acks from every client, a timeout, no recipients", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.on("join", async (room, cb) => {
            await socket.join(room);
            cb();
          });
          socket.on("ask-others", async (cb) => cb((await socket.broadcast.timeout(3000).emitWithAck("q", "o")).sort()));
        });
      });
      const io = app.ios[0];
      const names = ["x", "y", "z"];
      const clients = [];
      for (const [k, name] of names.entries()) {
        const s = await client(k);
        s.on("q", (arg, cb) => cb(`${name}:${arg}`));
        s.on("q-some", (cb) => {
          if (name !== "z") cb(name);
        });
        clients.push(s);
      }
      await clients[0].timeout(3000).emitWithAck("join", "xy");
      await clients[1].timeout(3000).emitWithAck("join", "xy");

      const [err, responses] = await new Promise((resolve) => io.timeout(3000).emit("q", 1, (e, r) => resolve([e, r])));
      assert.equal(err, null);
      assert.deepEqual(responses.sort(), ["x:1", "y:1", "z:1"]);
      assert.deepEqual((await io.timeout(3000).emitWithAck("q", 2)).sort(), ["x:2", "y:2", "z:2"]);
      assert.deepEqual((await io.to("xy").timeout(3000).emitWithAck("q", 3)).sort(), ["x:3", "y:3"]);
      assert.deepEqual(await clients[2].timeout(5000).emitWithAck("ask-others"), ["x:o", "y:o"]);

      // One client never answers: the emit fails after its timeout with the answers that came.
      const t0 = Date.now();
      const failure = await io
        .timeout(1000)
        .emitWithAck("q-some")
        .then(
          (r) => ({ resolved: r }),
          (e) => e,
        );
      const elapsed = Date.now() - t0;
      assert.equal(failure.message, "operation has timed out");
      assert.deepEqual(failure.responses.sort(), ["x", "y"]);
      assert.ok(elapsed >= 950 && elapsed < 3000, `timed out after ${elapsed} ms`);

      // No recipient: done at once with no answers.
      const t1 = Date.now();
      assert.deepEqual(await io.to("nobody-here").timeout(5000).emitWithAck("q", 4), []);
      assert.ok(Date.now() - t1 < 2000, `no recipients took ${Date.now() - t1} ms`);
    });

    test("fetchSockets: details, and the sockets emit, join, leave and disconnect", async () => {
      await start((io) => {
        io.on("connection", (socket) => {
          socket.data.name = socket.handshake.auth.name;
          socket.on("join", async (room, cb) => {
            await socket.join(room);
            cb();
          });
          socket.on("ask", (cb) => cb(`${socket.data.name}-answer`));
        });
      });
      const io = app.ios[0];
      const clients = {};
      for (const [k, name] of ["p", "q", "r"].entries()) {
        clients[name] = record(await client(k, { auth: { name } }));
        clients[name].on("ask", (cb) => cb(`${name}-client-answer`));
      }
      await clients.p.timeout(3000).emitWithAck("join", "fs");
      await clients.q.timeout(3000).emitWithAck("join", "fs");

      const all = await io.fetchSockets();
      assert.deepEqual(all.map((s) => s.data.name).sort(), ["p", "q", "r"]);
      const list = await io.in("fs").fetchSockets();
      assert.deepEqual(list.map((s) => s.data.name).sort(), ["p", "q"]);
      for (const s of list) {
        assert.equal(s.id, clients[s.data.name].id);
        assert.ok(s.rooms.has("fs") && s.rooms.has(s.id), `rooms of ${s.data.name}: ${[...s.rooms]}`);
        assert.deepEqual(s.handshake.auth, { name: s.data.name });
      }
      assert.deepEqual((await io.except("fs").fetchSockets()).map((s) => s.data.name), ["r"]);
      const p = list.find((s) => s.data.name === "p");
      const q = list.find((s) => s.data.name === "q");

      // emit, and emit with an ack
      const hey = once(clients.p, "hey");
      p.emit("hey", { n: 1 });
      assert.deepEqual(await hey, [{ n: 1 }]);
      assert.equal(await p.timeout(3000).emitWithAck("ask"), "p-client-answer");

      // join: then a broadcast to the new room reaches the socket
      p.join("joined-later");
      await eventually(async () => (await io.in("joined-later").fetchSockets()).length === 1, 5000, "p in joined-later");
      await eventually(
        async () => (await io.to("joined-later").timeout(500).emitWithAck("ask")).length === 1,
        5000,
        "joined-later reaches p",
      );
      assert.deepEqual(await io.to("joined-later").timeout(3000).emitWithAck("ask"), ["p-client-answer"]);

      // leave
      p.leave("fs");
      await eventually(async () => (await io.in("fs").fetchSockets()).length === 1, 5000, "p left fs");
      assert.deepEqual((await io.in("fs").fetchSockets()).map((s) => s.data.name), ["q"]);

      // disconnect
      const gone = once(clients.q, "disconnect");
      q.disconnect();
      assert.equal((await gone)[0], "io server disconnect");
      await eventually(async () => (await io.fetchSockets()).length === 2, 5000, "q gone");
    });

    test("socketsJoin, socketsLeave and disconnectSockets", async () => {
      await start(() => {});
      const io = app.ios[0];
      const clients = [];
      for (let k = 0; k < 3; k++) {
        const s = record(await client(k));
        s.on("ping-room", (cb) => cb(k));
        clients.push(s);
      }
      const reach = (room) => io.to(room).timeout(1000).emitWithAck("ping-room").then((r) => r.sort());
      io.in(clients[0].id).socketsJoin(["sj", "sj-0"]);
      io.in(clients[1].id).socketsJoin("sj");
      await eventually(async () => (await reach("sj")).length === 2, 5000, "sj reaches 0 and 1");
      assert.deepEqual(await reach("sj"), [0, 1]);
      assert.deepEqual(await reach("sj-0"), [0]);
      // Everyone in sj also joins sj-all; then everyone but sj-0 joins it too.
      io.in("sj").socketsJoin("sj-all");
      io.except("sj-0").socketsJoin("sj-all");
      await eventually(async () => (await reach("sj-all")).length === 3, 5000, "sj-all reaches everyone");
      io.in("sj").socketsLeave("sj");
      await eventually(async () => (await reach("sj")).length === 0, 5000, "sj empty");
      assert.deepEqual(await reach("sj-0"), [0]);

      // disconnectSockets: a room, then everyone with the connection closed.
      io.in(clients[2].id).socketsJoin("doomed");
      await eventually(async () => (await reach("doomed")).length === 1, 5000, "doomed reaches 2");
      const gone = once(clients[2], "disconnect");
      io.in("doomed").disconnectSockets();
      assert.equal((await gone)[0], "io server disconnect");
      await sleep(SETTLE_MS);
      assert.equal(clients[0].connected && clients[1].connected, true);
      const closes = clients.slice(0, 2).map((s) => once(s, "disconnect"));
      io.disconnectSockets(true);
      assert.deepEqual((await Promise.all(closes)).map((r) => r[0]), ["io server disconnect", "io server disconnect"]);
    });
  });
}
