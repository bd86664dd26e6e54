// @roomcast/socket.io: a socket.io Server that serves the clients of a Roomcast hub.
//
//   const io = new Server();
//   const link = await useRoomcast(io, { endpoint: process.env.ROOMCAST_APP_ENDPOINT, token: process.env.ROOMCAST_APP_TOKEN });
//
// See README.md.

import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
import { debuglog } from "node:util";
import type { Server } from "socket.io";
import { createAdapterClass } from "./adapter.js";
import { Hub, type Logger, type NodeStatus } from "./hub.js";
import { Trust } from "./trust.js";

export type { Logger, NodeStatus } from "./hub.js";
export type { SessionInfo } from "./engine.js";

export interface RoomcastOptions {
  /** One hub node's app link address: "http://HOST:PORT" or "HOST:PORT" (ROOMCAST_APP_ENDPOINT). */
  endpoint?: string;
  /** The hub's app token (ROOMCAST_APP_TOKEN). */
  token?: string;
  /**
   * The hub's trust bundle (PEM), to check the nodes' certificates: every link is TLS when
   * given. On Kubernetes, `ca.crt` of the ConfigMap `<hub>-peer-trust`.
   */
  ca?: string | Buffer;
  /** The same from a file, re-read at every connection (CA rotation) (ROOMCAST_APP_CA_FILE). */
  caFile?: string;
  /** This instance's id: 1 to 128 characters of [A-Za-z0-9._-], unique per running process. Default: random. */
  instanceId?: string;
  /** How long `useRoomcast` tries to reach the endpoint before it rejects (ms). Default 10000. */
  connectTimeout?: number;
  /** How long `close()` waits for the hub to confirm this instance's sessions closed (ms). Default 10000. */
  drainTimeout?: number;
  /** Bytes one link may hold queued for the hub before it is given up (see README). Default 64 MiB. */
  maxQueuedBytes?: number;
  /** Drain (`close()`) on SIGTERM, then exit if nothing else listens for SIGTERM. Default false. */
  drainOnSigterm?: boolean;
  /** Where warnings go. Default: console.warn; debug lines with NODE_DEBUG=roomcast. */
  logger?: Logger;
}

const INSTANCE_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** What `useRoomcast` resolves with: the instance's links to the hub. */
export class RoomcastLink extends EventEmitter {
  /** @internal */
  constructor(private readonly hub: Hub) {
    super();
    hub.on("node-up", (link: { node: string }) => this.emit("node-up", link.node));
    hub.on("node-down", (link: { node: string }) => this.emit("node-down", link.node));
  }

  /** This instance's id (`roomcast-app-instance`). */
  get instanceId(): string {
    return this.hub.instanceId;
  }

  /** The hub nodes and the state of the link to each. */
  nodes(): NodeStatus[] {
    return this.hub.nodes();
  }

  /** Client sessions this instance serves now. */
  get sessions(): number {
    return this.hub.sessionCount();
  }

  /** App instances linked to the hub node that relays this instance's messages, this one included. */
  get instances(): number {
    return this.hub.serverCount();
  }

  /**
   * Drains the instance: the hub hands it no new sessions, its sessions are closed (their
   * clients reconnect to other instances), and once the hub has confirmed them closed (or
   * after `timeout` ms, default the `drainTimeout` option) the links end.
   */
  close(options: { timeout?: number } = {}): Promise<void> {
    return this.hub.close(options.timeout);
  }
}

function defaultLogger(): Logger {
  const debug = debuglog("roomcast");
  return {
    warn: (message) => console.warn(message),
    debug: (message) => debug(message),
  };
}

/**
 * Serves a hub's clients with `io`: replaces its engine (the hub runs the transports) and its
 * adapter (rooms and broadcasts are the hub's), links to every hub node, and resolves once
 * linked. Rejects when the token is refused or the endpoint cannot be reached in time.
 */
export async function useRoomcast(io: Server, options: RoomcastOptions = {}): Promise<RoomcastLink> {
  const endpoint = options.endpoint ?? process.env.ROOMCAST_APP_ENDPOINT;
  const token = options.token ?? process.env.ROOMCAST_APP_TOKEN;
  if (!endpoint) throw new Error("@roomcast/socket.io: no endpoint (option `endpoint` or ROOMCAST_APP_ENDPOINT)");
  if (!token) throw new Error("@roomcast/socket.io: no token (option `token` or ROOMCAST_APP_TOKEN)");
  const instanceId = options.instanceId ?? `app-${randomBytes(9).toString("base64url")}`;
  if (!INSTANCE_ID.test(instanceId)) {
    throw new Error(`@roomcast/socket.io: bad instanceId ${JSON.stringify(instanceId)}: 1 to 128 characters of [A-Za-z0-9._-]`);
  }
  const logger = options.logger ?? defaultLogger();
  const caFile = options.caFile ?? process.env.ROOMCAST_APP_CA_FILE;
  if (options.ca != null && caFile) throw new Error("@roomcast/socket.io: give `ca` or `caFile` (ROOMCAST_APP_CA_FILE), not both");
  const trust = options.ca != null || caFile ? Trust.from({ ca: options.ca, caFile }, (m) => logger.warn(`[roomcast] ${m}`)) : null;
  const hub = new Hub(io, {
    endpoint,
    token,
    instanceId,
    connectTimeoutMs: options.connectTimeout ?? 10_000,
    drainTimeoutMs: options.drainTimeout ?? 10_000,
    maxQueuedBytes: options.maxQueuedBytes ?? 64 * 1024 * 1024,
    trust,
    logger,
  });
  io.adapter(createAdapterClass(hub) as never);
  io.bind(hub.engine);
  await hub.start();
  const link = new RoomcastLink(hub);
  if (options.drainOnSigterm) {
    const onSigterm = () => {
      void link.close().finally(() => {
        if (process.listenerCount("SIGTERM") === 0) process.kill(process.pid, "SIGTERM");
      });
    };
    process.once("SIGTERM", onSigterm);
  }
  return link;
}
