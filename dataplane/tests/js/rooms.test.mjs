// Rooms and broadcasts on the testkit: join/leave, rooms, except, includeSelf,
// leave-all on disconnect, and 1,000 concurrent clients in one room.

import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { startServer, ClientPool, once, sleep, eventually, connected, assertBytes, lifecycle } from "./harness.mjs";

let server;
const pool = new ClientPool();

before(async () => {
  server = await startServer({ bin: "testkit" });
});
lifecycle(pool, { servers: () => [server], label: "at the end of rooms tests" });

const ack = (s, ...args) => s.timeout(5000).emitWithAck(...args);

/**
 * Sends the testkit's `broadcast` and checks its answer. The contract answer is "ok"; the
 * testkit may instead answer {ok:true, count:N}, in which case N must be the exact number
 * of recipients.
 */
async function bcast(s, opts, expectedCount, ms = 5000) {
  const res = await s.timeout(ms).emitWithAck("broadcast", opts);
  if (res === "ok") return res;
  assert.equal(typeof res, "object", `broadcast answer: ${JSON.stringify(res)}`);
  assert.equal(res.ok, true, `broadcast answer: ${JSON.stringify(res)}`);
  assert.equal(res.count, expectedCount, `recipients counted by the server for ${JSON.stringify(opts)}`);
  return res;
}

/** Records every `event` a socket receives. */
function recorder(sockets, event) {
  const got = new Map(sockets.map((s) => [s, []]));
  for (const s of sockets) s.on(event, (...args) => got.get(s).push(args));
  return got;
}

async function clients(n, opts = {}) {
  return Promise.all(
    [...Array(n)].map((_, i) =>
      pool.connect(opts.url ?? server.url, { transports: [i % 2 ? "websocket" : "polling"], ...opts }),
    ),
  );
}

