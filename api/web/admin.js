// Thresholds and models, for admins: the thresholds in force (from the deciding model's
// status) with a form to change them, a "make deciding" button on each other model's
// card, the models with their version and checkpoints (start a challenger, retire one,
// roll one back), and the history of admin changes (who, when, what).
// Plain ES module beside app.js and policy.js; API text goes through text nodes only.

import { $, KEY_STORAGE, call, fixed, h, percent } from "./dom.js";

const POLL_MS = 15_000; // the live stream's "models" and "control" events refresh sooner

let admin = null; // null: not known yet; then true or false
let models = [];
const chosen = new Map(); // model -> the checkpoint picked, kept when the list refreshes

function say(text, kind = "error") {
  const box = $("#admin-message");
  box.textContent = text;
  box.className = `policy-message ${kind}`;
  box.hidden = !text;
}

async function change(what, path, body, method = "PUT") {
  try {
    await call(path, { method, body });
    say(`${what}: sent to the detector.`, "ok");
    await refresh();
  } catch (error) {
    say(`${what} refused: ${error.message}`);
  }
}

const field = (label, name, attrs = {}) => h("label", {}, `${label} `,
  h("input", { name, type: "number", step: "any", min: "0", "data-testid": `admin-${name}`, ...attrs }));

// The hyper-parameters a challenger may set, and the kinds that take each (as the API).
const PARAMETERS = [
  ["warmup_frauds", "Warm-up frauds", ["logreg", "tree", "forest"], "1"],
  ["learning_rate", "Learning rate", ["logreg"], "any"],
  ["l2", "L2", ["logreg"], "any"],
  ["grace_period", "Grace period", ["tree", "forest"], "1"],
  ["n_models", "Trees", ["forest"], "1"],
  ["seed", "Seed", ["tree", "forest"], "1"],
];

function challengerForm() {
  const kind = h("select", { name: "kind", "data-testid": "admin-model-kind" },
    ...["logreg", "tree", "forest"].map((k) => h("option", { value: k }, k)));
  const params = PARAMETERS.map(([name, label, kinds, step]) => h("label",
    { "data-kinds": kinds.join(" ") }, `${label} `,
    h("input", { name, type: "number", step, min: "0", "data-testid": `admin-model-${name}` })));
  const show = () => {
    // (the form's labels are grids: "hidden" alone would not hide them)
    for (const label of params) {
      label.style.display = label.dataset.kinds.split(" ").includes(kind.value) ? "" : "none";
    }
  };
  kind.addEventListener("change", show);
  show();
  const form = h("form", { id: "admin-model-form", class: "policy-form",
    "data-testid": "admin-model-form" },
    h("label", {}, "Name ", h("input", { name: "name", required: true, maxlength: "64",
      placeholder: "tree-fast", "data-testid": "admin-model-name" })),
    h("label", {}, "Kind ", kind), ...params,
    h("button", { type: "submit", "data-testid": "admin-model-add" }, "Start challenger"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: String(data.get("name") ?? "").trim(), kind: kind.value, params: {} };
    for (const [name, , kinds] of PARAMETERS) {
      const value = String(data.get(name) ?? "").trim();
      if (value && kinds.includes(kind.value)) body.params[name] = Number(value);
    }
    change(`Starting ${body.name}`, "/api/models", body, "POST");
  });
  return form;
}

function describeSpec(spec) {
  if (!spec) return "";
  const params = Object.entries(spec.params ?? {}).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${v}`);
  return params.length ? `${spec.kind} (${params.join(", ")})` : spec.kind;
}

/** One model: its version and what it is, its checkpoints to roll back to, retire. */
function modelItem(m) {
  const name = m.model_name;
  const checkpoints = m.checkpoints ?? [];
  const pick = h("select", { "data-testid": "admin-checkpoint", "aria-label": `Checkpoint of ${name}`,
    onchange: () => chosen.set(name, pick.value) },
    ...checkpoints.slice().reverse().map((c) => h("option", { value: c.checkpoint_id,
      selected: chosen.get(name) === c.checkpoint_id },
    `${c.checkpoint_id}: ${c.labels_learned.toLocaleString("en")} labels, `
      + `${new Date(c.saved_at).toLocaleString()}`)));
  return h("li", { "data-testid": "admin-model", "data-model": name },
    h("span", {}, h("strong", {}, name), m.deciding ? " (deciding)" : ""),
    h("code", { "data-testid": "admin-model-version" }, m.model_version),
    h("span", { class: "muted" }, describeSpec(m.spec)),
    checkpoints.length
      ? h("span", {}, pick, " ", h("button", { type: "button", class: "small",
        "data-testid": "admin-rollback", onclick: () => change(`Rolling ${name} back`,
          `/api/models/${encodeURIComponent(name)}/rollback`, { checkpoint_id: pick.value }, "POST"),
      }, "Roll back"))
      : h("span", { class: "muted", "data-testid": "admin-no-checkpoint" }, "no checkpoint yet"),
    m.deciding ? null : h("button", { type: "button", class: "small", "data-testid": "admin-retire",
      onclick: () => {
        if (window.confirm(`Retire ${name}? Its checkpoints are deleted.`)) {
          change(`Retiring ${name}`, `/api/models/${encodeURIComponent(name)}`, undefined, "DELETE");
        }
      },
    }, "Retire"));
}

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
    h("h2", { id: "admin-title" }, "Thresholds and models"),
    h("p", { id: "admin-message", class: "policy-message", role: "status",
      "data-testid": "admin-message", hidden: true }),
    h("h3", {}, "Thresholds in force"),
    h("p", { id: "admin-thresholds-now", "data-testid": "admin-thresholds-now" }, "–"),
    form,
    h("h3", {}, "Models"),
    h("ol", { id: "admin-models", class: "policy-items", "data-testid": "admin-models" }),
    h("h4", {}, "Start a challenger"),
    challengerForm(),
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
  if (event.action === "add_model") return `challenger started: ${d.model_spec?.name ?? "?"} ${describeSpec(d.model_spec)}`;
  if (event.action === "retire_model") return `model retired: ${d.model_name ?? "?"}`;
  if (event.action === "rollback_model") return `${d.model_name ?? "?"} rolled back to ${d.checkpoint_id ?? "?"}`;
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
    $("#admin-models").replaceChildren(...models.map(modelItem));
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
