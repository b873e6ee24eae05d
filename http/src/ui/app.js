// kite's dashboard: the admin API and the /ws stream, read with the signed-in key.
// Everything shown is set as text (never as HTML), so nothing an event carries can run here.
"use strict";

const KEY = "kite.key";
const state = {
  key: sessionStorage.getItem(KEY), session: null, peers: [], timer: null, socket: null,
  // Bumped on every route: a render that started before it writes nothing.
  gen: 0,
  outboxNext: null, eventsNext: null, eventsList: "#/events",
  // The peer view: which peer, its last answer, the chart's window and what it drew.
  peerId: null, peer: null, peerFormFor: null, peerWindow: "hour", chartSig: null,
  // API keys by id (admin keys only), to name who acted on a delivery.
  keysById: null,
  // The operational view: its feed (the kite.* events read so far), whether its form was
  // filled, and its Remove button (made once, so a refresh never swaps it out under a click).
  opsFeed: null, opsFormFilled: false, opsRemove: null,
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/** Calls the API; answers the JSON body or throws the API's error ({code, message}). */
async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + state.key },
      body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = (data && data.error) || { code: "http_" + res.status, message: res.statusText };
    throw Object.assign(new Error(e.message || e.code), { code: e.code, status: res.status });
  }
  return data;
}

/** An error as a person reads it: the API's message and its code. */
function errText(e) {
  const msg = (e && e.message) || String(e);
  return e && e.code && !msg.includes(e.code) ? msg + " (" + e.code + ")" : msg;
}

/** A table cell holding text. */
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

/** An element holding text. */
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

/** A note element: its text (none hides it), marked as an error or not. */
function say(id, text, bad) {
  const n = $(id);
  if (!n) return;
  n.textContent = text || "";
  n.classList.toggle("error", !!bad);
  n.hidden = !text;
}

const isAdmin = () => !!state.session && state.session.permission === "admin";

/** A comma separated list of globs as an array. */
const list = (s) => (s || "").split(",").map((x) => x.trim()).filter(Boolean);

/** A `datetime-local` value (the browser's time zone) as RFC 3339 UTC, or "". */
function toRfc3339(local) {
  if (!local) return "";
  const d = new Date(local);
  return isNaN(d) ? "" : d.toISOString();
}

/** An RFC 3339 time as a `datetime-local` value, or "". */
function toLocalInput(t) {
  if (!t) return "";
  const d = new Date(t);
  if (isNaN(d)) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

/** The names of an event's `kitefedchain` (a JSON array in a string) joined by arrows. */
function chainOf(ev) {
  const raw = ev && ev.kitefedchain;
  if (raw === undefined || raw === null || raw === "") return null;
  let names = raw;
  if (typeof raw === "string") {
    try { names = JSON.parse(raw); } catch (_) { return raw; }
  }
  return Array.isArray(names) ? names.map(String).join(" → ") : String(raw);
}

/** A fresh secret in the `whsec_` form every signature scheme of kite reads. */
function makeSecret() {
  const b = new Uint8Array(24);
  crypto.getRandomValues(b);
  return "whsec_" + btoa(String.fromCharCode(...b));
}

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== view + "-view";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === currentNav());
  }
}

function hashView() {
  return (location.hash.match(/^#\/(\w+)/) || [])[1] || "peers";
}

function hashQuery() {
  return new URLSearchParams(location.hash.split("?")[1] || "");
}

function currentNav() {
  const h = location.hash;
  if (h.startsWith("#/outbox") && h.includes("status=dead")) return "dead";
  const v = hashView();
  return v === "peer" ? "peers" : v;
}

/** Goes to a view (routing again when it is the one shown, as a re-submitted search is). */
function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

/** True while the route a render started in is still the one shown. */
function alive() {
  const g = state.gen;
  return () => g === state.gen;
}

/** Shows what only an admin key may use, or the read-only hints. */
function applyPermission() {
  const admin = isAdmin();
  for (const e of document.querySelectorAll(".admin-only")) e.hidden = !admin;
  for (const e of document.querySelectorAll(".readonly-hint")) e.hidden = admin;
}

// ---------------------------------------------------------------- shared pieces

/**
 * Puts one row an item in `body`, in order. A row whose item did not change is kept as it
 * is, so a refresh never swaps a button out under a click; the others are built anew.
 */
function syncRows(body, items, key, build) {
  const old = new Map([...body.rows].map((tr) => [tr.dataset.k, tr]));
  const rows = items.map((it) => {
    const k = String(key(it));
    const sig = JSON.stringify(it) + "|" + isAdmin();
    const had = old.get(k);
    if (had && had.dataset.sig === sig) return had;
    const tr = build(it);
    tr.dataset.k = k;
    tr.dataset.sig = sig;
    return tr;
  });
  const same = rows.length === body.rows.length && rows.every((tr, i) => body.rows[i] === tr);
  if (!same) body.replaceChildren(...rows);
}

/**
 * A button that runs `run` (its answer, if any, goes to the note `noteId`, as does an
 * error), then `after` (a refresh). With `confirm`, the first click only arms it.
 */
function actButton(label, action, run, noteId, after, confirm) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.action = action;
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    if (confirm && !b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = confirm;
      clearTimeout(b.disarm);
      b.disarm = setTimeout(() => { b.classList.remove("armed"); b.textContent = label; }, 5000);
      return;
    }
    b.disabled = true;
    try {
      const msg = await run();
      if (msg) say(noteId, msg);
    } catch (e) {
      say(noteId, errText(e), true);
    }
    b.disabled = false;
    b.classList.remove("armed");
    b.textContent = label;
    if (after) await after().catch((e) => say(noteId, errText(e), true));
  });
  return b;
}

/** A form's named fields: text trimmed, checkboxes as booleans. */
function fields(form) {
  const out = {};
  for (const f of form.elements) {
    if (f.name) out[f.name] = f.type === "checkbox" ? f.checked : f.value.trim();
  }
  return out;
}

/**
 * Wires a form: on submit its fields go to `submit`, whose answer (a sentence) or error
 * (the API's message and code) is shown in the note `noteId`.
 */
function onSubmit(formId, noteId, submit) {
  const form = $(formId);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = form.querySelector("button[type=submit]");
    say(noteId, "");
    if (btn) btn.disabled = true;
    try {
      const msg = await submit(fields(form), form);
      if (msg) say(noteId, msg);
    } catch (err) {
      say(noteId, errText(err), true);
    } finally {
      if (btn) btn.disabled = false;
    }
  });
}

/** Shows a secret the API answered once (a key, an invitation) or kite made (a source's). */
function showSecret(label, value) {
  $("secret-once-label").textContent = label;
  $("secret-once-value").textContent = value;
  $("secret-copy").textContent = "Copy";
  $("secret-once").hidden = false;
  $("secret-once").scrollIntoView({ block: "nearest" });
}

