// The analysts' page: the alert queue, an alert's detail and verdict, the models' status.
// Plain ES module, no build step. Every text from the API goes through text nodes (the h()
// helper), never innerHTML, so alert data cannot inject markup.

import { $, count, fixed, h, isNumber, percent } from "./dom.js";
import { startLive } from "./live.js";

const KEY_STORAGE = "fraudstream.apiKey";
const POLL_MS = 15_000; // while the live stream is down
const PAGE_SIZE = 25;

const state = {
  key: null, // the X-API-Key, also in localStorage
  offset: 0, total: 0, items: [], // the queue's current page
  selectedId: null, selectedIndex: 0, detail: null, detailRequest: 0,
  busy: false, ticking: false, afterVerdict: null,
  me: null, // {name, role} of the key
};

// ---------------------------------------------------------------- DOM and formatting

const testid = (id, ...children) => h("span", { "data-testid": id }, ...children);

function money(amount, currency) {
  if (!isNumber(amount)) return "–";
  if (currency) {
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency }).format(amount);
    } catch {
      // An unknown currency code: a plain number below.
    }
  }
  return amount.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function featureValue(value) {
  if (!isNumber(value)) return String(value ?? "–");
  return value.toLocaleString("en", { maximumSignificantDigits: 6 });
}

function duration(total) {
  if (!isNumber(total)) return "–";
  if (total < 60) return `${Math.round(total)} s`;
  if (total < 3600) return `${Math.round(total / 60)} min`;
  if (total < 86400) return `${(total / 3600).toFixed(1)} h`;
  return `${(total / 86400).toFixed(1)} d`;
}

const ageSeconds = (iso) => (iso ? (Date.now() - new Date(iso).getTime()) / 1000 : null);

/** A <time>: "5 min ago" (or the local date and time), the full local time on hover. */
function when(iso, { absolute = false } = {}) {
  if (!iso) return "–";
  const date = new Date(iso);
  const age = ageSeconds(iso);
  const relative = age >= -5 ? `${duration(Math.max(age, 0))} ago` : `in ${duration(-age)}`;
  const text = absolute ? `${date.toLocaleString()} (${relative})` : relative;
  return h("time", { datetime: iso, title: date.toLocaleString() }, text);
}

const badge = (text, kind = text) => h("span", { class: `badge badge-${kind}` }, text);
const pair = (term, value) => [h("dt", {}, term), h("dd", {}, value ?? "–")];

const claimLive = (item) =>
  item.status === "claimed" && (ageSeconds(item.claim_expires_at) ?? 1) < 0;

/** The status an analyst acts on: a claim past its expiry is open again. */
const effectiveStatus = (item) =>
  item.status === "claimed" && !claimLive(item) ? "open" : item.status;

// ---------------------------------------------------------------- messages

