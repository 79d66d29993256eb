// Cases on the analysts' page: a card's alerts worked together. The queue row of a case,
// the case itself (its card's timeline, its alerts, its notes) and the result of a batch
// of verdicts. Views only: app.js fetches, keeps the state and wires the buttons.

import { $, badge, duration, fixed, h, money, pair, s, when } from "./dom.js";

// ---------------------------------------------------------------- queue row

/** A case in the queue: the button opens it; the checkbox picks it for a batch verdict. */
export function caseRow(item, { current, picked, holder, onOpen, onPick }) {
  const open = item.open_alerts ?? 0;
  const claim = item.claimed_by ? `claimed by ${holder(item.claimed_by)}` : "";
  const reason = item.top_reason ?? "";
  const props = {
    type: "button",
    class: "queue-item",
    "data-testid": "case-item",
    "data-card-id": item.card_id,
    "aria-current": current ? "true" : null,
    onclick: () => onOpen(item.card_id),
  };
  return h("li", { class: `queue-row${picked ? " picked" : ""}` },
    h("input", {
      type: "checkbox", class: "pick", "data-testid": "pick", checked: picked,
      "aria-label": `Select the case of card ${item.card_id}`,
      onclick: (event) => onPick(item.card_id, event),
    }),
    h("button", props,
      h("span", { class: "score", title: "Highest score" }, fixed(item.max_score, 2)),
      item.decision ? badge(item.decision) : h("span", {}),
      h("span", { class: "amount", title: "Amount at risk: the open alerts' amounts" },
        money(item.amount_at_risk, item.currency)),
      h("span", { class: "age", title: "Oldest open alert waiting for" },
        item.status === "open" ? duration(item.age_seconds) : badge("decided")),
      h("span", { class: "reason", title: reason }, reason || "–"),
      h("span", { class: "where" }, h("span", { title: "Card" }, item.card_id), " · ",
        h("span", { "data-testid": "case-alerts-count" },
          `${open} open of ${item.alerts} alert${item.alerts === 1 ? "" : "s"}`)),
      h("span", { class: "state" }, claim)));
}

// ---------------------------------------------------------------- timeline

const DECISION_COLOURS = { allow: "#4a5361", review: "#a15c00", block: "#b42318" };
const VERDICT_MARKS = { fraud: ["✗", "#b42318"], legit: ["✓", "#146c2e"] };
const W = 640;
const H = 230;
const PAD = { left: 46, right: 12, top: 22, bottom: 30 };

/** The decision's shape at (x, y): allow a circle, review a diamond, block a square. */
function marker(decision, x, y) {
  const fill = DECISION_COLOURS[decision] ?? DECISION_COLOURS.allow;
  if (decision === "block") {
    return s("rect", { x: x - 5, y: y - 5, width: 10, height: 10, fill });
  }
  if (decision === "review") {
    return s("path", { d: `M${x} ${y - 6.5}L${x + 6.5} ${y}L${x} ${y + 6.5}L${x - 6.5} ${y}Z`,
      fill });
  }
  return s("circle", { cx: x, cy: y, r: 4.5, fill });
}

function tickAmounts(low, high) {
  const ticks = [];
  for (let power = Math.floor(low); power <= Math.ceil(high); power += 1) {
    for (const step of [1, 2, 5]) {
      const value = step * 10 ** power;
      const at = Math.log10(value);
      if (at >= low - 1e-9 && at <= high + 1e-9) ticks.push(value);
    }
  }
  // Only the powers of ten when the range is wide: the labels must not collide.
  return ticks.length > 7 ? ticks.filter((v) => Number.isInteger(Math.log10(v))) : ticks;
}

