// The app link messages (proto/app.proto) as @grpc/proto-loader decodes them: field names as
// in the .proto (keepCase), 64-bit integers as numbers, defaults filled in, and `kind` (or
// `body`) naming the member of a oneof that is set.

export interface Limits {
  max_batch_bytes: number;
  max_queued_bytes: number;
}

export interface Member {
  id: string;
  app_address: string;
}

export interface Members {
  members: Member[];
  instances: string[];
}

export interface Welcome {
  node: string;
  limits: Limits | null;
  members: Members | null;
  hub_ack_base: number;
}

export interface Header {
  name: string;
  value: string;
}

export interface Handshake {
  headers: Header[];
  url: string;
  address: string;
  secure: boolean;
  issued: number;
  claims_json: string;
}

export interface Open {
  session: number;
  socket_id_suffix: string;
  handshake: Handshake | null;
  transport: string;
}

export interface Packet {
  session: number;
  text?: string;
  binary?: Buffer;
  body?: "text" | "binary";
  volatile?: boolean;
}

export interface Closed {
  session: number;
  reason: string;
}

export interface Upgraded {
  session: number;
  transport: string;
}

export interface AckReply {
  socket_id: string;
  args_json: string;
  attachments: Buffer[];
}

export interface Reply {
  request: number;
  error: string;
  recipients: number;
  acks: AckReply[];
  timed_out: boolean;
}

export interface Published {
  from: string;
  body: Buffer;
}

export interface Disconnect {
  session: number;
  namespace: string;
  socket_id: string;
  close: boolean;
}

export interface RoomsChanged {
  session: number;
  namespace: string;
  socket_id: string;
  joined: string[];
  left: string[];
}

export type HubMessage =
  | { kind: "welcome"; welcome: Welcome }
  | { kind: "open"; open: Open }
  | { kind: "packet"; packet: Packet }
  | { kind: "closed"; closed: Closed }
  | { kind: "upgraded"; upgraded: Upgraded }
  | { kind: "reply"; reply: Reply }
  | { kind: "published"; published: Published }
  | { kind: "disconnect"; disconnect: Disconnect }
  | { kind: "rooms_changed"; rooms_changed: RoomsChanged }
  | { kind: "members"; members: Members };

export interface HubBatch {
  messages: HubMessage[];
}

export interface Join {
  session: number;
  namespace: string;
  socket_id: string;
  rooms: string[];
  request?: number;
}

export interface Leave {
  session: number;
  namespace: string;
  socket_id: string;
  rooms?: string[];
  all?: boolean;
}

export interface Broadcast {
  namespace: string;
  rooms: string[];
  except: string[];
  volatile: boolean;
  text: string;
  attachments: Buffer[];
  request?: number;
  ack_timeout_ms?: number;
}

/** App -> hub; exactly one field set (the oneof `kind`). */
export type AppMessage =
  | { packet: { session: number; text?: string; binary?: Buffer; volatile?: boolean } }
  | { close: { session: number } }
  | { join: Join }
  | { leave: Leave }
  | { broadcast: Broadcast }
  | { publish: { to: string; body: Buffer } }
  | { drain: Record<string, never> };
