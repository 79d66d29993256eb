// Attacks and drifts the detector noticed (GET /api/detector-events), in a strip above
// the queue, newest first. The live stream's "detector_event" brings a new one at once;
// while the stream is down the strip polls. A terminal or card of an event opens its
// cases in the queue (app.js listens for "fraudstream:cases-of").
// Plain ES module beside app.js; every API text goes through text nodes, never innerHTML.

import { $, KEY_STORAGE, call, h, isNumber, when } from "./dom.js";

const SHOWN = 20; // the newest events in the strip
const NAMES_SHOWN = 6; // terminals or cards named per event; the rest are counted
const POLL_MS = 15_000; // only while the live stream is down

// Each kind: what people call it, and whether it is an attack or a drift (its colour).
const KINDS = {
  terminal_burst: ["terminal burst", "attack"],
  card_testing: ["card testing", "attack"],
  score_shift: ["score shift", "drift"],
  fraud_rate_change: ["fraud rate change", "drift"],
  feature_shift: ["feature shift", "drift"],
};

let seen = null; // event ids (and their detection times) already shown: null before the first load

const number = (value) =>
  isNumber(value) ? value.toLocaleString("en", { maximumSignificantDigits: 4 }) : "–";

/** "3 → 41 (+38 cards)": the value before, now, and how much it moved in its unit. */
function howMuch(event) {
  const change = event.unit === "ratio"
    ? `×${number(event.change)}`
    : `${event.change > 0 ? "+" : ""}${number(event.change)} ${event.unit}`;
  return `${number(event.before)} → ${number(event.after)} (${change})`;
}

/** Asks the queue (app.js) to show the cases of a terminal or card. */
function openCases(id) {
  window.dispatchEvent(new CustomEvent("fraudstream:cases-of", { detail: { id } }));
}

function names(label, ids, what) {
  if (!Array.isArray(ids) || ids.length === 0) return null;
  const shown = ids.slice(0, NAMES_SHOWN);
  return h("span", { class: "event-names" }, `${label}: `,
    shown.map((id, i) => [i ? ", " : "", h("button", {
      type: "button", class: "link", "data-testid": `event-${what}`, "data-id": id,
      title: `Open the cases of ${what} ${id}`, onclick: () => openCases(id),
    }, id)]),
    ids.length > shown.length ? ` and ${ids.length - shown.length} more` : "");
}

function row(event, fresh) {
  const [name, family] = KINDS[event.kind] ?? [String(event.kind), "drift"];
  return h("li", {
    class: `event${fresh ? " fresh" : ""}`, "data-testid": "detector-event",
    "data-kind": event.kind, "data-event-id": event.event_id,
  },
  h("span", { class: `badge badge-${family}` }, name),
  h("span", { class: "event-summary", "data-testid": "event-summary" }, event.summary),
  h("span", { class: "event-amount", "data-testid": "event-amount" }, howMuch(event)),
  h("span", { class: "event-since" }, "since ",
    when(event.since, { title: "Began (transaction time): " })),
  names("Terminals", event.terminals, "terminal"),
  names("Cards", event.cards, "card"));
}

function render(page) {
  const items = page?.items ?? [];
  const total = page?.total ?? items.length;
  const version = (event) => `${event.event_id} ${event.detected_at}`;
  const before = seen;
  seen = new Set(items.map(version));
  $("#detector-events-list").replaceChildren(
    ...items.map((event) => row(event, before !== null && !before.has(version(event)))));
  $("#detector-events-count").textContent = total > items.length
    ? `${items.length} newest of ${total}` : total ? String(total) : "";
  const empty = $("#detector-events-empty");
  empty.textContent = "No attack or drift noticed.";
  empty.hidden = items.length > 0;
}

async function refresh() {
  if (!localStorage.getItem(KEY_STORAGE) || document.hidden) return;
  try {
    render(await call(`/api/detector-events?limit=${SHOWN}`));
  } catch (error) {
    const empty = $("#detector-events-empty");
    empty.textContent = `Detector events could not be loaded: ${error.message}`;
    empty.hidden = false;
  }
}

function setup() {
  // The live stream (live.js) tells when an event arrived, or that everything must reload.
  window.addEventListener("fraudstream:live", (event) => {
    const kinds = event.detail?.kinds;
    if (!kinds || kinds.has("detector_event") || kinds.has("resync")) refresh();
  });
  window.addEventListener("storage", refresh);
  document.addEventListener("visibilitychange", refresh);
  refresh();
  setInterval(() => {
    if ($("#live")?.dataset.state !== "live") refresh();
  }, POLL_MS);
}

setup();
