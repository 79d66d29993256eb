// Thresholds and the deciding model, for admins: the thresholds in force (from the
// deciding model's status) with a form to change them, a "make deciding" button on each
// other model's card, and the history of admin changes (who, when, what).
// Plain ES module beside app.js and policy.js; API text goes through text nodes only.

import { $, KEY_STORAGE, call, fixed, h, percent } from "./dom.js";

const POLL_MS = 15_000; // the live stream's "models" and "control" events refresh sooner

let admin = null; // null: not known yet; then true or false
let models = [];

function say(text, kind = "error") {
  const box = $("#admin-message");
  box.textContent = text;
  box.className = `policy-message ${kind}`;
  box.hidden = !text;
}

async function change(what, path, body) {
  try {
    await call(path, { method: "PUT", body });
    say(`${what}: sent to the detector.`, "ok");
    await refresh();
  } catch (error) {
    say(`${what} refused: ${error.message}`);
  }
}

const field = (label, name, attrs = {}) => h("label", {}, `${label} `,
  h("input", { name, type: "number", step: "any", min: "0", "data-testid": `admin-${name}`, ...attrs }));

function build() {
  const form = h("form", { id: "admin-thresholds-form", class: "policy-form",
    "data-testid": "admin-thresholds-form" },
    h("label", {}, "Mode ", h("select", { name: "mode", "data-testid": "admin-mode" },
      ...["fixed", "volume", "capacity"].map((m) => h("option", { value: m }, m)))),
    field("Review ≥", "review_threshold", { max: "1" }),
    field("Block ≥", "block_threshold", { max: "1" }),
    field("Review share", "review_share", { max: "1" }),
    field("Block share", "block_share", { max: "1" }),
    field("Alerts an hour", "review_capacity_per_hour", { step: "1" }),
    h("button", { type: "submit", "data-testid": "admin-thresholds-set" }, "Set thresholds"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { mode: data.get("mode") };
    for (const name of ["review_threshold", "block_threshold", "review_share", "block_share",
      "review_capacity_per_hour"]) {
      const value = String(data.get(name) ?? "").trim();
      if (value) body[name] = Number(value);
    }
    change("Changing the thresholds", "/api/models/thresholds", body);
  });
  const section = h("section", { id: "admin", class: "policy", "data-testid": "admin",
    "aria-labelledby": "admin-title", hidden: true },
    h("h2", { id: "admin-title" }, "Thresholds and deciding model"),
    h("p", { id: "admin-message", class: "policy-message", role: "status",
      "data-testid": "admin-message", hidden: true }),
    h("h3", {}, "Thresholds in force"),
    h("p", { id: "admin-thresholds-now", "data-testid": "admin-thresholds-now" }, "–"),
    form,
    h("h3", {}, "Admin changes"),
    h("p", { id: "admin-history-empty", class: "empty" }, "No changes yet."),
    h("ol", { id: "admin-history", class: "policy-items", "data-testid": "admin-history" }));
  ($("#policy") ?? $("#models")).after(section);
}

function inForce(m) {
  if (!m) return "no model status received yet";
  const fixedPart = `review ≥ ${fixed(m.review_threshold)}, block ≥ ${fixed(m.block_threshold)}`;
  if (m.threshold_mode === "volume") {
    return `volume: review ${percent(m.review_share)}, block ${percent(m.block_share)} (${fixedPart})`;
  }
  if (m.threshold_mode === "capacity") {
    return `capacity: ${m.review_capacity_per_hour ?? "?"} alerts an hour (${fixedPart})`;
  }
  return `${m.threshold_mode ?? "?"}: ${fixedPart}`;
}

function describe(event) {
  const d = event.details ?? {};
  if (event.action === "set_deciding_model") return `deciding model → ${d.model_name ?? "?"}`;
  if (event.action === "set_thresholds") {
    const t = d.thresholds ?? d;
    const parts = Object.entries(t).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k} ${v}`);
    return `thresholds: ${parts.join(", ")}`;
  }
  return `${event.action} ${JSON.stringify(d)}`;
}

/** A "make deciding" button on each model card that is not deciding (cards come and go). */
function decorateCards() {
  for (const card of document.querySelectorAll("[data-testid=model][data-model]")) {
    const name = card.dataset.model;
    const deciding = models.find((m) => m.model_name === name)?.deciding;
    let button = card.querySelector("[data-testid=admin-make-deciding]");
    if (!admin || deciding) {
      button?.remove();
      continue;
    }
    if (button) continue;
    button = h("button", { type: "button", class: "small", "data-testid": "admin-make-deciding",
      onclick: () => change(`Making ${name} deciding`, "/api/models/deciding", { model_name: name }),
    }, "Make deciding");
    card.append(button);
  }
}

async function refresh() {
  if (!localStorage.getItem(KEY_STORAGE) || document.hidden) return;
  try {
    if (admin === null) admin = (await call("/api/me"))?.role === "admin";
    $("#admin").hidden = !admin;
    if (!admin) return decorateCards();
    const [statuses, history] = await Promise.all([
      call("/api/models"), call("/api/control/history?limit=50")]);
    models = (statuses ?? []).map((m) => m.status).filter(Boolean);
    $("#admin-thresholds-now").textContent = inForce(models.find((m) => m.deciding));
    $("#admin-history").replaceChildren(...(history ?? []).map((event) =>
      h("li", { "data-testid": "admin-history-item", "data-action": event.action },
        h("time", { datetime: event.at }, new Date(event.at).toLocaleString()), " ",
        h("strong", {}, event.actor), ` ${describe(event)}`)));
    $("#admin-history-empty").hidden = (history ?? []).length > 0;
    decorateCards();
  } catch {
    admin = null; // a new key, or the service away: ask again next time
  }
}

function setup() {
  build();
  new MutationObserver(decorateCards).observe($("#models"), { childList: true });
  window.addEventListener("storage", () => { admin = null; });
  // The live stream (live.js) tells when models or admin changes arrived.
  window.addEventListener("fraudstream:live", (event) => {
    const kinds = event.detail?.kinds;
    if (!kinds || kinds.has("models") || kinds.has("control") || kinds.has("resync")) refresh();
  });
  refresh();
  setInterval(refresh, POLL_MS);
}

setup();