function clearSecret() {
  $("secret-once-value").textContent = "";
  $("secret-once").hidden = true;
}

async function copySecret() {
  const v = $("secret-once-value").textContent;
  try {
    await navigator.clipboard.writeText(v);
    $("secret-copy").textContent = "Copied";
  } catch (_) {
    // No clipboard here: select it for a manual copy.
    const r = document.createRange();
    r.selectNodeContents($("secret-once-value"));
    const s = getSelection();
    s.removeAllRanges();
    s.addRange(r);
    $("secret-copy").textContent = "Selected: copy it";
  }
}

// ---------------------------------------------------------------- sign in

async function signIn(key) {
  state.key = key;
  try {
    state.session = await api("GET", "/api/session");
  } catch (e) {
    state.key = null;
    sessionStorage.removeItem(KEY);
    throw e;
  }
  sessionStorage.setItem(KEY, key);
  $("who").textContent = state.session.team_id + " · " + state.session.permission;
  $("nav").hidden = false;
  $("signout").hidden = false;
  applyPermission();
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.hash = "";
  location.reload();
}

// ---------------------------------------------------------------- peers

async function loadPeers() {
  const { items } = await api("GET", "/api/federation/peers");
  state.peers = items;
  return items;
}

const peerName = (id) => (state.peers.find((p) => p.id === id) || {}).name || id;

function nameCell(p) {
  const td = document.createElement("td");
  const a = el("a", p.name, "peer-link");
  a.href = "#/peer?id=" + enc(p.id);
  td.append(a);
  return td;
}

async function renderPeers() {
  const live = alive();
  const peers = await loadPeers();
  if (!live()) return;
  $("peers-readonly").hidden = isAdmin();
  const body = $("peers-rows");
  const old = new Map([...body.rows].map((tr) => [tr.dataset.id, tr]));
  const rows = peers.map((p) => {
    // A row is kept and its cells updated in place; its buttons are redrawn only when what
    // they act on changes, so a refresh never swaps a button out under a click.
    const tr = old.get(p.id) || document.createElement("tr");
    tr.dataset.id = p.id;
    tr.dataset.peer = p.name;
    const cells = [nameCell(p), cell(p.server_name), cell(p.status, "state-" + p.status),
      cell(p.health, "state-" + p.health), cell(when(p.last_seen)),
      cell(p.pending, "num pending"), cell(p.dead, "num dead"), cell(p.events_sent_24h, "num"),
      cell(p.events_received_24h, "num"), lastError(p)];
    cells.forEach((td, i) => {
      const had = tr.cells[i];
      if (!had) tr.append(td);
      else if (had.textContent !== td.textContent || had.className !== td.className) had.replaceWith(td);
    });
    const acts = [isAdmin(), p.status, p.dead === 0, !!p.server_name].join("/");
    if (tr.dataset.acts !== acts || tr.cells.length <= cells.length) {
      tr.dataset.acts = acts;
      const actions = document.createElement("td");
      actions.className = "actions";
      if (isAdmin()) {
        if (p.status === "paused") {
          actions.append(button("Resume", "resume", () => setStatus(p, "active")));
        } else if (p.status !== "revoked") {
          actions.append(button("Pause", "pause", () => setStatus(p, "paused")));
        }
        const replay = button("Replay dead", "replay", () => replayDead(p));
        replay.disabled = p.dead === 0;
        actions.append(" ", replay);
        if (p.server_name) {
          actions.append(" ", button("Refresh keys", "refresh", () => refreshPeer(p)));
        }
      }
      if (tr.cells[cells.length]) tr.cells[cells.length].replaceWith(actions); else tr.append(actions);
    }
    return tr;
  });
  body.replaceChildren(...rows);
  $("peers-note").hidden = peers.length > 0 && !$("peers-note").textContent;
  if (!peers.length) $("peers-note").textContent = "No peers yet.";
}

function button(label, action, onClick) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.action = action;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); } catch (e) { note(errText(e), true); }
    await renderPeers().catch((e) => note(errText(e), true));
  });
  return b;
}

function note(text, bad) {
  say("peers-note", text, bad);
}

async function setStatus(p, status) {
  await api("PATCH", "/api/federation/peers/" + p.id, { status });
  note(p.name + (status === "paused" ? " paused" : " resumed"));
}

// The last error, marked resolved once the peer was heard from after it.
function lastError(p) {
  if (!p.last_error) return cell("");
  if (p.last_error_resolved_at) {
    return cell("resolved " + when(p.last_error_resolved_at) + ": " + p.last_error, "resolved");
  }
  return cell(p.last_error, "failing");
}

async function refreshPeer(p) {
  const fresh = await api("POST", "/api/federation/peers/" + p.id + "/refresh", {});
  note(p.name + ": keys refreshed (" + (fresh.keys || []).length + " pinned)");
}

const deadCount = (n) => n + " dead " + (n === 1 ? "delivery" : "deliveries");

async function replayDead(p) {
  const { replayed } = await api("POST", "/api/federation/peers/" + p.id + "/replay-dead", {});
  note("Replayed " + deadCount(replayed) + " to " + p.name);
}

async function createPeer(f, form) {
  const body = { name: f.name, peer_hook_url: f.peer_hook_url, outbound_token: f.outbound_token };
  const scopes = list(f.scopes);
  if (scopes.length) body.scopes = scopes;
  const p = await api("POST", "/api/federation/peers", body);
  form.reset();
  await renderPeers();
  return "Added peer " + p.name + " (scopes " + (p.scopes || []).join(", ") + ").";
}

// ---------------------------------------------------------------- one peer: fields, charts, edit

function enterPeer(id) {
  state.peerId = id;
  state.peer = null;
  state.peerFormFor = null;
  state.chartSig = null;
  $("peer-title").textContent = "Peer";
  say("peer-error", "");
  $("peer-fields").replaceChildren();
  $("peer-chart").replaceChildren();
  say("peer-note", "");
  markWindow();
}

function markWindow() {
  $("window-hour").setAttribute("aria-pressed", String(state.peerWindow === "hour"));
  $("window-day").setAttribute("aria-pressed", String(state.peerWindow === "day"));
}

