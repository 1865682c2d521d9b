// Lattice console: polls GET /console/api/snapshot once a second and draws
// the cluster, its links, convergence, write rates and store health, and
// the cart and sku asked for at every region side by side. Edits go to a
// chosen region through /console/api/regions/{name}/v1/...; development
// controls (lattice dev only) through /console/dev/....
"use strict";

const POLL_MS = 1000;
const LAG_WARN_MS = 1000;

const state = {
  token: sessionStorage.getItem("lattice-token") || "",
  cart: "",
  sku: "",
  snap: null,
  prev: {},          // region -> {t, writes} of the previous snapshot
  rates: {},         // region -> writes/s
  editRegion: "",
  devBuilt: false,
};

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...kids) {
  const svg = ["svg", "line", "circle", "text", "rect", "polyline", "g", "title"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function headers(json) {
  const h = { "Accept": "application/json" };
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function fmtBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + " MiB";
  return (n / (1 << 30)).toFixed(2) + " GiB";
}

function fmtMs(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  return (ms / 1000).toFixed(1) + " s";
}

const ICON = { connected: "✓", lagging: "⚠", down: "✕", "cut-off": "✕", unknown: "?", partial: "⚠", unreachable: "✕" };
const WORD = { connected: "connected", lagging: "lagging", down: "down", "cut-off": "cut off", unknown: "unknown", partial: "partly connected", unreachable: "unreachable" };

function badge(st, extra) {
  return el("span", { class: "st st-" + st, "data-state": st, text: ICON[st] + " " + WORD[st] + (extra ? " " + extra : "") });
}

// ---- polling

async function poll() {
  const q = new URLSearchParams();
  if (state.cart) q.set("cart", state.cart);
  if (state.sku) q.set("sku", state.sku);
  const asked = { cart: state.cart, sku: state.sku };
  try {
    const res = await fetch("/console/api/snapshot?" + q.toString(), { headers: headers(false), cache: "no-store" });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      showError(res.status === 401 || res.status === 403
        ? "This region needs a bearer token to read (" + (body && body.detail || res.status) + "). Enter one above."
        : "The console's snapshot failed: " + (body && body.detail || res.status));
    } else {
      showError("");
      render(body, asked.cart === state.cart && asked.sku === state.sku);
    }
  } catch (e) {
    showError("This region does not answer: " + e.message);
    $("updated").textContent = "not updated since " + (state.snap ? new Date(state.snap.time).toLocaleTimeString() : "start");
  }
  setTimeout(poll, POLL_MS);
}

function showError(msg) {
  const b = $("error");
  b.textContent = msg;
  b.hidden = !msg;
}

// ---- derived state

function cutSet(snap) { return new Set((snap.controls && snap.controls.cut) || []); }

function clusterOf(view) {
  if (!view.local || view.local.cluster.status !== 200) return null;
  return view.local.cluster.body;
}

function peerOf(cluster, name) {
  if (!cluster) return null;
  return (cluster.peers || []).find(p => p.region === name) || null;
}

// linkState tells the state of the link between regions a and b from both
// ends' reports.
function linkState(snap, a, b) {
  const cut = cutSet(snap);
  if (cut.has(a.name) || cut.has(b.name)) return "cut-off";
  const pa = peerOf(clusterOf(a), b.name), pb = peerOf(clusterOf(b), a.name);
  if (!pa && !pb) return "unknown";
  if ((pa && !pa.connected) || (pb && !pb.connected)) return "down";
  const lag = Math.max(pa ? pa.lag_ms : 0, pb ? pb.lag_ms : 0);
  if (lag > LAG_WARN_MS) return "lagging";
  return "connected";
}

function regionState(snap, v) {
  if (v.error || !clusterOf(v)) return "unreachable";
  if (cutSet(snap).has(v.name)) return "cut-off";
  const others = snap.regions.filter(o => o.name !== v.name);
  const states = others.map(o => linkState(snap, v, o));
  if (states.every(s => s === "connected" || s === "lagging")) return "connected";
  if (states.every(s => s === "down" || s === "cut-off")) return "down";
  return "partial";
}

// ---- rendering

// render draws the snapshot; the explorer only if it answers the cart and
// sku shown now (current), not those of a request sent before the user
// asked for others.
function render(snap, current = true) {
  state.snap = snap;
  $("served").textContent = snap.region;
  $("updated").textContent = "updated " + new Date(snap.time).toLocaleTimeString();
  document.title = "Lattice console · " + snap.region;
  const now = Date.parse(snap.time);
  for (const v of snap.regions) {
    const c = clusterOf(v);
    if (!c) continue;
    const writes = localWrites(c);
    const p = state.prev[v.name];
    if (p && now > p.t) state.rates[v.name] = Math.max(0, (writes - p.writes) * 1000 / (now - p.t));
    state.prev[v.name] = { t: now, writes };
  }
  renderMap(snap);
  renderCards(snap);
  renderLinks(snap);
  renderConvergence(snap);
  if (current) renderExplorer(snap);
  renderDev(snap);
  renderEditRegions(snap);
  const ro = snap.auth && !state.token;
  for (const b of document.querySelectorAll("#edit button")) b.disabled = ro;
  $("token-note").textContent = snap.auth ? (state.token ? "token set" : "read-only without a token") : "this API needs no token";
}

function positions(n) {
  const cx = 210, cy = 95, rx = 140, ry = 68, out = [];
  for (let i = 0; i < n; i++) {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    out.push([cx + rx * Math.cos(a), cy + ry * Math.sin(a)]);
  }
  return out;
}

function renderMap(snap) {
  const svg = $("map");
  svg.replaceChildren();
  const rs = snap.regions, pos = positions(rs.length);
  for (let i = 0; i < rs.length; i++) {
    for (let j = i + 1; j < rs.length; j++) {
      const st = linkState(snap, rs[i], rs[j]);
      const [x1, y1] = pos[i], [x2, y2] = pos[j];
      const pa = peerOf(clusterOf(rs[i]), rs[j].name), pb = peerOf(clusterOf(rs[j]), rs[i].name);
      const lag = Math.max(pa ? pa.lag_ms : 0, pb ? pb.lag_ms : 0);
      const label = ICON[st] + " " + WORD[st] + (st === "connected" || st === "lagging" ? (lag ? " · lag " + fmtMs(lag) : "") : "");
      const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
      svg.append(el("line", { class: "link " + st, x1, y1, x2, y2, "data-link": rs[i].name + "/" + rs[j].name, "data-state": st },
        el("title", { text: rs[i].name + " ↔ " + rs[j].name + ": " + WORD[st] })));
      const w = label.length * 6.4 + 8;
      svg.append(el("rect", { class: "label-bg", x: mx - w / 2, y: my - 10, width: w, height: 16, rx: 3 }));
      svg.append(el("text", { x: mx, y: my + 2, text: label }));
    }
  }
  rs.forEach((v, i) => {
    const st = regionState(snap, v);
    const [x, y] = pos[i];
    svg.append(el("g", { class: "node " + st },
      el("rect", { x: x - 62, y: y - 21, width: 124, height: 42, rx: 8 }),
      el("text", { x, y: y - 4, text: v.name, "font-weight": "600" }),
      el("text", { x, y: y + 13, text: ICON[st] + " " + WORD[st] })));
  });
}

function renderCards(snap) {
  const box = $("regions");
  box.replaceChildren();
  for (const v of snap.regions) {
    const st = regionState(snap, v);
    const c = clusterOf(v);
    const dl = el("dl");
    const row = (k, val) => dl.append(el("dt", { text: k }), el("dd", { text: val }));
    if (!c) {
      row("error", v.error || (v.local ? "cluster answered " + v.local.cluster.status : "no answer"));
    } else {
      const rate = state.rates[v.name];
      row("writes", rate === undefined ? "…" : rate.toFixed(1) + " /s");
      row("local writes", String(localWrites(c)));
      row("durability", c.store.durability);
      row("store file", fmtBytes(c.store.file_bytes) + " (" + fmtBytes(c.store.live_bytes) + " live)");
      const damaged = (c.store.corrupt_keys || []).length, divergent = (c.divergent_keys || []).length;
      row("damaged keys", damaged ? "⚠ " + damaged + ": " + c.store.corrupt_keys.slice(0, 3).join(", ") : "✓ none");
      row("divergent keys", divergent ? "⚠ " + divergent : "✓ none");
      if (c.catching_up) row("catching up", "⚠ yes");
      row("API", v.url);
    }
    box.append(el("div", { class: "card " + st, "data-region": v.name, "data-state": st },
      el("h3", {}, el("span", { text: v.name + (v.name === snap.region ? " (here)" : "") }), badge(st)), dl));
  }
}

function renderLinks(snap) {
  const tb = $("links").tBodies[0];
  tb.replaceChildren();
  const cut = cutSet(snap);
  for (const v of snap.regions) {
    const c = clusterOf(v);
    if (!c) continue;
    for (const p of c.peers) {
      let st = p.connected ? (p.lag_ms > LAG_WARN_MS ? "lagging" : "connected") : "down";
      if (cut.has(v.name) || cut.has(p.region)) st = "cut-off";
      const unrep = p.unrepaired_keys || [];
      tb.append(el("tr", { "data-from": v.name, "data-to": p.region },
        el("td", { text: v.name + " → " + p.region }),
        el("td", {}, badge(st)),
        el("td", { text: p.lag_ms ? fmtMs(p.lag_ms) : "0" }),
        el("td", { text: p.pending_deltas + " deltas, " + fmtBytes(p.pending_bytes) }),
        el("td", { text: String(p.inflight_messages) }),
        el("td", { text: p.anti_entropy + " · " + p.anti_entropy_rounds + " rounds" }),
        el("td", { text: p.anti_entropy_keys_pushed + " / " + p.anti_entropy_keys_pulled }),
        el("td", { text: unrep.length ? "⚠ " + unrep.length + ": " + unrep.slice(0, 3).join(", ") : "✓ none" })));
    }
  }
}

// quantile estimates the q-quantile of a cumulative histogram by linear
// interpolation inside its bucket.
function quantile(conv, q) {
  if (!conv.count) return null;
  const want = q * conv.count;
  let prevLe = 0, prevN = 0;
  for (const b of conv.buckets) {
    if (b.count >= want) {
      const f = b.count === prevN ? 1 : (want - prevN) / (b.count - prevN);
      return prevLe + f * (b.le_ms - prevLe);
    }
    prevLe = b.le_ms; prevN = b.count;
  }
  return null; // beyond the last bucket
}

function renderConvergence(snap) {
  const box = $("convergence");
  box.replaceChildren();
  let any = false;
  for (const v of snap.regions) {
    if (!v.local) continue;
    for (const conv of v.local.convergence) {
      any = true;
      const W = 200, H = 80, L = 4, B = 14;
      const p99 = quantile(conv, 0.99);
      const xmax = Math.max(conv.floor_ms * 3, p99 || 0, 10) * 1.1;
      const x = ms => L + (W - 2 * L) * Math.min(ms, xmax) / xmax;
      const y = f => (H - B) - (H - B - 4) * f;
      const pts = [[x(0), y(0)]];
      for (const b of conv.buckets) {
        if (b.le_ms > xmax * 1.5) break;
        pts.push([x(b.le_ms), y(conv.count ? b.count / conv.count : 0)]);
      }
      const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
        "aria-label": `convergence from ${conv.origin} to ${v.name}` },
        el("line", { class: "axis", x1: L, y1: y(0), x2: W - L, y2: y(0) }),
        el("line", { class: "axis", x1: L, y1: y(1), x2: W - L, y2: y(1) }),
        el("line", { class: "floor", x1: x(conv.floor_ms), y1: y(0), x2: x(conv.floor_ms), y2: y(1) }),
        el("polyline", { class: "cdf", points: pts.map(p => p.join(",")).join(" ") }),
        el("text", { x: L, y: H - 2, text: "0", "text-anchor": "start" }),
        el("text", { x: x(conv.floor_ms) + 2, y: y(1) + 10, text: "floor " + conv.floor_ms + " ms", "text-anchor": "start" }),
        el("text", { x: W - L, y: H - 2, text: fmtMs(xmax), "text-anchor": "end" }));
      const p50 = quantile(conv, 0.5);
      const fig = conv.count
        ? `${conv.count} deltas · p50 ${p50 === null ? "> 30 s" : fmtMs(p50)} · p99 ${p99 === null ? "> 30 s" : fmtMs(p99)}`
        : "no delta yet";
      box.append(el("div", { class: "chart", "data-pair": conv.origin + "/" + v.name },
        el("h3", { text: conv.origin + " → " + v.name }), svg, el("p", { text: fig })));
    }
  }
  if (!any) box.append(el("p", { class: "note", text: "No replication metrics yet." }));
}

