// The booking pages in a real browser (issue 16): Debian's Chromium, driven by
// playwright-core, against the real binaries — `relay serve`, `relay book serve` and
// `relay host` fed by ffmpeg. A student opens a group link, books "now", presses Start and
// opens the relay's demo UI from the activity; video plays and a command comes back from
// the rig; the admin page cancels the booking and, within 2 s, the UI shows that the relay
// closed the session with 4003; every control on both pages has a label. A second test
// books over the limit (from the keyboard) and while locked (set on the admin page), and the
// page shows the server's own messages; then the booking server is killed and restarted on
// its database, and the page says it is offline and recovers by itself.
//
// Needs: the relay binary (RELAY_BIN, default target/debug/relay), /usr/bin/chromium,
// ffmpeg, and `npm ci --prefix web/test`. Missing any of them fails the test. Screenshots go
// to test-artifacts/browser/; with RELAY_UPDATE_SCREENSHOTS=1 they are also written to
// docs/book-student.png, docs/book-admin.png and docs/book-experiment.png.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  ARTIFACTS, RELAY_BIN, requireEverything, freePorts, waitFor, httpOk, run, stop, stopAll, mintRelayToken,
  startRelay, startRig, launchChromium, screenshot,
} from "./support.mjs";

const RELAY_SECRET = "book-e2e-relay-secret";
const BOOK_SECRET = "book-e2e-admin-secret";
const LOCK_MESSAGE = "Exam in progress until 14:00";

/// A relay token from the real `relay token`, for `relay host`'s own connections.
function mintRelay(topic, options) {
  return mintRelayToken(access, RELAY_SECRET, topic, options);
}

/// A booking admin token (spec §4.2: HS256 over the admin secret, scope booking:admin).
function mintBookAdmin() {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const t = Math.floor(Date.now() / 1000) - 1;
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({
    scopes: ["booking:admin"], sub: "e2e-admin", aud: [book], exp: t + 3600, nbf: t, iat: t,
  })}`;
  return `${unsigned}.${crypto.createHmac("sha256", BOOK_SECRET).update(unsigned).digest("base64url")}`;
}

/// The lab: one group, one policy with two slots (rig 1 has a live `relay host`; rig 2 is
/// used by the refusals test), at most one booking at a time, and the relay's demo page as
/// the UI.
function manifest() {
  const d = (name, type) => ({ name, type, short: `${name} (e2e)` });
  const stream = (role, scopes) => ({ url: access, connection_type: "session", for: role, scopes, topic: "auto" });
  return {
    descriptions: {
      "d-g": d("E2E lab", "group"),
      "d-p": d("Rigs", "policy"),
      "d-r": d("Rig", "resource"),
      "d-sl-1": d("Rig 1", "slot"),
      "d-sl-2": d("Rig 2", "slot"),
      "d-ui": d("Demo UI", "ui"),
    },
    display_guides: { "10m": { book_ahead: "2h", duration: "10m", max_slots: 6, label: "10 min" } },
    groups: { "g-e2e": { description: "d-g", policies: ["p-rigs"] } },
    policies: {
      "p-rigs": {
        description: "d-p",
        display_guides: ["10m"],
        slots: ["sl-1", "sl-2"],
        enforce_max_bookings: true,
        max_bookings: 1,
        enforce_book_ahead: true,
        book_ahead: "2h",
        enforce_max_duration: true,
        max_duration: "30m",
        enforce_allow_start_in_past: true,
        allow_start_in_past_within: "1m",
      },
    },
    resources: {
      "r-1": { description: "d-r", streams: ["data", "video"], topic_stub: "rig1" },
      "r-2": { description: "d-r", streams: ["data", "video"], topic_stub: "rig2" },
    },
    slots: {
      "sl-1": { description: "d-sl-1", policy: "p-rigs", resource: "r-1", ui_set: "us", window: "w" },
      "sl-2": { description: "d-sl-2", policy: "p-rigs", resource: "r-2", ui_set: "us", window: "w" },
    },
    streams: { data: stream("data", ["read", "write"]), video: stream("video", ["read"]) },
    uis: { "ui-demo": { description: "d-ui", url: `${relayHttp}/demo?streams={{streams}}&exp={{exp}}`, streams_required: ["data", "video"] } },
    ui_sets: { us: { UIs: ["ui-demo"] } },
    windows: { w: { allowed: [], denied: [] } },
  };
}

let ports, access, relayHttp, book, adminToken, bookDatabase, bookServer;

/// The booking server, with its SQLite database in a temporary directory (kept across a
/// restart).
async function startBook() {
  bookServer = run("book-serve", RELAY_BIN, ["book", "serve"], {
    BOOK_AUDIENCE: book,
    BOOK_ADMIN_SECRET: BOOK_SECRET,
    BOOK_RELAY_SECRET: RELAY_SECRET,
    BOOK_BIND: "127.0.0.1",
    BOOK_PORT: String(ports.book),
    BOOK_PERSIST_DIR: bookDatabase,
    BOOK_LOG_FILE: "stdout",
    BOOK_LOG_LEVEL: "info",
  });
  await waitFor("relay book serve to listen", 20000, () => httpOk(`${book}/healthz`));
}

/// Every form control and button has a name a screen reader can say.
async function unlabelledControls(page) {
  return page.evaluate(() => [...document.querySelectorAll("input, select, textarea, button, a[href], [role=tab], [role=switch]")]
    .filter((c) => !c.closest("[hidden]"))
    .filter((c) => {
      const named = c.getAttribute("aria-label") || c.getAttribute("aria-labelledby") || (c.labels && c.labels.length > 0);
      const text = ["BUTTON", "A"].includes(c.tagName) || c.getAttribute("role") === "tab" ? c.textContent.trim() : "";
      return !named && !text;
    })
    .map((c) => c.outerHTML.slice(0, 120)));
}
let chromium, WebSocket;
const browsers = [];

async function newBrowser() {
  const context = await launchChromium(chromium, "book-chromium-", { width: 412, height: 915 }); // a phone
  browsers.push(context);
  return context;
}

/// Console lines and page errors of every page of a context, for failure reports.
function watch(context) {
  const lines = [];
  const attach = (page) => {
    page.on("console", (m) => lines.push(`${page.url()} ${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => lines.push(`${page.url()} pageerror: ${e.message}`));
  };
  context.pages().forEach(attach);
  context.on("page", attach);
  return lines;
}