async function renderPeer() {
  const live = alive();
  const id = state.peerId;
  if (!id) throw new Error("no peer chosen: open one from the peers table");
  const base = "/api/federation/peers/" + enc(id);
  const [p, stats] = await Promise.all([
    api("GET", base),
    api("GET", base + "/stats?window=" + state.peerWindow).catch((e) => ({ error: e })),
  ]);
  if (!live()) return;
  state.peer = p;
  say("peer-error", "");
  $("peer-title").textContent = p.name;
  const rows = [["Name", p.name], ["Server", p.server_name], ["Status", p.status],
    ["Health", p.health], ["Scopes", (p.scopes || []).join(", ")],
    ["Filters", (p.filters || []).map((f) => JSON.stringify(f)).join(" and ")],
    ["Order", p.ordering_key ? "by " + p.ordering_key + ", dead events " + p.on_dead : "unordered"],
    ["Delivery policy", policyText(p.delivery)], ["Content mode", p.content_mode],
    ["URL", p.peer_hook_url],
    ["Max hops", p.max_hops], ["Last seen", when(p.last_seen)], ["Pending", p.pending],
    ["Dead", p.dead], ["Sent 24 h", p.events_sent_24h], ["Received 24 h", p.events_received_24h],
    ["Last error", p.last_error]];
  const dl = $("peer-fields");
  const items = rows.flatMap(([k, v]) => {
    const dd = el("dd", v === null || v === undefined || v === "" ? "–" : v);
    dd.dataset.field = k.toLowerCase().replace(/ /g, "-");
    return [el("dt", k), dd];
  });
  if (dl.textContent !== items.map((e) => e.textContent).join("")) dl.replaceChildren(...items);
  $("peer-outbox-link").href = "#/outbox?" + new URLSearchParams({ peer: p.name });
  $("peer-dead-link").href = "#/outbox?" + new URLSearchParams({ peer: p.name, status: "dead" });
  if (state.peerFormFor !== p.id) fillPeerForm(p);
  drawStats(stats);
}

/** A peer's own delivery policy as one line ("instance's" for what it leaves out). */
function policyText(d) {
  const set = Object.entries(d || {});
  return set.length ? set.map(([k, v]) => k + " " + v).join(", ") : "the instance's";
}

function fillPeerForm(p) {
  const f = $("peer-edit-form");
  f.elements.ordering_key.value = p.ordering_key || "";
  f.elements.on_dead.value = p.on_dead || "skip";
  f.elements.content_mode.value = p.content_mode || "structured";
  f.elements.delivery.value = JSON.stringify(p.delivery || {});
  f.elements.scopes.value = (p.scopes || []).join(", ");
  f.elements.peer_hook_url.value = p.peer_hook_url || "";
  f.elements.max_hops.value = p.max_hops;
  f.elements.filters.value = JSON.stringify(p.filters || []);
  state.peerFormFor = p.id;
}

/** PATCHes only what the form changed. */
async function savePeer(f) {
  const p = state.peer;
  if (!p) throw new Error("the peer is not loaded yet");
  const body = {};
  const scopes = list(f.scopes);
  if (scopes.join(",") !== (p.scopes || []).join(",")) body.scopes = scopes;
  if (f.peer_hook_url && f.peer_hook_url !== p.peer_hook_url) body.peer_hook_url = f.peer_hook_url;
  if (f.max_hops !== "" && Number(f.max_hops) !== p.max_hops) body.max_hops = Number(f.max_hops);
  if (f.filters !== undefined && f.filters.trim() !== JSON.stringify(p.filters || [])) {
    try {
      body.filters = JSON.parse(f.filters.trim() || "[]");
    } catch (e) {
      throw new Error("filters: not JSON (" + e.message + ")");
    }
  }
  const key = (f.ordering_key || "").trim();
  if (key !== (p.ordering_key || "")) body.ordering_key = key || null;
  if (f.on_dead && f.on_dead !== p.on_dead) body.on_dead = f.on_dead;
  if (f.content_mode && f.content_mode !== p.content_mode) body.content_mode = f.content_mode;
  if (f.delivery !== undefined && f.delivery.trim() !== JSON.stringify(p.delivery || {})) {
    try {
      body.delivery = JSON.parse(f.delivery.trim() || "{}");
    } catch (e) {
      throw new Error("delivery: not JSON (" + e.message + ")");
    }
  }
  if (!Object.keys(body).length) return "Nothing changed.";
  const saved = await api("PATCH", "/api/federation/peers/" + enc(p.id), body);
  state.peerFormFor = null;
  await renderPeer();
  return "Saved " + Object.keys(body).join(", ") + " of " + (saved.name || p.name) + ".";
}

// ---------------------------------------------------------------- charts (inline SVG)

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

/** An axis from 0 to at least `max` in 1, 2 or 5 × 10ⁿ steps. */
function axis(max) {
  const raw = Math.max(max / 4, 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const ticks = [];
  for (let v = 0; v <= top + 1e-9; v += step) ticks.push(v);
  return { top, ticks };
}

const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/** A chart's frame: grid, y labels, time labels under the buckets; answers where things go. */
function frame(title, yTitle, max, buckets, bucketSecs) {
  const W = 720, H = 210, L = 54, R = 14, T = 14, B = 34;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
    "aria-label": title });
  root.append(svg("title", {}, title));
  const { top, ticks } = axis(max);
  const pw = W - L - R, ph = H - T - B;
  const y = (v) => T + ph - (v / top) * ph;
  const n = Math.max(buckets.length, 1);
  const slot = pw / n;
  const x = (i) => L + i * slot;
  for (const v of ticks) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v));
  }
  root.append(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
  const every = Math.ceil(n / 6);
  buckets.forEach((b, i) => {
    if (i % every) return;
    root.append(svg("text", { x: x(i) + slot / 2, y: H - B + 16, "text-anchor": "middle",
      class: "tick" }, hhmm(b.start)));
  });
  root.append(svg("text", { x: W - R, y: H - 4, "text-anchor": "end", class: "axis-title" },
    "bucket start (" + (bucketSecs >= 3600 ? bucketSecs / 3600 + " h" : bucketSecs / 60 + " min") + " each)"));
  root.append(svg("text", { x: -(T + ph / 2), y: 14, transform: "rotate(-90)",
    "text-anchor": "middle", class: "axis-title" }, yTitle));
  return { root, x, y, slot };
}

function span(b, bucketSecs) {
  return hhmm(b.start) + "–" + hhmm(new Date(b.start).getTime() + bucketSecs * 1000);
}

/** Delivered (green) and failed (red) attempts, stacked, a bar a bucket. */
function countsChart(buckets, bucketSecs) {
  const max = Math.max(0, ...buckets.map((b) => b.delivered + b.failed));
  const f = frame("Delivered and failed attempts", "attempts", max, buckets, bucketSecs);
  const bw = f.slot * 0.7;
  buckets.forEach((b, i) => {
    const x0 = f.x(i) + (f.slot - bw) / 2;
    const tip = span(b, bucketSecs) + ": " + b.delivered + " delivered, " + b.failed + " failed";
    const parts = [["bar-delivered", 0, b.delivered], ["bar-failed", b.delivered, b.delivered + b.failed]];
    for (const [cls, from, to] of parts) {
      if (to <= from) continue;
      const r = svg("rect", { x: x0, y: f.y(to), width: bw, height: f.y(from) - f.y(to), class: cls });
      r.append(svg("title", {}, tip));
      f.root.append(r);
    }
  });
  return f.root;
}

