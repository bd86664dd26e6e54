// Socket ids. The hub routes `to(socket.id)` by the id's suffix, which names the node that
// holds the session (Open.socket_id_suffix), so every socket of a hub session gets
// 16 random base64url characters followed by that suffix.
//
// socket.io makes a socket's id in its Socket constructor, called from the namespace's
// `_createSocket`. The adapter wraps `_createSocket` on each namespace instance it serves (not
// the prototype: other servers in the process keep theirs) and gives the new socket its id
// before the namespace records it anywhere.

import { randomBytes } from "node:crypto";

/** 16 random base64url characters (96 bits) followed by `suffix`. */
export function makeSocketId(suffix: string): string {
  return randomBytes(12).toString("base64url") + suffix;
}

interface CreatesSockets {
  _createSocket(client: { conn: unknown }, auth: unknown): Promise<{ id: string; recovered?: boolean }>;
}

/**
 * Wraps `nsp._createSocket` so that `idFor(conn)` names each new socket (`undefined`: keep
 * socket.io's id) and `created(socket, conn)` sees it. Recovered sockets keep their id.
 */
export function wrapCreateSocket<C>(
  nsp: unknown,
  idFor: (conn: unknown) => string | undefined,
  created: (socket: { id: string }, conn: C) => void,
): void {
  const target = nsp as CreatesSockets;
  const original = target._createSocket;
  if (typeof original !== "function") {
    throw new Error("@roomcast/socket.io: this socket.io version has no Namespace._createSocket (socket.io >= 4.6.0 is required)");
  }
  target._createSocket = async function (this: CreatesSockets, client, auth) {
    const socket = await original.call(this, client, auth);
    const id = socket.recovered ? undefined : idFor(client.conn);
    if (id !== undefined) {
      socket.id = id;
      created(socket, client.conn as C);
    }
    return socket;
  };
}
