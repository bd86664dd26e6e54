// The two places the API suite runs: a plain standalone socket.io Server, and app instances
// serving a 3-node Roomcast hub through useRoomcast. Both give the suite the same thing: an
// "app" of one or more socket.io Servers set up by the test, and client URLs.

import http from "node:http";
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import { eventually, startAppLinkHub } from "../../../../dataplane/tests/js/harness.mjs";
import { useRoomcast } from "@roomcast/socket.io";

/** The socket.io package under test: ROOMCAST_SIO names it (`socket.io`, `socket.io-47`). */
export async function socketIo() {
  const name = process.env.ROOMCAST_SIO || "socket.io";
  const mod = await import(name);
  const version = JSON.parse(fs.readFileSync(new URL(`../../node_modules/${name}/package.json`, import.meta.url), "utf8")).version;
  return { Server: mod.Server, name, version };
}

/** Finds a server-side socket of namespace `nsp` by id on any of the app's servers. */
function socketFinder(ios) {
  return (id, nsp = "/") => {
    for (const io of ios) {
      const s = io._nsps.get(nsp)?.sockets.get(id);
      if (s) return s;
    }
    return undefined;
  };
}

/** A standalone socket.io Server on 127.0.0.1 (`io.listen`). */
export function standaloneEnv(sio) {
  return {
    name: `standalone ${sio.name}@${sio.version}`,
    hub: false,
    async start(setup) {
      const io = new sio.Server();
      setup(io, 0);
      const server = http.createServer();
      io.listen(server);
      await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
      const url = `http://127.0.0.1:${server.address().port}`;
      return {
        ios: [io],
        url: () => url,
        socket: socketFinder([io]),
        async stop() {
          await io.close();
        },
      };
    },
  };
}

/** A hub whose nodes take app links: harness.mjs `startAppLinkHub`. */
export { startAppLinkHub as startHub };

/**
 * App instances (`instances` socket.io Servers) serving `hub` through useRoomcast; client URL
 * k goes to node k mod 3, so a test's clients are spread over the nodes.
 */
export function hubEnv(sio, getHub, { instances = 2 } = {}) {
  return {
    name: `hub (${instances} instances) ${sio.name}@${sio.version}`,
    hub: true,
    async start(setup, { instances: n = instances, options = {} } = {}) {
      const hub = getHub();
      const ios = [];
      const links = [];
      const tag = randomBytes(4).toString("hex");
      try {
        for (let i = 0; i < n; i++) {
          const io = new sio.Server();
          setup(io, i);
          ios.push(io);
          links.push(
            await useRoomcast(io, {
              endpoint: `http://${hub.appAddresses[i % hub.appAddresses.length]}`,
              token: hub.token,
              caFile: hub.caFile,
              instanceId: `test-${tag}-${i}`,
              ...options,
            }),
          );
        }
        // Every instance linked to every node, and every node counting every instance.
        await eventually(
          () =>
            links.every(
              (l) => l.nodes().length === hub.nodes.length && l.nodes().every((x) => x.state === "open") && l.instances === n,
            ),
          10_000,
          "every instance linked to every node",
        );
      } catch (e) {
        await Promise.all(links.map((l) => l.close({ timeout: 1000 })));
        throw e;
      }
      return {
        ios,
        links,
        url: (k = 0) => hub.nodes[k % hub.nodes.length].url,
        socket: socketFinder(ios),
        async stop() {
          await Promise.all(links.map((l) => l.close({ timeout: 3000 })));
        },
      };
    },
  };
}
