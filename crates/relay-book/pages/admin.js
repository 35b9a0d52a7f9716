// The admin page (`/admin` of `relay book serve`): with an admin token pasted or linked
// (`?token=`), it shows the status counts, the lock and its message, every resource with
// its availability and reason, the current bookings with cancel and the relay deny calls,
// and checks, replaces and exports the manifest (YAML or JSON). Everything the server
// refuses is shown in its own words.

import { call, ApiError, NetworkError, span, el, uid, Offline, say, refresher } from "/pages/api.js";
import { load, dump, CORE_SCHEMA } from "/pages/vendor/js-yaml.mjs";

const TOKEN_KEY = "relay-book.admin-token";
const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
const offline = new Offline($("offline"));
const notice = (text, kind) => say($("notice"), text, kind);

const state = { token: "", status: null, resources: {}, resourcesKey: "", bookings: [] };
// Read by the browser test and handy in the console.
window.adminState = state;

const admin = (method, path, options = {}) => call(method, path, { ...options, token: state.token });

// ---- the token ----

function takeTokenFromLink() {
  const url = new URL(location.href);
  const linked = url.searchParams.get("token");
  if (linked) {
    sessionStorage.setItem(TOKEN_KEY, linked.trim());
    url.searchParams.delete("token");
    // Keep the token out of the history and of anything copied from the address bar.
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").value = state.token;
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  state.resourcesKey = "";
  refresh();
});

$("token-clear").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  $("token").value = "";
  $("admin").hidden = true;
  notice("Paste an admin token to begin.");
});

// ---- loading ----

/// Load the status, resources and bookings, every few seconds.
const refresh = refresher(async () => {
  const [status, resources, bookings] = await Promise.all([
    admin("GET", "/admin/status"),
    admin("GET", "/admin/resources"),
    admin("GET", "/admin/bookings"),
  ]);
  const states = {};
  await Promise.all(Object.keys(resources || {}).map(async (name) => {
    try {
      states[name] = await admin("GET", `/admin/resources/${encodeURIComponent(name)}`);
    } catch (e) {
      if (e instanceof NetworkError) throw e;
      states[name] = { error: e.message };
    }
  }));
  state.status = status;
  state.bookings = (bookings || []).map((b) => ({ ...b, start: Date.parse(b.when?.start), end: Date.parse(b.when?.end) }));
  state.bookings.sort((a, b) => a.start - b.start);
  renderStatus(status);
  renderResources(resources || {}, states);
  renderBookings();
  $("admin").hidden = false;
  notice("");
}, {
  everyMs: REFRESH_MS,
  offline,
  enabled: () => Boolean(state.token),
  refused: (e) => {
    notice(e.status === 401 ? `The token was refused: ${e.message}` : e.message, "error");
    if (e.status === 401) $("admin").hidden = true;
  },
});

// ---- status and lock ----

const COUNTS = [
  ["bookings", "Current bookings"], ["old_bookings", "Old bookings"], ["users", "Users"],
  ["slots", "Slots"], ["resources", "Resources"], ["policies", "Policies"], ["streams", "Streams"],
  ["uis", "UIs"], ["ui_sets", "UI sets"], ["windows", "Windows"], ["filters", "Filters"], ["descriptions", "Descriptions"],
];

let lockDirty = false;
$("locked").addEventListener("change", () => { lockDirty = true; });
$("lock-message").addEventListener("input", () => { lockDirty = true; });

function renderStatus(status) {
  $("counts").replaceChildren(...COUNTS.filter(([key]) => key in status).map(([key, label]) =>
    el("div", {}, el("dt", {}, label), el("dd", {}, String(status[key])))));
  if (!lockDirty) {
    $("locked").checked = Boolean(status.locked);
    $("lock-message").value = status.message || "";
  }
  renderDenyCalls(status.deny_calls || []);
}

$("lock-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const lock = $("locked").checked;
  try {
    const status = await admin("PUT", "/admin/status", { query: { lock, msg: $("lock-message").value } });
    lockDirty = false;
    say($("lock-note"), lock ? `Locked: ${status.message}` : "Unlocked.");
    renderStatus(status);
  } catch (e) {
    say($("lock-note"), e.message, "error");
  }
});

// ---- resources ----

const resourceViews = new Map();

