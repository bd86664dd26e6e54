// The instance's side of the hub: one link per hub node (link.ts), the sessions they carry
// (engine.ts), and the hub's commands (Disconnect, RoomsChanged) and the other instances'
// messages (Published) delivered to the namespaces' adapters (adapter.ts).
//
// Order: everything about one session (its packets, its sockets' joins and leaves) travels on
// the session's own link. Broadcasts and Publish messages all go on one link, the first live
// one (the bootstrap node's, then the others by member id), so one instance's broadcasts keep
// their order.

import { EventEmitter } from "node:events";
import type { Server } from "socket.io";
import { HubConn, HubEngine } from "./engine.js";
import { NodeLink, LinkError, parseAddress, type LinkOwner, type LinkState } from "./link.js";
import type { Broadcast, HubMessage, Members, Reply, Welcome } from "./messages.js";
import * as grpc from "@grpc/grpc-js";
import { decodeClusterMessage, encodeClusterMessage } from "./codec.js";
import type { Trust } from "./trust.js";

export interface HubOptions {
  endpoint: string;
  token: string;
  instanceId: string;
  connectTimeoutMs: number;
  drainTimeoutMs: number;
  maxQueuedBytes: number;
  trust: Trust | null;
  logger: Logger;
}

export interface Logger {
  warn(message: string): void;
  debug?(message: string): void;
}

/** A hub node as the instance sees it. */
export interface NodeStatus {
  id: string;
  address: string;
  state: LinkState;
  sessions: number;
  lastError?: string;
}

// socket.io-adapter's MessageType.FETCH_SOCKETS and FETCH_SOCKETS_RESPONSE.
const FETCH_SOCKETS = 7;
const FETCH_SOCKETS_RESPONSE = 8;

interface ClusterLike {
  type: number;
  uid: string;
  nsp: string;
  data?: { requestId?: string };
}

interface AdapterHooks {
  _roomcastPublished(message: ClusterLike): void;
  _roomcastRoomsChanged(socketId: string, joined: string[], left: string[]): void;
}

export class Hub extends EventEmitter implements LinkOwner {
  readonly engine: HubEngine;
  readonly token: string;
  readonly instanceId: string;
  readonly maxQueuedBytes: number;
  readonly welcomeTimeoutMs: number;
  readonly trust: Trust | null;
  /** Links by member id; the bootstrap link sits under its node's id once welcomed. */
  private links = new Map<string, NodeLink>();
  private bootstrap: NodeLink;
  private draining = false;
  private started = false;
  private closePromise: Promise<void> | null = null;
  private io: Server;

  constructor(
    io: Server,
    private readonly opts: HubOptions,
  ) {
    super();
    this.io = io;
    this.token = opts.token;
    this.instanceId = opts.instanceId;
    this.maxQueuedBytes = opts.maxQueuedBytes;
    this.trust = opts.trust;
    this.welcomeTimeoutMs = Math.max(1000, opts.connectTimeoutMs);
    this.engine = new HubEngine(() => this.close());
    this.bootstrap = new NodeLink(this, "", opts.endpoint);
  }

  log(level: "warn" | "debug", message: string): void {
    if (level === "warn") this.opts.logger.warn(`[roomcast] ${message}`);
    else this.opts.logger.debug?.(`[roomcast] ${message}`);
  }

  // ---------------------------------------------------------------------------------------
  // Start-up