function showMessage(text, kind = "error", source = "") {
  const box = $("#message");
  box.dataset.source = source;
  box.textContent = text;
  box.className = `message message-${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.hidden = false;
  clearTimeout(showMessage.timer);
  if (kind !== "error") showMessage.timer = setTimeout(() => (box.hidden = true), 6000);
}


// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API answers {"detail": "..."}; FastAPI's own 422s carry [{loc, msg}] instead. */
function describeError(status, body) {
  const detail = body && typeof body === "object" ? body.detail : null;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    const where = (e) => (Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "");
    return detail.map((e) => [where(e), e.msg].filter(Boolean).join(": ")).join("; ");
  }
  return `The service answered ${status}.`;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-API-Key": state.key ?? "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    response = await fetch(path, { method, headers, body: payload });
  } catch (error) {
    throw new ApiError(0, `The review service cannot be reached (${error.message}).`);
  }
  const data = await response.json().catch(() => null); // null for an empty or HTML body
  if (!response.ok) {
    const error = new ApiError(response.status, describeError(response.status, data));
    if (response.status === 401) askForKey(`The service refused the key: ${error.message}`);
    throw error;
  }
  return data;
}

/** Shows an API failure to the user; a 401 has opened the key dialog already. */
function report(error, action, source = "") {
  if (error instanceof ApiError && error.status === 401) return;
  const kind = error instanceof ApiError && error.status === 409 ? "Conflict: " : "";
  showMessage(`${action} failed. ${kind}${error.message}`, "error", source);
}

/** Clears the message if it came from ``source`` (which has just succeeded). */
function clearMessage(source = null) {
  const box = $("#message");
  if (source === null || box.dataset.source === source) box.hidden = true;
}

// ---------------------------------------------------------------- API key

function takeKeyFromUrl() {
  const url = new URL(window.location.href);
  const key = url.searchParams.get("key");
  if (key === null) return;
  url.searchParams.delete("key");
  // The key must not stay in the address bar, the history or a bookmark.
  window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  if (key.trim()) localStorage.setItem(KEY_STORAGE, key.trim());
}

function askForKey(reason) {
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason || "Paste your API key once; this browser keeps it.";
  $("#key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

function setupKeyDialog() {
  $("#key-form").addEventListener("submit", (event) => {
    const key = $("#key-input").value.trim();
    if (!key) return event.preventDefault();
    state.key = key;
    localStorage.setItem(KEY_STORAGE, key);
    state.me = null;
    clearMessage();
    refreshAll();
  });
  $("#key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    state.key = null;
    $("#key-input").value = "";
    $("#key-reason").textContent = "The key is forgotten. Paste a key to continue.";
  });
  $("#key-dialog").addEventListener("close", () => {
    if (!state.key) showMessage("No API key: choose “API key” at the top to enter one.");
  });
  $("#key-button").addEventListener("click", () => askForKey());
}

// ---------------------------------------------------------------- queue

function queueQuery() {
  const form = new FormData($("#filters"));
  const params = new URLSearchParams();
  for (const name of ["status", "decision", "card_id", "sort"]) {
    const value = String(form.get(name) ?? "").trim();
    if (value) params.set(name, value);
  }
  const minScore = Number.parseFloat(String(form.get("min_score") ?? ""));
  if (Number.isFinite(minScore)) params.set("min_score", String(minScore));
  params.set("limit", String(PAGE_SIZE));
  params.set("offset", String(state.offset));
  return params;
}

async function refreshQueue() {
  const page = await api(`/api/alerts?${queueQuery()}`);
  state.items = page.items ?? [];
  state.total = page.total ?? state.items.length;
  clearMessage("queue"); // a filter error is fixed
  if (state.offset > 0 && state.items.length === 0 && state.total > 0) {
    state.offset = Math.floor((state.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    return refreshQueue();
  }
  renderQueue();
}

function queueRow(item) {
  const status = effectiveStatus(item);
  const props = {
    type: "button",
    class: "queue-item",
    "data-testid": "queue-item",
    "data-alert-id": item.alert_id,
    "aria-current": item.alert_id === state.selectedId ? "true" : null,
    onclick: () => select(item.alert_id),
  };
  const claimer = status === "claimed" ? `${holder(item.claimed_by)} ` : "";
  return h("li", {}, h("button", props,
    h("span", { class: "score", title: "Score" }, fixed(item.score, 2)),
    badge(item.decision),
    h("span", { class: "amount" }, money(item.amount, item.currency)),
    h("span", { class: "card", title: "Card" }, item.card_id),
    h("span", { class: "age" }, when(item.created_at)),
    h("span", { class: "state" }, claimer, item.label ? badge(item.label) : badge(status))));
}

function renderQueue() {
  const list = $("#queue-list");
  const focusedId = document.activeElement?.dataset?.alertId;
  list.replaceChildren(...state.items.map(queueRow));
  $("#queue-empty").hidden = state.items.length > 0;
  const last = state.offset + state.items.length;
  const first = state.total ? state.offset + 1 : 0;
  $("#page-info").textContent = `${first}–${last} of ${count(state.total)}`;
  $("#prev-page").disabled = state.offset === 0;
  $("#next-page").disabled = last >= state.total;
  const index = state.items.findIndex((item) => item.alert_id === state.selectedId);
  if (index >= 0) state.selectedIndex = index;
  if (focusedId) list.querySelector(`[data-alert-id="${CSS.escape(focusedId)}"]`)?.focus();
}

function select(alertId, { focus = false } = {}) {
  state.selectedId = alertId;
  for (const button of document.querySelectorAll("#queue-list .queue-item")) {
    if (button.dataset.alertId === alertId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  const index = state.items.findIndex((item) => item.alert_id === alertId);
  if (index >= 0) state.selectedIndex = index;
  const button = $(`#queue-list [data-alert-id="${CSS.escape(alertId)}"]`);
  if (focus) button?.focus();
  button?.scrollIntoView({ block: "nearest" });
  loadDetail(alertId);
}

