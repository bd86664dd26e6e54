// The adapter socket.io uses with a hub (`io.adapter(...)`): rooms and broadcasts are the
// hub's, hub-wide socket operations are socket.io-adapter's ClusterAdapter over Publish.
//
// - Rooms: the adapter keeps the in-memory adapter's maps as a mirror of its own sockets'
//   rooms (socket.rooms, local fetchSockets) and reports every join (Join, with a request: the
//   returned promise resolves once every hub node will deliver) and leave (Leave) on the
//   socket's session link. The hub's own changes (RoomsChanged) update the mirror only.
// - Broadcasts: encoded once with socket.io's encoder, sent once (Broadcast); the hub
//   delivers to every socket of the hub, this instance's included. Acks of a broadcast are
//   collected by the hub and come back in one Reply.
// - fetchSockets, socketsJoin/Leave, disconnectSockets, serverSideEmit: ClusterAdapter's
//   requests and responses, msgpack-encoded, in Publish messages that the hub relays to the
//   other instances. The servers that answer are the instances linked to the hub node
//   (Members.instances), which is what serverCount() reports.

import adapterModule from "socket.io-adapter";
import type { BroadcastOptions, ClusterMessage, ClusterResponse, Room, SocketId } from "socket.io-adapter";
import { decodeAckArgs, encodeClusterMessage } from "./codec.js";
import { HubConn } from "./engine.js";
import type { Hub } from "./hub.js";
import { makeSocketId, wrapCreateSocket } from "./ids.js";

const { ClusterAdapter, Adapter: InMemoryAdapter } = adapterModule;

const WRAPPED = Symbol.for("@roomcast/socket.io.createSocket");

interface LocalSocket {
  id: string;
  notifyOutgoingListeners?: (packet: unknown) => void;
}

interface Packet {
  type: number;
  nsp?: string;
  data?: unknown[];
  id?: number;
}

/** The time the hub waits for clients' acks: a little less than the emit's own timeout, so
 * that the hub's Reply (with the acks that did come) arrives before socket.io gives up. */
export function hubAckTimeout(timeout: number | undefined): number {
  if (timeout === undefined || !(timeout > 0)) return 1;
  const margin = Math.min(Math.max(Math.round(timeout / 10), 20), 500);
  return Math.max(1, Math.min(0xffffffff, Math.round(timeout - margin)));
}

export interface RoomcastAdapterHooks {
  _roomcastTrack(socketId: string, conn: HubConn): void;
  _roomcastPublished(message: ClusterMessage | ClusterResponse): void;
  _roomcastRoomsChanged(socketId: string, joined: string[], left: string[]): void;
}

/** A constructor of socket.io adapters, as `io.adapter()` takes. */
export type AdapterConstructor = new (nsp: any) => InstanceType<typeof InMemoryAdapter> & RoomcastAdapterHooks;

