// kite's dashboard: the admin API and the /ws stream, read with the signed-in key.
// Everything shown is set as text (never as HTML), so nothing an event carries can run here.
"use strict";

const KEY = "kite.key";
const state = { key: sessionStorage.getItem(KEY), session: null, peers: [], timer: null,
  socket: null, outboxCursor: null };

const $ = (id) => document.getElementById(id);

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
    throw Object.assign(new Error(e.message), { code: e.code, status: res.status });
  }
  return data;
}

/** A table cell holding text. */
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

const isAdmin = () => state.session && state.session.permission === "admin";

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== view + "-view";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === currentNav());
  }
}

function currentNav() {
  const h = location.hash;
  if (h.startsWith("#/outbox") && h.includes("status=dead")) return "dead";
  return (h.match(/^#\/(\w+)/) || [])[1] || "peers";
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

async function renderPeers() {
  const peers = await loadPeers();
  $("peers-readonly").hidden = isAdmin();
  const body = $("peers-rows");
  const old = new Map([...body.rows].map((tr) => [tr.dataset.id, tr]));
  const rows = peers.map((p) => {
    // A row is kept and its cells updated in place; its buttons are redrawn only when what
    // they act on changes, so a refresh never swaps a button out under a click.
    const tr = old.get(p.id) || document.createElement("tr");
    tr.dataset.id = p.id;
    tr.dataset.peer = p.name;
    const cells = [cell(p.name), cell(p.server_name), cell(p.status, "state-" + p.status),
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
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); } catch (e) { note(e.message); }
    await renderPeers().catch((e) => note(e.message));
  });
  return b;
}

function note(text) {
  $("peers-note").textContent = text;
  $("peers-note").hidden = !text;
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

async function replayDead(p) {
  const { replayed } = await api("POST", "/api/federation/peers/" + p.id + "/replay-dead", {});
  note("Replayed " + replayed + " dead " + (replayed === 1 ? "delivery" : "deliveries") +
    " to " + p.name);
}

// ---------------------------------------------------------------- outbox and dead letters

function outboxQuery() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  return q;
}

async function renderOutbox(more) {
  const q = outboxQuery();
  if (!state.peers.length) await loadPeers().catch(() => []);
  const select = $("f-peer");
  const chosen = q.get("peer") || "";
  select.replaceChildren(new Option("any", ""),
    ...state.peers.map((p) => new Option(p.name, p.name, false, p.name === chosen)));
  $("f-status").value = q.get("status") || "";
  $("f-type").value = q.get("type") || "";
  $("f-source").value = q.get("source") || "";
  $("outbox-title").textContent = q.get("status") === "dead" ? "Dead letters" : "Outbox";
  if (more && state.outboxCursor) q.set("cursor", state.outboxCursor);
  const page = await api("GET", "/api/federation/outbox?" + q.toString());
  const names = new Map(state.peers.map((p) => [p.id, p.name]));
  const rows = page.items.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.row = r.id;
    const ev = cell(r.event_id);
    ev.classList.add("event");
    ev.addEventListener("click", () => { location.hash = "#/events?id=" + encodeURIComponent(r.event_seq); });
    tr.append(cell(r.id, "num"), ev, cell(r.event_type), cell(names.get(r.peer_id) || r.peer_id),
      cell(r.status, "state state-" + r.status), cell(r.attempts, "num"), cell(r.last_error),
      cell(when(r.updated_at)));
    return tr;
  });
  if (more) $("outbox-rows").append(...rows); else $("outbox-rows").replaceChildren(...rows);
  state.outboxCursor = page.next_cursor;
  $("outbox-more").hidden = page.next_cursor === null;
}

function filterOutbox(e) {
  e.preventDefault();
  const q = new URLSearchParams();
  for (const [k, id] of [["peer", "f-peer"], ["status", "f-status"], ["type", "f-type"], ["source", "f-source"]]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  location.hash = "#/outbox?" + q.toString();
}

// ---------------------------------------------------------------- an event's story

async function renderStory(id) {
  $("event-error").textContent = "";
  $("story").hidden = true;
  if (!id) return;
  $("event-id").value = id;
  let s;
  try {
    s = await api("GET", "/api/events/" + encodeURIComponent(id));
  } catch (e) {
    $("event-error").textContent = e.message;
    return;
  }
  const ev = s.event || {};
  $("story-title").textContent = "#" + s.seq + " " + (ev.type || "") + " (" + (ev.id || "") +
    ") from " + s.source + ", " + when(s.received_at);
  $("story-event").textContent = JSON.stringify(ev, null, 2);
  const rows = s.deliveries.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.peer = d.peer || d.peer_id;
    const why = [d.reason, d.scopes && "scopes " + d.scopes.join(", "),
      d.delivered_at && "delivered " + when(d.delivered_at)].filter(Boolean).join("; ");
    const attempts = document.createElement("td");
    const ul = document.createElement("ul");
    ul.className = "attempts";
    for (const a of d.attempts) {
      const li = document.createElement("li");
      li.textContent = when(a.at) + ": " + a.outcome + (a.status_code ? " " + a.status_code : "") +
        (a.error ? " – " + a.error : "") + " (" + a.duration_ms + " ms)";
      ul.append(li);
    }
    attempts.append(d.attempts.length ? ul : "–");
    tr.append(cell(d.peer || "(deleted) " + d.peer_id), cell(d.outcome, "state state-" + d.outcome),
      cell(why || null), attempts);
    return tr;
  });
  $("story-rows").replaceChildren(...rows);
  $("story").hidden = false;
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
    tr.append(cell(f.seq, "num"), cell(when(e.time)), cell(e.type), cell(e.source), id);
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
  if (!state.session) {
    show("signin");
    return;
  }
  const view = (location.hash.match(/^#\/(\w+)/) || [])[1] || "peers";
  if (view !== "tail") stopTail();
  const refresh = (f) => {
    f().catch((e) => note(e.message));
    state.timer = setInterval(() => f().catch(() => {}), 2000);
  };
  if (view === "outbox") {
    show("outbox");
    refresh(() => renderOutbox(false));
  } else if (view === "events") {
    show("events");
    await renderStory(new URLSearchParams(location.hash.split("?")[1] || "").get("id"));
  } else if (view === "tail") {
    show("tail");
    if (!state.socket) startTail();
  } else {
    show("peers");
    refresh(renderPeers);
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
  $("outbox-filters").addEventListener("submit", filterOutbox);
  $("outbox-more").addEventListener("click", () => renderOutbox(true).catch((e) => note(e.message)));
  $("event-search").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "#/events?id=" + encodeURIComponent($("event-id").value.trim());
  });
  if (state.key) await signIn(state.key).catch(() => {});
  route();
});