// ---- explorer

// cartItems returns the quantity of each sku of a cart answer, as a Map:
// a sku is any id, "__proto__" and "constructor" among them.
function cartItems(a) {
  if (!a || a.status !== 200 || !a.body) return null;
  const m = new Map();
  for (const it of a.body.items || []) m.set(it.sku, it.qty);
  return m;
}

// localWrites returns the writes a region's own replica made, from its
// /v1/cluster answer: a node of a partitioned region has a replica per
// partition and an empty top-level version vector.
function localWrites(c) {
  if (c.partitions && c.partitions.length) {
    return c.partitions.reduce((n, p) => n + ((p.version_vector || {})[p.replica] || 0), 0);
  }
  return (c.version_vector || {})[c.replica] || 0;
}

function answerText(a) {
  if (!a) return "—";
  if (a.status === 200) return null;
  if (a.body && a.body.detail) return a.status + " " + (a.body.code || "") ;
  return a.error || String(a.status);
}

function renderExplorer(snap) {
  const thead = $("compare").tHead, tbody = $("compare").tBodies[0];
  thead.replaceChildren();
  tbody.replaceChildren();
  const status = $("explorer-status");
  if (!state.cart && !state.sku) {
    status.textContent = "Enter a cart id or a sku.";
    status.dataset.diverged = "none";
    return;
  }
  const rs = snap.regions;
  thead.append(el("tr", {}, el("th", { text: "" }), rs.map(v => el("th", { text: v.name }))));
  let differing = 0;
  // addRow adds a row of one value per region and highlights it when the
  // reachable regions do not all show the same value.
  const addRow = (label, vals, opts) => {
    opts = opts || {};
    const known = vals.filter(x => x !== undefined);
    const same = known.every(x => x === known[0]);
    const diff = !opts.noCompare && !same;
    if (diff) differing++;
    tbody.append(el("tr", { "data-row": label, "data-diff": diff ? "yes" : "no" }, el("th", { text: label }),
      vals.map(x => el("td", { class: (diff ? "diff " : "") + (x === undefined ? "missing " : "") + (opts.cls || ""),
        text: x === undefined ? "—" : x }))));
  };
  if (state.cart) {
    const carts = rs.map(v => v.local ? v.local.cart : null);
    addRow("cart " + state.cart + " version", carts.map(a => a && a.version ? a.version : undefined), { noCompare: true, cls: "version" });
    const items = carts.map(cartItems);
    const errs = carts.map(answerText);
    if (errs.some(e => e)) addRow("cart answer", errs.map(e => e || "200"), { noCompare: true });
    const skus = new Set();
    for (const m of items) if (m) for (const s of m.keys()) skus.add(s);
    if (skus.size === 0) addRow("items", items.map(m => m ? "(empty)" : undefined));
    for (const s of [...skus].sort()) addRow("qty of " + s, items.map(m => m ? String(m.get(s) || 0) : undefined));
  }
  if (state.sku) {
    const stocks = rs.map(v => v.local ? v.local.stock : null);
    addRow("sku " + state.sku + " version", stocks.map(a => a && a.version ? a.version : undefined), { noCompare: true, cls: "version" });
    const get = f => stocks.map(a => a && a.status === 200 && a.body ? String(a.body[f]) : undefined);
    const errs = stocks.map(answerText);
    if (errs.some(e => e)) addRow("stock answer", errs.map(e => e || "200"), { noCompare: true });
    addRow("home", get("home"));
    addRow("stock", get("stock"));
    addRow("reserved", get("reserved"));
    addRow("available", get("available"));
  }
  if (differing) {
    status.textContent = "≠ The regions differ on " + differing + (differing === 1 ? " row" : " rows") + " (highlighted) — waiting for them to converge.";
    status.dataset.diverged = "yes";
  } else {
    status.textContent = "✓ Every region that answered shows the same.";
    status.dataset.diverged = "no";
  }
}