before(async () => {
  ({ chromium, WebSocket } = await requireEverything());
  ports = await freePorts("access", "relay", "host", "book");
  access = `http://127.0.0.1:${ports.access}`;
  relayHttp = `http://127.0.0.1:${ports.relay}`;
  book = `http://127.0.0.1:${ports.book}`;

  // The relay: the booking server's stream tokens are signed with the same secret, and
  // their audience is the stream URL of the manifest (the access URL).
  await startRelay("book-relay-serve", { access, ports, secret: RELAY_SECRET });

  bookDatabase = fs.mkdtempSync(path.join(os.tmpdir(), "book-e2e-db-"));
  await startBook();
  adminToken = mintBookAdmin();
  const put = await fetch(`${book}/api/v1/admin/manifest`, {
    method: "PUT",
    headers: { Authorization: adminToken, "Content-Type": "application/json" },
    body: JSON.stringify(manifest()),
  });
  assert.equal(put.status, 200, `manifest replace: ${await put.text()}`);

  // Rig 1: relay host sends ffmpeg's test pattern to rig1-video and carries rig1-data both
  // ways; a local websocket client plays the rig's controller and answers every command.
  await startRig({
    port: ports.host,
    video: { url: `${access}/session/rig1-video`, token: mintRelay("rig1-video", { read: false, write: true }) },
    data: { url: `${access}/session/rig1-data`, token: mintRelay("rig1-data") },
    hostLog: "book-relay-host",
    ffmpegLog: "book-ffmpeg",
    dirPrefix: "book-e2e-host-",
  });
  let counter = 0;
  rig = new WebSocket(`ws://127.0.0.1:${ports.host}/ws/data`);
  rig.on("message", (data) => {
    counter += 1;
    rigCommands.push(data.toString());
    rig.send(`echo ${counter}: ${data.toString()}`);
  });
  await new Promise((resolve, reject) => { rig.once("open", resolve); rig.once("error", reject); });
});

