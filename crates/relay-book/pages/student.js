// The student page (`/` of `relay book serve`): a pseudonymous identity kept in this
// browser, the groups joined (a `?group=<name>` link joins one), their policies and slots
// with availability, fixed-length choices from the display guides, booking, cancelling,
// and starting a booking, which opens one of the activity's UIs with its link filled in.
// Refusals are shown in the server's own words; while the server cannot be reached the
// page says so and tries again.

import {
  call, ApiError, NetworkError, parseDuration, humanDuration, clock, when, span, iso, el, uid, Offline, say, refresher,
} from "/pages/api.js";

const USER_KEY = "relay-book.user";
const REFRESH_MS = 20000;
/// Availability is asked for less often than bookings (every slot is one call), and at
/// once after a booking or cancellation.
const AVAILABILITY_MS = 60000;
/// Log in again this long before the token expires.
const TOKEN_MARGIN_MS = 5 * 60000;
/// Availability pages asked for at a time.
const PAGE = 50;
const MAX_PAGES = 20;
const LOCKED_PREFIX = "store locked to users";

const $ = (id) => document.getElementById(id);

const state = {
  user: null,
  token: null,
  tokenRefreshAt: 0,
  skewMs: 0, // server clock minus ours, from GET /users/status
  locked: false,
  lockMessage: "",
  groupsKey: "",
  groups: {}, // name → GroupDescribedWithPolicies
  policyStatus: {}, // policy → PolicyStatus
  bookings: [],
  oldBookings: [],
  activity: null, // { booking, activity }
  joined: false,
  availabilityAt: 0,
};
// Read by the browser test and handy in the console.
window.bookState = state;

const now = () => Date.now() + state.skewMs;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const offline = new Offline($("offline"));
const notice = (text, kind) => say($("notice"), text, kind);

// ---- identity ----

let loggingIn = null;

/// A valid token, logging in (once, however many calls wait) when there is none or it is
/// close to expiry.
function ensureToken() {
  if (state.token && Date.now() < state.tokenRefreshAt) return Promise.resolve();
  if (!loggingIn) loggingIn = logIn().finally(() => { loggingIn = null; });
  return loggingIn;
}

async function logIn() {
  if (!state.user) {
    state.user = localStorage.getItem(USER_KEY);
    if (!state.user) {
      const reply = await call("POST", "/users/unique");
      state.user = reply.user_name;
      localStorage.setItem(USER_KEY, state.user);
    }
  }
  const reply = await call("POST", `/login/${encodeURIComponent(state.user)}`);
  state.token = reply.token;
  const lifetimeMs = (Number(reply.exp) - Number(reply.nbf)) * 1000;
  const refreshIn = Number.isFinite(lifetimeMs) ? Math.max(30000, lifetimeMs - TOKEN_MARGIN_MS) : 30 * 60000;
  state.tokenRefreshAt = Date.now() + refreshIn;
  setTimeout(() => ensureToken().catch(() => {}), refreshIn + 1000);
  $("whoami").textContent = `Signed in as ${state.user}`;
}

/// A user call with the current token; a rejected token (not the lock) is renewed once.
async function api(method, path, options = {}) {
  await ensureToken();
  try {
    return await call(method, path, { ...options, token: state.token });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && !e.message.startsWith(LOCKED_PREFIX)) {
      state.token = null;
      await ensureToken();
      return call(method, path, { ...options, token: state.token });
    }
    throw e;
  }
}

const userPath = (rest = "") => `/users/${encodeURIComponent(state.user)}${rest}`;

async function joinFromLink() {
  const group = new URLSearchParams(location.search).get("group");
  if (!group || state.joined) return;
  await joinGroup(group);
  state.joined = true;
}

async function joinGroup(group) {
  try {
    await api("POST", userPath(`/groups/${encodeURIComponent(group)}`));
    notice(`You are in group ${group}.`);
    state.groupsKey = "";
  } catch (e) {
    if (e instanceof NetworkError) throw e;
    notice(`Could not join group ${group}: ${e.message}`, "error");
  }
}

// ---- loading ----

