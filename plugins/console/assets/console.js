// neo-ops console. The token lives in sessionStorage and goes out only as
// an Authorization header; the host checks the role on every call, so
// hiding a button here is a convenience, never the guard.
"use strict";

const TOKEN_KEY = "neo-ops-token";
const WHOAMI = "/api/admin/whoami";
const $ = (id) => document.getElementById(id);
const FORBIDDEN =
  "Refused (403 forbidden): the token is unknown or revoked, or its role may not do this.";
let role = null;
let dlqType = "webhook";
/** Dead letters listed at most. */
const DLQ_LIMIT = 100;

/** An element with attributes (`text` sets its text) and children. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = String(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function say(message, isError = false) {
  const s = $("status");
  s.textContent = message;
  s.className = isError ? "error" : "";
}

/** Calls an admin route; returns the envelope's `data`, or throws in words. */
async function api(method, path, body, headers = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const h = { ...headers, Authorization: "Bearer " + token };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let doc = null;
  try {
    doc = await resp.json();
  } catch (_) {
    doc = null;
  }
  // Signed out (or in as someone else) while it was out: the answer is
  // not for whoever holds the page now.
  if (sessionStorage.getItem(TOKEN_KEY) !== token) {
    throw Object.assign(new Error("signed out meanwhile"), { stale: true });
  }
  if (resp.status === 403) {
    // Refused: the token itself (revoked or expired meanwhile), or only
    // this route for its role. Whoami tells which.
    if (path !== WHOAMI) recheckToken(token);
    throw Object.assign(new Error(FORBIDDEN), { status: 403 });
  }
  // Preflight answers 503 with its report when a check fails.
  if (doc && doc.data !== undefined) return doc.data;
  const message = doc && doc.error ? doc.error.message : "HTTP " + resp.status;
  throw Object.assign(new Error(message + " (" + resp.status + ")"), { status: resp.status });
}

/** Forgets a token the host now refuses outright, and says so at sign-in. */
async function recheckToken(token) {
  try {
    await api("GET", WHOAMI);
  } catch (e) {
    if (e.status === 403 && sessionStorage.getItem(TOKEN_KEY) === token) {
      signOut();
      $("signin-error").textContent =
        "The token was refused (revoked or expired): sign in with another.";
    }
  }
}

/** Runs `work` with `buttons` disabled, so a second click cannot send the
 *  same request again while the first is still out. */
async function busy(buttons, work) {
  for (const b of buttons) b.disabled = true;
  try {
    return await work();
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

/** Shows an outcome line, its colour set for this outcome alone. */
function outcomeText(p, text, isError) {
  p.className = isError ? "outcome error" : "outcome";
  p.textContent = text;
}

function confirmAction(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    // Cancel has the focus: one Enter too many (or a key repeat) after the
    // click that opened it must not confirm a change.
    $("confirm-cancel").focus();
  });
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function card(title, fields, ...extra) {
  const dl = el("dl");
  for (const [k, v] of fields) dl.append(el("dt", { text: k }), el("dd", { text: v ?? "" }));
  return el("article", { class: "card" }, el("h3", { text: title }), dl, ...extra);
}

// ---- sign in ------------------------------------------------------------

async function signIn(token) {
  // A token is printable ASCII: one with a smart quote or a space pasted in
  // would make fetch throw before asking, and be kept to fail the same way.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("signin-error").textContent =
      "That is not a token: it has a character no token has (a space or a typographic quote from copying?).";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const me = await api("GET", WHOAMI);
    role = me.role;
    $("who").textContent = me.name + " (" + me.role + ")";
    $("signin").hidden = true;
    $("tabs").hidden = false;
    $("signout").hidden = false;
    $("signin-error").textContent = "";
    // Not left in the (hidden) field for the browser to offer to save.
    $("token").value = "";
    // Support actions are for super_admin; the host refuses them to others anyway.
    $("tab-support").hidden = role !== "super_admin";
    show(role === "super_admin" ? "support" : "preflight");
  } catch (e) {
    if (e.stale) return;
    role = null;
    if (e.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("signin-error").textContent = e.message;
    } else {
      // The token was not refused, only not checked (a database blip):
      // it is kept, so a reload once the host answers signs in again.
      $("signin-error").textContent =
        "Could not check the token: " + e.message + ". Reload to try again.";
    }
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  role = null;
  $("who").textContent = "";
  $("signout").hidden = true;
  $("tabs").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  for (const r of document.querySelectorAll(".view [id$=-results]")) r.replaceChildren();
  for (const f of document.querySelectorAll(".view form")) f.reset();
  for (const id of ["audit-chain", "preflight-summary"]) {
    $(id).textContent = "";
    $(id).className = "";
  }
  $("signin").hidden = false;
  $("token").value = "";
  $("token").focus();
  say("Signed out.");
}

// ---- views --------------------------------------------------------------

const loaders = {
  support: () => {},
  preflight: loadPreflight,
  dlq: loadDeadLetters,
  csp: loadCsp,
  audit: loadAudit,
};

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  say("");
  Promise.resolve(loaders[view]()).catch((e) => failed(view, e));
}

