// Tally's web console: a page of plain JavaScript over the admin API
// (/admin/v1). The admin token is kept in this tab's sessionStorage and
// sent as a bearer header; it never appears in a URL. Every change goes
// through the admin API, so it is logged like any other. Data is put in the
// page as text (never as HTML).
"use strict";

const TOKEN_KEY = "tally-admin-token";
const PAGE = 50;
let timer = null;

// ------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.addEventListener("click", v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Refused extends Error {}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers);
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
  }
  const r = await fetch("/admin/v1" + path, opts);
  if (r.status === 401) { signOut("The admin token was refused."); throw new Refused(); }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = body && body.error ? body.error : { message: r.statusText };
    throw new Error(e.message + (e.path ? " (" + e.path + ")" : ""));
  }
  return body;
}

function view(...children) {
  const v = document.getElementById("view");
  v.replaceChildren(...children.flat());
}

function fmt(n) { return typeof n === "number" ? n.toLocaleString("en") : String(n ?? ""); }

function bar(parts, cap) {
  const b = el("div", { class: "bar" + (cap > 0 && parts[0] >= cap ? " full" : "") });
  let left = 0;
  parts.forEach((p, i) => {
    const w = cap > 0 ? Math.min(100, (100 * p) / cap) : 0;
    // Set through the CSSOM: the page's CSP allows no style attribute.
    const span = el("span", { class: i ? "reserved" : "" });
    span.style.left = left + "%";
    span.style.width = w + "%";
    b.append(span);
    left += w;
  });
  return b;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

// A table of any list of objects (vendor sections), nested values as JSON.
function anyTable(items) {
  if (!items.length) return el("p", { class: "muted" }, "None.");
  const keys = [...new Set(items.flatMap((o) => Object.keys(o)))];
  return table(keys, items.map((o) => keys.map((k) => {
    const v = o[k];
    return v !== null && typeof v === "object" ? JSON.stringify(v) : fmt(v);
  })));
}

// A section's scalars as a table, and each of its lists as one more.
function section(title, obj) {
  const out = [el("h2", {}, title)];
  const scalars = Object.entries(obj).filter(([, v]) => v === null || typeof v !== "object");
  if (scalars.length) out.push(table(["field", "value"], scalars.map(([k, v]) => [k, fmt(v)])));
  for (const [k, v] of Object.entries(obj)) {
    if (Array.isArray(v)) out.push(el("h3", {}, k), anyTable(v));
  }
  return out;
}

async function confirmed(text) {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  d.showModal();
  return new Promise((res) => d.addEventListener("close", () => res(d.returnValue === "ok"), { once: true }));
}

function failure(e) {
  if (e instanceof Refused) return;
  view(el("p", { class: "error", role: "alert" }, "Error: " + e.message));
}

// ------------------------------------------------------------ sign-in

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearInterval(timer);
  document.getElementById("nav").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
}