/// Load everything again (after any load under way, so a change just made is seen); on a
/// network failure say so and try again with backoff.
const refresh = refresher(async () => {
  await ensureToken();
  await loadStatus();
  if (!state.locked) await joinFromLink();
  if (!state.locked) {
    await Promise.all([loadBookings(), loadGroups()]);
    renderBookings(); // with the slots' names, now that the groups are known
  }
  if ($("notice").textContent.startsWith("Loading")) notice("");
}, {
  everyMs: REFRESH_MS,
  offline,
  refused: (e) => {
    if (e.message.startsWith(LOCKED_PREFIX)) showLock(true, e.message);
    else notice(e.message, "error");
  },
});

function showLock(locked, message) {
  state.locked = locked;
  state.lockMessage = message;
  const banner = $("lock");
  banner.hidden = !locked;
  banner.textContent = locked ? `Booking is closed for now: ${message}` : "";
}

async function loadStatus() {
  const status = await api("GET", "/users/status");
  const serverNow = Date.parse(status.now);
  if (Number.isFinite(serverNow)) state.skewMs = serverNow - Date.now();
  showLock(Boolean(status.locked), status.message || "");
}

async function loadBookings() {
  const [current, old] = await Promise.all([
    orEmpty(api("GET", userPath("/bookings"))),
    orEmpty(api("GET", userPath("/oldbookings"))),
  ]);
  state.bookings = current.map(asBooking).filter((b) => !b.cancelled && b.end > now());
  state.bookings.sort((a, b) => a.start - b.start);
  state.oldBookings = old.map(asBooking).sort((a, b) => b.start - a.start);
}

/// A user who never joined a group has no record yet (`user not found`): nothing to list.
async function orEmpty(promise, empty = []) {
  try {
    return (await promise) || empty;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return empty;
    throw e;
  }
}

function asBooking(b) {
  return { ...b, start: Date.parse(b.when?.start), end: Date.parse(b.when?.end) };
}

async function loadGroups() {
  const mine = await orEmpty(api("GET", userPath("/groups")), {});
  const names = Object.keys(mine).sort();
  const groups = {};
  await Promise.all(names.map(async (name) => {
    try {
      groups[name] = await api("GET", `/groups/${encodeURIComponent(name)}`);
    } catch (e) {
      if (e instanceof NetworkError || e.message.startsWith(LOCKED_PREFIX)) throw e;
      groups[name] = { error: e.message, description: mine[name]?.description };
    }
  }));
  const policies = new Set(names.flatMap((g) => Object.keys(groups[g]?.policies || {})));
  await Promise.all([...policies].map(async (p) => {
    state.policyStatus[p] = await orEmpty(api("GET", userPath(`/policies/${encodeURIComponent(p)}`)), null);
  }));
  const key = JSON.stringify(groups);
  state.groups = groups;
  const rendered = key !== state.groupsKey;
  if (rendered) {
    state.groupsKey = key;
    renderGroups();
  } else {
    for (const view of policyViews) view.updateUsage();
  }
  if (rendered || Date.now() - state.availabilityAt >= AVAILABILITY_MS) {
    state.availabilityAt = Date.now();
    await Promise.all(policyViews.flatMap((view) => view.slots.map((slot) => slot.load())));
  } else {
    for (const view of policyViews) view.slots.forEach((slot) => slot.render());
  }
  $("groups-empty").hidden = names.length > 0;
  if (!names.length) $("join-more").open = true;
}

/// Every free period of a slot up to `until`, page by page.
async function freePeriods(slot, until) {
  const gaps = [];
  for (let page = 0; page < MAX_PAGES; page++) {
    const batch = await api("GET", `/slots/${encodeURIComponent(slot)}`, { query: { limit: PAGE, offset: page * PAGE } });
    const list = Array.isArray(batch) ? batch : [];
    for (const gap of list) gaps.push({ start: Date.parse(gap.start), end: Date.parse(gap.end) });
    if (list.length < PAGE || (gaps.length && gaps[gaps.length - 1].end >= until)) break;
  }
  return gaps.filter((g) => Number.isFinite(g.start) && Number.isFinite(g.end) && g.end > g.start);
}