function renderResources(resources, states) {
  const key = JSON.stringify(Object.keys(resources).sort());
  if (key !== state.resourcesKey) {
    state.resourcesKey = key;
    resourceViews.clear();
    $("resources").replaceChildren(...Object.keys(resources).sort().map((name) => {
      const view = resourceView(name, resources[name]);
      resourceViews.set(name, view);
      return view.node;
    }));
  }
  $("resources-empty").hidden = resourceViews.size > 0;
  for (const [name, view] of resourceViews) view.update(states[name] || {});
}

function resourceView(name, resource) {
  const switchId = uid("available"), reasonId = uid("reason");
  const available = el("input", { id: switchId, type: "checkbox", role: "switch" });
  const reason = el("input", { id: reasonId, autocomplete: "off" });
  const shown = el("p", { class: "muted" });
  const note = el("p", { class: "note", hidden: true });
  let dirty = false;
  available.addEventListener("change", () => { dirty = true; });
  reason.addEventListener("input", () => { dirty = true; });
  const form = el("form", {
    class: "card resource", "data-resource": name,
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await admin("PUT", `/admin/resources/${encodeURIComponent(name)}`, { query: { available: available.checked, reason: reason.value } });
        dirty = false;
        say(note, available.checked ? `${name} is available.` : `${name} is out of service.`);
        refresh();
      } catch (e) {
        say(note, e.message, "error");
      }
    },
  },
  el("h3", {}, name),
  el("p", { class: "muted" }, `topic ${resource.topic_stub || "?"} · streams ${(resource.streams || []).join(", ") || "none"}`),
  shown,
  el("div", { class: "row" }, available, el("label", { for: switchId }, `${name} available`)),
  el("label", { for: reasonId }, `Reason for ${name}`), reason,
  el("div", { class: "row" }, el("button", { type: "submit" }, `Apply to ${name}`)),
  note);
  return {
    node: el("li", {}, form),
    update(status) {
      if (status.error) {
        shown.textContent = status.error;
        return;
      }
      // The server's own words: the last reason while available, else "unavailable because …".
      shown.textContent = status.available ? `Available · ${status.reason || ""}` : `Out of service: ${status.reason || "unavailable"}`;
      form.classList.toggle("out", !status.available);
      if (!dirty) {
        available.checked = Boolean(status.available);
        reason.value = status.available ? "" : (status.reason || "").replace(/^unavailable( because )?/, "");
      }
    },
  };
}

// ---- bookings and deny calls ----

function denyStateOf(booking) {
  const calls = (state.status?.deny_calls || []).filter((c) => c.booking === booking);
  if (!calls.length) return "—";
  return calls.map((c) => c.state).join(", ");
}

let bookingsKey = "";

/// Show the bookings; when nothing changed the rows are left alone, so focus stays.
function renderBookings() {
  const key = JSON.stringify([state.bookings, state.bookings.map((b) => denyStateOf(b.name))]);
  if (key === bookingsKey) return;
  bookingsKey = key;
  const rows = state.bookings.map((b) => {
    const cancel = el("button", { type: "button", class: "danger", onclick: () => cancelBooking(b) }, "Cancel");
    cancel.setAttribute("aria-label", `Cancel booking ${b.name} of ${b.user} on ${b.slot}`);
    return el("tr", { "data-booking": b.name },
      el("td", { "data-label": "When" }, Number.isFinite(b.start) ? span(b.start, b.end) : "?"),
      el("td", { "data-label": "Slot" }, b.slot || ""),
      el("td", { "data-label": "User" }, b.user || ""),
      el("td", { "data-label": "Started" }, b.started ? "yes" : "no"),
      el("td", { "data-label": "Relay deny" }, denyStateOf(b.name)),
      el("td", {}, cancel));
  });
  $("bookings").replaceChildren(...rows);
  $("bookings-table").hidden = rows.length === 0;
  $("bookings-empty").hidden = rows.length > 0;
}

async function cancelBooking(booking) {
  const path = `/users/${encodeURIComponent(booking.user)}/bookings/${encodeURIComponent(booking.name)}`;
  try {
    await admin("DELETE", path);
  } catch (e) {
    // A successful cancellation answers 404 "cancelled", as the reference does.
    if (!(e instanceof ApiError && e.status === 404 && e.message === "cancelled")) {
      say($("bookings-note"), `Booking ${booking.name} was not cancelled: ${e.message}`, "error");
      return;
    }
  }
  say($("bookings-note"), booking.started
    ? `Cancelled booking ${booking.name}; its relay connections are being closed (see the deny calls below).`
    : `Cancelled booking ${booking.name}.`);
  refresh();
}

