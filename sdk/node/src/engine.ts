// What socket.io sees instead of engine.io: an engine that emits "connection" with one
// connection object per hub session, each shaped like an engine.io Socket (the fields and
// events socket.io's Client and Socket use: id, request, remoteAddress, protocol, readyState,
// transport.name/writable, write(), close(); "data", "close", "error", "upgrade").
//
// The hub runs the transports (polling, WebSocket, heartbeats, upgrades); a session's
// engine.io messages travel unchanged on its app link.

import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
import type { AppMessage, Handshake, Reply } from "./messages.js";

/** What a connection needs from the link its session came on. */
export interface SessionLink {
  /** The hub node's member id. */
  readonly node: string;
  /** Queues one engine.io message of a session; false when it was dropped. */
  sendPacket(session: number, data: string | Buffer, volatile: boolean): boolean;
  /** Queues the app's Close of a session. */
  sendClose(session: number): void;
  /** Whether the link takes volatile packets now (false while its queue is congested). */
  readonly writable: boolean;
  /** Queues any message; false when it was dropped. */
  send(message: AppMessage, volatile?: boolean): boolean;
  /** Sends a message carrying a request id; resolves with its Reply (null: the link ended first). */
  request(make: (request: number) => AppMessage): Promise<Reply | null>;
}

/** Roomcast's facts about a session, as `socket.conn.roomcast`. */
export interface SessionInfo {
  /** The hub node that holds the session. */
  node: string;
  /** The session's handle on its app link. */
  session: number;
  /** The suffix of the socket ids of this session (it names the node). */
  socketIdSuffix: string;
  /** The client's token claims when the hub verifies client tokens (Handshake.claims_json). */
  claims: unknown;
}

class HubTransport {
  constructor(
    readonly name: string,
    private readonly link: SessionLink,
  ) {}
  get writable(): boolean {
    return this.link.writable;
  }
}

function headersOf(handshake: Handshake): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = Object.create(null);
  for (const { name, value } of handshake.headers) {
    const key = name.toLowerCase();
    const prev = headers[key];
    if (prev === undefined) headers[key] = value;
    else if (key === "set-cookie") headers[key] = Array.isArray(prev) ? [...prev, value] : [prev, value];
    else headers[key] = `${prev}${key === "cookie" ? "; " : ", "}${value}`;
  }
  return headers;
}

function queryOf(url: string): Record<string, string> {
  const query: Record<string, string> = Object.create(null);
  try {
    for (const [k, v] of new URL(url, "http://localhost").searchParams) query[k] = v;
  } catch {
    // a malformed URL leaves the query empty
  }
  return query;
}

/** One hub session, as socket.io's Client sees an engine.io Socket. */
export class HubConn extends EventEmitter {
  readonly id = randomBytes(15).toString("base64url");
  readonly protocol = 4;
  readyState: "open" | "closing" | "closed" = "open";
  transport: HubTransport;
  upgraded = false;
  upgrading = false;
  private holds = 0;
  private held: (string | Buffer)[] = [];
  readonly remoteAddress: string;
  readonly request: {
    headers: Record<string, string | string[]>;
    url: string;
    method: string;
    _query: Record<string, string>;
    connection: { encrypted: boolean; remoteAddress: string };
    socket: { encrypted: boolean; remoteAddress: string };
  };
  readonly roomcast: SessionInfo;
  private droppedVolatile = false;

  constructor(
    readonly link: SessionLink,
    readonly session: number,
    socketIdSuffix: string,
    handshake: Handshake,
    transport: string,
  ) {
    super();
    this.transport = new HubTransport(transport || "polling", link);
    this.remoteAddress = handshake.address;
    const socket = { encrypted: handshake.secure, remoteAddress: handshake.address };
    this.request = {
      headers: headersOf(handshake),
      url: handshake.url,
      method: "GET",
      _query: queryOf(handshake.url),
      connection: socket,
      socket,
    };
    let claims: unknown = undefined;
    if (handshake.claims_json) {
      try {
        claims = JSON.parse(handshake.claims_json);
      } catch {
        claims = undefined;
      }
    }
    this.roomcast = { node: link.node, session, socketIdSuffix, claims };
  }

