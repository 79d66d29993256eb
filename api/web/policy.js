// Rules, lists and safety valves, for admins: the mode, the rules with their hits, the
// lists, the block cap; change the mode, add or remove rules and list entries.
// Plain ES module beside app.js; every API text goes through text nodes, never innerHTML.

import { $, KEY_STORAGE, call, count, h, isNumber, percent } from "./dom.js";

const REFRESH_MS = 4000;
const LISTS = ["allow", "block"].flatMap((kind) =>
  ["card_id", "terminal_id", "device_id", "country"].map((field) => `${kind}.${field}`));

let admin = null; // null: not known yet; then true or false
let shownMode = null; // the mode the selector was last set to from the service

function say(text, kind = "error") {
  const box = $("#policy-message");
  box.textContent = text;
  box.className = `policy-message ${kind}`;
  box.hidden = !text;
}

async function change(what, path, method, body) {
  try {
    await call(path, { method, body });
    say(`${what}: sent to the detector.`, "ok");
    await refresh();
  } catch (error) {
    say(`${what} refused: ${error.message}`);
  }
}

function until(item) {
  const parts = [];
  if (item.expires_at) parts.push(`until ${item.expires_at.slice(0, 16).replace("T", " ")}`);
  if (item.note) parts.push(item.note);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

function render(policy, status) {
  const hits = new Map((status?.rules ?? []).map((r) => [r.rule.name, r]));
  if (policy.mode !== shownMode) { // leave an admin's pending choice alone until it changes
    $("#policy-mode").value = policy.mode;
    shownMode = policy.mode;
  }
  const valves = [
    ["Mode", h("span", { "data-testid": "policy-mode-now" }, policy.mode)],
    ["Block cap", status ? (status.max_block_share >= 1 ? "off"
      : `${percent(status.block_share)} of ${count(status.block_window)} decisions ` +
        `(cap ${percent(status.max_block_share)})`) : "–"],
    ["Cap tripped", h("span", { "data-testid": "policy-cap-tripped" },
      status?.block_cap_tripped ? "yes" : "no")],
    ["Blocks capped", count(status?.blocks_capped)],
    ["Degraded", h("span", { "data-testid": "policy-degraded" }, count(status?.degraded))],
  ];
  $("#policy-valves").replaceChildren(
    ...valves.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  $("#policy-rules").replaceChildren(...policy.rules.map((rule) => {
    const seen = hits.get(rule.name);
    return h("li", { "data-testid": "policy-rule", "data-rule": rule.name },
      h("strong", {}, rule.name), ` → ${rule.outcome}`,
      rule.mode === "shadow" ? h("span", { class: "badge badge-shadow" }, "shadow") : null,
      h("code", {}, rule.expression),
      h("span", { class: "muted" },
        `hits ${count(seen?.hits ?? 0)}, errors ${count(seen?.errors ?? 0)}${until(rule)}`),
      h("button", {
        type: "button", class: "small", "data-testid": "policy-rule-delete",
        onclick: () => change(`Removing rule ${rule.name}`,
          `/api/rules/${encodeURIComponent(rule.name)}`, "DELETE"),
      }, "Remove"));
  }));
  $("#policy-rules-empty").hidden = policy.rules.length > 0;
  const entries = LISTS.flatMap((name) => (policy.lists[name] ?? []).map((e) => ({ ...e, name })));
  $("#policy-lists").replaceChildren(...entries.map((e) =>
    h("li", { "data-testid": "policy-entry" },
      h("strong", {}, e.name), ` ${e.value}`, h("span", { class: "muted" }, until(e)),
      h("button", {
        type: "button", class: "small",
        onclick: () => change(`Removing ${e.value} from ${e.name}`,
          `/api/lists/${e.name}/${encodeURIComponent(e.value)}`, "DELETE"),
      }, "Remove"))));
  $("#policy-lists-empty").hidden = entries.length > 0;
}

async function refresh() {
  if (!localStorage.getItem(KEY_STORAGE) || document.hidden) return;
  try {
    if (admin === null) admin = (await call("/api/me"))?.role === "admin";
    $("#policy").hidden = !admin;
    if (!admin) return;
    const [policy, models] = await Promise.all([call("/api/policy"), call("/api/models")]);
    const deciding = (models ?? []).map((m) => m.status).find((s) => s && s.deciding);
    render(policy, deciding?.policy ?? null);
  } catch {
    admin = null; // a new key, or the service away: ask again next time
  }
}

function setup() {
  $("#policy-list-name").replaceChildren(...LISTS.map((name) => h("option", { value: name }, name)));
  $("#policy-mode-form").addEventListener("submit", (event) => {
    event.preventDefault();
    change("Changing the mode", "/api/mode", "PUT", { mode: $("#policy-mode").value });
  });
  $("#policy-rule-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const name = String(form.get("name") ?? "");
    change(`Rule ${name}`, `/api/rules/${encodeURIComponent(name)}`, "PUT", {
      expression: form.get("expression"), outcome: form.get("outcome"), mode: form.get("mode"),
    });
  });
  $("#policy-entry-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = { note: form.get("note") || null };
    const expires = form.get("expires");
    if (expires) body.expires_at = new Date(String(expires)).toISOString();
    const list = String(form.get("list"));
    const value = String(form.get("value") ?? "");
    change(`Putting ${value} on ${list}`, `/api/lists/${list}/${encodeURIComponent(value)}`,
      "PUT", body);
  });
  window.addEventListener("storage", () => { admin = null; });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

setup();
