// One app link: a gRPC bidirectional stream (AppLink.Link) to one hub node, reconnected with
// backoff when it ends. It batches what the app sends (queue.ts), decodes what the hub sends
// and hands it to its owner (hub.ts), and keeps the state that dies with the stream: the
// sessions handed to it and the requests waiting for a Reply.

import * as grpc from "@grpc/grpc-js";
import { backoffDelay } from "./backoff.js";
import type { HubConn, SessionLink } from "./engine.js";
import type { AppMessage, Broadcast, HubBatch, HubMessage, Members, Reply, Welcome } from "./messages.js";
import { decodeBatch, encodeMessage, LINK_METHOD } from "./proto.js";
import { OutQueue } from "./queue.js";
import { checkNode, type Trust } from "./trust.js";

export type LinkState = "connecting" | "open" | "backoff" | "closed";

export interface LinkOwner {
  readonly token: string;
  readonly instanceId: string;
  readonly maxQueuedBytes: number;
  readonly welcomeTimeoutMs: number;
  /** The hub's trust bundle: every link is TLS when set. */
  readonly trust: Trust | null;
  log(level: "warn" | "debug", message: string): void;
  onWelcome(link: NodeLink, welcome: Welcome): void;
  onMessage(link: NodeLink, message: HubMessage): void;
  /** The stream ended; `sessions` were its sessions (to be closed), `error` why. */
  onDown(link: NodeLink, sessions: Map<number, HubConn>, error: Error, welcomed: boolean): void;
}

/** gRPC status of a failed link, when there was one. */
export class LinkError extends Error {
  constructor(
    message: string,
    readonly code?: grpc.status,
  ) {
    super(message);
  }
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 5_000,
  "grpc.use_local_subchannel_pool": 1,
};

/** "http://HOST:PORT", "https://HOST:PORT" or "HOST:PORT" -> gRPC target and credentials. */
export function parseAddress(address: string): { target: string; secure: boolean } {
  const m = /^(https?):\/\/([^/]+)\/?$/.exec(address.trim());
  if (m) return { target: m[2], secure: m[1] === "https" };
  if (/^[^/\s]+:\d+$/.test(address.trim())) return { target: address.trim(), secure: false };
  throw new Error(`@roomcast/socket.io: bad app link address ${JSON.stringify(address)} (expected "http://HOST:PORT" or "HOST:PORT")`);
}

export class NodeLink implements SessionLink {
  state: LinkState = "connecting";
  /** The node's member id (known from its Welcome; before that, the configured key). */
  node: string;
  welcome: Welcome | null = null;
  /** The latest member list this node sent (Welcome, then Members). */
  members: Members | null = null;
  /** Sessions handed to this link, by handle (cleared when the stream ends). */
  sessions = new Map<number, HubConn>();
  /** Reconnection attempts since the last Welcome. */
  attempt = 0;
  lastError: Error | null = null;

