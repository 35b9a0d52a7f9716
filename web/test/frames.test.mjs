// Frames written by the relay decode exactly in two independent clients (issue 17,
// "Correctness"): Node's `ws` and Chromium's own WebSocket (Debian's Chromium driven by
// playwright-core). A `ws` writer publishes through a real `relay serve` to one reader of
// each kind.
//
// - Every payload length at a frame-header boundary (0, 125, 126, 65,535, 65,536) and
//   10 MiB, as text and as binary: each reader sees the same type, length and SHA-256.
//   10 MiB is exactly the default RELAY_MAX_MESSAGE_BYTES (the largest message the relay
//   accepts; left at its default here).
// - The close frames a test can make the relay send a reader, with each code and reason of
//   `hub::CloseReason`: 4001 (token expired), 4003 (booking denied), 4008 (reader too slow:
//   a `ws` reader that pauses after every message, and a page whose message handler is
//   slow) and 1001 (shutdown, on SIGTERM).
//
// Needs: the relay binary (RELAY_BIN, default target/debug/relay), /usr/bin/chromium and
// `npm ci --prefix web/test`. Missing any of them fails the test.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";

import {
  ARTIFACTS, CHROMIUM, RELAY_BIN, requireProgram, importOrFail, freePorts, waitFor, stop, stopAll,
  mintRelayToken, startRelay, launchChromium,
} from "./support.mjs";

const SECRET = "frames-browser-e2e-secret-32-bytes!";
const MAX_MESSAGE = 10 * 1024 * 1024;
const LENGTHS = [0, 125, 126, 65535, 65536, MAX_MESSAGE];
const WAIT_MS = 30000;

let WebSocket, browser;

before(async () => {
  requireProgram(`the relay binary at ${RELAY_BIN}`, fs.existsSync(RELAY_BIN), "cargo build -p relay-cli, or set RELAY_BIN");
  requireProgram(CHROMIUM, fs.existsSync(CHROMIUM), "apt-get install -y chromium");
  const { chromium } = await importOrFail("playwright-core");
  ({ WebSocket } = await importOrFail("ws"));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium(chromium, "relay-frames-chromium-", { width: 800, height: 600 });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
});

/// A started `relay serve` with helpers for its tokens, sessions and status.
async function relayServe(name, env = {}) {
  const ports = await freePorts("access", "relay");
  const access = `http://127.0.0.1:${ports.access}`;
  const child = await startRelay(name, { access, ports, secret: SECRET, env });
  const mint = (topic, options) => mintRelayToken(access, SECRET, topic, options);
  const statsToken = mint("stats", { other: "relay:stats" });
  return {
    child,
    access,
    page: `http://127.0.0.1:${ports.relay}/healthz`,
    mint,
    /// The websocket URI the access API hands out for `token`.
    async uri(topic, token) {
      const response = await fetch(`${access}/session/${topic}`, { method: "POST", headers: { Authorization: token } });
      const body = await response.text();
      assert.equal(response.status, 200, body);
      return JSON.parse(body).uri;
    },
    /// Waits until `/status` lists `n` connections on `topic`.
    async members(topic, n) {
      await waitFor(`${n} connections on ${topic}`, WAIT_MS, async () => {
        const body = await (await fetch(`${access}/status`, { headers: { Authorization: statsToken } })).text();
        return body.split(`"${topic}"`).length - 1 === n;
      });
    },
  };
}