let rig;
const rigCommands = [];

after(async () => {
  if (rig) rig.close();
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  await stopAll();
});

/// Fail with the pages' console output and a screenshot of each page attached.
async function explain(context, lines, name, run) {
  try {
    await run();
  } catch (e) {
    let i = 0;
    for (const page of context.pages()) {
      i += 1;
      await page.screenshot({ path: path.join(ARTIFACTS, `${name}-failure-${i}.png`), fullPage: true }).catch(() => {});
    }
    e.message += `\nconsole:\n${lines.join("\n")}`;
    throw e;
  }
}

test("a student books now, starts the demo UI, and the admin's cancel closes it with 4003", { timeout: 120000 }, async () => {
  const context = await newBrowser();
  const lines = watch(context);
  await explain(context, lines, "book-journey", async () => {
    // 1. The group link: a new identity joins g-e2e and sees the rigs.
    const student = await context.newPage();
    await student.goto(`${book}/?group=g-e2e`);
    const bookNow = student.getByRole("button", { name: "Book Rig 1 now" });
    await bookNow.waitFor({ timeout: 15000 });
    assert.match(await student.locator("#whoami").innerText(), /^Signed in as \S{6,}$/);
    assert.equal(await student.getByRole("tab", { name: "10 min" }).first().getAttribute("aria-selected"), "true");
    await student.waitForFunction(() => !document.querySelector("button[aria-label='Book Rig 1 now']").disabled);

    // 2. Book now, then Start.
    await bookNow.click();
    const start = student.getByRole("button", { name: /^Start Rig 1,/ });
    await start.waitFor({ timeout: 10000 });
    const [booking] = await student.evaluate(() => window.bookState.bookings.map((b) => ({ name: b.name, slot: b.slot, user: b.user })));
    assert.equal(booking.slot, "sl-1");
    await student.waitForFunction(() => !document.querySelector("li.booking button.primary").disabled, null, { timeout: 5000 });
    assert.match(await student.locator("li.booking .countdown").innerText(), /^running, ends in \d+:\d\d$/);
    await start.click();
    const open = student.getByRole("link", { name: "Open Demo UI" });
    await open.waitFor({ timeout: 10000 });
    const href = await open.getAttribute("href");
    const link = new URL(href);
    assert.equal(`${link.origin}${link.pathname}`, `${relayHttp}/demo`);
    const streams = JSON.parse(link.searchParams.get("streams"));
    assert.deepEqual(streams.map((s) => s.for).sort(), ["data", "video"]);
    for (const s of streams) {
      assert.deepEqual(Object.keys(s).sort(), ["for", "token", "url"]);
      assert.equal(s.url, `${access}/session/rig1-${s.for}`);
    }
    assert.ok(Number(link.searchParams.get("exp")) > Date.now() / 1000);
    assert.deepEqual(await unlabelledControls(student), [], "every control on the student page has a label");
    await screenshot(student, "book-student");

    // 3. The demo UI opens from the link, and its video frame counter rises.
    const [ui] = await Promise.all([context.waitForEvent("page"), open.click()]);
    await ui.waitForLoadState();
    await ui.waitForFunction(() => window.demoState && window.demoState.framesDecoded >= 25, null, { timeout: 20000 });
    const frames = await ui.evaluate(() => window.demoState.framesDecoded);
    await ui.waitForFunction((n) => window.demoState.framesDecoded > n + 10, frames, { timeout: 10000 });

    // 4. A command sent from the UI comes back from the rig.
    await ui.waitForFunction(() => window.demoState.data === "up", null, { timeout: 10000 });
    await ui.fill("#command-text", "set mode swing");
    await ui.click("#send");
    await ui.locator("#log li.in", { hasText: "echo 1: set mode swing" }).waitFor({ timeout: 5000 });
    assert.deepEqual(rigCommands, ["set mode swing"]);
    await screenshot(ui, "book-experiment");

    // 5. The admin page (token in the link) cancels the booking.
    const adminPage = await context.newPage();
    await adminPage.goto(`${book}/admin?token=${encodeURIComponent(adminToken)}`);
    assert.equal(new URL(adminPage.url()).searchParams.get("token"), null, "the token is taken out of the address");
    const row = adminPage.locator(`#bookings tr[data-booking="${booking.name}"]`);
    await row.waitFor({ timeout: 10000 });
    assert.match(await row.innerText(), /sl-1/);
    assert.equal(await row.locator("td").nth(3).innerText(), "yes");
    assert.deepEqual(await unlabelledControls(adminPage), [], "every control on the admin page has a label");
    await screenshot(adminPage, "book-admin");
    const cancelledAt = Date.now();
    await row.getByRole("button", { name: `Cancel booking ${booking.name} of ${booking.user} on sl-1` }).click();

    // 6. Within 2 s the student's UI says the relay closed the session with 4003. (Pages
    // are brought to the front before waiting on them: hidden tabs get no animation frames.)
    await ui.bringToFront();
    await ui.waitForFunction(() => window.demoState.closeCodes.includes(4003), null, { timeout: 2000, polling: 50 });
    assert.ok(Date.now() - cancelledAt <= 2000, `closed after ${Date.now() - cancelledAt} ms`);
    const said = await ui.locator("#session").innerText();
    assert.match(said, /closed by the relay: 4003 booking denied/);

    // The admin page shows the cancellation and the deny call's success.
    await adminPage.bringToFront();
    await adminPage.locator("#bookings-note", { hasText: `Cancelled booking ${booking.name}` }).waitFor({ timeout: 5000 });
    await adminPage.locator(`#deny tr[data-booking="${booking.name}"]`, { hasText: "ok" }).waitFor({ timeout: 10000 });
    await row.waitFor({ state: "detached", timeout: 10000 });

    // The student page moves it to the old bookings.
    await student.bringToFront();
    await student.reload();
    await student.locator("#old li", { hasText: "cancelled" }).first().waitFor({ state: "attached", timeout: 10000 });
    assert.equal(await student.locator("li.booking").count(), 0);
  });
});

