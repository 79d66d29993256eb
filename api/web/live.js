// The live queue: the page hears changes (Server-Sent Events from GET /api/events) and
// reloads what changed; while the stream is down it polls instead. A browser's
// EventSource cannot send the key's header and the key must never go into a URL, so the
// page first trades its key for a short-lived token (GET /api/events/token).

import { $, h } from "./dom.js";

const DEBOUNCE_MS = 250; // a burst of events is one reload
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;

/**
 * Opens the stream and keeps it open.
 *  key(): the API key now (null: none yet);
 *  onChange(kinds, alertIds): reload what changed ("alert", "models", "control",
 *    "detector_event", "resync");
 *  onState(live): the stream is up (true) or down (false).
 * Returns {live(), restart()}.
 */
export function startLive({ key, onChange, onState }) {
  let source = null;
  let up = false;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let pending = null; // {kinds: Set, alertIds: Set} waiting for the debounce
  let generation = 0; // a restart abandons what an older connection still does

  function show(isUp) {
    let indicator = $("#live");
    if (!indicator && $(".top-actions")) {
      indicator = h("span", { id: "live", class: "live", "data-testid": "live", role: "status" });
      $(".top-actions").prepend(indicator);
    }
    if (indicator) {
      indicator.textContent = isUp ? "live" : "polling";
      indicator.dataset.state = isUp ? "live" : "polling";
      indicator.title = isUp
        ? "Changes appear as they happen."
        : "The live stream is down: the page reloads every 15 s and reconnects.";
    }
    if (isUp !== up) {
      up = isUp;
      onState(isUp);
    }
  }

  function heard(kind, data) {
    if (!pending) {
      pending = { kinds: new Set(), alertIds: new Set() };
      setTimeout(() => {
        const { kinds, alertIds } = pending;
        pending = null;
        onChange(kinds, alertIds);
        // Other modules of the page (admin.js) listen too.
        window.dispatchEvent(new CustomEvent("fraudstream:live", { detail: { kinds, alertIds } }));
      }, DEBOUNCE_MS);
    }
    pending.kinds.add(kind);
    if (data && data.alert_id) pending.alertIds.add(data.alert_id);
  }

  function retryLater(mine) {
    if (mine !== generation) return;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => connect(), retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  }

  async function connect() {
    const mine = ++generation;
    clearTimeout(retryTimer);
    if (source) source.close();
    source = null;
    const apiKey = key();
    if (!apiKey) return show(false); // a key is asked for; restart() follows
    let token;
    try {
      const response = await fetch("/api/events/token", {
        headers: { Accept: "application/json", "X-API-Key": apiKey },
      });
      if (!response.ok) throw new Error(`answer ${response.status}`);
      token = (await response.json()).token;
    } catch {
      show(false);
      return retryLater(mine);
    }
    if (mine !== generation) return;
    const stream = new EventSource(`/api/events?token=${encodeURIComponent(token)}`);
    source = stream;
    stream.addEventListener("ready", () => {
      retryMs = RETRY_MIN_MS;
      const wasDown = !up;
      show(true);
      // What changed while the stream was down: reload once.
      if (wasDown) heard("resync", null);
    });
    for (const kind of ["alert", "models", "control", "detector_event", "resync"]) {
      stream.addEventListener(kind, (event) => {
        let data = null;
        try {
          data = JSON.parse(event.data);
        } catch {
          // Not JSON: reload all the same.
        }
        heard(kind, data);
      });
    }
    stream.addEventListener("error", () => {
      if (mine !== generation) return;
      // The browser would reconnect with the same token, which expires within a minute:
      // reconnect with a fresh one instead.
      stream.close();
      show(false);
      retryLater(mine);
    });
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !up) connect();
  });
  show(false);
  connect();
  return { live: () => up, restart: () => { retryMs = RETRY_MIN_MS; connect(); } };
}