function shortTime(ms, span) {
  const date = new Date(ms);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (span < 20 * 3600 * 1000) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function pointText(p, currency) {
  const parts = [
    new Date(p.transaction_time).toLocaleString(), money(p.amount, currency),
    `terminal ${p.terminal_id}`, `score ${fixed(p.score, 2)}`, p.decision,
  ];
  if (p.alert_id) parts.push(`alert ${p.status ?? "?"}`);
  if (p.label) parts.push(`verdict ${p.label}`);
  return parts.join(" · ");
}

/** The card's transactions in the window as an inline SVG: x the transaction time, y the
 * amount (log scale); shape and colour the decision, a ring an alert, ✗/✓ the verdict. */
export function timelineChart(points, { currency, onPoint }) {
  const times = points.map((p) => new Date(p.transaction_time).getTime());
  const logs = points.map((p) => Math.log10(Math.max(p.amount, 0.01)));
  let [t0, t1] = [Math.min(...times), Math.max(...times)];
  if (!(t1 > t0)) [t0, t1] = [t0 - 3600e3, t1 + 3600e3];
  const margin = 0.03 * (t1 - t0); // the rings of the first and last points fit inside
  [t0, t1] = [t0 - margin, t1 + margin];
  let [a0, a1] = [Math.min(...logs), Math.max(...logs)];
  if (!(a1 - a0 >= 1)) [a0, a1] = [(a0 + a1) / 2 - 0.5, (a0 + a1) / 2 + 0.5];
  a0 -= 0.08 * (a1 - a0);
  a1 += 0.08 * (a1 - a0);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (a) => H - PAD.bottom - ((a - a0) / (a1 - a0)) * (H - PAD.top - PAD.bottom);

  const grid = tickAmounts(a0, a1).map((value) => {
    const at = y(Math.log10(value));
    return s("g", { class: "tick" },
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: at, y2: at, stroke: "#d0d5dd" }),
      s("text", { x: PAD.left - 6, y: at + 4, "text-anchor": "end" },
        value.toLocaleString("en", { notation: "compact" })));
  });
  const xTicks = [0, 1 / 3, 2 / 3, 1].map((f) => {
    const t = t0 + f * (t1 - t0);
    const anchor = f === 0 ? "start" : f === 1 ? "end" : "middle";
    return s("text", { x: x(t), y: H - 8, "text-anchor": anchor, class: "tick" },
      shortTime(t, t1 - t0));
  });
  const dots = points.map((p, i) => {
    const [px, py] = [x(times[i]), y(logs[i])];
    const mark = VERDICT_MARKS[p.label];
    return s("g", {
      class: `point${p.alert_id ? " alerted" : ""}`, "data-testid": "timeline-point",
      "data-transaction-id": p.transaction_id, "data-decision": p.decision,
      "data-label": p.label ?? null, tabindex: p.alert_id ? 0 : null,
      role: p.alert_id ? "button" : "img", "aria-label": pointText(p, currency),
      onclick: p.alert_id ? () => onPoint(p.alert_id) : null,
      onkeydown: p.alert_id ? (e) => e.key === "Enter" && onPoint(p.alert_id) : null,
    },
    s("title", {}, pointText(p, currency)),
    p.alert_id ? s("circle", { cx: px, cy: py, r: 9.5, fill: "none", stroke: "#1d4ed8",
      "stroke-width": 2 }) : null,
    marker(p.decision, px, py),
    mark ? s("text", { x: px, y: py - 12, "text-anchor": "middle", fill: mark[1],
      "font-weight": 700, class: "verdict" }, mark[0]) : null);
  });
  return s("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "timeline", "data-testid": "timeline", role: "group",
    "aria-label": `The card's ${points.length} transactions: time across, amount up (log scale)`,
  },
  grid,
  s("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom,
    stroke: "#8a94a6" }),
  s("text", { x: 4, y: 12, class: "axis" }, "amount"),
  xTicks, dots);
}

function legend() {
  const item = (shape, text) => h("li", {},
    s("svg", { viewBox: "0 0 20 20", width: 16, height: 16, "aria-hidden": "true" }, shape),
    ` ${text}`);
  return h("ul", { class: "legend", "aria-label": "Legend" },
    item(marker("allow", 10, 10), "allow"), item(marker("review", 10, 10), "review"),
    item(marker("block", 10, 10), "block"),
    item(s("circle", { cx: 10, cy: 10, r: 7, fill: "none", stroke: "#1d4ed8",
      "stroke-width": 2 }), "alert"),
    item(s("text", { x: 10, y: 15, "text-anchor": "middle", fill: VERDICT_MARKS.fraud[1],
      "font-weight": 700 }, "✗"), "fraud"),
    item(s("text", { x: 10, y: 15, "text-anchor": "middle", fill: VERDICT_MARKS.legit[1],
      "font-weight": 700 }, "✓"), "legit"));
}