describe("rooms", () => {
  it("join / leave / rooms", async () => {
    const [a] = await clients(1);
    assert.deepEqual((await ack(a, "rooms")).sort(), [a.id].sort(), "a fresh socket is in its own room only");
    assert.equal(await ack(a, "join", "r1"), "ok");
    assert.equal(await ack(a, "join", "r2"), "ok");
    assert.equal(await ack(a, "join", "r1"), "ok", "joining twice is fine");
    assert.deepEqual((await ack(a, "rooms")).sort(), [a.id, "r1", "r2"].sort());
    assert.equal(await ack(a, "leave", "r1"), "ok");
    assert.equal(await ack(a, "leave", "never-joined"), "ok");
    assert.deepEqual((await ack(a, "rooms")).sort(), [a.id, "r2"].sort());
  });

  it("broadcast to a room reaches members except the sender; non-members get nothing", async () => {
    const [a, b, c, d] = await clients(4);
    for (const s of [a, b, c]) assert.equal(await ack(s, "join", "room-x"), "ok");
    const got = recorder([a, b, c, d], "news");
    await bcast(a, { rooms: ["room-x"], event: "news", args: ["hi", { n: 1 }] }, 2);
    await eventually(() => got.get(b).length && got.get(c).length, 5000, "b and c receive");
    await sleep(200);
    assert.deepEqual(got.get(b), [["hi", { n: 1 }]]);
    assert.deepEqual(got.get(c), [["hi", { n: 1 }]]);
    assert.deepEqual(got.get(a), [], "sender excluded");
    assert.deepEqual(got.get(d), [], "non-member gets nothing");
  });

  it("includeSelf delivers to the sender too", async () => {
    const [a, b] = await clients(2);
    for (const s of [a, b]) await ack(s, "join", "self-room");
    const got = recorder([a, b], "ev");
    await bcast(a, { rooms: ["self-room"], event: "ev", args: [1], includeSelf: true }, 2);
    await eventually(() => got.get(a).length && got.get(b).length, 5000, "both receive");
    await sleep(150);
    assert.deepEqual(got.get(a), [[1]]);
    assert.deepEqual(got.get(b), [[1]]);
  });

  it("a socket in several target rooms receives one copy", async () => {
    const [a, b, c] = await clients(3);
    await ack(b, "join", "r-a");
    await ack(b, "join", "r-b");
    await ack(c, "join", "r-b");
    const got = recorder([a, b, c], "multi");
    await bcast(a, { rooms: ["r-a", "r-b"], event: "multi", args: ["once"] }, 2);
    await eventually(() => got.get(b).length && got.get(c).length, 5000, "b and c receive");
    await sleep(200);
    assert.deepEqual(got.get(b), [["once"]], "exactly one copy for b");
    assert.deepEqual(got.get(c), [["once"]]);
    assert.deepEqual(got.get(a), []);
  });

  it("except rooms", async () => {
    const [a, b, c, d] = await clients(4);
    for (const s of [a, b, c, d]) await ack(s, "join", "all");
    await ack(c, "join", "vip");
    const got = recorder([a, b, c, d], "exc");
    await bcast(a, { rooms: ["all"], except: ["vip"], event: "exc", args: ["no-vip"] }, 2);
    await eventually(() => got.get(b).length && got.get(d).length, 5000, "b and d receive");
    await sleep(200);
    assert.deepEqual(got.get(b), [["no-vip"]]);
    assert.deepEqual(got.get(d), [["no-vip"]]);
    assert.deepEqual(got.get(c), [], "member of an except room gets nothing");
    assert.deepEqual(got.get(a), [], "sender excluded");
    // except a socket's own id room excludes that socket
    await bcast(a, { rooms: ["all"], except: [b.id], event: "exc", args: ["no-b"] }, 2);
    await eventually(() => got.get(d).length >= 2, 5000, "d receives the second");
    await sleep(200);
    assert.deepEqual(got.get(b), [["no-vip"]]);
    assert.deepEqual(got.get(c), [["no-b"]]);
  });

  it("broadcast to the whole namespace (no rooms), isolated from other namespaces", async () => {
    // a namespace of its own, so that sockets of earlier tests cannot be counted
    const [a, b, c] = await clients(3, { url: `${server.url}/dyn-whole-ns` });
    const other = await pool.connect(`${server.url}/dyn-other-ns`, { transports: ["websocket"] });
    const root = await pool.connect(server.url, { transports: ["websocket"] });
    const got = recorder([a, b, c, other, root], "all-ns");
    await bcast(a, { event: "all-ns", args: [Buffer.from([1, 2])] }, 2);
    await eventually(() => got.get(b).length && got.get(c).length, 5000, "b and c receive");
    await sleep(200);
    assert.equal(got.get(b).length, 1);
    assertBytes(got.get(b)[0][0], [1, 2], "binary broadcast");
    assert.equal(got.get(c).length, 1);
    assert.deepEqual(got.get(a), []);
    assert.deepEqual(got.get(other), [], "other namespace gets nothing");
    assert.deepEqual(got.get(root), [], "main namespace gets nothing");
  });

  it("emit to a socket id room reaches only that socket", async () => {
    const [a, b, c] = await clients(3);
    const got = recorder([a, b, c], "direct");
    await bcast(a, { rooms: [c.id], event: "direct", args: ["to-c"] }, 1);
    await eventually(() => got.get(c).length, 5000, "c receives");
    await sleep(150);
    assert.deepEqual(got.get(c), [["to-c"]]);
    assert.deepEqual(got.get(b), []);
  });

  it("rooms are per namespace", async () => {
    const a = await pool.connect(server.url, { transports: ["websocket"] });
    const b = await pool.connect(server.url, { transports: ["websocket"] });
    const bCustom = await pool.connect(`${server.url}/custom`, { transports: ["websocket"] });
    await ack(b, "join", "same-name");
    await ack(bCustom, "join", "same-name");
    const got = recorder([b, bCustom], "per-ns");
    await bcast(a, { rooms: ["same-name"], event: "per-ns", args: ["x"] }, 1);
    await eventually(() => got.get(b).length, 5000, "b receives");
    await sleep(150);
    assert.deepEqual(got.get(b), [["x"]]);
    assert.deepEqual(got.get(bCustom), [], "same room name in another namespace is another room");
  });

  it("leave-all on disconnect: a new socket on the same session is not in the old rooms", async () => {
    const sender = await pool.connect(server.url, { transports: ["websocket"] });
    const m = pool.manager(server.url, { transports: ["websocket"] });
    const keep = pool.track(m.socket("/custom")); // keeps the engine session open
    const first = pool.track(m.socket("/"));
    await Promise.all([connected(keep), connected(first)]);
    assert.equal(await ack(first, "join", "leaving"), "ok");
    const engineId = m.engine.id;
    const oldId = first.id;
    first.disconnect();
    await sleep(100);
    const again = first; // Manager.socket("/") would return this same cached socket
    again.connect();
    await connected(again);
    assert.equal(m.engine.id, engineId, "same engine session");
    assert.notEqual(again.id, oldId, "a new socket id");
    assert.deepEqual(await ack(again, "rooms"), [again.id], "new socket is in its own room only");
    const got = recorder([again], "after-leave");
    await bcast(sender, { rooms: ["leaving"], event: "after-leave", args: [1] }, 0);
    await sleep(300);
    assert.deepEqual(got.get(again), []);
  });

  it("many sockets join and disconnect; room broadcast then reaches only live members", async () => {
    const stay = await clients(5);
    const go = await clients(30);
    for (const s of [...stay, ...go]) await ack(s, "join", "churn");
    for (const s of go) s.disconnect();
    await sleep(300);
    const sender = await pool.connect(server.url, { transports: ["websocket"] });
    const got = recorder(stay, "churned");
    await bcast(sender, { rooms: ["churn"], event: "churned", args: ["x"] }, 5);
    await eventually(() => stay.every((s) => got.get(s).length), 5000, "all live members receive");
    await sleep(150);
    for (const s of stay) assert.deepEqual(got.get(s), [["x"]]);
  });
});

