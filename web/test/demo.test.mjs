// The demo page in a real browser (issue #8): Debian's Chromium, driven by playwright-core,
// watches video that ffmpeg feeds through the real `relay host` and `relay serve`, sends a
// command that a local websocket client of `relay host` answers, keeps playing after the
// relay restarts, and the /stats page lists the connections. Opened from a booking's UI link
// (`?streams=…&exp=…`) it plays and carries commands too, and says so when the relay closes
// the session because the booking was denied (4003).
//
// Needs: the relay binary (RELAY_BIN, default target/debug/relay), /usr/bin/chromium
// (`apt-get install -y chromium`), ffmpeg, and `npm ci --prefix web/test`. Missing any of
// them fails the test. Screenshots go to test-artifacts/; with RELAY_UPDATE_SCREENSHOTS=1
// they are also written to docs/demo.png and docs/stats.png for the README.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const RELAY_BIN = path.resolve(ROOT, process.env.RELAY_BIN || "target/debug/relay");
const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = path.join(ROOT, "test-artifacts", "browser");
const SECRET = "browser-e2e-secret";
const UPDATE_DOCS = process.env.RELAY_UPDATE_SCREENSHOTS === "1";

function requireProgram(what, ok, hint) {
  assert.ok(ok, `${what} is required for the browser test: ${hint}`);
}

async function importOrFail(name) {
  try {
    return await import(name);
  } catch (e) {
    throw new Error(`node module ${name} is missing: run \`npm ci --prefix web/test\` (${e.message})`);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${last.message})` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function httpOk(url) {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

const children = new Set();

/// A child process whose output goes to a log file in the artifacts, stopped after the test.
function run(name, program, args, env = {}) {
  const log = fs.openSync(path.join(ARTIFACTS, `${name}.log`), "a");
  const child = spawn(program, args, { env: { ...process.env, ...env }, stdio: ["ignore", log, log] });
  fs.closeSync(log);
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function stop(child, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

/// A token from the real `relay token`.
function mint(access, topic, { read = true, write = true, other, admin = false, booking } = {}) {
  const env = {
    ...process.env,
    RELAY_TOKEN_AUDIENCE: access,
    RELAY_TOKEN_SECRET: SECRET,
    RELAY_TOKEN_LIFETIME: "600",
    RELAY_TOKEN_TOPIC: topic,
    RELAY_TOKEN_SCOPE_READ: String(read),
    RELAY_TOKEN_SCOPE_WRITE: String(write),
  };
  if (other) env.RELAY_TOKEN_SCOPE_OTHER = other;
  if (admin) env.RELAY_TOKEN_SCOPE_ADMIN = "true";
  if (booking) env.RELAY_TOKEN_BOOKING_ID = booking;
  const out = spawnSync(RELAY_BIN, ["token"], { env, encoding: "utf8" });
  assert.equal(out.status, 0, `relay token failed: ${out.stderr}`);
  return out.stdout.trim();
}

let ports, access, relayHttp;
let relay;

async function startRelay() {
  relay = run("relay-serve", RELAY_BIN, ["serve"], {
    RELAY_AUDIENCE: access,
    RELAY_URL: `ws://127.0.0.1:${ports.relay}`,
    RELAY_SECRET: SECRET,
    RELAY_PORT_ACCESS: String(ports.access),
    RELAY_PORT_RELAY: String(ports.relay),
    RELAY_BIND: "127.0.0.1",
    RELAY_ALLOW_NO_BOOKING_ID: "true",
    RELAY_LOG_LEVEL: "info",
  });
  await waitFor("relay serve to listen", 15000, async () => (await httpOk(`${access}/healthz`)) && (await httpOk(`${relayHttp}/healthz`)));
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
  if (UPDATE_DOCS) fs.copyFileSync(path.join(ARTIFACTS, `${name}.png`), path.join(ROOT, "docs", `${name}.png`));
}

let browser, WebSocket, chromium;

