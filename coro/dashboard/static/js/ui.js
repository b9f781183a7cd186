// Small DOM helpers shared by the pages: building elements, formatting, markdown.

import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

/**
 * `h("button", {class: "primary", onclick}, "Save")`: an element with attributes
 * (`on*` functions become listeners, `false`/`null` attributes are left out) and
 * children (strings become text nodes; arrays are flattened; null is skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "value") {
      node.value = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key in node && typeof value !== "string") {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Rendered, sanitised markdown in a container element. */
export function markdown(text, attrs = {}) {
  const container = h("div", { class: "markdown", ...attrs });
  container.innerHTML = DOMPurify.sanitize(marked.parse(String(text ?? ""), { async: false }));
  return container;
}

export function cost(value) {
  const amount = Number(value || 0);
  if (amount === 0) return "$0.00";
  if (amount < 0.01) return `$${amount.toFixed(4)}`;
  return amount >= 100 ? `$${amount.toFixed(0)}` : `$${amount.toFixed(2)}`;
}

export function tokens(value) {
  const n = Number(value || 0);
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)}M`;
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  return n.toLocaleString("en");
}

export function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

const pad = (n) => String(n).padStart(2, "0");

/** A local time of day, `HH:MM:SS` (as the CLI shows times). */
export function clock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A local date and time, `YYYY-MM-DD HH:MM:SS` (as `coro logs` and `coro status`). */
export function time(iso) {
  const date = iso ? new Date(iso) : null;
  if (!date || Number.isNaN(date.getTime())) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock(date)}`;
}

const STOPPED = new Set(["complete", "cancelled", "failed", "escalated"]);
const PARKED_PREFIX = "awaiting-";

/** active | waiting | stopped, as the API's `group=` filter. */
export function statusGroup(status) {
  if (STOPPED.has(status)) return "stopped";
  if (status.startsWith(PARKED_PREFIX)) return "waiting";
  return "active";
}

export function statusBadge(status) {
  const tone =
    status === "complete"
      ? "ok"
      : status === "failed" || status === "escalated"
        ? "bad"
        : status === "cancelled"
          ? "muted"
          : status.startsWith(PARKED_PREFIX)
            ? "warn"
            : "live";
  return h("span", { class: `badge ${tone}`, title: status }, status);
}

/** A polite live-region message under the page title. */
export function notice(target, message, tone = "info") {
  clear(target, message ? h("p", { class: `notice ${tone}`, role: tone === "error" ? "alert" : "status" }, message) : null);
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog(title, body, confirmLabel = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, body),
      h(
        "form",
        { method: "dialog", class: "row end" },
        h("button", { value: "cancel", type: "submit" }, "Keep it"),
        h("button", { value: "ok", type: "submit", class: "danger" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Runs `action` with the button disabled; reports errors in `where`. */
export async function busy(button, where, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (error) {
    if (where) notice(where, error.message, "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
