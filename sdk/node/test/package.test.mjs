// The published package: what `npm pack` ships, and that an app installs it and compiles
// against its types.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL("..", import.meta.url));
const npm = (args, cwd) => execFileSync("npm", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

test("npm pack ships dist, the proto and the README, not the sources or tests", () => {
  const [info] = JSON.parse(npm(["pack", "--dry-run", "--json"], here));
  const files = info.files.map((f) => f.path).sort();
  for (const f of ["package.json", "README.md", "proto/app.proto", "dist/index.js", "dist/index.d.ts", "dist/adapter.js", "dist/link.js"]) {
    assert.ok(files.includes(f), `${f} in the package (${files.join(", ")})`);
  }
  assert.deepEqual(files.filter((f) => f.startsWith("src/") || f.startsWith("test/") || f.includes("node_modules")), []);
});

test("an app installs the package and compiles against its types", { timeout: 180_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-sdk-app-"));
  try {
    npm(["pack", "--pack-destination", dir], here);
    const tgz = fs.readdirSync(dir).find((f) => f.endsWith(".tgz"));
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    npm(["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", `./${tgz}`, "socket.io@4.8.4"], dir);
    fs.writeFileSync(
      path.join(dir, "app.ts"),
      [
        'import { Server } from "socket.io";',
        'import { useRoomcast, type RoomcastOptions, type RoomcastLink } from "@roomcast/socket.io";',
        "const io = new Server();",
        'const options: RoomcastOptions = { endpoint: "127.0.0.1:1", token: "x", connectTimeout: 100 };',
        "export async function main(): Promise<RoomcastLink> {",
        "  const link = await useRoomcast(io, options);",
        "  const n: number = link.sessions;",
        "  void n;",
        "  await link.close({ timeout: 1000 });",
        "  return link;",
        "}",
        "",
      ].join("\n"),
    );
    const tsc = path.join(here, "node_modules", "typescript", "bin", "tsc");
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--skipLibCheck", "app.ts"], {
      cwd: dir,
      encoding: "utf8",
    });
    const out = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", 'import("@roomcast/socket.io").then((m) => console.log(typeof m.useRoomcast, typeof m.RoomcastLink))'],
      { cwd: dir, encoding: "utf8" },
    );
    assert.equal(out.trim(), "function function");
    // The proto the package loads at run time is in it.
    assert.ok(fs.existsSync(path.join(dir, "node_modules", "@roomcast", "socket.io", "proto", "app.proto")));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