/** The p50 and p95 latency of the delivered attempts, a line each (broken where none). */
function latencyChart(buckets, bucketSecs) {
  const vals = buckets.flatMap((b) => [b.p50_ms, b.p95_ms]).filter((v) => v !== null && v !== undefined);
  const f = frame("Delivery latency", "ms", Math.max(0, ...vals), buckets, bucketSecs);
  for (const [key, cls] of [["p50_ms", "line-p50"], ["p95_ms", "line-p95"]]) {
    let d = "", pen = "M";
    buckets.forEach((b, i) => {
      const v = b[key];
      if (v === null || v === undefined) { pen = "M"; return; }
      const cx = f.x(i) + f.slot / 2, cy = f.y(v);
      d += pen + cx.toFixed(1) + " " + cy.toFixed(1) + " ";
      pen = "L";
      const dot = svg("circle", { cx, cy, r: 3, class: cls + " dot" });
      dot.append(svg("title", {}, span(b, bucketSecs) + ": " + key.replace("_ms", "") + " " + v + " ms"));
      f.root.append(dot);
    });
    if (d) f.root.append(svg("path", { d: d.trim(), class: cls, fill: "none" }));
  }
  if (!vals.length) {
    f.root.append(svg("text", { x: 360, y: 100, "text-anchor": "middle", class: "empty" },
      "No deliveries in this window"));
  }
  return f.root;
}

function legend(items) {
  const ul = el("ul", null, "legend");
  for (const [cls, label] of items) {
    const li = el("li");
    li.append(el("span", null, "swatch " + cls), label);
    ul.append(li);
  }
  return ul;
}

function drawStats(stats) {
  const sig = JSON.stringify(stats && stats.error ? errText(stats.error) : stats);
  if (sig === state.chartSig) return;
  state.chartSig = sig;
  const box = $("peer-chart");
  if (stats.error) {
    box.dataset.delivered = "";
    box.dataset.failed = "";
    box.replaceChildren(el("p", "The charts could not be read: " + errText(stats.error), "error"));
    return;
  }
  const buckets = stats.buckets || [];
  const delivered = buckets.reduce((n, b) => n + b.delivered, 0);
  const failed = buckets.reduce((n, b) => n + b.failed, 0);
  box.dataset.window = stats.window;
  box.dataset.delivered = delivered;
  box.dataset.failed = failed;
  box.dataset.buckets = buckets.length;
  $("peer-chart-title").textContent = "Deliveries, last " + (stats.window === "day" ? "day" : "hour");
  const total = delivered + failed;
  const summary = el("p", delivered + " delivered, " + failed + " failed" +
    (total ? " (" + Math.round((100 * delivered) / total) + "% delivered)" : ""), "chart-summary");
  box.replaceChildren(summary,
    legend([["delivered", "Delivered"], ["failed", "Failed"]]), countsChart(buckets, stats.bucket_secs),
    legend([["p50", "p50 latency"], ["p95", "p95 latency"]]), latencyChart(buckets, stats.bucket_secs));
}

function setWindow(w) {
  if (state.peerWindow === w) return;
  state.peerWindow = w;
  state.chartSig = null;
  markWindow();
  renderPeer().catch((e) => say("peer-error", errText(e), true));
}

// ---------------------------------------------------------------- outbox and dead letters

function fillOutboxFilters(q) {
  $("f-peer").dataset.want = q.get("peer") || "";
  $("f-status").value = q.get("status") || "";
  $("f-type").value = q.get("type") || "";
  $("f-source").value = q.get("source") || "";
  $("f-since").value = toLocalInput(q.get("since"));
  $("f-until").value = toLocalInput(q.get("until"));
  const dead = q.get("status") === "dead";
  $("outbox-title").textContent = dead ? "Dead letters" : "Outbox";
  const replay = $("replay-matching");
  replay.hidden = !(isAdmin() && dead);
  replay.disabled = !!q.get("source");
  replay.title = q.get("source")
    ? "Replay by source is not offered: clear the Source filter"
    : "Replay every dead delivery that matches the filter (peer, type, time)";
  say("outbox-note", "");
}

/** The peer filter's options, redrawn only when the peers change. */
function syncPeerSelect() {
  const select = $("f-peer");
  const names = state.peers.map((p) => p.name);
  const want = select.dataset.want || "";
  if (want && !names.includes(want)) names.push(want);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") !== names.join("\n")) {
    select.replaceChildren(new Option("any", ""), ...names.map((n) => new Option(n, n)));
  }
  if (select.value !== want) select.value = want;
}

async function renderOutbox() {
  const live = alive();
  const q = hashQuery();
  if (!state.peers.length) await loadPeers().catch(() => []);
  if (!live()) return;
  syncPeerSelect();
  const page = await api("GET", "/api/federation/outbox?" + q.toString());
  if (!live()) return;
  syncRows($("outbox-rows"), page.items, (r) => r.id, outboxRow);
  $("outbox-empty").hidden = page.items.length > 0;
  state.outboxNext = page.next_cursor;
  $("outbox-more").hidden = page.next_cursor === null || page.next_cursor === undefined;
  $("outbox-first").hidden = !q.get("cursor");
}

function outboxRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.row = r.id;
  tr.dataset.event = r.event_id;
  tr.dataset.seq = r.event_seq;
  tr.className = "clickable";
  tr.title = "Open the event's story";
  const acts = document.createElement("td");
  acts.className = "actions";
  if (isAdmin()) {
    if (r.status === "delivered" || r.status === "dead") {
      acts.append(actButton("Resend", "resend", () => resendRow(r.id), "outbox-note", renderOutbox));
    }
    if (r.status === "pending") {
      acts.append(" ", actButton("Cancel", "cancel", () => cancelRow(r.id), "outbox-note", renderOutbox));
    }
  }
  tr.append(cell(r.id, "num"), cell(r.event_id, "event"), cell(r.event_type),
    cell(peerName(r.peer_id)), cell(r.status, "state state-" + r.status),
    cell(r.attempts, "num"), cell(r.last_error), cell(when(r.updated_at)),
    cell(r.peer_answer, "answer"), acts);
  tr.addEventListener("click", (e) => {
    if (e.target.closest("button, a, input, select")) return;
    location.hash = "#/events?id=" + enc(r.event_seq);
  });
  return tr;
}

async function resendRow(id) {
  const row = await api("POST", "/api/federation/outbox/" + enc(id) + "/resend", {});
  return "Resent row " + id + ": it is " + row.status + " now.";
}