// ---- what there is: groups, policies, slots ----

function describe(description, level) {
  if (!description) return [];
  const heading = el(`h${level}`, {}, description.name || "");
  const parts = [heading];
  if (description.short) parts.push(el("p", {}, description.short));
  if (description.long) parts.push(el("p", { class: "muted" }, description.long));
  if (description.image) parts.push(el("img", { src: description.image, alt: description.name || "", class: "picture" }));
  if (description.further) parts.push(el("p", {}, el("a", { href: description.further, rel: "noopener" }, `More about ${description.name || "this"}`)));
  return parts;
}

/// The limits that apply under a policy, as sentences.
function limits(policy) {
  const d = (field) => humanDuration(parseDuration(policy[field]));
  const out = [];
  if (policy.enforce_max_bookings) out.push(`At most ${policy.max_bookings} booking${policy.max_bookings === 1 ? "" : "s"} at a time.`);
  if (policy.enforce_min_duration && policy.enforce_max_duration) out.push(`Each booking lasts from ${d("min_duration")} to ${d("max_duration")}.`);
  else if (policy.enforce_min_duration) out.push(`Each booking lasts at least ${d("min_duration")}.`);
  else if (policy.enforce_max_duration) out.push(`Each booking lasts at most ${d("max_duration")}.`);
  if (policy.enforce_max_usage) out.push(`${d("max_usage")} in total.`);
  if (policy.enforce_book_ahead) out.push(`Bookings must end within ${d("book_ahead")} from now.`);
  if (policy.enforce_starts_within) out.push(`Bookings must start within ${d("starts_within")} from now.`);
  if (policy.enforce_next_available) out.push(`Bookings must start within ${d("next_available")} of the next free time.`);
  if (policy.enforce_grace_period) out.push(`Press Start within ${d("grace_period")} of the start, or the booking is cancelled.`);
  if (policy.enforce_unlimited_users) out.push("Shared: others can use it at the same time.");
  return out;
}

/// The display guides of a policy, shortest first; a policy without any gets one made
/// from its own limits.
function guidesOf(policy) {
  const guides = Object.entries(policy.display_guides || {}).map(([name, g]) => ({
    name,
    label: g.label || name,
    durationMs: parseDuration(g.duration),
    aheadMs: parseDuration(g.book_ahead),
    maxSlots: Number(g.max_slots) || 10,
  })).filter((g) => g.durationMs > 0 && g.aheadMs > 0);
  guides.sort((a, b) => a.durationMs - b.durationMs || a.name.localeCompare(b.name));
  if (guides.length) return guides;
  const max = policy.enforce_max_duration ? parseDuration(policy.max_duration) : 0;
  const min = policy.enforce_min_duration ? parseDuration(policy.min_duration) : 0;
  const durationMs = max > 0 ? Math.min(max, 60 * 60000) : Math.max(min, 30 * 60000);
  const aheadMs = policy.enforce_book_ahead ? parseDuration(policy.book_ahead) : 24 * 3600000;
  return [{ name: "default", label: humanDuration(durationMs), durationMs, aheadMs, maxSlots: 10 }];
}

/// Up to `guide.maxSlots` fixed-length intervals inside the free periods, on round times.
function choicesIn(gaps, guide, fromMs) {
  const step = Math.min(guide.durationMs, 30 * 60000);
  const horizon = fromMs + guide.aheadMs;
  const out = [];
  for (const gap of gaps) {
    let t = Math.ceil(Math.max(gap.start, fromMs) / step) * step;
    while (t + guide.durationMs <= Math.min(gap.end, horizon) && out.length < guide.maxSlots) {
      out.push({ start: t, end: t + guide.durationMs });
      t += guide.durationMs;
    }
    if (out.length >= guide.maxSlots) break;
  }
  return out;
}

let policyViews = [];

function renderGroups() {
  const root = $("groups");
  policyViews = [];
  root.replaceChildren();
  for (const [name, group] of Object.entries(state.groups)) {
    const section = el("section", { class: "group", "aria-label": `Group ${group.description?.name || name}` }, describe(group.description, 3));
    if (group.error) section.append(el("p", { class: "note error", role: "alert" }, group.error));
    for (const [policyName, policy] of Object.entries(group.policies || {})) {
      const view = new PolicyView(policyName, policy);
      policyViews.push(view);
      section.append(view.node);
    }
    root.append(section);
  }
}