function move(step) {
  if (!state.items.length) return;
  const index = state.items.findIndex((item) => item.alert_id === state.selectedId);
  // A selected alert that left the list (claimed, decided) leaves a gap at selectedIndex:
  // "next" is the alert now in its place.
  let next = index >= 0 ? index + step : state.selectedIndex + (step > 0 ? 0 : -1);
  next = Math.min(Math.max(next, 0), state.items.length - 1);
  select(state.items[next].alert_id, { focus: true });
}

function setupQueue() {
  const form = $("#filters");
  const load = () => refreshQueue().catch((error) => report(error, "Loading the queue", "queue"));
  const apply = () => {
    state.offset = 0;
    load();
  };
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  let typing; // the card id filter applies once the analyst pauses typing
  form.elements.card_id.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(apply, 400);
  });
  const page = (step) => () => {
    state.offset = Math.max(0, state.offset + step * PAGE_SIZE);
    load();
  };
  $("#prev-page").addEventListener("click", page(-1));
  $("#next-page").addEventListener("click", page(1));
}

// ---------------------------------------------------------------- detail

// AlertDetail nests the queue's AlertItem under "item": flattened for the renderers.
const fetchDetail = async (alertId) => {
  const detail = await api(`/api/alerts/${encodeURIComponent(alertId)}`);
  return { ...(detail.item ?? {}), ...detail };
};

async function loadDetail(alertId) {
  const request = ++state.detailRequest;
  try {
    const detail = await fetchDetail(alertId);
    if (request === state.detailRequest) renderDetail(detail);
  } catch (error) {
    if (request === state.detailRequest) report(error, "Opening the alert");
  }
}

/** The shown alert follows changes made elsewhere (another analyst, an expired claim),
 * even once it has left the filtered queue; unchanged, it is left alone (and focus too). */
async function refreshDetail() {
  const shown = state.detail;
  const request = state.detailRequest;
  if (!shown || state.busy) return;
  const fresh = await fetchDetail(shown.alert_id);
  if (request !== state.detailRequest || state.busy || state.detail !== shown) return;
  const json = (value) => JSON.stringify(value ?? null);
  const same = (name) => json(fresh[name]) === json(shown[name]);
  const names = ["version", "status", "claimed_by", "claim_expires_at", "history", "card_alerts"];
  if (!names.every(same)) renderDetail(fresh);
}

function renderSummary(d) {
  const status = effectiveStatus(d);
  const until = d.claim_expires_at ? new Date(d.claim_expires_at).toLocaleTimeString() : "?";
  return [
    h("p", { class: "headline" },
      h("span", { class: "big-score", "data-testid": "detail-score" }, fixed(d.score, 3)),
      badge(d.decision),
      h("span", { class: "big-amount" }, money(d.amount, d.currency))),
    h("p", { "data-testid": "detail-status" }, "Status: ", badge(status),
      claimLive(d) ? [" by ", h("strong", {}, holder(d.claimed_by)), ` until ${until}`] : [],
      d.label ? [" · verdict ", badge(d.label, `label-${d.label}`)] : [],
      d.decided_by ? [" by ", h("strong", {}, holder(d.decided_by))] : []),
    d.note ? h("p", { class: "meta" }, `Note: ${d.note}`) : null,
    h("p", { class: "meta" },
      `Alert ${d.alert_id} · model ${d.model_name ?? "?"} ${d.model_version ?? ""} · raised `,
      when(d.created_at)),
  ];
}

const TRANSACTION_FIELDS = [
  ["transaction_id", "Transaction"], ["timestamp", "Time"], ["card_id", "Card"],
  ["terminal_id", "Terminal"], ["merchant_category", "Merchant category"],
  ["country", "Country"], ["channel", "Channel"], ["device_id", "Device"],
];

function renderTransaction(d) {
  const tx = d.transaction ?? {};
  const rows = [pair("Amount", money(tx.amount ?? d.amount, tx.currency ?? d.currency))];
  for (const [name, term] of TRANSACTION_FIELDS) {
    const value = tx[name] ?? d[name];
    if (value === undefined || value === null) continue;
    rows.push(pair(term, name === "timestamp" ? when(value, { absolute: true }) : value));
  }
  for (const [name, value] of Object.entries(tx.metadata ?? {})) rows.push(pair(name, value));
  return rows.flat();
}

