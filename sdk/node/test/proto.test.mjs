// The package ships its own copy of the app link protocol: it must be the hub's.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";

const shipped = new URL("../proto/app.proto", import.meta.url);
const hub = new URL("../../../dataplane/proto/app.proto", import.meta.url);

test("sdk/node/proto/app.proto is a copy of dataplane/proto/app.proto", () => {
  const a = fs.readFileSync(shipped, "utf8");
  const b = fs.readFileSync(hub, "utf8");
  assert.ok(a.length > 1000, "the shipped proto is not empty");
  assert.equal(a, b, "sdk/node/proto/app.proto differs from dataplane/proto/app.proto: copy it (cp dataplane/proto/app.proto sdk/node/proto/)");
});