class PolicyView {
  constructor(name, policy) {
    this.name = name;
    this.policy = policy;
    this.guides = guidesOf(policy);
    this.guide = this.guides[0];
    this.usage = el("p", { class: "usage" });
    this.tabs = el("div", { role: "tablist", "aria-label": "Session lengths", class: "tabs" });
    const panelId = uid("guide-panel");
    this.tabButtons = this.guides.map((guide, index) => el("button", {
      type: "button", role: "tab", id: uid("guide-tab"), "aria-controls": panelId,
      "aria-selected": index === 0 ? "true" : "false", tabindex: index === 0 ? "0" : "-1",
      onclick: () => this.select(index),
      onkeydown: (ev) => this.tabKey(ev, index),
    }, guide.label));
    this.tabs.append(...this.tabButtons);
    this.slots = Object.entries(policy.slots || {}).sort(([a], [b]) => a.localeCompare(b))
      .map(([slotName, slot]) => new SlotView(this, slotName, slot));
    this.caption = el("p", { class: "muted" });
    const panel = el("div", { role: "tabpanel", id: panelId, "aria-labelledby": this.tabButtons[0]?.id }, this.caption, this.slots.map((s) => s.node));
    this.panel = panel;
    const rules = limits(policy);
    this.node = el("article", { class: "policy" },
      describe(policy.description, 4),
      rules.length ? el("ul", { class: "limits", "aria-label": "Limits" }, rules.map((r) => el("li", {}, r))) : null,
      this.usage,
      this.tabs,
      panel);
    this.describeGuide();
    this.updateUsage();
  }

  /// "10 min sessions, next 2 h, up to 6 choices".
  describeGuide() {
    const g = this.guide;
    this.caption.textContent = `${g.label} sessions, next ${humanDuration(g.aheadMs)}, up to ${g.maxSlots} choices per rig.`;
  }

  select(index) {
    this.guide = this.guides[index];
    this.tabButtons.forEach((tab, i) => {
      tab.setAttribute("aria-selected", i === index ? "true" : "false");
      tab.tabIndex = i === index ? 0 : -1;
    });
    this.panel.setAttribute("aria-labelledby", this.tabButtons[index].id);
    this.describeGuide();
    for (const slot of this.slots) slot.render();
  }

  tabKey(ev, index) {
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: this.guides.length - 1 - index };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    const next = (index + moves[ev.key] + this.guides.length) % this.guides.length;
    this.select(next);
    this.tabButtons[next].focus();
  }

  updateUsage() {
    const status = state.policyStatus[this.name];
    const p = this.policy;
    const parts = [];
    const used = parseDuration(status?.usage ?? "0s");
    if (p.enforce_max_usage) {
      const max = parseDuration(p.max_usage);
      parts.push(`Used ${humanDuration(used)} of ${humanDuration(max)}: ${humanDuration(Math.max(0, max - used))} left.`);
    } else if (status) {
      parts.push(`Used ${humanDuration(used)} so far.`);
    }
    if (p.enforce_max_bookings && status) parts.push(`${status.current_bookings} of ${p.max_bookings} bookings held.`);
    this.usage.textContent = parts.join(" ");
    this.usage.hidden = parts.length === 0;
  }
}