describe("scale", () => {
  it("1,000 concurrent websocket clients in one room each receive 20 broadcasts exactly once, in order", { timeout: 180_000 }, async () => {
    const MEMBERS = 1000;
    const OUTSIDERS = 20;
    const N = 20;
    const all = [];
    const connectBatch = async (count, join) => {
      const out = [];
      for (let i = 0; i < count; i += 50) {
        const batch = await Promise.all(
          [...Array(Math.min(50, count - i))].map(async () => {
            // every client has its own Manager (forceNew) and so its own engine session
            const s = pool.io(server.url, { transports: ["websocket"], forceNew: true });
            s.seqs = [];
            s.on("seq", (n) => s.seqs.push(n));
            await connected(s, 30_000);
            if (join) assert.equal(await s.timeout(30_000).emitWithAck("join", "big"), "ok");
            return s;
          }),
        );
        out.push(...batch);
      }
      all.push(...out);
      return out;
    };
    const members = await connectBatch(MEMBERS, true);
    const outsiders = await connectBatch(OUTSIDERS, false);
    assert.equal(new Set(members.map((s) => s.io.engine.id)).size, MEMBERS, "distinct engine sessions");
    const sender = outsiders[0];

    for (let i = 0; i < N; i++) {
      await bcast(sender, { rooms: ["big"], event: "seq", args: [i] }, MEMBERS, 30_000);
    }
    const expected = [...Array(N).keys()];
    try {
      await eventually(() => members.every((s) => s.seqs.length >= N), 60_000, "every member receives N messages", 100);
    } finally {
      const short = members.filter((s) => s.seqs.length < N);
      if (short.length) {
        console.error(`${short.length} members short; e.g. ${JSON.stringify(short.slice(0, 3).map((s) => s.seqs))}`);
      }
    }
    await sleep(500); // duplicates would show up here
    let bad = 0;
    for (const s of members) {
      if (s.seqs.length !== N || s.seqs.some((x, i) => x !== expected[i])) bad++;
    }
    assert.equal(bad, 0, `members with a wrong sequence: ${bad} (example: ${JSON.stringify(members.find((s) => s.seqs.length !== N)?.seqs)})`);
    for (const s of outsiders) assert.deepEqual(s.seqs, [], "non-members receive none");
    assert.ok(members.every((s) => s.connected), "all members still connected");
    server.assertHealthy("after 1,000 clients");
  });
});