function renderCardAlerts(d) {
  const others = d.card_alerts ?? [];
  if (!others.length) return [h("tr", {}, h("td", { colspan: 6 }, "None."))];
  const open = (o) =>
    h("button", { type: "button", class: "link", onclick: () => select(o.alert_id) },
      when(o.created_at));
  return others.map((o) => h("tr", { "data-alert-id": o.alert_id },
    h("td", {}, open(o)),
    h("td", { class: "num" }, money(o.amount, o.currency)),
    h("td", { class: "num" }, fixed(o.score, 2)),
    h("td", {}, o.decision ? badge(o.decision) : "–"),
    h("td", {}, o.status ? badge(effectiveStatus(o)) : "–"),
    h("td", {}, o.label ? badge(o.label, `label-${o.label}`) : "–")));
}

function describeDetails(details) {
  if (!details || typeof details !== "object") return details ? String(details) : "";
  return Object.entries(details)
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([name, value]) => `${name}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join(" · ");
}

function renderHistory(d) {
  const events = d.history ?? [];
  if (!events.length) return [h("li", {}, "No events.")];
  return events.map((e) => {
    const details = describeDetails(e.details);
    return h("li", {}, when(e.at), " ", h("strong", {}, e.action), " by ", e.actor ?? "?",
      details ? h("span", { class: "meta" }, ` — ${details}`) : "");
  });
}

function renderDetail(d) {
  state.detail = d;
  $("#detail-empty").hidden = true;
  $("#detail-body").hidden = false;
  $("#detail-summary").replaceChildren(...renderSummary(d).filter(Boolean));
  $("#transaction").replaceChildren(...renderTransaction(d));
  const reasons = (d.reasons ?? []).map((r) => h("li", {}, r));
  $("#reasons").replaceChildren(...(reasons.length ? reasons : [h("li", {}, "None given.")]));
  const features = Object.entries(d.features ?? {}).sort(([a], [b]) => a.localeCompare(b));
  $("[data-testid=features] tbody").replaceChildren(...features.map(([name, value]) =>
    h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, featureValue(value)))));
  $("[data-testid=card-alerts] tbody").replaceChildren(...renderCardAlerts(d));
  $("#history").replaceChildren(...renderHistory(d));
  updateButtons();
}

function updateButtons() {
  const d = state.detail;
  const status = d ? effectiveStatus(d) : null;
  $("#claim-button").disabled = state.busy || status !== "open";
  $("#release-button").disabled = state.busy || status !== "claimed";
  // The same verdict again would change nothing: only the other label is offered.
  const same = (label) => state.busy || !d || (status === "decided" && d.label === label);
  $("#fraud-button").disabled = same("fraud");
  $("#legit-button").disabled = same("legit");
  $("#reopen-button").disabled = state.busy || status !== "decided";
}

// ---------------------------------------------------------------- actions

/** POSTs an action on the shown alert, then reloads the queue and the detail. */
async function act(label, path, body, done) {
  const d = state.detail;
  if (!d || state.busy) return;
  state.busy = true;
  updateButtons();
  try {
    await api(`/api/alerts/${encodeURIComponent(d.alert_id)}/${path}`, { method: "POST", body });
    done?.(d);
  } catch (error) {
    report(error, label);
  } finally {
    state.busy = false;
  }
  await refreshQueue().catch((error) => report(error, "Loading the queue"));
  refreshStats().catch(() => {}); // the next tick reports a failure
  advanceAfterVerdict();
  await loadDetail(state.selectedId);
}

const simple = (label, path, done) => () =>
  act(label, path, undefined, () => showMessage(done, "info"));
const claim = simple("Claiming", "claim", "Claimed.");
const release = simple("Releasing", "release", "Released.");
const reopen = simple("Reopening", "reopen", "Reopened.");

function verdict(label) {
  const d = state.detail;
  if (!d || state.busy) return;
  // Changing an earlier verdict sends a second label to the detector: ask first.
  const change = d.status === "decided" && Boolean(d.label);
  if (change && d.label === label) return;
  if (change && !window.confirm(`Change the verdict from ${d.label} to ${label}?`)) return;
  const note = $("#note").value.trim();
  // The version the analyst saw: a change by someone else meanwhile is a 409, not a surprise.
  const body = { label, note: note || null, change, version: d.version ?? null };
  return act(`Marking ${label}`, "verdict", body, (decided) => {
    $("#note").value = "";
    showMessage(`Marked ${label}: transaction ${decided.transaction_id}.`, "info");
    state.afterVerdict = decided.alert_id;
  });
}

/** Once a decided alert leaves the filtered queue, the next one is shown. */
function advanceAfterVerdict() {
  const decided = state.afterVerdict;
  state.afterVerdict = null;
  if (!decided || decided !== state.selectedId || !state.items.length) return;
  if (state.items.some((item) => item.alert_id === decided)) return;
  const next = state.items[Math.min(state.selectedIndex, state.items.length - 1)];
  state.selectedId = next.alert_id;
  select(next.alert_id, { focus: true });
}

function setupActions() {
  $("#claim-button").addEventListener("click", claim);
  $("#release-button").addEventListener("click", release);
  $("#reopen-button").addEventListener("click", reopen);
  $("#fraud-button").addEventListener("click", () => verdict("fraud"));
  $("#legit-button").addEventListener("click", () => verdict("legit"));
  $("#verdict-form").addEventListener("submit", (event) => event.preventDefault());
}

// ---------------------------------------------------------------- keyboard

function toggleHelp() {
  const dialog = $("#help-dialog");
  if (dialog.open) dialog.close();
  else dialog.showModal();
}

const SHORTCUTS = {
  j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
  // Action keys press the buttons, so a disabled button means a no-op, as with the mouse.
  c: () => $("#claim-button").click(), r: () => $("#release-button").click(),
  f: () => $("#fraud-button").click(), l: () => $("#legit-button").click(),
  n: () => $("#detail-body").hidden || $("#note").focus(), "?": toggleHelp,
};

function onKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest?.("input, textarea, select, [contenteditable]")) {
    if (event.key === "Escape" && target.id === "note") target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) {
    if (event.key === "?" && $("#help-dialog").open) toggleHelp();
    return;
  }
  const action = SHORTCUTS[event.key];
  if (!action) return;
  event.preventDefault();
  action();
}

// ---------------------------------------------------------------- models and stats

function thresholds(m) {
  const fixedPart =
    `review ≥ ${fixed(m.review_threshold)}, block ≥ ${fixed(m.block_threshold)}`;
  if (m.threshold_mode === "capacity" && isNumber(m.review_capacity_per_hour)) {
    return `capacity: ${m.alerts_last_hour ?? "?"} of ${m.review_capacity_per_hour} alerts ` +
      `in the last hour (now ${fixedPart})`;
  }
  if (m.threshold_mode !== "volume" || !isNumber(m.review_share)) {
    return `${m.threshold_mode ?? "?"}: ${fixedPart}`;
  }
  return `volume: review ${percent(m.review_share)}, block ${percent(m.block_share)} of ` +
    `traffic (now ${fixedPart})`;
}

/** The safety valves in force (reported with the deciding model): for every role. */
function valves(policy) {
  if (!policy) return null;
  const cap = policy.max_block_share >= 1 ? "off"
    : `${percent(policy.block_share)} of the last ${count(policy.block_window)} decisions ` +
      `blocked, cap ${percent(policy.max_block_share)}` +
      (policy.block_cap_tripped ? ": tripped, blocks become reviews" : "");
  return [
    pair("Mode", testid("model-mode", policy.mode === "normal" ? "normal"
      : policy.mode === "review_only" ? "review only: nothing is blocked"
        : "monitor: everything is allowed")),
    pair("Block cap", testid("model-block-cap", cap)),
    pair("Degraded", testid("model-degraded",
      `${count(policy.degraded)} decided by rules alone`)),
  ].flat();
}

function modelCard(m) {
  const q = m.quality ?? {};
  const learned = m.labels_learned ?? {};
  const props = { class: `model${m.stale ? " stale" : ""}`, "data-testid": "model" };
  return h("article", { ...props, "data-model": m.model_name },
    h("h3", {}, testid("model-name", m.model_name), " ",
      h("span", { class: "version", "data-testid": "model-version" }, m.model_version), " ",
      m.deciding ? badge("deciding") : badge("shadow")),
    m.stale
      ? h("p", { class: "warning", "data-testid": "model-stale" },
        "Stale: no recent update — is the detector running?")
      : null,
    h("dl", { class: "kv" },
      pair("Scored", testid("model-scored", count(m.transactions_scored))),
      pair("Labels learned", testid("model-labels",
        `fraud ${count(learned.fraud ?? 0)} · legit ${count(learned.legit ?? 0)}`)),
      pair("Online AUC", testid("model-auc", fixed(q.auc))),
      pair("Alert precision", testid("model-precision", percent(q.alert_precision))),
      pair("Alert recall", percent(q.alert_recall)),
      pair("Window", `${count(q.window)} labelled, ${count(q.frauds)} fraud`),
      pair("Thresholds", testid("model-thresholds", thresholds(m))),
      valves(m.policy),
      pair("Last update", when(m.emitted_at))));
}

async function refreshModels() {
  const models = (await api("/api/models")) ?? [];
  // Each entry is {status: ModelStatus, received_at, stale}.
  const list = (Array.isArray(models) ? models : (models.items ?? []))
    .map((m) => ({ ...(m.status ?? m), stale: Boolean(m.stale), received_at: m.received_at }))
    .sort((a, b) => Number(b.deciding) - Number(a.deciding) ||
      String(a.model_name).localeCompare(String(b.model_name)));
  $("#models").replaceChildren(...list.map(modelCard));
  $("#models-empty").hidden = list.length > 0;
}

const UNSENT = "Verdicts and admin changes not yet delivered to Kafka: the detector has not " +
  "seen them yet.";

/** "you" for the key's own name, so an analyst tells their claims from others'. */
const holder = (name) => (name && state.me && name === state.me.name ? "you" : name ?? "?");

async function refreshStats() {
  if (!state.me) {
    state.me = await api("/api/me");
    if (state.me) $("[data-testid=me]").textContent = `${state.me.name} · ${state.me.role}`;
  }
  const s = (await api("/api/queue/stats")) ?? {};
  const verdicts = s.verdicts_last_hour ?? {};
  $("[data-testid=queue-stats]").replaceChildren(
    ...pair("Open", testid("stats-open", count(s.open))),
    ...pair("Claimed", count(s.claimed)),
    ...pair("Oldest open", duration(s.oldest_open_age_seconds)),
    ...pair("Verdicts, last hour",
      `fraud ${count(verdicts.fraud ?? 0)} · legit ${count(verdicts.legit ?? 0)}`),
    ...(s.outbox_pending ? pair(h("span", { title: UNSENT }, "Unsent"), count(s.outbox_pending))
      : []),
  );
}

// ---------------------------------------------------------------- start

async function refreshAll() {
  if (!state.key || state.ticking) return;
  state.ticking = true;
  try {
    const results = await Promise.allSettled(
      [refreshQueue(), refreshDetail(), refreshModels(), refreshStats()]);
    const failed = results.find((r) => r.status === "rejected")?.reason;
    if (failed && !(failed instanceof ApiError && failed.status === 401)) {
      showMessage(`Refreshing failed. ${failed.message}`, "error", "refresh");
    } else if (!failed) {
      clearMessage("refresh");
    }
  } finally {
    state.ticking = false;
  }
}

function tick() {
  if (document.hidden || document.querySelector("dialog[open]") || state.busy) return;
  if (state.live?.live()) return; // the stream says what changed: no polling
  refreshAll();
}

// The live stream's events: reload only what changed (a full reload after a resync).
function onLiveChange(kinds) {
  if (!state.key || document.querySelector("dialog[open]")) return;
  if (kinds.has("resync")) return refreshAll();
  const jobs = [];
  if (kinds.has("alert")) jobs.push(refreshQueue(), refreshDetail(), refreshStats());
  if (kinds.has("models") || kinds.has("control")) jobs.push(refreshModels());
  Promise.allSettled(jobs).then((results) => {
    const failed = results.find((r) => r.status === "rejected")?.reason;
    if (failed) report(failed, "Refreshing");
  });
}

function start() {
  takeKeyFromUrl();
  state.key = localStorage.getItem(KEY_STORAGE);
  setupKeyDialog();
  setupQueue();
  setupActions();
  $("#help-button").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", tick);
  updateButtons();
  if (state.key) refreshAll();
  else askForKey();
  state.live = startLive({ key: () => state.key, onChange: onLiveChange, onState: () => {} });
  $("#key-form").addEventListener("submit", () => state.live.restart());
  setInterval(tick, POLL_MS); // only while the stream is down
}

start();