class SlotView {
  constructor(policyView, name, slot) {
    this.policyView = policyView;
    this.name = name;
    this.slot = slot;
    this.gaps = null;
    this.error = "";
    const title = slot.description?.name || name;
    this.title = title;
    this.timeline = el("div", { class: "timeline", role: "img" });
    this.free = el("p", { class: "free muted" }, "Checking availability…");
    this.choices = el("ul", { class: "choices", "aria-label": `Times for ${title}` });
    this.note = el("p", { class: "note", hidden: true });
    this.nowButton = el("button", { type: "button", class: "primary", onclick: () => this.bookNow() }, "Book now");
    this.nowButton.setAttribute("aria-label", `Book ${title} now`);
    const fromId = uid("from"), toId = uid("to");
    this.from = el("input", { id: fromId, type: "datetime-local", required: true });
    this.to = el("input", { id: toId, type: "datetime-local", required: true });
    const form = el("form", { class: "interval", onsubmit: (ev) => { ev.preventDefault(); this.bookInterval(); } },
      el("label", { for: fromId }, "From"), this.from,
      el("label", { for: toId }, "To"), this.to,
      el("button", { type: "submit" }, "Book this time"));
    const thumb = slot.description?.thumb ? el("img", { src: slot.description.thumb, alt: "", class: "thumb" }) : null;
    this.node = el("section", { class: "slot", "aria-label": title },
      el("div", { class: "slot-head" }, thumb, el("div", {},
        el("h5", {}, title),
        slot.description?.short && slot.description.short !== title ? el("p", { class: "muted" }, slot.description.short) : null)),
      this.timeline, this.free, this.note,
      el("div", { class: "row" }, this.nowButton),
      this.choices,
      el("details", {}, el("summary", {}, "Choose another time"), form));
  }

  async load() {
    const guide = this.policyView.guide;
    try {
      this.gaps = await freePeriods(this.name, now() + Math.max(...this.policyView.guides.map((g) => g.aheadMs)));
      this.error = "";
    } catch (e) {
      if (e instanceof NetworkError || e.message.startsWith(LOCKED_PREFIX)) throw e;
      this.gaps = [];
      this.error = e.message;
    }
    if (guide === this.policyView.guide) this.render();
  }

  render() {
    const guide = this.policyView.guide;
    const t0 = now(), t1 = t0 + guide.aheadMs;
    const gaps = this.gaps || [];
    this.timeline.replaceChildren();
    const inView = gaps.filter((g) => g.end > t0 && g.start < t1);
    for (const g of inView) {
      const bar = el("span", { class: "gap" });
      bar.style.left = `${(100 * (Math.max(g.start, t0) - t0)) / (t1 - t0)}%`;
      bar.style.width = `${(100 * (Math.min(g.end, t1) - Math.max(g.start, t0))) / (t1 - t0)}%`;
      this.timeline.append(bar);
    }
    this.timeline.append(el("span", { class: "tick start" }, "now"), el("span", { class: "tick end" }, when(t1)));
    const spoken = inView.length ? inView.map((g) => span(Math.max(g.start, t0), Math.min(g.end, t1))).join("; ") : "nothing";
    this.timeline.setAttribute("aria-label", `Free in the next ${humanDuration(guide.aheadMs)}: ${spoken}`);
    if (this.error) {
      this.free.textContent = "";
      this.showNote(this.error, "error");
    } else if (this.gaps === null) {
      this.free.textContent = "Checking availability…";
    } else if (!gaps.length) {
      this.free.textContent = "Fully booked.";
    } else {
      const first = gaps[0];
      this.free.textContent = first.start <= t0 + 1000 ? `Free now, until ${when(first.end)}.` : `Next free ${when(first.start)}.`;
    }
    this.nowButton.disabled = !(gaps.length && gaps[0].start <= t0 + 1000) || Boolean(this.error);
    const choices = this.error ? [] : choicesIn(gaps, guide, t0);
    // Keep the keyboard where it was when the same choice is still offered.
    const focused = this.choices.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    this.choices.replaceChildren(...choices.map((c) => el("li", {},
      el("button", { type: "button", "aria-label": `Book ${this.title}, ${span(c.start, c.end)}`, onclick: () => this.book(c.start, c.end) }, span(c.start, c.end)))));
    if (!choices.length && !this.error && this.gaps !== null) {
      this.choices.append(el("li", { class: "muted" }, `No ${guide.label} sessions free in the next ${humanDuration(guide.aheadMs)}.`));
    }
    if (focused) [...this.choices.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === focused)?.focus();
  }

  showNote(text, kind = "info") {
    say(this.note, text, kind);
  }