async function cancelRow(id) {
  const row = await api("POST", "/api/federation/outbox/" + enc(id) + "/cancel", {});
  return "Cancelled row " + id + " (" + row.status + ").";
}

/** Replays the dead rows the applied filter shows (peer, type, since, until). */
async function replayMatching() {
  const q = hashQuery();
  const body = {};
  for (const k of ["peer", "type", "since", "until"]) if (q.get(k)) body[k] = q.get(k);
  const { replayed } = await api("POST", "/api/federation/outbox/replay", body);
  return "Replayed " + deadCount(replayed);
}

function filterOutbox(e) {
  e.preventDefault();
  const q = new URLSearchParams();
  for (const [k, id] of [["peer", "f-peer"], ["status", "f-status"], ["type", "f-type"], ["source", "f-source"]]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  for (const [k, id] of [["since", "f-since"], ["until", "f-until"]]) {
    const v = toRfc3339($(id).value);
    if (v) q.set(k, v);
  }
  go("#/outbox?" + q.toString());
}

function outboxPage(cursor) {
  const q = hashQuery();
  if (cursor === null) q.delete("cursor"); else q.set("cursor", cursor);
  go("#/outbox?" + q.toString());
}

// ---------------------------------------------------------------- events

function fillEventFilters(q) {
  $("e-type").value = q.get("type") || "";
  $("e-source").value = q.get("source") || "";
  $("e-since").value = toLocalInput(q.get("since"));
  $("e-until").value = toLocalInput(q.get("until"));
  $("e-limit").value = q.get("limit") || "50";
  $("event-id").value = q.get("id") || "";
  say("event-error", "");
}

function searchEvents(e) {
  e.preventDefault();
  const q = new URLSearchParams();
  const id = $("event-id").value.trim();
  const source = $("e-source").value.trim();
  if (id) {
    // A CloudEvent id is unique per source: the source narrows it; a number is a sequence.
    q.set("id", id);
    if (source && !/^\d+$/.test(id)) q.set("source", source);
    go("#/events?" + q.toString());
    return;
  }
  for (const [k, v] of [["type", $("e-type").value.trim()], ["source", source],
    ["since", toRfc3339($("e-since").value)], ["until", toRfc3339($("e-until").value)]]) {
    if (v) q.set(k, v);
  }
  const limit = $("e-limit").value.trim();
  if (limit && limit !== "50") q.set("limit", limit);
  go("#/events?" + q.toString());
}

async function renderEvents() {
  const live = alive();
  const q = hashQuery();
  const p = new URLSearchParams();
  for (const k of ["type", "source", "since", "until"]) if (q.get(k)) p.set(k, q.get(k));
  p.set("limit", q.get("limit") || "50");
  if (q.get("after")) p.set("after", q.get("after"));
  const page = await api("GET", "/api/events?" + p.toString());
  if (!live()) return;
  say("event-error", "");
  syncRows($("events-rows"), page.items, (it) => it.seq, eventRow);
  $("events-empty").hidden = page.items.length > 0;
  state.eventsNext = page.next_cursor;
  $("events-more").hidden = page.next_cursor === null || page.next_cursor === undefined;
  $("events-first").hidden = !q.get("after");
}

function eventRow(it) {
  const ev = it.event || {};
  const tr = document.createElement("tr");
  tr.dataset.seq = it.seq;
  tr.dataset.event = ev.id;
  tr.className = "clickable";
  tr.title = "Open the event's story";
  tr.append(cell(it.seq, "num"), cell(ev.id, "event"), cell(ev.type), cell(it.source),
    cell(ev.kitefedorigin, "origin"), cell(when(it.received_at)));
  tr.addEventListener("click", () => { location.hash = "#/events?id=" + enc(it.seq); });
  return tr;
}

function eventsPage(after) {
  const q = hashQuery();
  if (after === null) q.delete("after"); else q.set("after", after);
  go("#/events?" + q.toString());
}

// ---------------------------------------------------------------- an event's story

/** Who acted on a delivery: the key's label when this key may list keys. */
function actor(by) {
  if (!by) return "kite";
  const k = state.keysById && state.keysById.get(by);
  if (!k) return "key " + by.slice(0, 8);
  return (k.label ? k.label + " " : "") + "(" + k.prefix + ")";
}

async function renderStory(id, source) {
  const live = alive();
  if (isAdmin() && !state.keysById) {
    const keys = await api("GET", "/api/keys").then((k) => k.items).catch(() => []);
    state.keysById = new Map(keys.map((k) => [k.id, k]));
  }
  let s;
  try {
    s = await api("GET", "/api/events/" + enc(id) + (source ? "?source=" + enc(source) : ""));
  } catch (e) {
    if (live()) {
      say("event-error", errText(e), true);
      $("story").hidden = true;
    }
    return;
  }
  if (!live()) return;
  say("event-error", "");
  const ev = s.event || {};
  $("story-title").textContent = "#" + s.seq + " " + (ev.type || "") + " (" + (ev.id || "") +
    ") from " + s.source + ", " + when(s.received_at);
  const meta = [["Source", s.source], ["Received", when(s.received_at)],
    ["Origin", ev.kitefedorigin || (s.source === "kite" ? null : "entered here")],
    ["Chain", chainOf(ev)], ["Hops", ev.kitefedhops],
    ["Origin signature", ev.kitefedsigkey]].filter(([, v]) => v !== null && v !== undefined);
  const dl = $("story-meta");
  const items = meta.flatMap(([k, v]) => {
    const dd = el("dd", v);
    dd.dataset.field = k.toLowerCase().replace(/ /g, "-");
    return [el("dt", k), dd];
  });
  if (dl.textContent !== items.map((e) => e.textContent).join("")) dl.replaceChildren(...items);
  const text = JSON.stringify(ev, null, 2);
  if ($("story-event").textContent !== text) $("story-event").textContent = text;
  syncRows($("story-rows"), s.deliveries, (d) => d.peer_id + "/" + (d.outbox_id ?? ""),
    (d) => storyRow(d, () => renderStory(id, source)));
  $("story").hidden = false;
}

function storyRow(d, refresh) {
  const tr = document.createElement("tr");
  tr.dataset.peer = d.peer || d.peer_id;
  if (d.outbox_id !== null && d.outbox_id !== undefined) tr.dataset.row = d.outbox_id;
  const why = [d.reason, d.filter && "filter " + JSON.stringify(d.filter),
    d.filter_error && "it could not answer: " + d.filter_error,
    d.scopes && "scopes " + d.scopes.join(", "),
    d.delivered_at && "delivered " + when(d.delivered_at)].filter(Boolean).join("; ");
  const attempts = document.createElement("td");
  const ul = el("ul", null, "attempts");
  for (const a of d.attempts || []) {
    ul.append(el("li", when(a.at) + ": " + a.outcome + (a.status_code ? " " + a.status_code : "") +
      (a.error ? " – " + a.error : "") + (a.peer_answer ? " (peer: " + a.peer_answer + ")" : "") +
      " (" + a.duration_ms + " ms)"));
  }
  attempts.append((d.attempts || []).length ? ul : "–");
  const acted = document.createElement("td");
  const al = el("ul", null, "actions-log");
  for (const a of d.actions || []) {
    al.append(el("li", when(a.at) + " " + a.action + " by " + actor(a.by)));
  }
  acted.append((d.actions || []).length ? al : "–");
  const outcome = cell(d.outcome + (d.peer_answer ? " (peer: " + d.peer_answer + ")" : ""),
    "state state-" + d.outcome);
  const acts = document.createElement("td");
  acts.className = "actions";
  const row = d.outbox_id;
  if (isAdmin() && row !== null && row !== undefined) {
    if (["delivered", "dead"].includes(d.outcome)) {
      acts.append(actButton("Resend", "resend", () => resendRow(row), "story-note", refresh));
    }
    if (["pending", "waiting"].includes(d.outcome)) {
      acts.append(" ", actButton("Cancel", "cancel", () => cancelRow(row), "story-note", refresh));
    }
  }
  tr.append(cell(d.peer || "(deleted) " + d.peer_id), outcome, cell(why || null), attempts, acted, acts);
  return tr;
}

// ---------------------------------------------------------------- sources

/** The signed sources and, marked, the ones the API lists as having taken unsigned posts. */
async function renderSources() {
  const live = alive();
  const answer = await api("GET", "/api/sources");
  const items = answer.items || [];
  const configured = new Set(items.map((s) => s.name));
  const unsigned = (answer.unsigned || []).map((u) => ({ name: u.name, scheme: null,
    unsigned: true, seen: "unsigned posts since " + when(u.first_seen) }));
  if (!live()) return;
  $("hook-base").textContent = location.origin + "/hooks/" + state.session.team_id + "/{source}";
  const all = items.map((s) => Object.assign({}, s, { unsigned: !s.scheme,
    seen: "added " + when(s.created_at) }))
    .concat(unsigned.filter((u) => !configured.has(u.name)))
    .sort((x, y) => x.name.localeCompare(y.name));
  syncRows($("sources-rows"), all, (s) => s.name, sourceRow);
  syncRotateSelect(items.filter((s) => s.scheme).map((s) => s.name));
}

function sourceRow(s) {
  const tr = document.createElement("tr");
  tr.dataset.source = s.name;
  const name = document.createElement("td");
  name.append(el("span", s.name, "source-name"));
  if (s.unsigned) name.append(" ", el("span", "unsigned: accepts anyone's posts", "badge unsigned"));
  const url = document.createElement("td");
  url.append(el("code", location.origin + "/hooks/" + state.session.team_id + "/" + s.name));
  const secret = s.unsigned ? "none"
    : s.previous_until ? "rotated; the old one works until " + when(s.previous_until) : "set";
  const acts = document.createElement("td");
  acts.className = "actions";
  if (isAdmin()) {
    if (s.unsigned) {
      acts.append(actButton("Sign it", "sign-source", async () => {
        const f = $("source-create-form");
        f.elements.name.value = s.name;
        f.elements.scheme.focus();
        return "Choose a scheme for " + s.name + " below.";
      }, "sources-note"));
    } else {
      acts.append(actButton("Rotate", "rotate-source", async () => {
        $("rotate-name").value = s.name;
        $("source-rotate-form").elements.secret.focus();
        return "Rotate the secret of " + s.name + " below.";
      }, "sources-note"), " ",
      actButton("Delete", "delete-source", async () => {
        await api("DELETE", "/api/sources/" + enc(s.name));
        return "Removed source " + s.name + ".";
      }, "sources-note", renderSources, "Click again to delete"));
    }
  }
  tr.append(name, cell(s.scheme || "none"), url, cell(s.seen), cell(secret), acts);
  return tr;
}

function syncRotateSelect(names) {
  const select = $("rotate-name");
  const have = [...select.options].map((o) => o.value);
  if (have.join("\n") === names.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((n) => new Option(n, n, false, n === chosen)));
}

async function createSource(f, form) {
  const secret = f.secret || makeSecret();
  const body = { name: f.name, scheme: f.scheme, secret };
  if (f.header) body.header = f.header;
  const src = await api("POST", "/api/sources", body);
  form.reset();
  if (!f.secret) showSecret("Signing secret of " + src.name + " (give it to the sender)", secret);
  await renderSources();
  return "Added source " + src.name + " (" + src.scheme + ").";
}

async function rotateSource(f, form) {
  if (!f.name) throw new Error("choose a source");
  const secret = f.secret || makeSecret();
  const src = await api("POST", "/api/sources/" + enc(f.name) + "/rotate", { secret });
  form.elements.secret.value = "";
  if (!f.secret) showSecret("New signing secret of " + src.name + " (give it to the sender)", secret);
  await renderSources();
  return "Rotated the secret of " + src.name +
    (src.previous_until ? "; the old one works until " + when(src.previous_until) : "") + ".";
}

// ---------------------------------------------------------------- keys

async function renderKeys() {
  const live = alive();
  if (!isAdmin()) {
    $("keys-rows").replaceChildren();
    return;
  }
  const { items } = await api("GET", "/api/keys");
  if (!live()) return;
  syncRows($("keys-rows"), items, (k) => k.id, keyRow);
}

function keyRow(k) {
  const tr = document.createElement("tr");
  tr.dataset.keyId = k.id;
  tr.dataset.prefix = k.prefix;
  const prefix = document.createElement("td");
  prefix.append(el("code", k.prefix));
  const acts = document.createElement("td");
  acts.className = "actions";
  if (state.session && k.id === state.session.key_id) {
    acts.append(el("span", "this key", "badge"));
  } else if (!k.revoked_at && isAdmin()) {
    acts.append(actButton("Revoke", "revoke-key", async () => {
      await api("DELETE", "/api/keys/" + enc(k.id));
      return "Revoked key " + k.prefix + (k.label ? " (" + k.label + ")" : "") + ".";
    }, "keys-note", renderKeys, "Click again to revoke"));
  }
  tr.append(prefix, cell(k.label), cell(k.permission), cell(when(k.created_at)),
    cell(k.revoked_at ? when(k.revoked_at) : null, k.revoked_at ? "state-revoked" : ""), acts);
  return tr;
}

async function createKey(f, form) {
  const body = { permission: f.permission || "read" };
  if (f.label) body.label = f.label;
  const k = await api("POST", "/api/keys", body);
  form.reset();
  showSecret("New " + k.permission + " key" + (k.label ? " “" + k.label + "”" : ""), k.key);
  await renderKeys();
  return "Made key " + k.prefix + ".";
}

// ---------------------------------------------------------------- invitations

async function renderInvitations() {
  const live = alive();
  if (!isAdmin()) {
    $("invitations-rows").replaceChildren();
    return;
  }
  const { items } = await api("GET", "/api/federation/invitations");
  if (!live()) return;
  syncRows($("invitations-rows"), items, (i) => i.id, invitationRow);
}

function invitationRow(i) {
  const tr = document.createElement("tr");
  tr.dataset.invitation = i.id;
  const expired = !i.used_at && new Date(i.expires_at) < new Date();
  const acts = document.createElement("td");
  acts.className = "actions";
  if (isAdmin()) {
    acts.append(actButton(i.used_at ? "Delete" : "Withdraw", "delete-invitation", async () => {
      await api("DELETE", "/api/federation/invitations/" + enc(i.id));
      return "Deleted invitation " + i.id.slice(0, 8) + ".";
    }, "invitations-note", renderInvitations, "Click again to delete"));
  }
  tr.append(cell(i.id.slice(0, 8)), cell((i.scopes || []).join(", ")), cell(i.max_hops, "num"),
    cell(when(i.expires_at) + (expired ? " (expired)" : ""), expired ? "state-dead" : ""),
    cell(i.used_at ? when(i.used_at) + (i.used_by ? " by " + i.used_by : "") : null),
    cell(when(i.created_at)), acts);
  return tr;
}

async function createInvitation(f, form) {
  const body = { ttl: Number(f.ttl) };
  const scopes = list(f.scopes);
  if (scopes.length) body.scopes = scopes;
  if (f.max_hops) body.max_hops = Number(f.max_hops);
  const inv = await api("POST", "/api/federation/invitations", body);
  form.reset();
  showSecret("Invitation, valid until " + when(inv.expires_at) +
    ": the other server's admin accepts it (kite peer accept)", inv.invitation);
  await renderInvitations();
  return "Made an invitation for " + (inv.scopes || []).join(", ") + ".";
}

// ---------------------------------------------------------------- operational events

/** How many of the latest operational events the feed shows. */
const OPS_SHOWN = 50;

function enterOperational() {
  state.opsFeed = { after: 0, items: [], busy: false };
  state.opsFormFilled = false;
  $("operational-feed").replaceChildren();
  $("operational-empty").hidden = true;
  say("operational-note", "");
}

async function renderOperational() {
  await Promise.all([renderOpsEndpoint(), renderOpsFeed()]);
}

/** The endpoint and its deliveries, or a line saying none is set. */
async function renderOpsEndpoint() {
  const live = alive();
  let e = null;
  try {
    e = await api("GET", "/api/operational-endpoint");
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  if (!live()) return;
  $("operational-none").hidden = !!e;
  const dl = $("operational-fields");
  dl.hidden = !e;
  const rows = e ? [["URL", e.url], ["Created", when(e.created_at)], ["Updated", when(e.updated_at)],
    ["Pending", e.pending], ["Delivered", e.delivered], ["Dead", e.dead],
    ["Last error", e.last_error]] : [];
  const items = rows.flatMap(([k, v]) => {
    const dd = el("dd", v === null || v === undefined || v === "" ? "–" : v);
    dd.dataset.field = k.toLowerCase().replace(/ /g, "-");
    if (k === "Dead" && v > 0) dd.className = "state-dead";
    if (k === "Last error" && v) dd.className = "failing";
    return [el("dt", k), dd];
  });
  if (dl.textContent !== items.map((x) => x.textContent).join("")) dl.replaceChildren(...items);
  const slot = $("operational-actions");
  if (e && isAdmin()) {
    if (!state.opsRemove) {
      state.opsRemove = actButton("Remove", "remove-operational", async () => {
        await api("DELETE", "/api/operational-endpoint");
        state.opsFormFilled = false;
        return "Removed the operational endpoint: its events stay on the stream and in the feed.";
      }, "operational-note", renderOpsEndpoint, "Click again to remove");
    }
    if (!slot.contains(state.opsRemove)) slot.replaceChildren(state.opsRemove);
  } else if (slot.firstChild) {
    slot.replaceChildren();
  }
  // The form is filled once, so a refresh never overwrites what someone types.
  if (e && !state.opsFormFilled) {
    $("operational-form").elements.url.value = e.url;
    state.opsFormFilled = true;
  }
}

/**
 * The latest kite.* events, newest first. The events API lists oldest first after a
 * cursor: the first read pages to the end, then each refresh reads only what came since.
 */
async function renderOpsFeed() {
  const live = alive();
  const feed = state.opsFeed;
  if (!feed || feed.busy) return;
  feed.busy = true;
  try {
    for (let i = 0; i < 20; i++) {
      const p = new URLSearchParams({ type: "kite.*", limit: "500" });
      if (feed.after) p.set("after", feed.after);
      const page = await api("GET", "/api/events?" + p.toString());
      if (!live()) return;
      const fresh = (page.items || []).filter((it) => it.seq > feed.after);
      for (const it of fresh) feed.after = Math.max(feed.after, it.seq);
      const next = page.next_cursor;
      if (next !== null && next !== undefined) feed.after = Math.max(feed.after, next);
      feed.items = feed.items.concat(fresh).slice(-OPS_SHOWN);
      if (next === null || next === undefined) break;
    }
  } finally {
    feed.busy = false;
  }
  if (!live()) return;
  const newest = feed.items.slice().reverse();
  syncRows($("operational-feed"), newest, (it) => it.seq, opsRow);
  $("operational-empty").hidden = newest.length > 0;
}

/** What an operational event is about: its peer's name, or the identity key. */
function opsSubject(ev) {
  const d = ev.data || {};
  if (d.peer) return d.peer.name || d.peer.id || ev.subject;
  if (d.key_id) return "key " + d.key_id;
  return ev.subject;
}

function opsRow(it) {
  const ev = it.event || {};
  const d = ev.data || {};
  const type = ev.type || "";
  const tr = document.createElement("tr");
  tr.dataset.seq = it.seq;
  tr.dataset.event = ev.id;
  tr.dataset.type = type;
  tr.className = "clickable";
  tr.title = "Open the event's story";
  const detail = document.createElement("td");
  detail.className = "ops-detail";
  const parts = [];
  if (d.health) parts.push("health " + d.health);
  if (d.status) parts.push("status " + d.status);
  if (d.event && d.event.id) {
    const a = el("a", d.event.id, "event");
    a.href = "#/events?id=" + enc(d.event.id);
    a.title = "Open the dead event's story";
    detail.append("event ", a, d.event.type ? " (" + d.event.type + ")" : "");
  }
  if (d.count !== undefined && d.count !== null) {
    parts.push(d.count + " dead" +
      (d.attempts ? ", " + d.attempts + (d.attempts === 1 ? " attempt" : " attempts") : ""));
  }
  if (d.server_name) parts.push("server " + d.server_name);
  if (d.last_error) parts.push(d.last_error);
  const text = parts.join("; ");
  if (text) detail.append((detail.firstChild ? "; " : "") + text);
  if (!detail.firstChild) detail.textContent = "–";
  const kind = type.replace(/^kite\./, "").replace(/\./g, "-");
  tr.append(cell(when(ev.time || it.received_at)), cell(type, "ops-type ops-" + kind),
    cell(opsSubject(ev)), detail);
  tr.addEventListener("click", (e) => {
    if (e.target.closest("button, a, input, select")) return;
    location.hash = "#/events?id=" + enc(it.seq);
  });
  return tr;
}

async function saveOperational(f) {
  if (!f.url) throw new Error("a URL is needed");
  const r = await api("PUT", "/api/operational-endpoint", { url: f.url });
  if (r.secret) {
    showSecret("Signing secret of the operational endpoint (Standard Webhooks: give it to the receiver)",
      r.secret);
  }
  state.opsFormFilled = false;
  await renderOpsEndpoint();
  return r.secret ? "Set the operational endpoint to " + r.url + "."
    : "Saved the operational endpoint (" + r.url + "); its secret is kept.";
}

// ---------------------------------------------------------------- live tail

function startTail() {
  stopTail();
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const ws = new WebSocket(url);
  state.socket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "connect", version: 1, token: state.key, scopes: ["*"] }));
  ws.onmessage = (m) => {
    let f;
    try { f = JSON.parse(m.data); } catch (_) { return; }
    if (f.type === "connected") $("tail-state").textContent = "live: new events appear here";
    if (f.type === "error") $("tail-state").textContent = "closed: " + f.message;
    if (f.type !== "event") return;
    const e = f.event || {};
    const tr = document.createElement("tr");
    tr.dataset.seq = f.seq;
    const id = cell(e.id);
    id.classList.add("event");
    id.addEventListener("click", () => { location.hash = "#/events?id=" + f.seq; });
    tr.append(cell(f.seq, "num"), cell(when(e.time)), cell(e.type), cell(e.source), id,
      cell(e.kitefedorigin, "origin"), cell(chainOf(e), "chain"));
    $("tail-rows").prepend(tr);
    while ($("tail-rows").rows.length > 200) $("tail-rows").lastChild.remove();
    ws.send(JSON.stringify({ type: "ack", seq: f.seq }));
  };
  ws.onclose = () => {
    if (state.socket === ws) $("tail-state").textContent = "disconnected";
  };
}