/** A payment without an alert can be reported as a fraud the detector let through: the
 * button opens a note field; ``onReport(transactionId, note)`` sends it (a promise). */
function reportCell(p, onReport, reported) {
  if (p.alert_id || !onReport) return h("td", {}, "");
  const done = () => h("span", { "data-testid": "reported" }, badge("reported", "fraud"));
  if (reported(p.transaction_id)) return h("td", {}, done());
  const cell = h("td", {});
  const button = () => h("button", {
    type: "button", class: "link", "data-testid": "report-fraud",
    title: "Report this payment as a fraud the detector missed",
    onclick: () => cell.replaceChildren(form()),
  }, "Report fraud");
  const form = () => {
    const note = h("input", { type: "text", maxlength: 2000, "data-testid": "report-note",
      placeholder: "Why (optional)", "aria-label": `Why ${p.transaction_id} is a fraud` });
    const send = h("button", { type: "submit", "data-testid": "report-send" }, "Report");
    const cancel = h("button", { type: "button", onclick: () => cell.replaceChildren(button()) },
      "Cancel");
    const box = h("form", { class: "report-form" }, note, send, cancel);
    box.addEventListener("submit", async (event) => {
      event.preventDefault();
      send.disabled = true;
      try {
        await onReport(p.transaction_id, note.value.trim());
        cell.replaceChildren(done());
      } catch {
        send.disabled = false; // the page's message says why
      }
    });
    setTimeout(() => note.focus(), 0);
    return box;
  };
  cell.append(button());
  return cell;
}

function timelineTable(points, currency, { onPoint, onReport, reported }) {
  const rows = [...points].reverse().map((p) => h("tr", { "data-transaction-id": p.transaction_id },
    h("td", {}, p.alert_id
      ? h("button", { type: "button", class: "link", onclick: () => onPoint(p.alert_id) },
        when(p.transaction_time))
      : when(p.transaction_time)),
    h("td", { class: "num" }, money(p.amount, currency)),
    h("td", {}, p.terminal_id),
    h("td", { class: "num" }, fixed(p.score, 2)),
    h("td", {}, badge(p.decision)),
    h("td", {}, p.label ? badge(p.label, `label-${p.label}`) : p.status ? badge(p.status) : "–"),
    reportCell(p, onReport, reported)));
  return h("details", { class: "timeline-table" },
    h("summary", {}, `All ${points.length} transactions`),
    h("table", { class: "grid", "data-testid": "timeline-table" },
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "When"), h("th", { scope: "col", class: "num" }, "Amount"),
        h("th", { scope: "col" }, "Terminal"), h("th", { scope: "col", class: "num" }, "Score"),
        h("th", { scope: "col" }, "Decision"), h("th", { scope: "col" }, "Alert / verdict"),
        h("th", { scope: "col" }, "Missed fraud"))),
      h("tbody", {}, rows)));
}

// ---------------------------------------------------------------- the case

// A CaseDetail lists its alerts under "alerts", where a CaseItem counts them.
const alertCount = (c) => (Array.isArray(c.alerts) ? c.alerts.length : c.alerts);

function caseSummary(c, holder) {
  return [
    h("p", { class: "headline" },
      h("span", { class: "big-score", "data-testid": "case-score" }, fixed(c.max_score, 3)),
      c.decision ? badge(c.decision) : null,
      h("span", { class: "big-amount", title: "Amount at risk" },
        money(c.amount_at_risk, c.currency))),
    h("dl", { class: "kv", "data-testid": "case-facts" },
      pair("Card", c.card_id),
      pair("Alerts", `${c.open_alerts} open of ${alertCount(c)}`),
      pair("Status", [badge(c.status),
        c.claimed_by ? [" · claimed by ", h("strong", {}, holder(c.claimed_by))] : []]),
      pair("Waiting", c.status === "open" ? duration(c.age_seconds) : "–"),
      pair("Top reason", c.top_reason ?? "–"),
      pair("Window", `${c.window_hours} h up to the newest alert`)),
  ];
}