/** A view whose load failed shows the error in place of what it showed
 *  before, so nothing stale passes for current. */
function failed(view, e) {
  if (e.stale) return;
  const results = $(view + "-results");
  if (results) results.replaceChildren(el("p", { class: "error", role: "alert", text: e.message }));
  const verdict = { audit: "audit-chain", preflight: "preflight-summary" }[view];
  if (verdict) {
    $(verdict).textContent = "Not checked: the request failed.";
    $(verdict).className = "fail";
  }
  say(e.message, true);
}

/** Each view's loads, counted: an answer to a load a newer one replaced
 *  (a second click on its tab or button, a new search) is dropped, so the
 *  older answer landing last never shows over the newer one. */
const loads = {};

/** Runs `work` as `view`'s latest load; throws a stale error if a newer
 *  load of the view began before it ended. */
async function latest(view, work) {
  const seq = (loads[view] = (loads[view] || 0) + 1);
  const replaced = () => Object.assign(new Error("replaced by a newer load"), { stale: true });
  let data;
  try {
    data = await work();
  } catch (e) {
    throw seq === loads[view] ? e : replaced();
  }
  if (seq !== loads[view]) throw replaced();
  return data;
}

// Support: search, then the four actions on what was found.
async function search(form) {
  const f = new FormData(form);
  const tenant = f.get("tenant").trim();
  const q = new URLSearchParams({ tenant });
  for (const k of ["table", "order"]) if (f.get(k).trim()) q.set(k, f.get(k).trim());
  const out = $("support-results");
  out.replaceChildren();
  say("Searching…");
  const data = await latest("support", () => api("GET", "/admin/support/console/search?" + q));
  const name = data.tenant.name;
  out.append(card("Tenant " + name, [["id", data.tenant.id]]));
  if (f.get("table").trim()) {
    out.append(
      data.table
        ? card("Table " + data.table.code, [["id", data.table.id]])
        : card("Table " + f.get("table").trim(), [["found", "no, not in this tenant"]]),
    );
  }
  if (f.get("order").trim()) {
    if (!data.order) {
      out.append(card("Order " + f.get("order").trim(), [["found", "no, not in this tenant"]]));
    } else {
      const o = data.order;
      const path = "/admin/support/console/order/" + o.id + "/";
      out.append(
        actionCard("Order " + o.id, [["status", o.status]], name, [
          ["Resend invoice", path + "resend_invoice", "resend the invoice of order " + o.id],
          ["Reprint KOT", path + "reprint_kot", "reprint the KOTs of order " + o.id],
          ["Replay webhook", path + "replay_webhook", "replay the webhooks of order " + o.id],
        ]),
      );
    }
  }
  const staff = f.get("staff").trim();
  if (staff) {
    out.append(
      actionCard("Staff " + staff, [], name, [
        ["Unlock PIN", "/admin/support/console/staff/" + encodeURIComponent(staff) + "/unlock_pin",
          "unlock the PIN of staff " + staff],
      ]),
    );
  }
  say("Found tenant " + name + ".");
}

