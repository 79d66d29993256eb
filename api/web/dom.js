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
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
export const fixed = (value, digits = 3) => (isNumber(value) ? value.toFixed(digits) : "–");
export const count = (value) => (isNumber(value) ? value.toLocaleString("en") : "–");
export const percent = (value) => (isNumber(value) ? `${(value * 100).toFixed(1)} %` : "–");
