// What the browser tests share: where the relay binary, Chromium and the artifacts are,
// free ports, child processes that log to the artifacts and are killed after the test,
// tokens from the real `relay token`, the relay, a rig (`relay host` fed by ffmpeg) and
// headless Chromium. Each test file runs in its own process, so each has its own children.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const RELAY_BIN = path.resolve(ROOT, process.env.RELAY_BIN || "target/debug/relay");
export const CHROMIUM = "/usr/bin/chromium";
export const ARTIFACTS = path.join(ROOT, "test-artifacts", "browser");
export const UPDATE_DOCS = process.env.RELAY_UPDATE_SCREENSHOTS === "1";

export function requireProgram(what, ok, hint) {
  assert.ok(ok, `${what} is required for the browser test: ${hint}`);
}

export async function importOrFail(name) {
  try {
    return await import(name);
  } catch (e) {
    throw new Error(`node module ${name} is missing: run \`npm ci --prefix web/test\` (${e.message})`);
  }
}

/// Fail unless the relay binary, Chromium, ffmpeg and the node modules are there; create
/// the artifacts directory; return playwright's `chromium` and the `ws` WebSocket.
export async function requireEverything() {
  requireProgram(`the relay binary at ${RELAY_BIN}`, fs.existsSync(RELAY_BIN), "cargo build -p relay-cli, or set RELAY_BIN");
  requireProgram(CHROMIUM, fs.existsSync(CHROMIUM), "apt-get install -y chromium");
  requireProgram("ffmpeg", spawnSync("ffmpeg", ["-version"]).status === 0, "apt-get install -y ffmpeg");
  const { chromium } = await importOrFail("playwright-core");
  const { WebSocket } = await importOrFail("ws");
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return { chromium, WebSocket };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/// Free ports by role: `freePorts("access", "relay")` is `{ access: <port>, relay: <port> }`.
export async function freePorts(...roles) {
  const ports = {};
  for (const role of roles) ports[role] = await freePort();
  return ports;
}

export async function waitFor(what, timeoutMs, check) {
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

export async function httpOk(url) {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

const children = new Set();

/// A child process whose output goes to a log file in the artifacts, stopped after the test.
export function run(name, program, args, env = {}) {
  const log = fs.openSync(path.join(ARTIFACTS, `${name}.log`), "a");
  const child = spawn(program, args, { env: { ...process.env, ...env }, stdio: ["ignore", log, log] });
  fs.closeSync(log);
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

export function stop(child, signal = "SIGTERM") {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

/// Kill every child still running (for `after`).
export function stopAll() {
  return Promise.all([...children].map((c) => stop(c, "SIGKILL")));
}

/// A relay token from the real `relay token`, signed with `secret` for `audience`, valid
/// for `lifetime` seconds.
export function mintRelayToken(audience, secret, topic, { read = true, write = true, other, admin = false, booking, lifetime = 600 } = {}) {
  const env = {
    ...process.env,
    RELAY_TOKEN_AUDIENCE: audience,
    RELAY_TOKEN_SECRET: secret,
    RELAY_TOKEN_LIFETIME: String(lifetime),
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

/// `relay serve` on 127.0.0.1 with its access API at `access` (port `ports.access`) and
/// websockets on `ports.relay`; tokens without a booking are allowed (`relay host`'s own
/// carry none); `env` adds or overrides settings. Resolves to the child once both ports
/// answer `/healthz`.
export async function startRelay(name, { access, ports, secret, env = {} }) {
  const relayHttp = `http://127.0.0.1:${ports.relay}`;
  const child = run(name, RELAY_BIN, ["serve"], {
    RELAY_AUDIENCE: access,
    RELAY_URL: `ws://127.0.0.1:${ports.relay}`,
    RELAY_SECRET: secret,
    RELAY_PORT_ACCESS: String(ports.access),
    RELAY_PORT_RELAY: String(ports.relay),
    RELAY_BIND: "127.0.0.1",
    RELAY_ALLOW_NO_BOOKING_ID: "true",
    RELAY_LOG_LEVEL: "info",
    ...env,
  });
  await waitFor("relay serve to listen", 15000, async () => (await httpOk(`${access}/healthz`)) && (await httpOk(`${relayHttp}/healthz`)));
  return child;
}

/// A rig: `relay host` on `port` sends feed `video` write-only to `video.url` and carries
/// feed `data` both ways to `data.url` (each `{ url, token }`), and ffmpeg feeds it a test
/// pattern; their logs are named `hostLog` and `ffmpegLog`, the rules live in a temporary
/// directory named `dirPrefix…`. Resolves, once both feeds reach the relay, to the host's
/// API URL and a check that both are connected (for waiting on a reconnect).
export async function startRig({ port, video, data, hostLog, ffmpegLog, dirPrefix }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix));
  const rules = path.join(dir, "rules.toml");
  fs.writeFileSync(rules, [
    "[[destinations]]", 'id = "video"', 'stream = "video"', `destination = "${video.url}"`, `token = "${video.token}"`, "",
    "[[destinations]]", 'id = "data"', 'stream = "data"', `destination = "${data.url}"`, `token = "${data.token}"`, "",
  ].join("\n"));
  run(hostLog, RELAY_BIN, ["host"], { VW_PORT: String(port), VW_RULES: rules, VW_LOG_LEVEL: "info" });
  const hostApi = `http://127.0.0.1:${port}`;
  const hostConnected = async () => {
    const status = await (await fetch(`${hostApi}/api/status`, { signal: AbortSignal.timeout(2000) })).json();
    return status.video?.connected === true && status.data?.connected === true;
  };
  await waitFor("relay host to reach the relay", 15000, hostConnected);
  run(ffmpegLog, "ffmpeg", [
    "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
    "-c:v", "mpeg1video", "-b:v", "800k", "-bf", "0", "-f", "mpegts", `${hostApi}/ts/video`,
  ]);
  return { hostApi, hostConnected };
}

/// Headless Chromium with a fresh profile (a temporary directory named `profilePrefix…`).
export function launchChromium(chromium, profilePrefix, viewport) {
  return chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), profilePrefix)), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport,
  });
}

/// A full-page screenshot into the artifacts; also into docs/ with RELAY_UPDATE_SCREENSHOTS=1.
export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
  if (UPDATE_DOCS) fs.copyFileSync(path.join(ARTIFACTS, `${name}.png`), path.join(ROOT, "docs", `${name}.png`));
}