function sha256(bytes) {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

/// `len` bytes that are not all alike (the same bytes as frames_e2e.rs).
function binaryPayload(len) {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = ((i * 131) ^ (i >> 8)) & 0xff;
  return b;
}

/// Valid UTF-8 of exactly `len` bytes, with 2-, 3- and 4-byte characters in it.
function textPayload(len) {
  const pieces = ["relay ", "é", "→", "🎥"].map((p) => [p, Buffer.byteLength(p)]);
  const parts = [];
  let bytes = 0;
  for (let i = 0; ; i++) {
    const [piece, size] = pieces[i % pieces.length];
    if (bytes + size > len) break;
    parts.push(piece);
    bytes += size;
  }
  return parts.join("") + ".".repeat(len - bytes);
}

/// Lines in arrival order, awaited one at a time.
function lineQueue() {
  const lines = [];
  const waiters = [];
  return {
    push(line) {
      const waiter = waiters.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    },
    next(what) {
      if (lines.length) return Promise.resolve(lines.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${what}: nothing within ${WAIT_MS} ms`)), WAIT_MS);
        waiters.push((line) => { clearTimeout(timer); resolve(line); });
      });
    },
  };
}

/// A `ws` reader on `uri`: `next()` is its next line (`text|binary <length> <sha256>`),
/// `close()` the close it heard (`close <code> <reason>`), skipping data lines. With
/// `delayMs` it pauses that long after every message (a reader too slow for its writer).
async function wsReader(uri, { delayMs = 0 } = {}) {
  const ws = new WebSocket(uri, { perMessageDeflate: false, maxPayload: 2 * MAX_MESSAGE });
  const lines = lineQueue();
  ws.on("message", (data, isBinary) => {
    lines.push(`${isBinary ? "binary" : "text"} ${data.length} ${sha256(data)}`);
    if (delayMs) {
      ws.pause();
      setTimeout(() => ws.resume(), delayMs);
    }
  });
  ws.on("close", (code, reason) => lines.push(`close ${code} ${reason.toString()}`));
  ws.on("error", (e) => lines.push(`error ${e.message}`));
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  return readerOf(lines.next);
}

/// A reader in a Chromium page (its own WebSocket, hashing with WebCrypto), with the same
/// lines as `wsReader`. With `delayMs` its message handler keeps the page busy that long.
async function chromiumReader(pageUrl, uri, { delayMs = 0 } = {}) {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  await page.evaluate(([uri, delayMs]) => {
    const lines = [];
    window.frameTest = { lines };
    const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
    let chain = Promise.resolve(); // keeps the lines in arrival order while hashing
    const ws = new WebSocket(uri);
    ws.binaryType = "arraybuffer";
    window.frameTest.opened = new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    ws.onmessage = (e) => {
      const text = typeof e.data === "string";
      const bytes = text ? new TextEncoder().encode(e.data) : new Uint8Array(e.data);
      chain = chain.then(async () => lines.push(`${text ? "text" : "binary"} ${bytes.length} ${hex(await crypto.subtle.digest("SHA-256", bytes))}`));
      const until = performance.now() + delayMs;
      while (performance.now() < until) { /* a slow reader */ }
    };
    ws.onclose = (e) => { chain = chain.then(() => lines.push(`close ${e.code} ${e.reason}`)); };
  }, [uri, delayMs]);
  await page.evaluate(() => window.frameTest.opened.then(() => true));
  let seen = 0;
  return readerOf(async (what) => {
    await page.waitForFunction((n) => window.frameTest.lines.length > n, seen, { timeout: WAIT_MS, polling: 50 })
      .catch((e) => { throw new Error(`${what}: ${e.message}`); });
    return page.evaluate((n) => window.frameTest.lines[n], seen++);
  });
}

function readerOf(next) {
  return {
    next,
    async close(what) {
      for (;;) {
        const line = await next(what);
        if (!line.startsWith("text ") && !line.startsWith("binary ")) return line;
      }
    },
  };
}

/// A `ws` writer on `uri`; `send` resolves once the frame is written.
async function wsWriter(uri) {
  const ws = new WebSocket(uri, { perMessageDeflate: false });
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  return {
    ws,
    send: (data, binary) => new Promise((resolve, reject) => ws.send(data, { binary }, (e) => (e ? reject(e) : resolve()))),
  };
}

test("ws and Chromium decode every length and type, then hear the shutdown close", { timeout: 120000 }, async () => {
  const relay = await relayServe("frames-relay-lengths");
  const topic = "frames-lengths";
  const readerUri = async () => relay.uri(topic, relay.mint(topic, { read: true, write: false }));
  const readers = {
    ws: await wsReader(await readerUri()),
    chromium: await chromiumReader(relay.page, await readerUri()),
  };
  const writer = await wsWriter(await relay.uri(topic, relay.mint(topic, { read: false, write: true })));
  await relay.members(topic, 3);

  for (const len of LENGTHS) {
    // One at a time, each heard before the next is sent: two 10 MiB messages would not fit
    // one reader's queue (16 MiB) together.
    const text = textPayload(len);
    assert.equal(Buffer.byteLength(text), len);
    const binary = binaryPayload(len);
    for (const [data, isBinary, expected] of [
      [text, false, `text ${len} ${sha256(Buffer.from(text))}`],
      [binary, true, `binary ${len} ${sha256(binary)}`],
    ]) {
      await writer.send(data, isBinary);
      for (const [name, reader] of Object.entries(readers)) {
        assert.equal(await reader.next(`${name}: ${expected.split(" ", 2).join(" ")}`), expected, name);
      }
    }
  }

  await stop(relay.child, "SIGTERM");
  for (const [name, reader] of Object.entries(readers)) {
    assert.equal(await reader.next(`${name}: the shutdown close`), "close 1001 server going away", name);
  }
});

test("ws and Chromium hear the expiry, deny and too-slow close codes", { timeout: 120000 }, async () => {
  // Behind for 1 s is too slow (see the slow readers below).
  const relay = await relayServe("frames-relay-closes", { RELAY_SLOW_READER_TIMEOUT: "1s" });

  // Expiry and deny: a token that lives a few seconds (long enough to be exchanged for a
  // code and used), and a booking that is denied.
  const topic = "frames-closes";
  const reader = async (make, booking, lifetime) =>
    make(await relay.uri(topic, relay.mint(topic, { read: true, write: false, booking, lifetime })));
  const expiring = {
    ws: await reader((uri) => wsReader(uri), "bk-expiring", 4),
    chromium: await reader((uri) => chromiumReader(relay.page, uri), "bk-expiring", 4),
  };
  const denied = {
    ws: await reader((uri) => wsReader(uri), "bk-denied", 600),
    chromium: await reader((uri) => chromiumReader(relay.page, uri), "bk-denied", 600),
  };
  await relay.members(topic, 4);
  const exp = Math.floor(Date.now() / 1000) + 600;
  const deny = await fetch(`${relay.access}/bids/deny?bid=bk-denied&exp=${exp}`, {
    method: "POST",
    headers: { Authorization: relay.mint("admin", { admin: true }) },
  });
  assert.equal(deny.status, 204, await deny.text());
  for (const [name, r] of Object.entries(denied)) {
    assert.equal(await r.close(`${name}: the deny close`), "close 4003 booking denied", name);
  }
  for (const [name, r] of Object.entries(expiring)) {
    assert.equal(await r.close(`${name}: the expiry close`), "close 4001 token expired", name);
  }

  // Too slow: each reader takes a 64 KiB message every 20 ms (3.2 MB/s), so one batch of
  // 128 queued messages (8 MiB) takes seconds to write: its queue stays behind past the
  // limit, well inside the 10 s write timeout, and it keeps reading, so the close frame
  // gets through. The writer publishes 64 KiB every 2 ms until both have heard it.
  const slowTopic = "frames-slow";
  const slowUri = async () => relay.uri(slowTopic, relay.mint(slowTopic, { read: true, write: false }));
  const slow = {
    ws: await wsReader(await slowUri(), { delayMs: 20 }),
    chromium: await chromiumReader(relay.page, await slowUri(), { delayMs: 20 }),
  };
  const writer = await wsWriter(await relay.uri(slowTopic, relay.mint(slowTopic, { read: false, write: true })));
  await relay.members(slowTopic, 3);
  const payload = binaryPayload(64 * 1024);
  const publishing = setInterval(() => {
    if (writer.ws.readyState === WebSocket.OPEN && writer.ws.bufferedAmount < 1024 * 1024) writer.ws.send(payload);
  }, 2);
  try {
    for (const [name, r] of Object.entries(slow)) {
      assert.equal(await r.close(`${name}: the too-slow close`), "close 4008 reader too slow: queue stayed full", name);
    }
  } finally {
    clearInterval(publishing);
    writer.ws.close();
  }
});
