// The dashboard shell: navigation, a hash router, the token prompt, runner health,
// desktop notifications and the title's count (`notifications.js`) and, for a hybrid
// runner, its team cloud link (team and connection state, kept live).
//
// Each page module exports `render(main, params)`, which fills `main` and may return a
// cleanup function (closing streams, timers) called when the user navigates away.

import * as api from "./api.js";
import { STATE_TEXT } from "./cloud.js";
import * as notifications from "./notifications.js";
import { clear, h } from "./ui.js";

const CLOUD_REFRESH_MS = 3000;

const ROUTES = [
  { pattern: /^#\/runs\/([^/]+)$/, page: "run", nav: "runs" },
  { pattern: /^#\/new$/, page: "new-run", nav: "new" },
  { pattern: /^#\/intelligence$/, page: "intelligence", nav: "intelligence" },
  { pattern: /^#\/settings$/, page: "settings", nav: "settings" },
  { pattern: /^#\/team$/, page: "team", nav: "team" },
  { pattern: /^#\/(runs)?$/, page: "runs", nav: "runs" },
];

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

async function route() {
  const hash = location.hash || "#/runs";
  const match = ROUTES.find((r) => r.pattern.test(hash)) || ROUTES[ROUTES.length - 1];
  const params = hash.match(match.pattern).slice(1).map((p) => (p ? decodeURIComponent(p) : p));
  for (const link of document.querySelectorAll("nav a[data-nav]")) {
    if (link.dataset.nav === match.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cleanup) cleanup();
  cleanup = null;
  const mine = ++generation;
  clear(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const module = await import(`./pages/${match.page}.js`);
    // Each visit renders into its own container: a slower, superseded visit can then
    // never write into the page the user has moved on to.
    const view = h("div", { class: "view" });
    const result = await module.render(view, params);
    if (mine !== generation) {
      if (typeof result === "function") result();
      return;
    }
    clear(main, view);
    cleanup = typeof result === "function" ? result : null;
  } catch (error) {
    if (mine === generation) {
      clear(main, h("h1", {}, "Something went wrong"), h("p", { role: "alert" }, error.message));
    }
  }
  main.focus({ preventScroll: true });
}

function askForToken() {
  if (document.getElementById("token-dialog")) return;
  const input = h("input", {
    id: "token-input",
    type: "password",
    autocomplete: "off",
    required: true,
  });
  const dialog = h(
    "dialog",
    { id: "token-dialog", "aria-labelledby": "token-title" },
    h("h2", { id: "token-title" }, "API token"),
    h(
      "p",
      {},
      "This runner requires its apiToken (from config.json). It is kept for this tab only.",
    ),
    h(
      "form",
      { method: "dialog" },
      h("label", { for: "token-input" }, "Token"),
      input,
      h("div", { class: "row end" }, h("button", { type: "submit", class: "primary" }, "Use token")),
    ),
  );
  dialog.addEventListener("close", () => {
    api.setToken(input.value.trim());
    dialog.remove();
    route();
    notifications.start();
  });
  document.body.append(dialog);
  dialog.showModal();
}

async function health() {
  const target = document.getElementById("runner-health");
  try {
    const info = await api.get("/health");
    target.textContent = `runner ${info.version} · ${info.mode}`;
    target.className = "ok";
    if (info.mode === "hybrid") cloudLink();
  } catch {
    target.textContent = "runner unreachable";
    target.className = "bad";
  }
}

let cloudTimer = null;

/** The header's team chip: polled while the runner is hybrid (the mode needs a restart
 * to change, so a local runner is asked once). */
async function cloudLink() {
  const chip = document.getElementById("cloud-status");
  let status = null;
  try {
    status = await api.get("/cloud");
  } catch {
    /* a token prompt or an unreachable runner: the chip keeps its last state */
  }
  if (status) {
    const hybrid = status.mode === "hybrid";
    chip.hidden = !hybrid;
    document.getElementById("nav-team").hidden = !hybrid;
    if (hybrid) {
      chip.className = `conn ${status.state}`;
      chip.textContent = `${status.teamName || "team"} · ${STATE_TEXT[status.state] || status.state}`;
      chip.title = status.lastError || status.url || "";
    }
  }
  clearTimeout(cloudTimer);
  cloudTimer = setTimeout(cloudLink, CLOUD_REFRESH_MS);
}

api.onUnauthorized.add(askForToken);
window.addEventListener("hashchange", route);
const notifyToggle = notifications.control();
if (notifyToggle) document.getElementById("runner-health").before(notifyToggle);
route();
health();
notifications.start();