function renderEditRegions(snap) {
  const sel = $("edit-region");
  const names = snap.regions.map(v => v.name);
  if (sel.options.length !== names.length) {
    sel.replaceChildren(...names.map(n => el("option", { value: n, text: n })));
    sel.value = state.editRegion || snap.region;
  }
}

async function edit(op) {
  state.cart = $("cart-id").value.trim();
  state.sku = $("sku").value.trim();
  const r = $("edit-region").value, cart = state.cart, sku = state.sku;
  const qty = Number($("qty").value);
  const out = $("edit-result");
  const need = { add: ["cart", "sku"], set: ["cart", "sku"], remove: ["cart", "sku"], clear: ["cart"], restock: ["sku"] }[op];
  if ((need.includes("cart") && !cart) || (need.includes("sku") && !sku)) {
    out.textContent = "Show a " + need.join(" and a ") + " first.";
    return;
  }
  // A browser drops "." and ".." path segments (encoded or not) before it
  // sends a request, so an edit of such an id would reach another route:
  // say so instead (the API and the lattice command edit them).
  const dots = (id) => id === "." || id === "..";
  if ((need.includes("cart") && dots(cart)) || (need.includes("sku") && dots(sku))) {
    out.textContent = `The console cannot ${op} a cart or sku named "." or "..": a browser rewrites such a path. Use the API or the lattice command.`;
    return;
  }
  const base = "/console/api/regions/" + encodeURIComponent(r) + "/v1";
  const c = encodeURIComponent(cart), s = encodeURIComponent(sku);
  const req = {
    add: ["POST", `${base}/carts/${c}/items`, { sku, qty }],
    set: ["PUT", `${base}/carts/${c}/items/${s}`, { qty }],
    remove: ["DELETE", `${base}/carts/${c}/items/${s}`, null],
    clear: ["DELETE", `${base}/carts/${c}`, null],
    restock: ["POST", `${base}/inventory/${s}/restock`, { qty }],
  }[op];
  try {
    const res = await fetch(req[1], { method: req[0], headers: headers(req[2] !== null),
      body: req[2] === null ? undefined : JSON.stringify(req[2]) });
    const body = await res.json().catch(() => null);
    out.textContent = res.ok
      ? `${op} at ${r}: ${res.status} OK`
      : `${op} at ${r}: ${res.status} ${body && body.detail ? body.detail : ""}`;
  } catch (e) {
    out.textContent = `${op} at ${r} failed: ${e.message}`;
  }
}

