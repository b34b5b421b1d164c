// clickrec storefront: posts clicks to /v1/events and shows the shopper's
// recommendations as the hot path commits them (server-sent events).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  user: "",
  session: "",
  category: "",
  categories: [],
  es: null,
  pending: new Map(), // event_id → {t0: performance.now() when the click was posted, type, name}
  updates: 0,
};

// ---------- helpers ----------

function randomId(n) {
  const alphabet = "abcdefghijkmnpqrstuvwxyz23456789";
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "EUR" });
function price(p) { return p ? money.format(p) : ""; }

function hue(category) {
  const n = parseInt(String(category || "").replace(/^c/, ""), 10);
  return Number.isFinite(n) ? (n * 47) % 360 : 210;
}

function initials(name) {
  const words = String(name || "?").split(/\s+/).filter(Boolean);
  return words.slice(-2).map((w) => w[0].toUpperCase()).join("");
}

function paintTile(node, category) {
  node.style.backgroundColor = `hsl(${hue(category)} 70% 88%)`;
}

function showError(msg) {
  const box = $("error");
  if (!msg) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = msg;
  box.hidden = false;
}

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body.detail || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// ---------- shopper ----------

function loadUser() {
  let u = localStorage.getItem("clickrec.user");
  if (!u) {
    u = "web-" + randomId(6);
    localStorage.setItem("clickrec.user", u);
  }
  return u;
}

function setUser(u) {
  u = u.trim();
  if (!u || u === state.user) { $("user-id").value = state.user; return; }
  state.user = u;
  state.session = "s-" + randomId(8);
  state.updates = 0;
  state.pending.clear();
  localStorage.setItem("clickrec.user", u);
  $("user-id").value = u;
  resetPanel();
  connect();
  loadLatest();
  loadActivity();
}

// ---------- catalogue ----------

async function loadCatalogue() {
  const q = new URLSearchParams({ limit: "48" });
  if (state.category) q.set("category", state.category);
  try {
    const cat = await getJSON(`/v1/catalogue?${q}`);
    if (!state.categories.length) {
      state.categories = cat.categories;
      renderCategories();
    }
    renderGrid(cat.items);
  } catch (e) {
    showError(`Could not load the catalogue: ${e.message}`);
  }
}

function renderCategories() {
  const nav = $("categories");
  const chip = (id, label) => el("button", {
    class: "chip", type: "button", "aria-pressed": String(state.category === id),
    onclick: () => {
      state.category = id;
      for (const c of nav.children) c.setAttribute("aria-pressed", String(c.dataset.id === id));
      loadCatalogue();
    },
    dataset: { id },
  }, label);
  nav.replaceChildren(chip("", "All"), ...state.categories.slice(0, 14).map((c) => chip(c.id, c.name)));
}

function renderGrid(items) {
  const grid = $("grid");
  grid.replaceChildren(...items.map((p) => {
    const tile = el("span", { class: "tile", "aria-hidden": "true" }, initials(p.name));
    paintTile(tile, p.category);
    const card = el("article", { class: "product", dataset: { item: String(p.item_id) } });
    card.append(
      el("button", {
        type: "button", class: "product-main", "aria-label": `View ${p.name}, ${price(p.price)}`,
        onclick: () => send("view", p, card),
      },
      tile,
      el("span", { class: "product-info" },
        el("span", { class: "product-name" }, p.name),
        el("span", { class: "product-meta" },
          el("span", {}, `${p.category_name} · #${p.item_id}`),
          el("span", { class: "price" }, price(p.price))))),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "cart", onclick: () => send("cart", p, card) }, "Add to cart"),
        el("button", { type: "button", class: "buy", onclick: () => send("purchase", p, card) }, "Buy")));
    return card;
  }));
}

// ---------- clicks ----------

async function send(type, p, card) {
  const click = {
    event_id: `web-${Date.now().toString(36)}-${randomId(6)}`,
    user_id: state.user,
    session_id: state.session,
    event_type: type,
    item_id: p.item_id,
    category: p.category,
    price: p.price,
    timestamp_ms: Date.now(),
  };
  state.pending.set(click.event_id, { t0: performance.now(), type, name: p.name || `Item #${p.item_id}` });
  if (card) {
    card.classList.add("clicked");
    setTimeout(() => card.classList.remove("clicked"), 600);
  }
  try {
    const res = await fetch("/v1/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(click),
    });
    if (res.status !== 202) {
      const body = await res.json().catch(() => ({}));
      state.pending.delete(click.event_id);
      showError(`${type} not sent (${res.status}): ${body.detail || res.statusText}`);
      return;
    }
    showError("");
  } catch (e) {
    state.pending.delete(click.event_id);
    showError(`${type} not sent: ${e.message}`);
  }
}

// ---------- recommendations ----------

function resetPanel() {
  $("recs").replaceChildren();
  $("recs").dataset.eventId = "";
  $("latency").textContent = "–";
  $("latency").classList.remove("fresh");
  $("model").textContent = "–";
  $("updates").textContent = "0";
  $("strategy").hidden = true;
  $("recs-note").textContent = "Click a product: recommendations for this shopper appear here as soon as the hot path commits them.";
  $("activity").replaceChildren();
}

