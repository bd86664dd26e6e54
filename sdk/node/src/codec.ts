// Encodings the SDK needs besides the protobuf envelope:
// - the cluster adapter's messages between app instances (Publish/Published bodies): msgpack,
//   as socket.io's Redis adapters do (binary values survive);
// - the arguments of a client's ack collected by the hub (AckReply): JSON whose binary values
//   are socket.io-parser placeholders `{"_placeholder":true,"num":N}` naming an attachment.

import notepack from "notepack.io";

export function encodeClusterMessage(message: unknown): Buffer {
  return notepack.encode(message);
}

export function decodeClusterMessage(body: Buffer): unknown {
  return notepack.decode(body);
}

function isPlaceholder(value: unknown): value is { _placeholder: true; num: number } {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { _placeholder?: unknown })._placeholder === true &&
    typeof (value as { num?: unknown }).num === "number"
  );
}

function rebuild(value: unknown, attachments: Buffer[]): unknown {
  if (isPlaceholder(value)) {
    const { num } = value;
    if (!Number.isInteger(num) || num < 0 || num >= attachments.length) {
      throw new Error(`ack placeholder ${num} names no attachment (${attachments.length} given)`);
    }
    return attachments[num];
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = rebuild(value[i], attachments);
    return value;
  }
  if (typeof value === "object" && value !== null) {
    const obj = value as Record<string, unknown>;
    for (const key of Object.keys(obj)) obj[key] = rebuild(obj[key], attachments);
    return obj;
  }
  return value;
}

/** The arguments of one client's ack: `args_json` with its placeholders replaced by the attachments. */
export function decodeAckArgs(argsJson: string, attachments: Buffer[]): unknown[] {
  const parsed: unknown = argsJson === "" ? [] : JSON.parse(argsJson);
  const args = Array.isArray(parsed) ? parsed : [parsed];
  return rebuild(args, attachments) as unknown[];
}