async function signIn(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
  try {
    await api("/stats");
  } catch (e) {
    if (!(e instanceof Refused)) signOut("The server cannot be reached: " + e.message);
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  route();
}

// ------------------------------------------------------------ pages

// Requests per second and p99 per surface, from two readings of /stats.
function rates(prev, cur, seconds) {
  const before = new Map((prev ? prev.surfaces : []).map((s) => [s.surface, s]));
  return cur.surfaces.map((s) => {
    const p = before.get(s.surface);
    const n = s.requests - (p ? p.requests : 0);
    const buckets = s.latency_buckets_s.map(([le, c], i) => [le, c - (p ? p.latency_buckets_s[i][1] : 0)]);
    // undefined: no request since the last reading; Infinity: past 1 s.
    let p99;
    if (n > 0) {
      let seen = 0;
      for (const [le, c] of buckets) { seen += c; if (seen >= 0.99 * n) { p99 = le === null ? Infinity : le; break; } }
    }
    return { surface: s.surface, rps: n / seconds, p99, total: s.requests, errors: s.errors };
  });
}

async function overview() {
  let prev = null;
  let prevAt = 0;
  const draw = async () => {
    const cur = await api("/stats");
    const now = performance.now();
    const seconds = prev ? (now - prevAt) / 1000 : 1;
    const o = cur.objects;
    const tile = (n, l, id) => el("div", { class: "tile", id }, el("div", { class: "n" }, fmt(n)), el("div", { class: "l" }, l));
    const rows = rates(prev, cur, seconds).map((r) => [
      r.surface, prev ? r.rps.toFixed(1) : "…",
      r.p99 === undefined ? "—" : r.p99 === Infinity ? "> 1 s" : "≤ " + (r.p99 * 1000).toFixed(2) + " ms",
      fmt(r.total), fmt(r.errors)]);
    view(
      el("h1", {}, "Overview"),
      el("div", { class: "tiles" },
        tile(o.tenants, "tenants", "tile-tenants"), tile(o.licenses, "licenses", "tile-licenses"),
        tile(o.features, "features"), tile(o.devices, "devices activated"),
        tile(cur.floating_seats_held, "floating seats held", "tile-seats"),
        tile(cur.meters_near_cap, "meters at 80 % or more"), tile(cur.reservations_open, "reservations open"),
        tile(cur.webhook_queue_depth, "webhook deliveries waiting")),
      el("h2", {}, "Requests, live (every 2 s)"),
      cur.metrics_enabled ? table(["surface", "requests/s", "p99", "total", "5xx"], rows)
        : el("p", { class: "muted" }, "Request counting is off (--no-metrics)."));
    prev = cur;
    prevAt = now;
  };
  await draw();
  timer = setInterval(() => draw().catch(failure), 2000);
}

async function tenants(after) {
  const page = await api("/tenants?limit=" + PAGE + (after ? "&after=" + after : ""));
  view(
    el("h1", {}, "Tenants"),
    table(["id", "name", "parent"], page.items.map((t) => [
      el("a", { href: "#/tenants/" + t.id }, String(t.id)), t.name, t.parent_id ?? ""])),
    el("div", { class: "pager" }, page.next_after
      ? el("a", { href: "#/tenants?after=" + page.next_after }, "Next page") : null));
}

async function optional(path) {
  try { return await api(path); } catch (e) { if (e instanceof Refused) throw e; return null; }
}

async function tenant(id, after) {
  const [t, products, licenses, keys, hooks, ledger] = await Promise.all([
    api("/tenants/" + id),
    api("/products?tenant_id=" + id + "&limit=" + PAGE),
    api("/licenses?tenant_id=" + id + "&limit=" + PAGE + (after ? "&after=" + after : "")),
    api("/api-keys?tenant_id=" + id),
    api("/webhooks?tenant_id=" + id),
    optional("/ledger?tenant_id=" + id + "&tail=20"),
  ]);
  const [qlik, yext, infa] = await Promise.all(
    ["qlik", "yext", "informatica"].map((s) => optional("/tenants/" + id + "/" + s)));
  const revoke = (k) => async () => {
    if (!(await confirmed("Revoke API key " + k.api_key + "? Its clients are refused from now on."))) return;
    await api("/api-keys/" + encodeURIComponent(k.api_key) + "/revoke", { method: "POST" });
    route();
  };
  view(
    el("h1", {}, "Tenant " + t.name),
    el("h2", {}, "Products"),
    table(["id", "short code", "name", "authorization"], products.items.map((p) => [
      el("a", { href: "#/tenants/" + id + "/products/" + p.id }, String(p.id)), p.short_code, p.name,
      p.authorization_method ?? ""])),
    el("h2", {}, "Licenses"),
    table(["id", "key", "type", "activations"], licenses.items.map((l) => [
      el("a", { href: "#/licenses/" + l.id }, String(l.id)), l.license_key ?? "", l.license_type ?? "",
      fmt(l.times_activated) + " / " + (l.allow_unlimited_activations ? "∞" : fmt(l.max_activations))])),
    el("div", { class: "pager" }, licenses.next_after
      ? el("a", { href: "#/tenants/" + id + "?after=" + licenses.next_after }, "Next page") : null),
    el("h2", {}, "API keys"),
    table(["key", "role", "state", ""], keys.items.map((k) => [k.api_key, k.role ?? "",
      k.revoked ? "revoked" : "active",
      k.revoked ? "" : el("button", { class: "revoke", onclick: revoke(k) }, "Revoke")])),
    el("h2", {}, "Webhooks"),
    hooks.items.length ? table(["id", "url", "events", "enabled", "waiting"], hooks.items.map((h) => [
      el("a", { href: "#/webhooks/" + h.id }, h.id), h.url, h.events.join(", "),
      h.enabled ? "yes" : "no (" + (h.disabled_reason ?? "disabled") + ")", fmt(h.pending)]))
      : el("p", { class: "muted" }, "None."),
    qlik ? section("Qlik license", qlik) : null,
    yext ? section("Yext account", yext) : null,
    infa ? section("Informatica org", infa) : null,
    el("h2", {}, "Ledger, newest entries"),
    ledger ? anyTable(ledger.items.map((e) => Object.assign({ seq: e.seq }, e.entry)))
      : el("p", { class: "muted" }, "This server keeps no ledger (no data directory)."));
}

async function product(tenantId, id, after) {
  const [p, licenses] = await Promise.all([
    api("/products/" + id),
    api("/licenses?tenant_id=" + tenantId + "&product_id=" + id + "&limit=" + PAGE + (after ? "&after=" + after : "")),
  ]);
  view(
    el("h1", {}, "Product " + p.name),
    el("p", {}, el("a", { href: "#/tenants/" + tenantId }, "← tenant")),
    table(["id", "key", "type", "activations"], licenses.items.map((l) => [
      el("a", { href: "#/licenses/" + l.id }, String(l.id)), l.license_key ?? "", l.license_type ?? "",
      fmt(l.times_activated) + " / " + (l.allow_unlimited_activations ? "∞" : fmt(l.max_activations))])),
    el("div", { class: "pager" }, licenses.next_after
      ? el("a", { href: "#/tenants/" + tenantId + "/products/" + id + "?after=" + licenses.next_after }, "Next page") : null));
}

async function webhook(id) {
  const [h, d] = await Promise.all([api("/webhooks/" + id), api("/webhooks/" + id + "/deliveries?limit=200")]);
  const retry = (eventId) => async () => {
    if (!(await confirmed("Send " + eventId + " again?"))) return;
    await api("/webhooks/" + id + "/deliveries/" + eventId + "/retry", { method: "POST" });
    route();
  };
  view(
    el("h1", {}, "Webhook " + h.id),
    el("p", {}, el("a", { href: "#/tenants/" + h.tenant_id }, "← tenant")),
    table(["field", "value"], [["url", h.url], ["events", h.events.join(", ")],
      ["enabled", h.enabled ? "yes" : "no"], ["waiting", fmt(h.pending)], ["dropped events", fmt(d.dropped_events)]]),
    el("h2", {}, "Attempts"),
    d.deliveries.length ? table(["event", "type", "attempt", "at", "result", "status", "error", "next", ""],
      d.deliveries.map((a) => [a.event_id, a.type, fmt(a.attempt), a.at, a.result, a.status_code ?? "",
        a.error ?? "", a.next_attempt_at ?? "", el("button", { onclick: retry(a.event_id) }, "Resend")]))
      : el("p", { class: "muted" }, "No attempt yet."));
}

async function license(id) {
  const [l, floating, devices] = await Promise.all([
    api("/licenses/" + id), api("/licenses/" + id + "/floating"), api("/licenses/" + id + "/devices")]);
  const setTotal = (f) => async () => {
    const v = prompt("New total of " + f.code + " this period", String(f.total_consumptions));
    if (v === null) return;
    const total = Number(v);
    if (!Number.isInteger(total) || total < 0) { alert("A whole number, 0 or more."); return; }
    if (!(await confirmed("Set " + f.code + " to " + total + "?"))) return;
    await api("/licenses/" + id + "/consumption", { method: "PUT", json: { total, feature_id: f.id } });
    route();
  };
  const release = (holder, featureId, code) => async () => {
    if (!(await confirmed("Release the seat of " + holder + " on " + code + "?"))) return;
    await api("/licenses/" + id + "/floating/" + encodeURIComponent(holder) +
      (featureId ? "?feature_id=" + featureId : ""), { method: "DELETE" });
    route();
  };
  const blacklist = (d) => async () => {
    const to = !d.blacklisted;
    if (!(await confirmed((to ? "Blacklist " : "Allow again ") + d.hardware_id + "?"))) return;
    await api("/licenses/" + id + "/devices/" + encodeURIComponent(d.hardware_id),
      { method: "PATCH", json: { blacklisted: to } });
    route();
  };
  const features = l.features.map((f) => {
    const seats = f.floating_users || f.is_floating_cloud || f.is_floating
      ? el("div", {}, bar([f.floating_in_use_devices], f.floating_users), fmt(f.floating_in_use_devices) + " / " + fmt(f.floating_users) + " seats")
      : "";
    const meter = f.feature_type === "consumption"
      ? el("div", {}, bar([f.total_consumptions, f.reserved_consumptions || 0], f.max_consumption),
        fmt(f.total_consumptions) + " used, " + fmt(f.reserved_consumptions || 0) + " reserved / " +
        (f.allow_unlimited_consumptions ? "∞" : fmt(f.max_consumption)) +
        (f.consumption_period_end ? " (period ends " + f.consumption_period_end + ")" : ""))
      : "";
    return [f.code, f.feature_type ?? "", seats, meter,
      f.feature_type === "consumption" ? el("button", { onclick: setTotal(f) }, "Set total") : ""];
  });
  const pools = [Object.assign({ code: "(license)", feature_id: null }, floating.license)]
    .concat(floating.features).filter((p) => p.holders.length);
  const holders = pools.flatMap((p) => p.holders.map((h) => [p.code, h.hardware_id, h.since, h.expires_at,
    h.borrowed_until ?? "", el("button", { class: "release", onclick: release(h.hardware_id, p.feature_id, p.code) }, "Release")]));
  view(
    el("h1", {}, "License " + (l.license_key ?? l.id)),
    table(["field", "value"], [["id", String(l.id)],
      ["tenant", el("a", { href: "#/tenants/" + l.tenant_id }, String(l.tenant_id))],
      ["type", l.license_type ?? ""], ["valid until", l.validity_period ?? "—"],
      ["activations", fmt(l.times_activated) + " / " + (l.allow_unlimited_activations ? "∞" : fmt(l.max_activations))],
      ["floating seats", fmt(l.floating_in_use_devices) + " / " + fmt(l.floating_users)],
      ["expired", l.is_expired ? "yes" : "no"]]),
    el("h2", {}, "Features"),
    table(["code", "type", "seats", "meter", ""], features),
    el("h2", {}, "Floating seats held"),
    holders.length ? table(["pool", "holder", "since", "expires", "borrowed until", ""], holders)
      : el("p", { class: "muted", id: "no-holders" }, "No seat held."),
    el("h2", {}, "Devices"),
    table(["hardware id", "active", "blacklisted", "last activated", ""], devices.items.map((d) => [
      d.hardware_id, d.active ? "yes" : "no", d.blacklisted ? "yes" : "no", d.last_activated,
      el("button", { onclick: blacklist(d) }, d.blacklisted ? "Allow" : "Blacklist")])));
}

async function search(q) {
  const r = await api("/search?q=" + encodeURIComponent(q));
  const link = (h) => h.kind === "license" ? "#/licenses/" + h.id : "#/tenants/" + h.tenant_id;
  view(el("h1", {}, "Search: " + q),
    r.items.length ? table(["found", "what", "tenant"], r.items.map((h) => [
      el("a", { href: link(h), class: "hit" }, h.label || String(h.id)), h.kind.replace("_", " "), String(h.tenant_id)]))
      : el("p", { class: "muted" }, "Nothing found."));
}

// ------------------------------------------------------------ router

function route() {
  if (timer) { clearInterval(timer); timer = null; }
  if (!token()) { signOut(); return; }
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const after = new URLSearchParams(query || "").get("after");
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  let page;
  if (seg.length === 0) page = overview();
  else if (seg[0] === "tenants" && seg.length === 1) page = tenants(after);
  else if (seg[0] === "tenants" && seg[2] === "products") page = product(seg[1], seg[3], after);
  else if (seg[0] === "tenants") page = tenant(seg[1], after);
  else if (seg[0] === "webhooks") page = webhook(seg[1]);
  else if (seg[0] === "licenses") page = license(seg[1]);
  else if (seg[0] === "search") page = search(seg.slice(1).join("/"));
  else page = Promise.resolve(view(el("p", {}, "No such page.")));
  page.catch(failure);
}

document.getElementById("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = document.getElementById("token").value.trim();
  document.getElementById("token").value = "";
  signIn(t);
});
document.getElementById("signout").addEventListener("click", () => signOut());
document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (q) location.hash = "#/search/" + encodeURIComponent(q);
});
window.addEventListener("hashchange", route);
if (token()) signIn(token()); else signOut();
