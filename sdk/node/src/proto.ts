// The app link's wire format, loaded at run time from proto/app.proto (no generated code).
//
// Messages are encoded one at a time, each as a one-message AppBatch: since AppBatch has a
// single repeated field, a batch's encoding is exactly the concatenation of its messages'
// one-message encodings. So a batch's size is known before it is sent (Welcome.limits), and a
// batch is written as the concatenated buffers, encoded once.

import { fileURLToPath } from "node:url";
import { loadSync, type MethodDefinition } from "@grpc/proto-loader";
import type { AppMessage, HubBatch } from "./messages.js";

/** Where the package's copy of app.proto is (next to dist/ and src/). */
export const PROTO_PATH = fileURLToPath(new URL("../proto/app.proto", import.meta.url));

const definition = loadSync(PROTO_PATH, {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

const service = definition["roomcast.app.v1.AppLink"] as unknown as Record<string, MethodDefinition<unknown, unknown>>;
const link = service.Link;
if (!link || !link.requestStream || !link.responseStream) {
  throw new Error(`${PROTO_PATH}: roomcast.app.v1.AppLink.Link is not a bidirectional stream`);
}

/** The gRPC method path of AppLink.Link. */
export const LINK_METHOD = link.path;

/** One message, encoded as a one-message AppBatch (concatenate them to make a batch). */
export function encodeMessage(message: AppMessage): Buffer {
  return link.requestSerialize({ messages: [message] });
}

/** A HubBatch from the wire. */
export function decodeBatch(bytes: Buffer): HubBatch {
  return link.responseDeserialize(bytes) as HubBatch;
}

/** An AppBatch from the wire (what the hub reads; for tests and tools). */
export function decodeAppBatch(bytes: Buffer): { messages: Array<Record<string, unknown>> } {
  return link.requestDeserialize(bytes) as { messages: Array<Record<string, unknown>> };
}