/** The adapter class for one hub (one `useRoomcast` call). */
export function createAdapterClass(hub: Hub): AdapterConstructor {
  class RoomcastAdapter extends ClusterAdapter implements RoomcastAdapterHooks {
    /** This instance's sockets of this namespace: their session, and whether the hub knows them. */
    private readonly local = new Map<SocketId, { conn: HubConn; known: boolean }>();

    constructor(nsp: any) {
      super(nsp);
      // Responses to this instance's requests are addressed to its instance id.
      (this as unknown as { uid: string }).uid = hub.instanceId;
      if (!nsp[WRAPPED]) {
        nsp[WRAPPED] = true;
        wrapCreateSocket<HubConn>(
          nsp,
          (conn) => (conn instanceof HubConn ? makeSocketId(conn.roomcast.socketIdSuffix) : undefined),
          (socket, conn) => {
            const adapter = nsp.adapter as Partial<RoomcastAdapterHooks>;
            adapter._roomcastTrack?.(socket.id, conn);
          },
        );
      }
    }

    _roomcastTrack(socketId: string, conn: HubConn): void {
      this.local.set(socketId, { conn, known: false });
    }

    private get nspName(): string {
      return this.nsp.name as string;
    }

    override serverCount(): Promise<number> {
      return Promise.resolve(hub.serverCount());
    }

    // -------------------------------------------------------------------------------------
    // Rooms

    override addAll(id: SocketId, rooms: Set<Room>): Promise<void> {
      super.addAll(id, rooms);
      const entry = this.local.get(id);
      if (!entry || entry.conn.readyState !== "open" || rooms.size === 0) return Promise.resolve();
      entry.known = true;
      const { conn } = entry;
      conn._hold();
      return conn.link
        .request((request) => ({
          join: { session: conn.session, namespace: this.nspName, socket_id: id, rooms: [...rooms], request },
        }))
        .finally(() => conn._release())
        .then((reply) => {
          if (!reply?.error) return;
          // A session that ended meanwhile is no news; anything else is (a hub limit, say).
          const level = conn.readyState === "open" ? "warn" : "debug";
          hub.log(level, `join of ${id} to ${[...rooms].join(", ")} in ${this.nspName}: ${reply.error}`);
        });
    }

    override del(id: SocketId, room: Room): void {
      super.del(id, room);
      const entry = this.local.get(id);
      if (!entry || !entry.known || entry.conn.readyState !== "open") return;
      const { conn } = entry;
      conn.link.send({ leave: { session: conn.session, namespace: this.nspName, socket_id: id, rooms: [room] } });
    }

    override delAll(id: SocketId): void {
      super.delAll(id);
      const entry = this.local.get(id);
      this.local.delete(id);
      if (!entry || !entry.known || entry.conn.readyState !== "open") return;
      const { conn } = entry;
      conn.link.send({ leave: { session: conn.session, namespace: this.nspName, socket_id: id, all: true } });
    }

    /** The hub changed a socket's rooms (management API): the mirror follows, nothing is sent. */
    _roomcastRoomsChanged(socketId: string, joined: string[], left: string[]): void {
      if (!this.local.has(socketId) && !this.sids.has(socketId)) return;
      if (joined.length) super.addAll(socketId, new Set(joined));
      for (const room of left) super.del(socketId, room);
    }

    // -------------------------------------------------------------------------------------
    // Broadcasts

    private encode(packet: Packet): { text: string; attachments: Buffer[] } {
      const encoded = (this.nsp.server.encoder as { encode(p: Packet): unknown[] }).encode(packet);
      const [text, ...rest] = encoded;
      if (typeof text !== "string") {
        throw new Error("@roomcast/socket.io: the hub needs socket.io's default parser (a custom parser encoded a packet as binary)");
      }
      return { text, attachments: rest.map((b) => (Buffer.isBuffer(b) ? b : Buffer.from(b as ArrayBuffer))) };
    }

    /** socket.io calls a socket's onAnyOutgoing listeners for broadcasts it writes: do so for this instance's recipients. */
    private notifyLocal(packet: Packet, opts: BroadcastOptions): void {
      const apply = (this as unknown as { apply(o: BroadcastOptions, f: (s: LocalSocket) => void): void }).apply;
      apply.call(this, opts, (socket) => {
        if (typeof socket.notifyOutgoingListeners === "function") socket.notifyOutgoingListeners(packet);
      });
    }

    override broadcast(packet: Packet, opts: BroadcastOptions): Promise<void> {
      if (opts.flags?.local) {
        // This instance's sockets only: written on their own sessions.
        InMemoryAdapter.prototype.broadcast.call(this, packet, opts);
        return Promise.resolve();
      }
      packet.nsp = this.nspName;
      const volatile = !!opts.flags?.volatile;
      if (volatile && !hub.broadcastWritable) return Promise.resolve();
      const { text, attachments } = this.encode(packet);
      this.notifyLocal(packet, opts);
      hub.broadcast({
        namespace: this.nspName,
        rooms: [...opts.rooms],
        except: [...(opts.except ?? [])],
        volatile,
        text,
        attachments,
      });
      return Promise.resolve();
    }

    override broadcastWithAck(
      packet: Packet,
      opts: BroadcastOptions,
      clientCountCallback: (clientCount: number) => void,
      ack: (...args: unknown[]) => void,
    ): void {
      // socket.io waits for serverCount() client counts: the hub's Reply is the count of the
      // whole hub, the other servers report none.
      const servers = hub.serverCount();
      const counted = (n: number) => {
        clientCountCallback(n);
        for (let i = 1; i < servers; i++) clientCountCallback(0);
      };
      if (opts.flags?.local) {
        InMemoryAdapter.prototype.broadcastWithAck.call(this, packet, opts, counted, ack);
        return;
      }
      packet.nsp = this.nspName;
      const { text, attachments } = this.encode(packet);
      this.notifyLocal(packet, opts);
      const ackTimeout = hubAckTimeout(opts.flags?.timeout);
      hub
        .broadcastWithReply((request) => ({
          namespace: this.nspName,
          rooms: [...opts.rooms],
          except: [...(opts.except ?? [])],
          volatile: !!opts.flags?.volatile,
          text,
          attachments,
          request,
          ack_timeout_ms: ackTimeout,
        }))
        .then((reply) => {
          if (!reply) {
            hub.log("warn", `a broadcast with acks to ${this.nspName} got no reply (no live link)`);
            return;
          }
          if (reply.error) {
            hub.log("warn", `a broadcast with acks to ${this.nspName} failed: ${reply.error}`);
            return;
          }
          counted(reply.recipients);
          for (const a of reply.acks) {
            let args: unknown[];
            try {
              args = decodeAckArgs(a.args_json, a.attachments);
            } catch (e) {
              hub.log("warn", `bad ack from ${a.socket_id}: ${(e as Error).message}`);
              continue;
            }
            ack(...args);
          }
        });
    }

    // -------------------------------------------------------------------------------------
    // Between instances

    protected override doPublish(message: ClusterMessage): Promise<string> {
      hub.publish("", encodeClusterMessage(message));
      return Promise.resolve("");
    }

    protected override doPublishResponse(requesterUid: string, response: ClusterResponse): Promise<void> {
      hub.publish(requesterUid, encodeClusterMessage(response));
      return Promise.resolve();
    }

    _roomcastPublished(message: ClusterMessage | ClusterResponse): void {
      this.onMessage(message as ClusterMessage);
    }
  }
  return RoomcastAdapter;
}
