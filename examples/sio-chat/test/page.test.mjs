// The sio-chat page in headless Chromium (Debian's, driven by puppeteer-core), twice with the
// same assertions: against `node server.mjs` standalone, and against a 3-node Roomcast hub
// with two instances of the same server.mjs linked to it (the pages connect to different hub
// nodes). Run by test/run.sh (CHROMIUM: the browser binary, default /usr/bin/chromium).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { startAppLinkHub, eventually, apiCall } from "../../../dataplane/tests/js/harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.join(HERE, "../server.mjs");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "sio-chat-app-link-token-0123";
const API_TOKEN = "sio-chat-management-token-0123";

/** Starts server.mjs with `env`; resolves with { url, proc } once it printed its URL. */
async function startChat(env) {
  const proc = spawn(process.execPath, [SERVER], {
    env: { ...process.env, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (err += d));
  await eventually(() => /http:\/\/\S+\//.test(out) || proc.exitCode !== null, 20_000, "sio-chat's URL line");
  assert.equal(proc.exitCode, null, `server.mjs exited: ${err}`);
  return { url: /(http:\/\/\S+\/)/.exec(out)[1], proc, stderr: () => err };
}

let browser;
before(async () => {
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
});
after(async () => {
  await browser?.close();
});

const text = (page, sel) => page.$eval(sel, (el) => el.textContent);
// Clicked from the page's own script: a click through the input pipeline waits for a frame,
// which a page in a background tab never renders.
const press = (page, sel) => page.$eval(sel, (el) => el.click());
const lines = (page) => page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
async function waitText(page, sel, re, what) {
  await eventually(async () => re.test(await text(page, sel)), 10_000, what);
}
async function waitLine(page, re, what) {
  await eventually(async () => (await lines(page)).some((l) => re.test(l)), 10_000, what);
}
async function login(url, name) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log(`# page error (${name}): ${e.message}`));
  await page.goto(url);
  await page.type("#name", name);
  await press(page, "#login button");
  await waitText(page, "#status", new RegExp(`connected as ${name}`), `${name} connected`);
  return page;
}

/** The chat, from two pages (`urlA`, `urlB`): identical assertions in both setups. */
async function chat(urlA, urlB) {
  // The middleware refuses an empty name.
  const nobody = await browser.newPage();
  await nobody.goto(urlA);
  await press(nobody, "#login button");
  await waitText(nobody, "#status", /refused: a name of 1 to 32 characters is required/, "refused without a name");
  await nobody.close();

  const alice = await login(urlA, "alice");
  const bob = await login(urlB, "bob");
  // The user list comes from fetchSockets, across every server.
  await eventually(async () => (await alice.$$eval("#users button", (b) => b.map((x) => x.textContent))).join() === "alice,bob", 10_000, "alice sees alice and bob");
  await waitLine(alice, /^bob joined #general$/, "alice is told bob joined");

  // A channel message reaches both; typing shows on the other page only.
  await bob.type("#text", "hi alice");
  await waitText(alice, "#typing", /bob is typing/, "bob's typing indicator on alice's page");
  assert.equal(await text(bob, "#typing"), "", "no typing indicator of one's own");
  await press(bob, "#send button");
  await waitLine(alice, /^#general bob: hi alice$/, "bob's message on alice's page");
  await waitLine(bob, /^#general bob: hi alice$/, "bob's message on bob's page");

  // A private message by socket id: bob clicks alice in the user list.
  await eventually(async () => (await bob.$$("#users button")).length === 2, 10_000, "bob's user list");
  await bob.$$eval("#users button", (bs) => bs.find((b) => b.textContent === "alice").click());
  await bob.type("#dm-text", "psst");
  await press(bob, "#dm button");
  await waitLine(alice, /^\(private\) bob: psst$/, "the private message on alice's page");
  await waitLine(bob, /^\(private to alice\) psst$/, "bob's own copy");

  // A channel only alice joined: bob gets nothing of it.
  await alice.type("#channel", "#dev");
  await press(alice, "#join button");
  await waitText(alice, "#current", /#dev/, "alice in #dev");
  await eventually(async () => (await alice.$$eval("#users button", (b) => b.map((x) => x.textContent))).join() === "alice", 10_000, "#dev's user list");
  await alice.type("#text", "dev only");
  await press(alice, "#send button");
  await waitLine(alice, /^#dev alice: dev only$/, "alice's #dev message");
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!(await lines(bob)).some((l) => l.includes("dev only")), "bob got a message of a channel he is not in");

  // Leaving: bob closes his page, alice is told.
  await bob.close();
  await waitLine(alice, /^bob left #general$/, "alice is told bob left");
  await alice.close();
}

describe("sio-chat standalone (node server.mjs)", () => {
  let chatServer;
  after(() => chatServer?.proc.kill());
  it("chats: middleware, rooms, typing, private messages, user list", { timeout: 120_000 }, async () => {
    chatServer = await startChat({});
    await chat(chatServer.url, chatServer.url);
  });
});

describe("sio-chat on a 3-node hub, two app instances", () => {
  const IPS = ["127.0.0.101", "127.0.0.102", "127.0.0.103"];
  let hub;
  const nodes = [];
  const apps = [];
  before(async () => {
    hub = await startAppLinkHub({ ips: IPS, token: TOKEN, apiToken: API_TOKEN });
    hub.nodes.forEach((node, i) => {
      node.appAddr = hub.appAddresses[i];
      nodes.push(node);
    });
    for (const node of nodes) {
      await eventually(async () => (await apiCall(node, "GET", "/v1/stats")).nodes === IPS.length, 10_000, "linked");
    }
    // Two instances, each linked to every node through the first one's member list; each
    // serves the page pointing its clients at a different node.
    for (const [i, node] of [nodes[0], nodes[2]].entries()) {
      apps.push(await startChat({ ROOMCAST_APP_ENDPOINT: nodes[i].appAddr, ROOMCAST_APP_TOKEN: TOKEN, ROOMCAST_APP_CA_FILE: hub.caFile, HUB_URL: node.url }));
    }
  });
  after(async () => {
    for (const a of apps) a.proc.kill();
    for (const n of nodes) n.assertHealthy("after the sio-chat page test");
    await hub?.stop();
  });
  it("chats with the same assertions, the pages on different hub nodes", { timeout: 120_000 }, async () => {
    await chat(apps[0].url, apps[1].url);
  });
});