  /// "Now": from this moment (a second back if the policy allows a start in the past, a
  /// moment ahead otherwise), for the chosen guide's length, cut to the free time and the
  /// policy's longest booking.
  bookNow() {
    const p = this.policyView.policy;
    const t = now();
    const start = p.enforce_allow_start_in_past ? t - 1000 : t + 2000;
    let length = this.policyView.guide.durationMs;
    if (p.enforce_max_duration) length = Math.min(length, parseDuration(p.max_duration));
    const gap = (this.gaps || [])[0];
    const end = gap ? Math.min(start + length, gap.end) : start + length;
    return this.book(start, end);
  }

  bookInterval() {
    const start = new Date(this.from.value).getTime(), end = new Date(this.to.value).getTime();
    if (!Number.isFinite(start) || !Number.isFinite(end)) return this.showNote("Choose a start and an end.", "error");
    return this.book(start, end);
  }

  async book(start, end) {
    this.showNote(`Booking ${span(start, end)}…`);
    try {
      await api("POST", `/slots/${encodeURIComponent(this.name)}`, {
        query: { user_name: state.user, from: iso(Math.round(start)), to: iso(Math.round(end)) },
      });
      this.showNote(`Booked ${this.title}, ${span(start, end)}.`);
      notice(`Booked ${this.title}, ${span(start, end)}.`);
      state.availabilityAt = 0;
      await refresh();
    } catch (e) {
      this.showNote(e instanceof NetworkError ? `Not booked: ${e.message}. Try again when you are back online.` : e.message, "error");
    }
  }
}

// ---- bookings ----

function slotTitle(slotName) {
  for (const group of Object.values(state.groups)) {
    for (const policy of Object.values(group.policies || {})) {
      const slot = policy.slots?.[slotName];
      if (slot) return slot.description?.name || slotName;
    }
  }
  return slotName;
}

const countdowns = new Map(); // booking name → { booking, text, start, note }
let bookingsKey = "";

/// Show the bookings; unchanged ones are left alone, so focus and a half-done cancel stay.
function renderBookings() {
  const key = JSON.stringify([state.bookings, state.oldBookings, state.bookings.map((b) => slotTitle(b.slot))]);
  if (key === bookingsKey) return tick();
  bookingsKey = key;
  const list = $("bookings");
  countdowns.clear();
  list.replaceChildren(...state.bookings.map((b) => {
    const title = slotTitle(b.slot);
    const text = el("span", { class: "countdown" });
    const start = el("button", { type: "button", class: "primary", onclick: () => startBooking(b) }, "Start");
    start.setAttribute("aria-label", `Start ${title}, ${span(b.start, b.end)}`);
    const cancel = el("button", { type: "button", onclick: () => askCancel(b, cancel) }, "Cancel");
    cancel.setAttribute("aria-label", `Cancel ${title}, ${span(b.start, b.end)}`);
    const note = el("p", { class: "note", hidden: true });
    countdowns.set(b.name, { booking: b, text, start, note });
    return el("li", { class: "card booking", "data-booking": b.name },
      el("h3", {}, title),
      el("p", {}, span(b.start, b.end), " · ", text),
      el("div", { class: "row" }, start, cancel),
      note);
  }));
  $("bookings-empty").hidden = state.bookings.length > 0;
  $("old-count").textContent = String(state.oldBookings.length);
  $("old").replaceChildren(...state.oldBookings.map((b) => el("li", {},
    `${slotTitle(b.slot)}, ${span(b.start, b.end)} — ${b.cancelled ? "cancelled" : b.started ? "used" : "not used"}`)));
  tick();
}

/// Every second: countdowns, and Start buttons that become usable.
function tick() {
  const t = now();
  let ended = false;
  for (const { booking, text, start } of countdowns.values()) {
    if (t < booking.start) {
      text.textContent = `starts in ${clock(booking.start - t)}`;
      start.disabled = true;
    } else if (t < booking.end) {
      text.textContent = `running, ends in ${clock(booking.end - t)}`;
      start.disabled = false;
    } else {
      text.textContent = "ended";
      start.disabled = true;
      ended = true;
    }
  }
  if (state.activity) {
    const left = state.activity.activity.exp * 1000 - t;
    const node = $("activity-left");
    if (node) node.textContent = left > 0 ? `ends in ${clock(left)}` : "has ended";
  }
  if (ended && !refresh.busy()) setTimeout(refresh, 1000);
}

