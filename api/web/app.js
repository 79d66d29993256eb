// The analysts' page: the alert queue, an alert's detail and verdict, the models' status.
// Plain ES module, no build step. Every text from the API goes through text nodes (the h()
// helper), never innerHTML, so alert data cannot inject markup.

import {
  $, ageSeconds, badge, count, duration, fixed, h, isNumber, money, pair, percent, when,
} from "./dom.js";
import { caseRow, renderCase, renderResults } from "./cases.js";
import { startLive } from "./live.js";

const KEY_STORAGE = "fraudstream.apiKey";
const POLL_MS = 15_000; // while the live stream is down
const PAGE_SIZE = 25;
const BATCH_MAX = 500; // verdicts in one POST /api/alerts/verdicts

const state = {
  key: null, // the X-API-Key, also in localStorage
  offset: 0, total: 0, items: [], // the queue's current page
  selectedId: null, selectedIndex: 0, detail: null, detailRequest: 0,
  busy: false, ticking: false, afterVerdict: null,
  me: null, // {name, role} of the key
  view: "cases", // the queue lists "cases" or single "alerts"
  picked: new Set(), anchor: null, // rows selected for a batch verdict (by key)
  caseDetail: null, caseRequest: 0, // the open case
};

// ---------------------------------------------------------------- DOM and formatting

const testid = (id, ...children) => h("span", { "data-testid": id }, ...children);

function featureValue(value) {
  if (!isNumber(value)) return String(value ?? "–");
  return value.toLocaleString("en", { maximumSignificantDigits: 6 });
}

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

// The queue lists cases (a card's alerts together) or single alerts; rows are keyed by
// card id or alert id. The analyst's choice is kept by the browser.
const VIEW_STORAGE = "fraudstream.view";
const isCases = () => state.view === "cases";
const rowKey = (item) => (isCases() ? item.card_id : item.alert_id);
const rowAttr = () => (isCases() ? "data-card-id" : "data-alert-id");
const rowDataKey = (el) => (isCases() ? el?.dataset?.cardId : el?.dataset?.alertId);

function queueQuery() {
  const form = new FormData($("#filters"));
  const params = new URLSearchParams();
  const names = isCases() ? ["status", "q"] : ["status", "decision", "card_id", "sort"];
  for (const name of names) {
    const value = String(form.get(name) ?? "").trim();
    if (value) params.set(name, value);
  }
  // A case is open or decided: "all" is every case.
  if (isCases() && !params.has("status")) params.set("status", "all");
  const minScore = Number.parseFloat(String(form.get("min_score") ?? ""));
  if (!isCases() && Number.isFinite(minScore)) params.set("min_score", String(minScore));
  params.set("limit", String(PAGE_SIZE));
  params.set("offset", String(state.offset));
  return params;
}