  /** engine.io's `socket.write(data, opts, callback)`: one engine.io message to the client. */
  write(data: string | Buffer, opts?: { volatile?: boolean }, callback?: () => void): this {
    if (this.readyState !== "open") return this;
    // Every frame of a volatile packet is marked (the hub drops the packet whole). The first
    // frame of a socket.io packet is text, binary frames are its attachments: when the text
    // frame of a volatile packet could not be queued, its attachments are not sent either.
    const volatile = !!opts?.volatile;
    if (typeof data === "string") {
      const sent = this.link.sendPacket(this.session, data, volatile);
      this.droppedVolatile = volatile && !sent;
    } else if (!(volatile && this.droppedVolatile)) {
      this.link.sendPacket(this.session, toBuffer(data), volatile);
    }
    if (callback) setImmediate(callback);
    return this;
  }

  send(data: string | Buffer, opts?: { volatile?: boolean }, callback?: () => void): this {
    return this.write(data, opts, callback);
  }

  /** engine.io's `socket.close()`: the hub closes the session; "close" follows its Closed. */
  close(_discard?: boolean): this {
    if (this.readyState !== "open") return this;
    this.readyState = "closing";
    this.link.sendClose(this.session);
    return this;
  }

  /** An engine.io message from the client. */
  _receive(data: string | Buffer): void {
    if (this.readyState === "closed") return;
    if (this.holds > 0) {
      this.held.push(data);
      return;
    }
    this.emit("data", data);
    this.emit("message", data);
  }

  /**
   * Holds the client's packets while one of its sockets' joins is under way. Standalone,
   * `await socket.join()` resumes within the same tick, before the next packet is read, so
   * handlers registered after it see every event; on a hub the join waits for every node, and
   * a packet read meanwhile would reach a socket with no handler yet and be lost.
   */
  _hold(): void {
    this.holds++;
  }

  /** A join is done: once none is left, the held packets go on, in order (after the awaiting code resumed). */
  _release(): void {
    setImmediate(() => {
      if (this.holds === 0 || --this.holds > 0) return;
      const held = this.held.splice(0);
      for (const data of held) this._receive(data);
    });
  }

  /**
   * The session ended (hub's Closed, or its link ended). An app that closed the session
   * itself sees engine.io's reason, "forced close".
   *
   * socket.io handles each decoded packet on a later tick (process.nextTick), while the
   * messages of one batch from the hub are handled at once: "close" is emitted after those
   * ticks (setImmediate), so that the packets the client sent before it left (a DISCONNECT,
   * say) are handled first, as with engine.io where they come in earlier reads.
   */
  _closed(reason: string, description?: unknown): void {
    if (this.readyState === "closed") return;
    const why = this.readyState === "closing" ? "forced close" : reason;
    // What the client sent before it left goes first, held or not.
    this.holds = 0;
    for (const data of this.held.splice(0)) this._receive(data);
    this.readyState = "closed";
    setImmediate(() => this.emit("close", why, description));
  }

  /** The client upgraded its transport. */
  _upgraded(name: string): void {
    if (this.readyState === "closed") return;
    this.transport = new HubTransport(name, this.link);
    this.upgraded = true;
    this.emit("upgrading", this.transport);
    this.emit("upgrade", this.transport);
  }
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(String(data));
}

/** The engine bound to socket.io (`io.bind(engine)`): emits "connection" per hub session. */
export class HubEngine extends EventEmitter {
  /** Live connections by id, as engine.io's `clients`. */
  readonly clients: Record<string, HubConn> = Object.create(null);

  constructor(private readonly onClose: () => unknown) {
    super();
  }

  get clientsCount(): number {
    return Object.keys(this.clients).length;
  }

  /** Hands a session to socket.io. */
  _accept(conn: HubConn): void {
    this.clients[conn.id] = conn;
    conn.once("close", () => {
      delete this.clients[conn.id];
    });
    this.emit("connection", conn);
  }

  /** socket.io's `io.close()` ends with `engine.close()`: drain the links. */
  close(): this {
    void Promise.resolve(this.onClose()).catch(() => {});
    return this;
  }
}