function stopTail() {
  if (state.socket) {
    const ws = state.socket;
    state.socket = null;
    ws.close();
  }
}

// ---------------------------------------------------------------- routing

async function route() {
  clearInterval(state.timer);
  state.gen++;
  clearSecret();
  if (!state.session) {
    show("signin");
    return;
  }
  const view = hashView();
  const q = hashQuery();
  if (view !== "tail") stopTail();
  // A view's tables are read now and every 2 s; its forms are filled once, here, so a
  // refresh never overwrites what someone types.
  const every = (f, noteId) => {
    const live = alive();
    f().catch((e) => { if (live()) say(noteId, errText(e), true); });
    state.timer = setInterval(() => { if (live()) f().catch(() => {}); }, 2000);
  };
  if (view === "outbox") {
    show("outbox");
    // Rows of another filter or page are not shown while this one is read.
    $("outbox-rows").replaceChildren();
    fillOutboxFilters(q);
    every(renderOutbox, "outbox-note");
  } else if (view === "events") {
    show("events");
    fillEventFilters(q);
    const id = q.get("id");
    $("events-list").hidden = !!id;
    $("events-rows").replaceChildren();
    $("story-rows").replaceChildren();
    $("story").hidden = true;
    say("story-note", "");
    if (id) {
      state.keysById = null;
      $("story-back").href = state.eventsList;
      every(() => renderStory(id, q.get("source")), "event-error");
    } else {
      state.eventsList = location.hash || "#/events";
      every(renderEvents, "event-error");
    }
  } else if (view === "peer") {
    show("peer");
    enterPeer(q.get("id"));
    every(renderPeer, "peer-error");
  } else if (view === "tail") {
    show("tail");
    if (!state.socket) startTail();
  } else if (view === "sources") {
    show("sources");
    every(renderSources, "sources-note");
  } else if (view === "keys") {
    show("keys");
    every(renderKeys, "keys-note");
  } else if (view === "invitations") {
    show("invitations");
    every(renderInvitations, "invitations-note");
  } else if (view === "operational") {
    show("operational");
    enterOperational();
    every(renderOperational, "operational-note");
  } else {
    show("peers");
    every(renderPeers, "peers-note");
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("key").value.trim());
      $("key").value = "";
      if (!location.hash || location.hash === "#") location.hash = "#/peers"; else route();
    } catch (err) {
      $("signin-error").textContent = err.message;
    }
  });
  $("signout").addEventListener("click", signOut);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-dismiss").addEventListener("click", clearSecret);

  $("outbox-filters").addEventListener("submit", filterOutbox);
  $("f-peer").addEventListener("change", () => { $("f-peer").dataset.want = $("f-peer").value; });
  $("outbox-more").addEventListener("click", () => outboxPage(state.outboxNext));
  $("outbox-first").addEventListener("click", () => outboxPage(null));
  const replay = $("replay-matching");
  replay.addEventListener("click", async () => {
    replay.disabled = true;
    say("outbox-note", "");
    try {
      say("outbox-note", await replayMatching());
    } catch (e) {
      say("outbox-note", errText(e), true);
    }
    replay.disabled = !!hashQuery().get("source");
    await renderOutbox().catch((e) => say("outbox-note", errText(e), true));
  });

  $("event-search").addEventListener("submit", searchEvents);
  $("events-more").addEventListener("click", () => eventsPage(state.eventsNext));
  $("events-first").addEventListener("click", () => eventsPage(null));

  $("window-hour").addEventListener("click", () => setWindow("hour"));
  $("window-day").addEventListener("click", () => setWindow("day"));

  onSubmit("peer-create-form", "peers-note", createPeer);
  onSubmit("peer-edit-form", "peer-note", savePeer);
  onSubmit("source-create-form", "sources-note", createSource);
  onSubmit("source-rotate-form", "sources-note", rotateSource);
  onSubmit("key-create-form", "keys-note", createKey);
  onSubmit("invite-create-form", "invitations-note", createInvitation);
  onSubmit("operational-form", "operational-note", saveOperational);

  if (state.key) await signIn(state.key).catch(() => {});
  route();
});