async function refreshQueue() {
  const view = state.view;
  const page = await api(`/api/${view}?${queueQuery()}`);
  if (view !== state.view) return; // switched meanwhile: the other view's page is coming
  state.items = page.items ?? [];
  state.total = page.total ?? state.items.length;
  clearMessage("queue"); // a filter error is fixed
  if (state.offset > 0 && state.items.length === 0 && state.total > 0) {
    state.offset = Math.floor((state.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    return refreshQueue();
  }
  // Rows gone from the list (decided, filtered out) leave the selection too.
  const shown = new Set(state.items.map(rowKey));
  for (const key of state.picked) if (!shown.has(key)) state.picked.delete(key);
  renderQueue();
}

function alertRow(item) {
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
  const reason = item.reasons?.[0] ?? "";
  const picked = state.picked.has(item.alert_id);
  return h("li", { class: `queue-row${picked ? " picked" : ""}` },
    h("input", {
      type: "checkbox", class: "pick", "data-testid": "pick", checked: picked,
      "aria-label": `Select the alert of transaction ${item.transaction_id}`,
      onclick: (event) => pick(item.alert_id, event),
    }),
    h("button", props,
      h("span", { class: "score", title: "Score" }, fixed(item.score, 2)),
      badge(item.decision),
      h("span", { class: "amount" }, money(item.amount, item.currency)),
      h("span", { class: "age" }, when(item.transaction_time, { title: "Transaction time: " })),
      h("span", { class: "reason", title: reason }, reason || "–"),
      h("span", { class: "where" }, h("span", { title: "Card" }, item.card_id), " · ",
        h("span", { title: "Terminal" }, item.terminal_id)),
      h("span", { class: "state" }, claimer, item.label ? badge(item.label) : badge(status))));
}

function queueRow(item) {
  if (!isCases()) return alertRow(item);
  return caseRow(item, {
    current: item.card_id === state.selectedId, picked: state.picked.has(item.card_id),
    holder, onOpen: select, onPick: pick,
  });
}

function renderQueue() {
  const list = $("#queue-list");
  const focusedId = rowDataKey(document.activeElement);
  list.replaceChildren(...state.items.map(queueRow));
  list.setAttribute("aria-label", isCases() ? "Cases" : "Alerts");
  $("#queue-empty").hidden = state.items.length > 0;
  const last = state.offset + state.items.length;
  const first = state.total ? state.offset + 1 : 0;
  $("#page-info").textContent = `${first}–${last} of ${count(state.total)}`;
  $("#prev-page").disabled = state.offset === 0;
  $("#next-page").disabled = last >= state.total;
  const index = state.items.findIndex((item) => rowKey(item) === state.selectedId);
  if (index >= 0) state.selectedIndex = index;
  if (focusedId) list.querySelector(`[${rowAttr()}="${CSS.escape(focusedId)}"]`)?.focus();
  renderBulk();
}

function select(key, { focus = false } = {}) {
  state.selectedId = key;
  for (const button of document.querySelectorAll("#queue-list .queue-item")) {
    if (rowDataKey(button) === key) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  const index = state.items.findIndex((item) => rowKey(item) === key);
  if (index >= 0) state.selectedIndex = index;
  const button = $(`#queue-list [${rowAttr()}="${CSS.escape(key)}"]`);
  if (focus) button?.focus();
  button?.scrollIntoView({ block: "nearest" });
  if (isCases()) openCase(key);
  else loadDetail(key);
}

function move(step) {
  if (!state.items.length) return;
  const index = state.items.findIndex((item) => rowKey(item) === state.selectedId);
  // A selected row that left the list (claimed, decided) leaves a gap at selectedIndex:
  // "next" is the row now in its place.
  let next = index >= 0 ? index + step : state.selectedIndex + (step > 0 ? 0 : -1);
  next = Math.min(Math.max(next, 0), state.items.length - 1);
  select(rowKey(state.items[next]), { focus: true });
}

/** Shows the filters of the view, and the view's part of the detail panel. */
function applyView() {
  const form = $("#filters");
  form.elements.view.value = state.view;
  for (const el of form.querySelectorAll(".for-cases")) el.hidden = !isCases();
  for (const el of form.querySelectorAll(".for-alerts")) el.hidden = isCases();
  const claimed = form.elements.status.querySelector("option[value=claimed]");
  claimed.disabled = isCases(); // a case is open or decided
  if (isCases() && form.elements.status.value === "claimed") form.elements.status.value = "open";
  $("#queue-title").textContent = isCases() ? "Cases" : "Alerts";
}

function switchView(view) {
  if (view === state.view) return;
  state.view = view;
  localStorage.setItem(VIEW_STORAGE, view);
  state.offset = 0;
  state.items = [];
  state.selectedId = null;
  state.picked.clear();
  state.anchor = null;
  $("#bulk-results").hidden = true;
  closeCase();
  applyView();
  renderQueue();
}

function setupQueue() {
  const form = $("#filters");
  state.view = localStorage.getItem(VIEW_STORAGE) === "alerts" ? "alerts" : "cases";
  applyView();
  const load = () => refreshQueue().catch((error) => report(error, "Loading the queue", "queue"));
  const apply = (event) => {
    if (event?.target?.name === "view") switchView(event.target.value);
    state.offset = 0;
    load();
  };
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  let typing; // the card id filter and the search apply once the analyst pauses typing
  for (const name of ["card_id", "q"]) {
    form.elements[name].addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(apply, 400);
    });
  }
  const page = (step) => () => {
    state.offset = Math.max(0, state.offset + step * PAGE_SIZE);
    load();
  };
  $("#prev-page").addEventListener("click", page(-1));
  $("#next-page").addEventListener("click", page(1));
  setupBulk();
}

// A terminal or card named by a detector event (events.js) opens its cases, of any status.
function showCasesOf(id) {
  if (!id) return;
  switchView("cases");
  const form = $("#filters");
  form.elements.q.value = id;
  form.elements.status.value = "";
  state.offset = 0;
  refreshQueue().catch((error) => report(error, "Loading the queue", "queue"));
  $("#queue-list").focus();
}

// ---------------------------------------------------------------- batch verdicts

/** Picks or unpicks the row ``key``; with shift, every row from the last pick to it. */
function pick(key, event = {}) {
  const keys = state.items.map(rowKey);
  const at = keys.indexOf(key);
  const from = keys.indexOf(state.anchor);
  if (event.shiftKey && from >= 0 && at >= 0) {
    const [lo, hi] = from < at ? [from, at] : [at, from];
    for (const k of keys.slice(lo, hi + 1)) state.picked.add(k);
  } else if (state.picked.has(key)) {
    state.picked.delete(key);
  } else {
    state.picked.add(key);
  }
  state.anchor = key;
  renderQueue();
}

function pickCurrent(range) {
  if (state.selectedId === null) return;
  pick(state.selectedId, { shiftKey: range });
  $(`#queue-list [${rowAttr()}="${CSS.escape(state.selectedId)}"]`)?.focus();
}

function clearPicks() {
  state.picked.clear();
  state.anchor = null;
  renderQueue();
}

function renderBulk() {
  const n = state.picked.size;
  $("#bulk").hidden = n === 0;
  $("#bulk-count").textContent = isCases()
    ? `${n} case${n === 1 ? "" : "s"} selected (their open alerts)`
    : `${n} alert${n === 1 ? "" : "s"} selected`;
  for (const id of ["#bulk-fraud", "#bulk-legit"]) $(id).disabled = state.busy || n === 0;
}

/** The open alerts of the picked cases (or the picked alerts), with what is known of each
 * for the report; a case that cannot be read is a failure of its own. */
async function pickedAlerts() {
  const known = new Map();
  const failures = [];
  if (!isCases()) {
    for (const item of state.items) known.set(item.alert_id, item);
    return { ids: [...state.picked], known, failures };
  }
  const ids = [];
  const cases = await Promise.allSettled([...state.picked].map((card) =>
    api(`/api/cases/${encodeURIComponent(card)}`)));
  [...state.picked].forEach((card, i) => {
    const result = cases[i];
    if (result.status === "rejected") {
      failures.push({ what: `case ${card}`, status: result.reason.status, detail:
        result.reason.message });
      return;
    }
    for (const alert of result.value.alerts ?? []) {
      if (alert.status === "decided") continue;
      known.set(alert.alert_id, alert);
      ids.push(alert.alert_id);
    }
  });
  return { ids, known, failures };
}

/** One POST /api/alerts/verdicts for every picked alert (or the picked cases' open ones). */
async function bulkVerdict(label) {
  if (state.busy || !state.picked.size) return;
  state.busy = true;
  renderBulk();
  const target = $("#bulk-results");
  try {
    const { ids, known, failures } = await pickedAlerts();
    const results = [];
    for (let i = 0; i < ids.length; i += BATCH_MAX) {
      const items = ids.slice(i, i + BATCH_MAX).map((alert_id) => ({ alert_id, label }));
      const out = await api("/api/alerts/verdicts", { method: "POST", body: { items } });
      results.push(...(out?.results ?? []));
    }
    renderResults(target, label, results, known, failures);
    // What failed stays selected, to be looked at or tried again.
    const failed = new Set(results.filter((r) => !r.ok).map((r) => r.alert_id));
    const keep = (key) => (isCases()
      ? [...failed].some((id) => known.get(id)?.card_id === key)
        || failures.some((f) => f.what === `case ${key}`)
      : failed.has(key));
    for (const key of [...state.picked]) if (!keep(key)) state.picked.delete(key);
  } catch (error) {
    report(error, `Marking the selection ${label}`);
  } finally {
    state.busy = false;
  }
  await refreshQueue().catch((error) => report(error, "Loading the queue"));
  refreshStats().catch(() => {});
  refreshCase().catch(() => {});
  if (state.detail) loadDetail(state.detail.alert_id);
}

function setupBulk() {
  $("#bulk-fraud").addEventListener("click", () => bulkVerdict("fraud"));
  $("#bulk-legit").addEventListener("click", () => bulkVerdict("legit"));
  $("#bulk-clear").addEventListener("click", clearPicks);
}

// ---------------------------------------------------------------- case

const caseHandlers = () => ({
  holder, effectiveStatus, shownAlert: state.detail?.alert_id,
  onAlert: (alertId) => loadDetail(alertId, { scroll: true }),
  onReport: reportFraud,
});

/** Reports a payment of the shown case as a fraud the detector let through; a failure is
 * shown and thrown back to the timeline's form. */
async function reportFraud(transactionId, note) {
  const c = state.caseDetail;
  if (!c) return;
  try {
    await api(`/api/transactions/${encodeURIComponent(transactionId)}/fraud`,
      { method: "POST", body: { card_id: c.card_id, note: note || null } });
  } catch (error) {
    report(error, `Reporting ${transactionId} as fraud`);
    throw error;
  }
  showMessage(`Reported ${transactionId} as fraud.`, "info");
  await refreshCase().catch((error) => report(error, "Opening the case"));
}

function closeCase() {
  state.caseDetail = null;
  state.caseRequest += 1;
  $("#case-body").hidden = true;
  $("#case-results").hidden = true;
  $("#case-alert-title").hidden = true;
  state.detail = null;
  state.detailRequest += 1;
  $("#detail-body").hidden = true;
  $("#detail-empty").hidden = false;
  $("#detail-title").textContent = isCases() ? "Case" : "Alert";
  updateButtons();
}

function showCase(c) {
  state.caseDetail = c;
  $("#detail-empty").hidden = true;
  $("#case-body").hidden = false;
  $("#detail-title").textContent = `Case: ${c.card_id}`;
  renderCase(c, caseHandlers());
  updateButtons();
}

async function openCase(cardId) {
  if (state.caseDetail?.card_id !== cardId) {
    closeCase();
    $("#case-verdict-note").value = "";
  }
  const request = ++state.caseRequest;
  try {
    const c = await api(`/api/cases/${encodeURIComponent(cardId)}`);
    if (request === state.caseRequest) showCase(c);
  } catch (error) {
    if (request === state.caseRequest) report(error, "Opening the case");
  }
}

/** The shown case follows changes (new alerts, verdicts, notes); unchanged, it is left be. */
async function refreshCase() {
  const shown = state.caseDetail;
  if (!shown || !isCases() || state.busy) return;
  const request = state.caseRequest;
  const fresh = await api(`/api/cases/${encodeURIComponent(shown.card_id)}`);
  if (request !== state.caseRequest || state.caseDetail !== shown) return;
  const json = (c) => JSON.stringify({ ...c, age_seconds: null });
  if (json(fresh) !== json(shown)) showCase(fresh);
}

/** One verdict for every open alert of the shown case. */
async function caseVerdict(label) {
  const c = state.caseDetail;
  if (!c || state.busy) return;
  state.busy = true;
  updateButtons();
  const note = $("#case-verdict-note").value.trim();
  try {
    const out = await api(`/api/cases/${encodeURIComponent(c.card_id)}/verdicts`,
      { method: "POST", body: { label, note: note || null, alert_ids: null } });
    const known = new Map((c.alerts ?? []).map((a) => [a.alert_id, a]));
    renderResults($("#case-results"), label, out?.results ?? [], known);
    $("#case-verdict-note").value = "";
  } catch (error) {
    report(error, `Marking the case ${label}`);
  } finally {
    state.busy = false;
  }
  await refreshQueue().catch((error) => report(error, "Loading the queue"));
  refreshStats().catch(() => {});
  await refreshCase().catch((error) => report(error, "Opening the case"));
  if (state.detail) loadDetail(state.detail.alert_id);
}

async function addCaseNote(event) {
  event.preventDefault();
  const c = state.caseDetail;
  const input = $("#case-note");
  const text = input.value.trim();
  if (!c || !text || state.busy) return;
  try {
    await api(`/api/cases/${encodeURIComponent(c.card_id)}/notes`,
      { method: "POST", body: { text } });
    input.value = "";
    showMessage("Note added to the case.", "info");
    await refreshCase();
  } catch (error) {
    report(error, "Adding the note");
  }
}

function setupCase() {
  $("#case-fraud").addEventListener("click", () => caseVerdict("fraud"));
  $("#case-legit").addEventListener("click", () => caseVerdict("legit"));
  $("#case-form").addEventListener("submit", (event) => event.preventDefault());
  $("#case-note-form").addEventListener("submit", addCaseNote);
}

// ---------------------------------------------------------------- detail

// AlertDetail nests the queue's AlertItem under "item": flattened for the renderers.
const fetchDetail = async (alertId) => {
  const detail = await api(`/api/alerts/${encodeURIComponent(alertId)}`);
  return { ...(detail.item ?? {}), ...detail };
};

async function loadDetail(alertId, { scroll = false } = {}) {
  const request = ++state.detailRequest;
  try {
    const detail = await fetchDetail(alertId);
    if (request !== state.detailRequest) return;
    renderDetail(detail);
    if (state.caseDetail) {
      // An alert of the open case, below it: the case's table marks which.
      $("#case-alert-title").hidden = false;
      renderCase(state.caseDetail, caseHandlers());
      if (scroll) $("#case-alert-title").scrollIntoView({ block: "start" });
    }
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
    h("button", { type: "button", class: "link",
      onclick: () => (isCases() ? loadDetail(o.alert_id) : select(o.alert_id)) },
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
  const c = state.caseDetail;
  for (const id of ["#case-fraud", "#case-legit"]) $(id).disabled = state.busy || !c?.open_alerts;
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
  if (isCases()) {
    await refreshCase().catch((error) => report(error, "Opening the case"));
    await loadDetail(d.alert_id);
    return;
  }
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
  x: () => pickCurrent(false), X: () => pickCurrent(true), Escape: clearPicks,
};

function onKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  // A checkbox of the queue keeps the shortcuts working (x right after a click on it).
  if (target.closest?.("input:not([type=checkbox]), textarea, select, [contenteditable]")) {
    if (event.key === "Escape" && target.id === "note") target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) {
    if (event.key === "?" && $("#help-dialog").open) toggleHelp();
    return;
  }
  const action = SHORTCUTS[event.key];
  if (!action || (event.key === "Escape" && !state.picked.size)) return;
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

/** A share as a percentage that never reads 100 % or 0 % unless it is exactly that. */
function share(value) {
  if (!isNumber(value)) return "–";
  const text = (value * 100).toFixed(1);
  if (value > 0 && value < 1 && text === "100.0") return "99.9 %";
  if (value > 0 && value < 1 && text === "0.0") return "under 0.1 %";
  return `${text} %`;
}

const plural = (n, one, many = `${one}s`) => `${count(n)} ${n === 1 ? one : many}`;

/** The quality window's counts (older statuses lack some: they are derived or 0). */
function qualityCounts(q) {
  const frauds = q.frauds ?? 0;
  return {
    frauds,
    legit: q.legit ?? Math.max(0, (q.window ?? 0) - frauds),
    alerts: q.alerts ?? 0,
    minFrauds: q.min_frauds ?? 0,
    minLegit: q.min_legit ?? 0,
    minAlerts: q.min_alerts ?? 0,
  };
}

/** A quality figure with the labels it stands on, or why there is none. */
function figure(id, value, text, basis, missing) {
  return h("span", {},
    testid(id, isNumber(value) ? text(value) : missing),
    isNumber(value) ? h("span", { class: "basis", "data-testid": `${id}-basis` }, ` ${basis}`)
      : null);
}

function qualityRows(q) {
  const c = qualityCounts(q);
  const sources = Object.entries(q.sources ?? {})
    .sort((a, b) => b[1] - a[1]).map(([name, n]) => `${name} ${count(n)}`).join(", ");
  const ranked = `on ${plural(c.frauds, "fraud")}, ${count(c.legit)} legit`;
  const tooFew = `too few labels (${plural(c.frauds, "fraud")}, ${count(c.legit)} legit; ` +
    `needs ${c.minFrauds} and ${c.minLegit})`;
  return [
    pair("Window", testid("model-window",
      `${count(q.window)} labelled: ${plural(c.frauds, "fraud")}, ${count(c.legit)} legit, ` +
      `${plural(c.alerts, "alert")}` + (sources ? ` · from ${sources}` : ""))),
    pair("Online AUC", figure("model-auc", q.auc, fixed, ranked, tooFew)),
    pair("Alert precision", figure("model-precision", q.alert_precision, share,
      `of ${plural(c.alerts, "labelled alert")}`,
      `too few labelled alerts (${count(c.alerts)}; needs ${c.minAlerts})`)),
    pair("Alert recall", figure("model-recall", q.alert_recall, share,
      `of ${plural(c.frauds, "fraud")}`,
      `too few labels (${plural(c.frauds, "fraud")}; needs ${c.minFrauds})`)),
  ].flat();
}

/** The verdicts on the unbiased sample of allowed payments, and what they tell of the
 * whole traffic (older statuses lack them: no rows). */
function sampleRows(q, deciding) {
  if (!q.by_origin) return [];
  const sample = q.by_origin.exploration ?? { labels: 0, frauds: 0 };
  const basis = `from ${plural(sample.labels, "sample label")}`;
  const missing = deciding
    ? `too few sample labels (${count(sample.labels)}; needs ${q.min_exploration ?? 0})`
    : "the deciding model's only";
  return [
    pair("Unbiased sample", testid("model-sample",
      `${plural(sample.labels, "label")}, ${plural(sample.frauds, "fraud")}`)),
    pair("Fraud among allowed", figure("model-allowed-fraud", q.allowed_fraud_rate, share,
      `(estimated ${basis})`, missing)),
    pair("Estimated recall", figure("model-estimated-recall", q.estimated_recall, share,
      `of all frauds (estimated ${basis})`, missing)),
  ].flat();
}

const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}, ...children) => {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  el.append(...children);
  return el;
};

/** An SVG path through the points' values, broken where a value is null (a gap). */
function sparkPath(values, width, height) {
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  let path = "";
  let open = false;
  values.forEach((value, i) => {
    if (!isNumber(value)) { open = false; return; }
    const x = (i * step).toFixed(1);
    const y = (height - value * height).toFixed(1);
    path += `${open ? "L" : "M"}${x} ${y} `;
    open = true;
  });
  return path.trim();
}

/** The quality trend as a sparkline: AUC and alert precision, gaps below the minimum. */
function trendChart(trend) {
  if (!Array.isArray(trend) || trend.length === 0) return null;
  const [width, height] = [160, 32];
  const auc = trend.map((p) => p.auc);
  const precision = trend.map((p) => p.alert_precision);
  const last = trend[trend.length - 1];
  const label = `Quality over the last ${plural(trend.length, "status period")} with labels: ` +
    `AUC (solid) and alert precision (dashed), 0 to 1; gaps where labels were too few. ` +
    `Latest: AUC ${fixed(last.auc)}, precision ${share(last.alert_precision)} ` +
    `on ${count(last.window)} labels.`;
  const chart = svg("svg", {
    class: "sparkline", viewBox: `-1 -1 ${width + 2} ${height + 2}`, width, height,
    preserveAspectRatio: "none",
    role: "img", "aria-label": label, "data-testid": "model-trend",
    "data-points": trend.length,
  },
  svg("title", {}, label),
  svg("line", { class: "spark-axis", x1: 0, y1: height, x2: width, y2: height }),
  svg("path", { class: "spark-auc", d: sparkPath(auc, width, height),
    "data-testid": "model-trend-auc" }),
  svg("path", { class: "spark-precision", d: sparkPath(precision, width, height),
    "data-testid": "model-trend-precision" }));
  return chart;
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
      qualityRows(q),
      sampleRows(q, m.deciding),
      pair("Trend", trendChart(m.trend) ?? "no labels yet"),
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
      [refreshQueue(), refreshDetail(), refreshCase(), refreshModels(), refreshStats()]);
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
  if (kinds.has("alert")) jobs.push(refreshQueue(), refreshDetail(), refreshCase(), refreshStats());
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
  setupCase();
  $("#help-button").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", onKey);
  window.addEventListener("fraudstream:cases-of", (event) => showCasesOf(event.detail?.id));
  document.addEventListener("visibilitychange", tick);
  updateButtons();
  if (state.key) refreshAll();
  else askForKey();
  state.live = startLive({ key: () => state.key, onChange: onLiveChange, onState: () => {} });
  $("#key-form").addEventListener("submit", () => state.live.restart());
  setInterval(tick, POLL_MS); // only while the stream is down
}

start();