// ---- development controls

async function control(op, body) {
  try {
    const res = await fetch("/console/dev/" + op, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    if (!res.ok) {
      const b = await res.json().catch(() => null);
      showError("Control " + op + " failed: " + (b && b.detail || res.status));
    }
  } catch (e) {
    showError("Control " + op + " failed: " + e.message);
  }
}

function renderDev(snap) {
  const sec = $("dev");
  if (!snap.controls) { sec.hidden = true; return; }
  sec.hidden = false;
  const cut = cutSet(snap);
  const box = $("dev-regions");
  box.replaceChildren(...snap.regions.map(v => el("div", { class: "ctl" },
    el("strong", { text: v.name }),
    cut.has(v.name) ? badge("cut-off") : badge("connected", "(WAN)"),
    el("button", { type: "button", "data-cut": v.name, disabled: cut.has(v.name),
      on: { click: () => control("cut", { region: v.name }) }, text: "Cut off" }),
    el("button", { type: "button", "data-heal": v.name, disabled: !cut.has(v.name),
      on: { click: () => control("heal", { region: v.name }) }, text: "Heal" }))));
  // Latency inputs are built once, so that typing is not interrupted.
  if (!state.devBuilt) {
    state.devBuilt = true;
    state.devInputs = {};
    $("dev-links").replaceChildren(...snap.controls.links.map(l => {
      const id = "lat-" + l.a + "-" + l.b;
      const input = el("input", { id, type: "number", min: 0, max: 60000, value: l.latency_ms,
        on: { input: () => { input.dataset.editing = "1"; } } });
      state.devInputs[id] = input;
      return el("form", { class: "ctl", on: { submit: ev => {
        ev.preventDefault();
        delete input.dataset.editing;
        control("latency", { a: l.a, b: l.b, latency_ms: Number(input.value) });
      } } },
        el("label", { for: id, text: l.a + " ↔ " + l.b + " (ms)" }),
        input,
        el("button", { type: "submit", text: "Set" }));
    }));
  }
  // Every snapshot: the inputs show the controls' state (changed from
  // another tab or with curl too), but for one being edited.
  const show = (input, v) => {
    if (input && !input.dataset.editing && document.activeElement !== input) input.value = String(v);
  };
  for (const l of snap.controls.links) show(state.devInputs["lat-" + l.a + "-" + l.b], l.latency_ms);
  show($("loss"), snap.controls.loss_pct);
}

// ---- wiring

function init() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", ev => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    if (state.token) sessionStorage.setItem("lattice-token", state.token);
    else sessionStorage.removeItem("lattice-token");
  });
  const params = new URLSearchParams(location.search);
  $("cart-id").value = state.cart = params.get("cart") || "";
  $("sku").value = state.sku = params.get("sku") || "";
  $("lookup").addEventListener("submit", ev => {
    ev.preventDefault();
    state.cart = $("cart-id").value.trim();
    state.sku = $("sku").value.trim();
    const q = new URLSearchParams();
    if (state.cart) q.set("cart", state.cart);
    if (state.sku) q.set("sku", state.sku);
    history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
  });
  $("edit-region").addEventListener("change", ev => { state.editRegion = ev.target.value; });
  for (const b of document.querySelectorAll("#edit button")) b.addEventListener("click", () => edit(b.dataset.op));
  $("loss").addEventListener("input", () => { $("loss").dataset.editing = "1"; });
  $("dev-loss").addEventListener("submit", ev => {
    ev.preventDefault();
    delete $("loss").dataset.editing;
    control("loss", { loss_pct: Number($("loss").value) });
  });
  poll();
}

init();