test("refusals over the limit and while locked show the server's message; an outage is shown and recovered from", { timeout: 60000 }, async () => {
  const context = await newBrowser();
  const lines = watch(context);
  await explain(context, lines, "book-refusals", async () => {
    const student = await context.newPage();
    await student.goto(`${book}/?group=g-e2e`);
    const bookNow = student.getByRole("button", { name: "Book Rig 2 now" });
    await bookNow.waitFor({ timeout: 15000 });
    await student.waitForFunction(() => !document.querySelector("button[aria-label='Book Rig 2 now']").disabled);
    await bookNow.click();
    await student.getByRole("button", { name: /^Start Rig 2,/ }).waitFor({ timeout: 10000 });
    const user = await student.evaluate(() => window.bookState.user);

    // Over the limit: a second booking under a policy that allows one, made from the
    // keyboard.
    const rig2 = student.getByRole("region", { name: "Rig 2", exact: true });
    const lastChoice = rig2.getByRole("list", { name: "Times for Rig 2" }).getByRole("button").last();
    await lastChoice.focus();
    await student.keyboard.press("Enter");
    const overLimit = "could not make the booking because you currently have 1 current/future bookings " +
      "which is at or exceeds the limit of 1 for policy p-rigs";
    await rig2.getByRole("alert").filter({ hasText: overLimit }).waitFor({ timeout: 10000 });
    assert.equal(await rig2.getByRole("alert").innerText(), overLimit);
    assert.match(await student.locator(".usage").first().innerText(), /1 of 1 bookings held\./);

    // Locked from the admin page, with a message: booking shows the server's refusal.
    const adminPage = await context.newPage();
    await adminPage.goto(`${book}/admin?token=${encodeURIComponent(adminToken)}`);
    await adminPage.getByRole("switch", { name: /Bookings locked/ }).waitFor({ timeout: 10000 });
    await adminPage.getByRole("switch", { name: /Bookings locked/ }).check();
    await adminPage.getByLabel("Message shown to students").fill(LOCK_MESSAGE);
    await adminPage.getByRole("button", { name: "Apply lock setting" }).click();
    await adminPage.locator("#lock-note", { hasText: `Locked: ${LOCK_MESSAGE}` }).waitFor({ timeout: 5000 });

    await student.bringToFront();
    const rig1 = student.getByRole("region", { name: "Rig 1", exact: true });
    await rig1.getByRole("list", { name: "Times for Rig 1" }).getByRole("button").first().click();
    const locked = `store locked to users: ${LOCK_MESSAGE}`;
    await rig1.getByRole("alert").filter({ hasText: locked }).waitFor({ timeout: 10000 });
    assert.equal(await rig1.getByRole("alert").innerText(), locked);
    // After its next status call the page says bookings are closed, with the message.
    await student.reload();
    await student.locator("#lock", { hasText: LOCK_MESSAGE }).waitFor({ timeout: 10000 });
    assert.equal(await student.locator("#lock").innerText(), `Booking is closed for now: ${LOCK_MESSAGE}`);
    assert.doesNotMatch(await student.locator("#notice").innerText(), /Loading/, "no endless 'Loading…'");

    // Unlock again.
    await adminPage.bringToFront();
    await adminPage.getByRole("switch", { name: /Bookings locked/ }).uncheck();
    await adminPage.getByRole("button", { name: "Apply lock setting" }).click();
    await adminPage.locator("#lock-note", { hasText: "Unlocked." }).waitFor({ timeout: 5000 });

    // A YAML manifest with two bad references: the check lists both, in the server's words.
    await adminPage.getByLabel("or paste it here").fill([
      "descriptions:",
      '  d-x: {name: X, type: slot, short: "X"}',
      "policies:",
      "  p-x: {description: d-x, slots: [sl-x]}",
      "resources:",
      "  r-x: {description: d-x, streams: [], topic_stub: x}",
      "slots:",
      "  sl-x: {description: d-x, policy: p-none, resource: r-x, ui_set: us-x, window: w-none}",
      "streams: {}",
      "uis: {}",
      "ui_sets:",
      "  us-x: {uis: []}",
      "windows: {}",
      "",
    ].join("\n"));
    await adminPage.getByRole("button", { name: "Check" }).click();
    await adminPage.locator("#manifest-result li").first().waitFor({ timeout: 5000 });
    assert.deepEqual(await adminPage.locator("#manifest-result li").allInnerTexts(), [
      "slot sl-x references non-existent policy: p-none",
      "slot sl-x references non-existent window: w-none",
    ]);
    assert.equal(await adminPage.locator("#manifest-result .note").innerText(), "The manifest fails the check:");
    assert.equal((await (await fetch(`${book}/api/v1/admin/status`, { headers: { Authorization: adminToken } })).json()).locked, false);
    const held = await (await fetch(`${book}/api/v1/admin/bookings`, { headers: { Authorization: adminToken } })).json();
    assert.deepEqual(held.filter((b) => b.user === user).map((b) => b.slot), ["sl-2"], "only the first booking was made");

    // The booking server goes away: the page says so and keeps what it showed; when the
    // server is back (same database), the page recovers by itself.
    await student.bringToFront();
    await student.evaluate(() => window.dispatchEvent(new Event("online"))); // refresh now, not in 20 s
    await student.locator("li.booking").first().waitFor({ timeout: 10000 });
    assert.equal(await student.locator("#lock").isHidden(), true);
    await stop(bookServer, "SIGKILL");
    await student.evaluate(() => window.dispatchEvent(new Event("online"))); // refresh now, not in 20 s
    await student.locator("#offline", { hasText: "Offline: the booking server cannot be reached" }).waitFor({ timeout: 10000 });
    assert.match(await student.locator("#offline").innerText(), /Retrying in \d+ s/);
    assert.equal(await student.locator("li.booking").count(), 1, "the booking is still shown");
    await startBook();
    await student.locator("#offline").waitFor({ state: "hidden", timeout: 40000 });
    assert.equal(await student.locator("li.booking").count(), 1);
  });
});