  /**
   * Links to the endpoint's node, then to every node it lists. Rejects when the token is
   * refused or the endpoint cannot be reached within the connect timeout.
   */
  async start(): Promise<void> {
    const deadline = Date.now() + this.opts.connectTimeoutMs;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        const last = this.bootstrap.lastError ? ` (last error: ${this.bootstrap.lastError.message})` : "";
        const hint = this.trust ? "" : "; a hub whose app links are TLS (the default) needs its trust bundle: option `caFile` or ROOMCAST_APP_CA_FILE";
        reject(new Error(`@roomcast/socket.io: could not reach the hub's app link at ${this.opts.endpoint} within ${this.opts.connectTimeoutMs} ms${last}${hint}`));
      }, this.opts.connectTimeoutMs);
      const onUp = (link: NodeLink) => {
        if (link !== this.bootstrap) return;
        cleanup();
        resolve();
      };
      const onFail = (link: NodeLink, error: LinkError) => {
        if (link !== this.bootstrap) return;
        if (error.code === grpc.status.UNAUTHENTICATED) {
          cleanup();
          reject(new Error(`@roomcast/socket.io: the hub at ${this.opts.endpoint} refused the app token (UNAUTHENTICATED): check the token given to useRoomcast (ROOMCAST_APP_TOKEN) against the hub's appLink token`));
        } else if (error.code === grpc.status.INVALID_ARGUMENT) {
          cleanup();
          reject(new Error(`@roomcast/socket.io: the hub at ${this.opts.endpoint} refused the link (INVALID_ARGUMENT): ${error.message} (instance id ${JSON.stringify(this.instanceId)}: 1 to 128 characters of [A-Za-z0-9._-])`));
        } else if (error.code === grpc.status.UNIMPLEMENTED) {
          cleanup();
          reject(new Error(`@roomcast/socket.io: ${this.opts.endpoint} does not serve app links (UNIMPLEMENTED): is it a hub node's appLink address?`));
        }
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.off("node-up", onUp);
        this.off("link-failed", onFail);
      };
      this.on("node-up", onUp);
      this.on("link-failed", onFail);
      this.bootstrap.connect();
    }).catch((e) => {
      this.bootstrap.end();
      for (const link of this.links.values()) link.end();
      throw e;
    });
    this.started = true;
    // The other nodes: wait (within what is left of the timeout) until each listed one is linked.
    const pending = () => [...this.links.values()].filter((l) => l.state !== "open");
    while (pending().length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const link of pending()) {
      this.log("warn", `no link to hub node ${link.node} (${link.address}) yet${link.lastError ? `: ${link.lastError.message}` : ""}; still trying`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // LinkOwner

  onWelcome(link: NodeLink, welcome: Welcome): void {
    // Key the link by the node it reached (the endpoint, or an address a node used to have,
    // may lead to another node than expected); one link per node.
    const other = this.links.get(welcome.node);
    if (other && other !== link) {
      if (other.live) {
        this.log("debug", `a second link to hub node ${welcome.node} (via ${link.address}): ended`);
        this.unkey(link);
        link.end();
        return;
      }
      other.end();
    }
    this.unkey(link);
    this.links.set(welcome.node, link);
    this.log("debug", `linked to hub node ${welcome.node} at ${link.address}`);
    if (this.draining) link.send({ drain: {} });
    this.reconcile(link, welcome.members, true);
    this.emit("node-up", link);
  }

  onDown(link: NodeLink, sessions: Map<number, HubConn>, error: Error, welcomed: boolean): void {
    if (welcomed) this.log(this.draining ? "debug" : "warn", `app link to hub node ${link.node} ended: ${error.message}`);
    else this.log("debug", `app link to ${link.address} failed: ${error.message}`);
    this.emit("link-failed", link, error);
    for (const conn of sessions.values()) conn._closed("transport close");
    if (welcomed) this.emit("node-down", link);
    this.emit("sessions");
    this.probeEndpoint();
  }

  private unkey(link: NodeLink): void {
    for (const [id, l] of this.links) if (l === link) this.links.delete(id);
  }

  /**
   * With no live link left, the nodes may have moved (new addresses after a restart): the
   * configured endpoint is tried again too, as a new bootstrap link.
   */
  private probeEndpoint(): void {
    if (this.draining || !this.started || this.primary()) return;
    const target = (address: string) => {
      try {
        return parseAddress(address).target;
      } catch {
        return address;
      }
    };
    const endpoint = target(this.opts.endpoint);
    const tryingEndpoint = this.allLinks().some((l) => target(l.address) === endpoint && l.state !== "closed");
    if (tryingEndpoint) return;
    this.log("debug", `no live app link: trying the endpoint ${this.opts.endpoint} again`);
    this.bootstrap = new NodeLink(this, "", this.opts.endpoint);
    this.bootstrap.connect();
  }

  onMessage(link: NodeLink, message: HubMessage): void {
    switch (message.kind) {
      case "open": {
        const { session, socket_id_suffix, handshake, transport } = message.open;
        const conn = new HubConn(link, session, socket_id_suffix, handshake ?? { headers: [], url: "/", address: "", secure: false, issued: 0, claims_json: "" }, transport);
        link.sessions.set(session, conn);
        conn.once("close", () => {
          if (link.sessions.get(session) === conn) link.sessions.delete(session);
          this.emit("sessions");
        });
        if (this.draining) {
          conn.close();
          return;
        }
        this.engine._accept(conn);
        return;
      }
      case "packet": {
        const { session, body } = message.packet;
        const conn = link.sessions.get(session);
        if (!conn) return;
        conn._receive(body === "binary" ? message.packet.binary! : (message.packet.text ?? ""));
        return;
      }
      case "closed": {
        const conn = link.sessions.get(message.closed.session);
        if (conn) {
          link.sessions.delete(message.closed.session);
          conn._closed(message.closed.reason || "transport close");
        }
        return;
      }
      case "upgraded":
        link.sessions.get(message.upgraded.session)?._upgraded(message.upgraded.transport);
        return;
      case "published":
        this.onPublished(message.published.from, message.published.body);
        return;
      case "disconnect": {
        const { namespace, socket_id, close } = message.disconnect;
        const nsp = this.namespaces().get(namespace);
        const socket = nsp?.sockets.get(socket_id);
        if (socket) socket.disconnect(close);
        return;
      }
      case "rooms_changed": {
        const { namespace, socket_id, joined, left } = message.rooms_changed;
        const adapter = this.namespaces().get(namespace)?.adapter as unknown as Partial<AdapterHooks> | undefined;
        adapter?._roomcastRoomsChanged?.(socket_id, joined, left);
        return;
      }
      case "members":
        this.reconcile(link, message.members, false);
        return;
      default:
        this.log("debug", `unexpected ${(message as HubMessage).kind} on the link to ${link.node}`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Members

  /**
   * Opens links to listed nodes that have none. Only the broadcast link's list (or the
   * bootstrap's Welcome) closes the links of nodes it no longer lists, so that a node whose
   * view lags cannot make links flap.
   */
  private reconcile(from: NodeLink, members: Members | null, welcome: boolean): void {
    if (!members || this.draining) return;
    const listed = new Map(members.members.map((m) => [m.id, m.app_address] as const));
    for (const [id, address] of listed) {
      if (!address) continue;
      const link = this.links.get(id);
      if (link === this.bootstrap) {
        // Reconnect the bootstrap link to its node's own address (the endpoint may be a load
        // balancer in front of every node).
        link.address = address;
      } else if (!link || link.address !== address) {
        // A new node, or one that moved: (re)link to where it is now.
        if (link) link.end();
        const fresh = new NodeLink(this, id, address);
        this.links.set(id, fresh);
        fresh.connect();
      }
    }
    const authoritative = from === this.primary() || (welcome && from === this.bootstrap);
    if (!authoritative) return;
    for (const [id, link] of this.links) {
      if (listed.has(id) || link === from) continue;
      this.log("debug", `hub node ${id} left the member list: closing its link`);
      this.links.delete(id);
      link.end();
    }
  }

  /** The link broadcasts and Publish messages go on: the first live one. */
  primary(): NodeLink | null {
    if (this.bootstrap.live && this.links.get(this.bootstrap.node) === this.bootstrap) return this.bootstrap;
    const ids = [...this.links.keys()].sort();
    for (const id of ids) {
      const link = this.links.get(id)!;
      if (link.live) return link;
    }
    return null;
  }

  /** App instances linked to the broadcast link's node, this one included (at least 1). */
  serverCount(): number {
    const n = this.primary()?.members?.instances.length ?? 0;
    return Math.max(1, n);
  }

  nodes(): NodeStatus[] {
    const all = new Set<NodeLink>([...this.links.values()]);
    if (!this.links.has(this.bootstrap.node)) all.add(this.bootstrap);
    return [...all].map((l) => ({
      id: l.node,
      address: l.address,
      state: l.state,
      sessions: l.sessions.size,
      ...(l.lastError && l.state !== "open" ? { lastError: l.lastError.message } : {}),
    }));
  }

  sessionCount(): number {
    let n = 0;
    for (const l of this.allLinks()) n += l.sessions.size;
    return n;
  }

  private allLinks(): NodeLink[] {
    const all = new Set<NodeLink>([...this.links.values(), this.bootstrap]);
    return [...all];
  }

  private namespaces(): Map<string, { sockets: Map<string, { disconnect(close?: boolean): unknown }>; adapter: unknown }> {
    return (this.io as unknown as { _nsps: Map<string, never> })._nsps;
  }

  // ---------------------------------------------------------------------------------------
  // Hub-wide operations

  broadcast(broadcast: Broadcast): boolean {
    const link = this.primary();
    if (!link) {
      this.log("warn", `no live app link: a broadcast to ${broadcast.namespace} was dropped`);
      return false;
    }
    return link.sendBroadcast(broadcast);
  }

  /** Whether a volatile broadcast would be taken now. */
  get broadcastWritable(): boolean {
    return this.primary()?.writable ?? false;
  }

  broadcastWithReply(make: (request: number) => Broadcast): Promise<Reply | null> {
    const link = this.primary();
    if (!link) return Promise.resolve(null);
    return link.request((request) => ({ broadcast: make(request) }));
  }

  publish(to: string, body: Buffer): boolean {
    const link = this.primary();
    if (!link) return false;
    return link.send({ publish: { to, body } });
  }

  /** A cluster-adapter message from another instance: to its namespace's adapter. */
  private onPublished(from: string, body: Buffer): void {
    let message: ClusterLike;
    try {
      message = decodeClusterMessage(body) as ClusterLike;
    } catch (e) {
      this.log("warn", `undecodable message from instance ${from}: ${(e as Error).message}`);
      return;
    }
    if (!message || typeof message !== "object" || typeof message.nsp !== "string") return;
    const adapter = this.namespaces().get(message.nsp)?.adapter as Partial<AdapterHooks> | undefined;
    if (adapter?._roomcastPublished) {
      adapter._roomcastPublished(message);
      return;
    }
    // A namespace this instance does not have: answer fetchSockets with no sockets, so that
    // the requester does not wait for this server until its timeout.
    if (message.type === FETCH_SOCKETS && message.data?.requestId !== undefined && message.uid) {
      const response = {
        type: FETCH_SOCKETS_RESPONSE,
        uid: this.instanceId,
        nsp: message.nsp,
        data: { requestId: message.data.requestId, sockets: [] },
      };
      this.publish(message.uid, encodeClusterMessage(response));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Drain

  /**
   * Drain: tell every node to hand this instance no new sessions, close its sessions (their
   * clients reconnect to other instances), wait until the hub has confirmed each one closed
   * (or `timeoutMs`), then end the links.
   */
  close(timeoutMs = this.opts.drainTimeoutMs): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.draining = true;
    this.closePromise = (async () => {
      for (const link of this.allLinks()) {
        link.stopReconnecting();
        if (link.live) link.send({ drain: {} });
      }
      for (const link of this.allLinks()) {
        for (const conn of [...link.sessions.values()]) conn.close();
      }
      const deadline = Date.now() + timeoutMs;
      await new Promise<void>((resolve) => {
        const check = () => {
          if (this.sessionCount() === 0 || Date.now() >= deadline) {
            this.off("sessions", check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(check, Math.max(0, timeoutMs));
        this.on("sessions", check);
        check();
      });
      if (this.sessionCount() > 0) {
        this.log("warn", `drain: ${this.sessionCount()} sessions not confirmed closed within ${timeoutMs} ms; ending the links`);
      }
      for (const link of this.allLinks()) link.end();
    })();
    return this.closePromise;
  }
}