function actionCard(title, fields, tenant, actions) {
  const outcome = el("p", { class: "outcome", role: "status" });
  // The card's buttons, all disabled while one of its actions is out.
  const buttons = [];
  for (const [label, path, what] of actions) {
    // One key per action on this search result: clicking again ("did it
    // work?") repeats the same request, which the server answers as a
    // duplicate instead of doing the work twice. A new search is a new key.
    const key = newKey();
    buttons.push(el("button", {
      type: "button",
      text: label,
      onclick: async () => {
        if (!(await confirmAction("Really " + what + " for tenant " + tenant + "?"))) return;
        outcomeText(outcome, "Working…", false);
        await busy(buttons, async () => {
          try {
            const data = await api("POST", path + "?tenant=" + encodeURIComponent(tenant), undefined, {
              "Idempotency-Key": key,
            });
            outcomeText(outcome, data.duplicate
              ? "Already done (an earlier click): nothing was repeated. Search again to do it anew."
              : "Done: " + summarize(data), false);
          } catch (e) {
            if (!e.stale) outcomeText(outcome, e.message, true);
          }
        });
      },
    }));
  }
  return card(title, fields, el("div", { class: "actions" }, ...buttons), outcome);
}

/** An action's answer in a sentence. */
function summarize(data) {
  if (data.sent_to) return "invoice " + (data.invoice ? data.invoice.number : "") + " mailed to " + data.sent_to + ".";
  if (data.kots !== undefined) return data.kots + " KOT(s) sent to the printer again.";
  if (data.deliveries !== undefined) return data.deliveries.length + " webhook delivery(ies) queued again.";
  if (data.was_locked !== undefined) return data.was_locked ? "PIN unlocked." : "the PIN was not locked; attempts cleared.";
  return "ok.";
}

// Preflight: failing checks first.
const RANK = { fail: 0, warn: 1, skip: 2, pass: 3 };

async function loadPreflight() {
  const out = $("preflight-results");
  $("preflight-summary").textContent = "Running checks…";
  $("preflight-summary").className = "";
  const report = await busy([$("preflight-run")], () =>
    latest("preflight", () => api("GET", "/api/admin/preflight")));
  const checks = [...report.checks].sort(
    (a, b) => (RANK[a.status] ?? 9) - (RANK[b.status] ?? 9) || a.name.localeCompare(b.name),
  );
  $("preflight-summary").textContent = "Overall: " + String(report.status).toUpperCase();
  $("preflight-summary").className = report.status;
  const rows = checks.map((c) =>
    el("tr", { "data-status": c.status },
      el("td", {}, el("span", { class: "badge " + c.status, text: c.status })),
      el("td", { text: c.name + (c.advisory ? " (advisory)" : "") }),
      el("td", { text: c.detail }),
      el("td", { text: c.hint || "" }),
      el("td", { class: "wide-only", text: c.duration_ms + " ms" })),
  );
  out.replaceChildren(table(["Status", "Check", "Detail", "Hint", "Time"], rows, [4]));
}

