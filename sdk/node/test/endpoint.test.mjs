// The endpoint may be a load balancer in front of the nodes' app link ports (a Kubernetes
// Service): the instance links to the node it reaches, then to every node directly. When the
// whole hub restarts on new addresses, the instance finds it again through the endpoint.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { ClientPool, CutProxy, connected, eventually } from "../../../dataplane/tests/js/harness.mjs";
import { useRoomcast } from "@roomcast/socket.io";
import { socketIo, startHub } from "./support/env.mjs";

const IPS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
const sio = await socketIo();
const pool = new ClientPool();
let hub = null;
let proxy = null;
let link = null;

after(async () => {
  pool.closeAll();
  await link?.close({ timeout: 2000 });
  await proxy?.stop();
  await hub?.stop();
});

const backends = (addresses) =>
  addresses.map((a) => {
    const [host, port] = a.split(":");
    return { host, port: Number(port) };
  });

async function allServe(io) {
  for (let k = 0; k < hub.nodes.length; k++) {
    const c = pool.io(hub.nodes[k].url);
    await connected(c);
    assert.equal(await c.timeout(3000).emitWithAck("where"), `hub-${k}`);
    c.disconnect();
  }
}

test(`an endpoint in front of the nodes; the whole hub restarting on new addresses (${sio.name}@${sio.version})`, async () => {
  hub = await startHub({ ips: IPS });
  proxy = await new CutProxy(backends(hub.appAddresses)).start("127.0.0.1");
  const io = new sio.Server();
  io.on("connection", (socket) => socket.on("where", (cb) => cb(socket.conn.roomcast.node)));
  link = await useRoomcast(io, { endpoint: proxy.url, token: hub.token, caFile: hub.caFile, instanceId: "behind-a-balancer" });
  const linked = (addresses) =>
    link.nodes().length === 3 &&
    link.nodes().every((n) => n.state === "open") &&
    [0, 1, 2].every((i) => link.nodes().some((n) => n.id === `hub-${i}` && n.address.endsWith(addresses[i])));
  await eventually(() => linked(hub.appAddresses), 10_000, `linked to every node directly: ${JSON.stringify(link.nodes())}`);
  await allServe(io);

  // Every node dies; they come back on new ports, behind the same endpoint.
  for (const node of hub.nodes) node.proc.kill("SIGKILL");
  await Promise.all(hub.nodes.map((n) => n.exit));
  await eventually(() => link.nodes().every((n) => n.state !== "open"), 10_000, "every link down");
  const line = /app link listening on ([0-9.]+:\d+)/;
  for (let i = 0; i < 3; i++) hub.nodes[i] = await hub.startNode(i);
  for (let i = 0; i < 3; i++) {
    await eventually(() => line.test(hub.nodes[i].stdout()), 5000, "app link line");
    hub.appAddresses[i] = line.exec(hub.nodes[i].stdout())[1];
  }
  proxy.backends = backends(hub.appAddresses);
  await eventually(() => linked(hub.appAddresses), 20_000, `relinked to the new addresses: ${JSON.stringify(link.nodes())}`);
  await allServe(io);
});