function askCancel(booking, button) {
  if (button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Yes, cancel it";
    return;
  }
  cancelBooking(booking);
}

async function cancelBooking(booking) {
  const view = countdowns.get(booking.name);
  try {
    await api("DELETE", userPath(`/bookings/${encodeURIComponent(booking.name)}`));
  } catch (e) {
    // A successful cancellation answers 404 "cancelled", as the reference does.
    if (!(e instanceof ApiError && e.status === 404 && e.message === "cancelled")) {
      if (view) say(view.note, e.message, "error");
      return;
    }
  }
  notice(`Cancelled ${slotTitle(booking.slot)}, ${span(booking.start, booking.end)}.`);
  if (state.activity?.booking.name === booking.name) closeActivity();
  state.availabilityAt = 0;
  await refresh();
}

// ---- starting: the activity and its UIs ----

/// A UI's link with its template filled in: {{streams}} is the URI-encoded JSON array of
/// the streams' for, url and token; {{exp}} the booking end in unix seconds; {{config}} the
/// URI-encoded config URL.
export function fillTemplate(template, activity) {
  const streams = (activity.streams || []).map((s) => ({ for: s.for, url: s.url, token: s.token }));
  return template
    .replaceAll("{{streams}}", encodeURIComponent(JSON.stringify(streams)))
    .replaceAll("{{exp}}", String(activity.exp))
    .replaceAll("{{config}}", encodeURIComponent(activity.config || ""));
}

async function startBooking(booking) {
  const view = countdowns.get(booking.name);
  if (view) say(view.note, "Starting…");
  let activity;
  try {
    activity = await api("PUT", userPath(`/bookings/${encodeURIComponent(booking.name)}`));
  } catch (e) {
    if (view) say(view.note, e.message, "error");
    return;
  }
  if (view) say(view.note, "");
  state.activity = { booking, activity };
  renderActivity();
}

function renderActivity() {
  const { booking, activity } = state.activity;
  const have = new Set((activity.streams || []).map((s) => s.for));
  const uis = activity.uis || [];
  $("activity").replaceChildren(
    el("p", {}, el("strong", {}, activity.description?.name || slotTitle(booking.slot)), " ", el("span", { id: "activity-left" })),
    uis.length ? el("p", {}, "Choose how to use it:") : el("p", { class: "note error" }, "This experiment offers no user interface."),
    el("ul", { class: "cards uis" }, uis.map((ui) => {
      const missing = (ui.streams_required || []).filter((s) => !have.has(s));
      const name = ui.description?.name || "Open";
      return el("li", { class: "card" },
        el("h3", {}, name),
        ui.description?.short ? el("p", {}, ui.description.short) : null,
        missing.length ? el("p", { class: "note error" }, `Needs ${missing.join(", ")}, which this booking does not have.`) : null,
        el("a", { class: "button primary", href: fillTemplate(ui.url || "", activity), target: "_blank", rel: "noopener" }, `Open ${name}`));
    })),
    el("button", { type: "button", onclick: closeActivity }, "Hide"));
  $("running").hidden = false;
  tick();
  $("running").scrollIntoView({ block: "nearest" });
}

function closeActivity() {
  state.activity = null;
  $("running").hidden = true;
  $("activity").replaceChildren();
}

// ---- start-up ----

$("join").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("join-name").value.trim();
  if (!name) return;
  try {
    await joinGroup(name);
    $("join-name").value = "";
    await refresh();
  } catch (e) {
    notice(e.message, "error");
  }
});

$("forget").addEventListener("click", () => {
  localStorage.removeItem(USER_KEY);
  Object.assign(state, { user: null, token: null, tokenRefreshAt: 0, groupsKey: "", joined: false, policyStatus: {} });
  closeActivity();
  notice("Loading the booking page…");
  refresh();
});

window.addEventListener("online", () => refresh());
setInterval(tick, 1000);
refresh();