function table(headings, rows, wideOnly = []) {
  const head = el("tr", {}, ...headings.map((h, i) =>
    el("th", { scope: "col", class: wideOnly.includes(i) ? "wide-only" : null, text: h })));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

// Dead letters, per queue type, with replay.
async function loadDeadLetters() {
  const out = $("dlq-results");
  // The type this list is for: the buttons replay on it even if the tab
  // changes, and an answer for a tab no longer shown is dropped.
  const type = dlqType;
  out.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  // One more than shown: whether older ones exist.
  const data = await latest("dlq", () =>
    api("GET", "/api/admin/dlq?type=" + type + "&limit=" + (DLQ_LIMIT + 1)));
  const all = data.dead_letters || [];
  const letters = all.slice(0, DLQ_LIMIT);
  if (letters.length === 0) {
    out.replaceChildren(el("p", { class: "muted", text: "No " + type + " dead letters." }));
    return;
  }
  const shown = all.length > DLQ_LIMIT
    ? el("p", { class: "hint", text: "The newest " + DLQ_LIMIT + " are shown; older ones exist." })
    : null;
  out.replaceChildren(...(shown ? [shown] : []), ...letters.map((d) => {
    const outcome = el("p", { class: "outcome", role: "status" });
    const replay = el("button", {
      type: "button",
      text: "Replay",
      onclick: async () => {
        if (!(await confirmAction("Replay " + type + " dead letter " + d.id + " for tenant " + (d.tenant || "(none)") + "?"))) return;
        const r = await busy([replay], async () => {
          try {
            return await api("POST", "/api/admin/dlq/replay?type=" + type, { id: d.id });
          } catch (e) {
            if (!e.stale) outcomeText(outcome, e.message, true);
            return null;
          }
        });
        if (r) {
          outcomeText(outcome, r.requeued ? "Requeued." : "Not requeued.", false);
          replay.disabled = true;
        }
      },
    });
    return card(d.tenant || "(no tenant)", [
      ["id", d.id], ["attempts", d.attempts], ["last error", d.last_error], ["time", when(d.time)],
    ], el("div", { class: "actions" }, replay), outcome);
  }));
}

// CSP reports grouped by directive and blocked host.
function fields(entry) {
  let r = entry.report || {};
  if (entry.kind === "overflow") r = r.first || {};
  const b = r["csp-report"] || r.body || {};
  // Reports come from anyone: only a string counts as a field's value.
  const text = (...keys) => keys.map((k) => b[k]).find((v) => typeof v === "string") || "";
  return {
    directive: text("effective-directive", "effectiveDirective", "violated-directive"),
    blocked: text("blocked-uri", "blockedURL"),
    document: text("document-uri", "documentURL"),
  };
}

function hostOf(url) {
  try {
    return new URL(url).host || url;
  } catch (_) {
    return url || "(none)";
  }
}

async function loadCsp() {
  const data = await latest("csp", () => api("GET", "/admin/csp/reports?limit=500"));
  const groups = new Map();
  for (const entry of data.reports) {
    const f = fields(entry);
    const key = f.directive + " " + hostOf(f.blocked);
    const g = groups.get(key) || { directive: f.directive, host: hostOf(f.blocked), count: 0, last: "", example: f };
    g.count += entry.count || 1;
    const seen = entry.last_seen || entry.received_at;
    if (seen > g.last) {
      g.last = seen;
      g.example = f;
    }
    groups.set(key, g);
  }
  const sorted = [...groups.values()].sort((a, b) => (a.last < b.last ? 1 : -1));
  if (sorted.length === 0) {
    $("csp-results").replaceChildren(el("p", { class: "muted", text: "No reports in the last 24 hours." }));
    return;
  }
  const rows = sorted.map((g) =>
    el("tr", {},
      el("td", { text: g.directive }),
      el("td", { class: "clip", title: g.example.blocked, text: g.host }),
      el("td", { text: g.count }),
      el("td", { class: "wide-only", text: when(g.last) }),
      el("td", { class: "clip wide-only", title: g.example.document, text: g.example.document })),
  );
  $("csp-results").replaceChildren(table(["Directive", "Blocked host", "Count", "Last seen", "Page"], rows, [3, 4]));
}

// Audit: the latest records and whether the hash chain holds.
async function loadAudit() {
  const data = await latest("audit", () => api("GET", "/api/admin/audit?limit=50"));
  const chain = $("audit-chain");
  if (data.chain.ok) {
    chain.className = "pass";
    chain.textContent = "Chain verified: " + data.chain.checked + " records intact.";
  } else {
    chain.className = "fail";
    chain.textContent = "Chain broken at record #" + data.chain.broken_at + ": the log was altered.";
  }
  const rows = data.records.map((r) =>
    el("tr", {},
      el("td", { text: when(r.at) }),
      el("td", { text: r.actor }),
      el("td", { text: r.action }),
      el("td", { class: "clip", title: r.target, text: r.target }),
      el("td", { class: "wide-only", text: r.tenant || "" })),
  );
  $("audit-results").replaceChildren(table(["Time", "Actor", "Action", "Target", "Tenant"], rows, [4]));
}

// ---- wiring -------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value.trim());
  });
  $("signout").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("nav button")) {
    b.addEventListener("click", () => show(b.dataset.view));
  }
  for (const b of document.querySelectorAll("[data-dlq]")) {
    b.addEventListener("click", () => {
      dlqType = b.dataset.dlq;
      for (const o of document.querySelectorAll("[data-dlq]")) o.setAttribute("aria-pressed", String(o === b));
      loadDeadLetters().catch((e) => failed("dlq", e));
    });
  }
  $("preflight-run").addEventListener("click", () => loadPreflight().catch((e) => failed("preflight", e)));
  $("support-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const submit = e.target.querySelector("button[type=submit]");
    busy([submit], () => search(e.target)).catch((err) => err.stale || say(err.message, true));
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $("token").focus();
});
