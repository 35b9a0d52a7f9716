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
import path from "node:path";

import {
  ARTIFACTS, requireEverything, freePorts, waitFor, stop, stopAll, mintRelayToken, startRelay, startRig,
  launchChromium, screenshot,
} from "./support.mjs";

const SECRET = "browser-e2e-secret";

/// A token from the real `relay token`.
function mint(access, topic, options) {
  return mintRelayToken(access, SECRET, topic, options);
}

let ports, access, relayHttp;
let relay;

async function startDemoRelay() {
  relay = await startRelay("relay-serve", { access, ports, secret: SECRET });
}

let browser, WebSocket, chromium;

before(async () => {
  ({ chromium, WebSocket } = await requireEverything());
  ports = await freePorts("access", "relay", "host");
  access = `http://127.0.0.1:${ports.access}`;
  relayHttp = `http://127.0.0.1:${ports.relay}`;
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
});

test("the demo page plays video, carries commands and survives a relay restart", { timeout: 90000 }, async () => {
  await startDemoRelay();

  // relay host: feed `video` goes out write-only, feed `data` both ways; the experiment is
  // a test pattern from ffmpeg, and a device that answers every command.
  const { hostConnected } = await startRig({
    port: ports.host,
    video: { url: `${access}/session/video`, token: mint(access, "video", { read: false, write: true }) },
    data: { url: `${access}/session/data`, token: mint(access, "data") },
    hostLog: "relay-host",
    ffmpegLog: "ffmpeg",
    dirPrefix: "relay-browser-",
  });
  const commands = [];
  const device = new WebSocket(`ws://127.0.0.1:${ports.host}/ws/data`);
  device.on("message", (data) => {
    const text = data.toString();
    commands.push(text);
    device.send(`reply to ${text}`);
  });
  await new Promise((resolve, reject) => { device.once("open", resolve); device.once("error", reject); });

  browser = await launchChromium(chromium, "relay-chromium-", { width: 1100, height: 760 });
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
    await startDemoRelay();
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
