// What the student and admin pages share: calls to the booking API under /api/v1 (the raw
// token in Authorization; errors are {"code":"<status>","message":…}), Go durations and
// times as people read them, a "cannot reach the server" banner that retries, and small
// DOM helpers. Plain ES module; no build step.

export const API = "/api/v1";

/// The server answered with an error status; `message` is its own text.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/// The request never got an answer (network down, server gone).
export class NetworkError extends Error {}

/// Call the API. `query` is an object of parameters; `body` is sent as JSON. Resolves to the
/// parsed JSON reply, or null for an empty one; rejects with ApiError or NetworkError.
export async function call(method, path, { token, query, body } = {}) {
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  const headers = {};
  if (token) headers.Authorization = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response, text;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    text = await response.text();
  } catch (e) {
    throw new NetworkError(`the booking server cannot be reached (${e.message})`);
  }
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (!response.ok) {
    const message = parsed && typeof parsed === "object" && parsed.message ? parsed.message : text || response.statusText;
    throw new ApiError(response.status, String(message));
  }
  return parsed;
}

const UNITS = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };

/// Milliseconds in a Go duration ("1h30m0s", "90s", "0s", "1.5h"); NaN if it is not one.
export function parseDuration(text) {
  if (typeof text === "number") return text / 1e6;
  if (!text || typeof text !== "string") return NaN;
  if (text === "0") return 0;
  let sign = 1, rest = text.trim();
  if (rest.startsWith("-")) { sign = -1; rest = rest.slice(1); }
  const part = /^([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)/;
  let total = 0, matched = false;
  while (rest) {
    const m = part.exec(rest);
    if (!m) return NaN;
    total += parseFloat(m[1]) * UNITS[m[2]];
    rest = rest.slice(m[0].length);
    matched = true;
  }
  return matched ? sign * total : NaN;
}

/// "1 h 30 min", "45 s", "2 days 3 h": a length of time for people.
export function humanDuration(ms) {
  if (!Number.isFinite(ms)) return "?";
  if (ms < 0) return "−" + humanDuration(-ms);
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const parts = [];
  if (d) parts.push(d === 1 ? "1 day" : `${d} days`);
  if (h) parts.push(`${h} h`);
  if (m) parts.push(`${m} min`);
  if (sec && !d && !h) parts.push(`${sec} s`);
  return parts.join(" ");
}

/// A countdown: "2:05:09" or "4:59".
export function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

const dayTime = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/// "Sat 28 Nov, 10:30" (local time).
export function when(ms) {
  return dayTime.format(new Date(ms));
}

/// "Sat 28 Nov, 10:30 – 11:00": the end without its day when on the same day.
export function span(startMs, endMs) {
  const a = new Date(startMs), b = new Date(endMs);
  const sameDay = a.toDateString() === b.toDateString();
  return `${when(startMs)} – ${sameDay ? timeOnly.format(b) : when(endMs)}`;
}

/// RFC 3339 in UTC, as the API's `from`/`to` take it.
export function iso(ms) {
  return new Date(ms).toISOString();
}

/// Make an element: el("button", {type: "button", class: "x", onclick: f}, "text", child…).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/// A fresh id for label/control pairs.
let nextId = 0;
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/// The banner that says the server cannot be reached, and when the next try is.
export class Offline {
  constructor(banner) {
    this.banner = banner;
    this.failures = 0;
  }

  /// Seconds to wait before the next try after another failure (2, 4, 8, … 30).
  failed(error) {
    this.failures += 1;
    const wait = Math.min(30, 2 ** this.failures);
    this.banner.hidden = false;
    this.banner.textContent = `Offline: ${error.message}. Retrying in ${wait} s…`;
    return wait * 1000;
  }

  ok() {
    this.failures = 0;
    this.banner.hidden = true;
    this.banner.textContent = "";
  }
}

/// A page's loader: `refresh()` waits for any load under way (so a change just made is
/// seen), runs `load` when `enabled()`, and runs again `everyMs` later. On a NetworkError
/// `offline` says so and the next try backs off; any other error goes to `refused`.
/// `refresh.busy()` says whether a load is under way.
export function refresher(load, { everyMs, offline, refused, enabled = () => true }) {
  let timer = 0;
  let running = null;
  async function refresh() {
    while (running) await running.catch(() => {});
    clearTimeout(timer);
    if (!enabled()) return;
    running = (async () => {
      let wait = everyMs;
      try {
        await load();
        offline.ok();
      } catch (e) {
        if (e instanceof NetworkError) wait = offline.failed(e);
        else {
          offline.ok();
          refused(e);
        }
      } finally {
        running = null;
        timer = setTimeout(refresh, wait);
      }
    })();
    return running;
  }
  refresh.busy = () => running !== null;
  return refresh;
}

/// A status line: role=status for news, role=alert for refusals.
export function say(node, text, kind = "info") {
  node.textContent = text;
  node.className = `note ${kind}`;
  node.hidden = !text;
  node.setAttribute("role", kind === "error" ? "alert" : "status");
}