const strategyLabels = {
  model: "model",
  category_popular: "popular in category",
  global_popular: "popular overall",
};

const typeLabels = { view: "view", cart: "cart", purchase: "purchase" };

function renderRecs(rec, latencyMs, click) {
  const list = $("recs");
  list.dataset.eventId = rec.event_id;
  list.replaceChildren(...rec.items.map((it, i) => {
    const tile = el("span", { class: "rec-tile", "aria-hidden": "true" }, initials(it.name || "#"));
    paintTile(tile, it.category);
    const product = { item_id: it.item_id, category: it.category || "", price: it.price || 0, name: it.name };
    return el("li", { class: "rec new", dataset: { item: String(it.item_id) } },
      el("button", {
        type: "button", class: "rec-btn", title: `score ${Number(it.score).toFixed(3)} — click to view`,
        onclick: () => send("view", product, null),
      },
      el("span", { class: "rec-rank" }, String(i + 1)),
      tile,
      el("span", {},
        el("span", { class: "rec-name" }, it.name || `Item #${it.item_id}`),
        el("span", { class: "rec-sub" }, `${it.category_name || it.category || "unknown category"} · #${it.item_id}`)),
      el("span", { class: "rec-price" }, price(it.price))));
  }));
  $("recs-note").textContent = click
    ? `After your ${typeLabels[click.type] || click.type} of ${click.name}:`
    : "After a click made elsewhere (another tab or the API):";
  const badge = $("strategy");
  badge.textContent = strategyLabels[rec.strategy] || rec.strategy;
  badge.className = "badge" + (rec.strategy === "model" ? " model" : "");
  badge.hidden = false;
  $("model").textContent = rec.model_version || "none (popularity fallback)";
  $("model").title = rec.model_version || "";
  const lat = $("latency");
  if (latencyMs != null) {
    lat.textContent = `${latencyMs.toFixed(latencyMs < 10 ? 1 : 0)} ms`;
    lat.title = "from posting the click to receiving its recommendation over the event stream";
    lat.classList.add("fresh");
  } else {
    lat.textContent = `age ${Math.round(rec.age_ms)} ms`;
    lat.title = "recommendation for a click made elsewhere; its age when it arrived";
    lat.classList.remove("fresh");
  }
}

async function loadLatest() {
  const user = state.user;
  try {
    const rec = await getJSON(`/v1/users/${encodeURIComponent(user)}/recommendations`);
    if (user === state.user && !$("recs").dataset.eventId) {
      renderRecs(rec, null, null);
      $("recs-note").textContent = "Your latest recommendations:";
    }
  } catch (e) {
    if (e.status !== 404) showError(`Could not load recommendations: ${e.message}`);
  }
}

async function loadActivity() {
  const user = state.user;
  try {
    const body = await getJSON(`/v1/users/${encodeURIComponent(user)}/events`);
    if (user !== state.user) return;
    const items = body.events.slice().reverse().map((e) => el("li", {},
      el("span", {}, el("span", { class: `kind ${e.event_type}` }, e.event_type), " ", e.name || `Item #${e.item_id}`),
      el("span", { class: "muted" }, new Date(e.timestamp_ms).toLocaleTimeString())));
    $("activity").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No events yet.")]));
  } catch (e) {
    $("activity").replaceChildren(el("li", { class: "muted" }, `Could not load events: ${e.message}`));
  }
}

function setConn(status, text) {
  document.body.dataset.stream = status;
  $("conn-text").textContent = text;
}

function connect() {
  if (state.es) state.es.close();
  setConn("connecting", "connecting…");
  const user = state.user;
  const es = new EventSource(`/v1/users/${encodeURIComponent(user)}/recommendations/stream`);
  state.es = es;
  es.addEventListener("ready", () => setConn("open", "live"));
  es.onmessage = (msg) => {
    if (es !== state.es) return;
    const rec = JSON.parse(msg.data);
    const click = state.pending.get(rec.event_id);
    const latency = click === undefined ? null : performance.now() - click.t0;
    state.pending.delete(rec.event_id);
    state.updates++;
    $("updates").textContent = String(state.updates);
    renderRecs(rec, latency, click);
    loadActivity();
  };
  es.onerror = () => {
    if (es !== state.es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (rate limit, too many streams, shutting
      // down): the browser does not retry that by itself.
      setConn("error", "disconnected — retrying in 3 s");
      setTimeout(() => { if (es === state.es) connect(); }, 3000);
    } else {
      setConn("connecting", "reconnecting…");
    }
  };
}

// ---------- start ----------

document.addEventListener("DOMContentLoaded", () => {
  const input = $("user-id");
  $("who-form").addEventListener("submit", (ev) => { ev.preventDefault(); setUser(input.value); input.blur(); });
  input.addEventListener("change", () => setUser(input.value));
  $("new-user").addEventListener("click", () => setUser("web-" + randomId(6)));
  setUser(loadUser());
  loadCatalogue();
});