/** The case's alerts, newest first: each opens below, to be decided on its own. */
function caseAlerts(c, { shownAlert, effectiveStatus, holder, onAlert }) {
  const alerts = c.alerts ?? [];
  if (!alerts.length) return [h("tr", {}, h("td", { colspan: 7 }, "None."))];
  return alerts.map((a) => {
    const status = effectiveStatus(a);
    const reason = a.reasons?.[0] ?? "";
    return h("tr", {
      "data-testid": "case-alert", "data-alert-id": a.alert_id,
      "aria-current": a.alert_id === shownAlert ? "true" : null,
    },
    h("td", {}, h("button", { type: "button", class: "link", onclick: () => onAlert(a.alert_id),
      title: `Open the alert ${a.alert_id}` }, when(a.transaction_time))),
    h("td", { class: "num" }, money(a.amount, a.currency)),
    h("td", { class: "num" }, fixed(a.score, 2)),
    h("td", {}, badge(a.decision)),
    h("td", { class: "reason-cell", title: reason }, reason || "–"),
    h("td", {}, a.terminal_id),
    h("td", {}, a.label ? badge(a.label, `label-${a.label}`) : badge(status),
      status === "claimed" ? ` ${holder(a.claimed_by)}` : ""));
  });
}

function caseNotes(c) {
  const notes = c.notes ?? [];
  if (!notes.length) return [h("li", { class: "empty" }, "No notes yet.")];
  return notes.map((n) => h("li", { "data-testid": "case-note" },
    h("span", { class: "note-text" }, n.text),
    h("span", { class: "meta" }, ` — ${n.author}, `, when(n.created_at))));
}

/** Fills the case part of the detail panel with ``c`` (a CaseDetail). */
export function renderCase(c, handlers) {
  $("#case-summary").replaceChildren(...caseSummary(c, handlers.holder));
  const points = c.timeline ?? [];
  const onPoint = handlers.onAlert;
  // a report of a missed fraud leaves its note on the case (api/review/verdicts.py)
  const reported = (tx) => (c.notes ?? [])
    .some((n) => n.text.startsWith(`Reported transaction ${tx} (`));
  $("#case-timeline").replaceChildren(...(points.length
    ? [timelineChart(points, { currency: c.currency, onPoint }), legend(),
      timelineTable(points, c.currency, { onPoint, onReport: handlers.onReport, reported })]
    : [h("p", { class: "empty" }, "No transactions of this card in the window.")]));
  $("[data-testid=case-alerts] tbody").replaceChildren(...caseAlerts(c, handlers));
  $("#case-notes").replaceChildren(...caseNotes(c));
}

// ---------------------------------------------------------------- batch results

/** The outcome of a batch of verdicts: a count, then every failure on a line of its own
 * (``known`` maps an alert id to {card_id, transaction_id} for a readable line). */
export function renderResults(target, label, results, known, extra = []) {
  const failed = results.filter((r) => !r.ok);
  const done = results.length - failed.length;
  const summary = h("li", { class: failed.length || extra.length ? "partial" : "done",
    "data-testid": "results-summary" },
  `Marked ${label}: ${done} of ${results.length + extra.length} alert` +
    `${results.length + extra.length === 1 ? "" : "s"}` +
    (failed.length + extra.length ? `; ${failed.length + extra.length} failed:` : "."));
  const line = (what, status, detail) => h("li", { class: "failure", "data-testid": "failure" },
    h("strong", {}, what), ` — ${status ? `${status}: ` : ""}${detail ?? "refused"}`);
  const lines = failed.map((r) => {
    const about = known.get(r.alert_id);
    const what = about ? `card ${about.card_id} · ${about.transaction_id}` : r.alert_id;
    const kind = r.status === 409 ? "conflict" : r.status === 404 ? "not found" : r.status;
    return line(what, kind, r.detail);
  });
  target.replaceChildren(summary, ...lines,
    ...extra.map((e) => line(e.what, e.status, e.detail)));
  target.hidden = false;
}