  private client: grpc.Client | null = null;
  private call: grpc.ClientDuplexStream<Buffer, HubBatch> | null = null;
  private queue: OutQueue | null = null;
  private pending = new Map<number, (reply: Reply | null) => void>();
  private nextRequest = 1;
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly owner: LinkOwner,
    key: string,
    public address: string,
  ) {
    this.node = key;
  }

  get live(): boolean {
    return this.state === "open" && this.queue !== null;
  }

  get writable(): boolean {
    return this.live && !this.queue!.congested;
  }

  get queuedBytes(): number {
    return this.queue?.bytes ?? 0;
  }

  /** Opens the stream (again). */
  connect(): void {
    if (this.stopped) return;
    this.clearTimer();
    this.state = "connecting";
    const generation = ++this.generation;
    let parsed: { target: string; secure: boolean };
    try {
      parsed = parseAddress(this.address);
    } catch (e) {
      this.down(generation, e as Error);
      return;
    }
    const creds = this.credentials(parsed.secure);
    // Over TLS the server name is the node's member id (what its certificate names), not the
    // IP the link dials (an IP is no valid SNI).
    const options = this.owner.trust
      ? { ...CHANNEL_OPTIONS, "grpc.ssl_target_name_override": this.node || "roomcast-app-link" }
      : CHANNEL_OPTIONS;
    const client = new grpc.Client(parsed.target, creds, options);
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${this.owner.token}`);
    md.set("roomcast-app-instance", this.owner.instanceId);
    const call = client.makeBidiStreamRequest<Buffer, HubBatch>(LINK_METHOD, (b) => b, decodeBatch, md, {});
    this.client = client;
    this.call = call;
    this.timer = setTimeout(() => {
      if (generation === this.generation && !this.welcome) {
        this.down(generation, new LinkError(`no Welcome from ${this.address} within ${this.owner.welcomeTimeoutMs} ms`));
      }
    }, this.owner.welcomeTimeoutMs);
    call.on("data", (batch: HubBatch) => {
      if (generation !== this.generation) return;
      for (const message of batch.messages) {
        if (generation !== this.generation) return;
        try {
          this.handle(message);
        } catch (e) {
          this.owner.log("warn", `app link ${this.node}: handling ${message.kind} failed: ${(e as Error).stack ?? e}`);
        }
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      this.down(generation, new LinkError(`${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`, err.code));
    });
    call.on("status", (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) this.down(generation, new LinkError("the hub ended the link", status.code));
    });
    call.on("end", () => {
      this.down(generation, new LinkError("the hub ended the link", grpc.status.OK));
    });
  }

  /**
   * TLS against the hub's bundle, the certificate naming this link's node (any node of the
   * hub for the endpoint's link before its Welcome); system roots for a bare "https://"
   * endpoint; else plaintext.
   */
  private credentials(https: boolean): grpc.ChannelCredentials {
    const trust = this.owner.trust;
    if (trust) {
      const node = this.node;
      return grpc.credentials.createSsl(trust.bundle(), null, null, {
        checkServerIdentity: (_host, cert) => checkNode(node, cert),
      });
    }
    return https ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  }

  private handle(message: HubMessage): void {
    switch (message.kind) {
      case "welcome": {
        const welcome = message.welcome;
        this.clearTimer();
        this.welcome = welcome;
        this.node = welcome.node || this.node;
        this.members = welcome.members ?? { members: [], instances: [] };
        this.attempt = 0;
        this.lastError = null;
        const call = this.call!;
        const maxBatchBytes = welcome.limits?.max_batch_bytes || 4 << 20;
        this.queue = new OutQueue({
          maxBatchBytes,
          maxQueuedBytes: Math.max(this.owner.maxQueuedBytes, maxBatchBytes * 2),
          write: (batch, done) => {
            call.write(batch, done);
          },
        });
        this.state = "open";
        this.owner.onWelcome(this, welcome);
        return;
      }
      case "reply": {
        const resolve = this.pending.get(message.reply.request);
        if (resolve) {
          this.pending.delete(message.reply.request);
          resolve(message.reply);
        }
        return;
      }
      case "members":
        this.members = message.members;
        this.owner.onMessage(this, message);
        return;
      default:
        this.owner.onMessage(this, message);
    }
  }

  private down(generation: number, error: Error): void {
    if (generation !== this.generation) return;
    this.generation++;
    this.clearTimer();
    const welcomed = this.welcome !== null;
    this.welcome = null;
    this.queue?.stop();
    this.queue = null;
    const call = this.call;
    const client = this.client;
    this.call = null;
    this.client = null;
    try {
      call?.cancel();
    } catch {}
    client?.close();
    const sessions = this.sessions;
    this.sessions = new Map();
    const pending = this.pending;
    this.pending = new Map();
    this.lastError = error;
    this.state = this.stopped ? "closed" : "backoff";
    for (const resolve of pending.values()) resolve(null);
    this.owner.onDown(this, sessions, error, welcomed);
    if (!this.stopped) {
      const delay = backoffDelay(this.attempt++);
      this.timer = setTimeout(() => this.connect(), delay);
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Queues one message; false when it could not be (link down, dropped, too large). */
  send(message: AppMessage, volatile = false): boolean {
    const queue = this.queue;
    if (!queue || this.state !== "open") return false;
    const result = queue.push(encodeMessage(message), volatile);
    switch (result) {
      case "queued":
        return true;
      case "dropped":
        return false;
      case "too-large":
        this.owner.log("warn", `app link ${this.node}: a ${Object.keys(message)[0]} message is larger than the hub's max_batch_bytes (${this.welcome?.limits?.max_batch_bytes}); dropped`);
        return false;
      case "overflow":
        this.owner.log("warn", `app link ${this.node}: outgoing queue full (${queue.bytes} bytes): the link is ended and its sessions closed`);
        this.down(this.generation, new LinkError("outgoing queue full"));
        return false;
    }
  }

  /** Sends a message that carries `request` and resolves with its Reply (null: the link ended first). */
  request(make: (request: number) => AppMessage): Promise<Reply | null> {
    if (!this.live) return Promise.resolve(null);
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      if (!this.send(make(id))) {
        if (this.pending.delete(id)) resolve(null);
      }
    });
  }

  sendPacket(session: number, data: string | Buffer, volatile: boolean): boolean {
    const ok = this.send(
      { packet: typeof data === "string" ? { session, text: data, volatile } : { session, binary: data, volatile } },
      volatile,
    );
    if (!ok && !volatile && this.live) {
      // A packet that could not be queued (too large) would leave the session's stream with a
      // hole: close the session instead.
      const conn = this.sessions.get(session);
      conn?.close();
    }
    return ok;
  }

  sendClose(session: number): void {
    this.send({ close: { session } });
  }

  sendBroadcast(broadcast: Broadcast): boolean {
    return this.send({ broadcast }, broadcast.volatile);
  }

  /** Stops reconnecting; the stream stays until `end()`. */
  stopReconnecting(): void {
    this.stopped = true;
    if (this.state !== "open" && this.state !== "connecting") {
      this.clearTimer();
      this.state = "closed";
    }
  }

  /** Ends the stream now and for good. */
  end(): void {
    this.stopped = true;
    if (this.call || this.state === "connecting") {
      const call = this.call;
      try {
        call?.end();
      } catch {}
      this.down(this.generation, new LinkError("closed by the app"));
    }
    this.clearTimer();
    this.state = "closed";
  }
}