function renderDenyCalls(calls) {
  $("deny").replaceChildren(...calls.map((c) => el("tr", { "data-booking": c.booking, class: `deny-${c.state}` },
    el("td", { "data-label": "Booking" }, c.booking),
    el("td", { "data-label": "Relay" }, c.relay ?? ""),
    el("td", { "data-label": "State" }, c.state),
    el("td", { "data-label": "Attempts" }, String(c.attempts ?? "")),
    el("td", { "data-label": "Last error" }, c.last_error || ""))));
  $("deny-table").hidden = calls.length === 0;
  $("deny-empty").hidden = calls.length > 0;
}

// ---- manifest ----

$("manifest-file").addEventListener("change", async () => {
  const file = $("manifest-file").files[0];
  if (file) $("manifest-text").value = await file.text();
});

/// The manifest typed or uploaded, as the JSON the API takes (YAML is read with the core
/// schema, so times and durations stay the strings the server parses).
function manifestJson() {
  const text = $("manifest-text").value;
  if (!text.trim()) throw new Error("Choose a manifest file or paste one.");
  let value;
  try {
    value = text.trimStart().startsWith("{") ? JSON.parse(text) : load(text, { schema: CORE_SCHEMA });
  } catch (e) {
    throw new Error(`The manifest cannot be read: ${e.message}`);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error("The manifest must be a map of descriptions, policies, slots and so on.");
  return value;
}

/// The check's messages, one per problem (the server joins them with commas).
function messagesOf(text) {
  return text.split(/,(?=\s*\S)/).map((m) => m.trim()).filter(Boolean);
}

function showResult(title, messages, kind) {
  const result = $("manifest-result");
  result.replaceChildren(el("p", { class: `note ${kind}` }, title));
  if (messages.length) result.append(el("ul", { class: "messages" }, messages.map((m) => el("li", {}, m))));
  result.setAttribute("role", kind === "error" ? "alert" : "status");
}

/// The form's manifest, or null once the reason it cannot be read is shown.
function readableManifest() {
  try {
    return manifestJson();
  } catch (e) {
    showResult(e.message, [], "error");
    return null;
  }
}

$("manifest-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const manifest = readableManifest();
  if (!manifest) return;
  try {
    await admin("POST", "/admin/manifest/check", { body: manifest });
    showResult("The manifest passes every check.", [], "ok");
  } catch (e) {
    showResult(e instanceof NetworkError ? e.message : "The manifest fails the check:", e instanceof NetworkError ? [] : messagesOf(e.message), "error");
  }
});

$("manifest-replace").addEventListener("click", async () => {
  const manifest = readableManifest();
  if (!manifest) return;
  try {
    const reply = await admin("PUT", "/admin/manifest", { body: manifest });
    const cancelled = reply?.cancelled_bookings || reply?.cancelled || [];
    showResult(cancelled.length
      ? `Manifest replaced. ${cancelled.length} booking(s) whose slot is gone were cancelled:`
      : "Manifest replaced.", cancelled.map(String), "ok");
    state.resourcesKey = "";
    refresh();
  } catch (e) {
    showResult(e instanceof NetworkError ? e.message : "The manifest was not replaced:", e instanceof NetworkError ? [] : messagesOf(e.message), "error");
  }
});

async function exportManifest(format) {
  try {
    const manifest = await admin("GET", "/admin/manifest");
    const text = format === "yaml" ? dump(manifest) : JSON.stringify(manifest, null, 2) + "\n";
    const type = format === "yaml" ? "application/yaml" : "application/json";
    const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: `manifest.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    showResult(`Exported manifest.${format}.`, [], "ok");
  } catch (e) {
    showResult(e.message, [], "error");
  }
}

$("export-yaml").addEventListener("click", () => exportManifest("yaml"));
$("export-json").addEventListener("click", () => exportManifest("json"));

window.addEventListener("online", () => refresh());
takeTokenFromLink();
if (state.token) {
  notice("Loading…");
  refresh();
}
