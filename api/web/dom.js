// DOM and formatting helpers shared by the page's modules (app.js, policy.js).
// Every text from the API goes through text nodes (h()), never innerHTML.

export const $ = (selector) => document.querySelector(selector);

/** Creates an element; strings become text nodes, so API data is never parsed as HTML. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
export const fixed = (value, digits = 3) => (isNumber(value) ? value.toFixed(digits) : "–");
export const count = (value) => (isNumber(value) ? value.toLocaleString("en") : "–");
export const percent = (value) => (isNumber(value) ? `${(value * 100).toFixed(1)} %` : "–");

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element: attributes as given, strings become text nodes (as with h()). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function money(amount, currency) {
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

export function duration(total) {
  if (!isNumber(total)) return "–";
  if (total < 60) return `${Math.round(total)} s`;
  if (total < 3600) return `${Math.round(total / 60)} min`;
  if (total < 86400) return `${(total / 3600).toFixed(1)} h`;
  return `${(total / 86400).toFixed(1)} d`;
}

export const ageSeconds = (iso) => (iso ? (Date.now() - new Date(iso).getTime()) / 1000 : null);

/** A <time>: "5 min ago" (or the local date and time), the full local time on hover. */
export function when(iso, { absolute = false, title = "" } = {}) {
  if (!iso) return "–";
  const date = new Date(iso);
  const age = ageSeconds(iso);
  const relative = age >= -5 ? `${duration(Math.max(age, 0))} ago` : `in ${duration(-age)}`;
  const text = absolute ? `${date.toLocaleString()} (${relative})` : relative;
  return h("time", { datetime: iso, title: `${title}${date.toLocaleString()}` }, text);
}

export const badge = (text, kind = text) => h("span", { class: `badge badge-${kind}` }, text);
export const pair = (term, value) => [h("dt", {}, term), h("dd", {}, value ?? "–")];

// The page's API key, kept in the browser by the key dialog.
export const KEY_STORAGE = "fraudstream.apiKey";

// A JSON call of the API with the stored key for the admin panels; an error carries the
// API's message.
export async function call(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-API-Key": localStorage.getItem(KEY_STORAGE) ?? "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((e) => e.msg).join("; ") : `answer ${response.status}`;
    throw new Error(text);
  }
  return data;
}