before(async () => {
  requireProgram(`the relay binary at ${RELAY_BIN}`, fs.existsSync(RELAY_BIN), "cargo build -p relay-cli, or set RELAY_BIN");
  requireProgram(CHROMIUM, fs.existsSync(CHROMIUM), "apt-get install -y chromium");
  requireProgram("ffmpeg", spawnSync("ffmpeg", ["-version"]).status === 0, "apt-get install -y ffmpeg");
  ({ chromium } = await importOrFail("playwright-core"));
  ({ WebSocket } = await importOrFail("ws"));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  ports = { access: await freePort(), relay: await freePort(), host: await freePort() };
  access = `http://127.0.0.1:${ports.access}`;
  relayHttp = `http://127.0.0.1:${ports.relay}`;
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await Promise.all([...children].map((c) => stop(c, "SIGKILL")));
});

test("the demo page plays video, carries commands and survives a relay restart", { timeout: 90000 }, async () => {
  await startRelay();

  // relay host: feed `video` goes out write-only, feed `data` both ways.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "relay-browser-"));
  const rules = path.join(dir, "rules.toml");
  fs.writeFileSync(
    rules,
    [
      "[[destinations]]",
      'id = "video"',
      'stream = "video"',
      `destination = "${access}/session/video"`,
      `token = "${mint(access, "video", { read: false, write: true })}"`,
      "",
      "[[destinations]]",
      'id = "data"',
      'stream = "data"',
      `destination = "${access}/session/data"`,
      `token = "${mint(access, "data")}"`,
      "",
    ].join("\n"),
  );
  run("relay-host", RELAY_BIN, ["host"], { VW_PORT: String(ports.host), VW_RULES: rules, VW_LOG_LEVEL: "info" });
  const hostApi = `http://127.0.0.1:${ports.host}`;
  const hostConnected = async () => {
    const resp = await fetch(`${hostApi}/api/status`, { signal: AbortSignal.timeout(2000) });
    const status = await resp.json();
    return status.video?.connected === true && status.data?.connected === true;
  };
  await waitFor("relay host to reach the relay", 15000, hostConnected);

  // The experiment: a test pattern from ffmpeg, and a device that answers every command.
  run("ffmpeg", "ffmpeg", [
    "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
    "-c:v", "mpeg1video", "-b:v", "800k", "-bf", "0", "-f", "mpegts", `${hostApi}/ts/video`,
  ]);
  const commands = [];
  const device = new WebSocket(`ws://127.0.0.1:${ports.host}/ws/data`);
  device.on("message", (data) => {
    const text = data.toString();
    commands.push(text);
    device.send(`reply to ${text}`);
  });
  await new Promise((resolve, reject) => { device.once("open", resolve); device.once("error", reject); });

  browser = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), "relay-chromium-")), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1100, height: 760 },
  });
  const page = await browser.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  const fragment = new URLSearchParams({
    access,
    video: "video",
    videoToken: mint(access, "video", { read: true, write: false }),
    data: "data",
    dataToken: mint(access, "data"),
  });
  await page.goto(`${relayHttp}/demo#${fragment}`);
  const state = () => page.evaluate(() => ({ ...window.demoState, replies: [...window.demoState.replies] }));
  try {
    await page.waitForFunction(() => window.demoState.framesDecoded >= 25, null, { timeout: 10000 });

    // A command typed in the page reaches the device; its reply shows in the page.
    await page.waitForFunction(() => window.demoState.data === "up", null, { timeout: 5000 });
    await page.fill("#command-text", "start 1");
    await page.click("#send");
    await page.locator("#log li.in", { hasText: "reply to start 1" }).waitFor({ timeout: 5000 });
    assert.deepEqual(commands, ["start 1"]);
    await screenshot(page, "demo");

    // The relay dies and comes back on the same ports: the page reconnects and plays on.
    await stop(relay, "SIGKILL");
    const before = await state();
    await startRelay();
    await page.waitForFunction(
      (n) => window.demoState.reconnects >= 2 && window.demoState.framesDecoded >= n + 25,
      before.framesDecoded,
      { timeout: 20000 },
    );
    await page.waitForFunction(() => window.demoState.data === "up", null, { timeout: 10000 });
    await waitFor("relay host to reconnect", 15000, hostConnected);
    await page.fill("#command-text", "start 2");
    await page.click("#send");
    await page.locator("#log li.in", { hasText: "reply to start 2" }).waitFor({ timeout: 5000 });
    assert.deepEqual(commands, ["start 1", "start 2"]);
    const after = await state();
    assert.ok(after.framesDecoded > before.framesDecoded, JSON.stringify({ before, after }));
    assert.equal(after.messagesReceived, 2);
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, "demo-failure.png"), fullPage: true }).catch(() => {});
    e.message += `\npage state: ${JSON.stringify(await state().catch(() => null))}\nconsole:\n${consoleLines.join("\n")}`;
    throw e;
  }

  // The stats page lists this test's connections: relay host's two and the page's two.
  const stats = await browser.newPage();
  await stats.goto(`${relayHttp}/stats#token=${mint(access, "stats", { other: "relay:stats" })}`);
  await stats.waitForFunction(() => {
    const topics = [...document.querySelectorAll("#rows tr td:first-child")].map((td) => td.textContent);
    return topics.filter((t) => t === "video").length >= 2 && topics.filter((t) => t === "data").length >= 2;
  }, null, { timeout: 10000 });
  const rows = await stats.locator("#rows tr").count();
  assert.ok(rows >= 4, `stats shows ${rows} connections`);
  assert.match(await stats.locator("#rows").innerText(), /HeadlessChrome|Chrome/);
  await screenshot(stats, "stats");

  // A booking's UI link (docs/booking.md, "UI links"): the streams' full URLs and tokens in
  // the query, here for a booking of its own so that denying it touches nothing else.
  const exp = Math.floor(Date.now() / 1000) + 600;
  const streams = [
    { for: "video", url: `${access}/session/video`, token: mint(access, "video", { read: true, write: false, booking: "bk-link" }) },
    { for: "data", url: `${access}/session/data`, token: mint(access, "data", { booking: "bk-link" }) },
  ];
  const linked = await browser.newPage();
  linked.on("console", (m) => consoleLines.push(`linked ${m.type()}: ${m.text()}`));
  linked.on("pageerror", (e) => consoleLines.push(`linked pageerror: ${e.message}`));
  await linked.goto(`${relayHttp}/demo?streams=${encodeURIComponent(JSON.stringify(streams))}&exp=${exp}`);
  try {
    assert.equal(await linked.inputValue("#access"), access);
    assert.equal(await linked.inputValue("#video"), "video");
    await linked.waitForFunction(() => window.demoState.framesDecoded >= 25, null, { timeout: 10000 });
    await linked.waitForFunction(() => window.demoState.data === "up", null, { timeout: 5000 });
    await linked.fill("#command-text", "start 3");
    await linked.click("#send");
    await linked.locator("#log li.in", { hasText: "reply to start 3" }).waitFor({ timeout: 5000 });
    assert.match(await linked.locator("#session").innerText(), /^Booked session until /);

    // The booking is denied at the relay: the page shows the 4003 close and stops asking.
    const deny = await fetch(`${access}/bids/deny?bid=bk-link&exp=${exp}`, {
      method: "POST",
      headers: { Authorization: mint(access, "admin", { admin: true }) },
    });
    assert.equal(deny.status, 204, await deny.text());
    await linked.waitForFunction(() => window.demoState.closeCodes.includes(4003), null, { timeout: 2000 });
    assert.equal(await linked.locator("#session").innerText(),
      "The session was closed by the relay: 4003 booking denied. The booking was cancelled or has ended.");
    assert.deepEqual(await linked.evaluate(() => [window.demoState.video, window.demoState.data]), ["down", "down"]);
    // The first page's booking is another one: it plays on (in front: hidden tabs get no
    // animation frames, so they decode nothing).
    await page.bringToFront();
    const playing = (await state()).framesDecoded;
    await page.waitForFunction((n) => window.demoState.framesDecoded > n + 10, playing, { timeout: 5000 });
  } catch (e) {
    await linked.screenshot({ path: path.join(ARTIFACTS, "demo-link-failure.png"), fullPage: true }).catch(() => {});
    e.message += `\nconsole:\n${consoleLines.join("\n")}`;
    throw e;
  }
  device.close();
});
