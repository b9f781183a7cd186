// The dashboard as a notification channel, while a page of it is open: desktop
// notifications (the Notifications API, once the user allows them) for what the runner's
// `/notifications/stream` announces, and the count of runs awaiting someone in the tab
// title, `(N) Coro`.
//
// The user's choices are kept in localStorage (they are about this browser, not the
// tab): notifications show only while they are "on" and the browser's permission is
// granted, for the events chosen (by default those a channel gets by default).

import * as api from "./api.js";
import { h } from "./ui.js";

/** As `coro.config.notifications`: the events, and what a channel gets by default. */
export const EVENTS = [
  ["job.awaiting", "A run awaits someone"],
  ["job.escalated", "A run is escalated"],
  ["job.failed", "A run failed"],
  ["job.completed", "A run completed"],
  ["pr.opened", "A pull request was opened"],
];
export const DEFAULT_EVENTS = ["job.awaiting", "job.escalated", "job.failed", "pr.opened"];
/** The statuses of a run that waits for a person (not for a PR, its children or a rate
 * limit): what `job.awaiting` announces, counted in the title. */
const AWAITING_SOMEONE = ["awaiting-plan-approval", "awaiting-developer-input", "awaiting-budget"];

const CHOICE_KEY = "coro.desktopNotifications";
const EVENTS_KEY = "coro.desktopNotifications.events";
const TITLE = "Coro";
const STATS_REFRESH_MS = 5000;

/** Told (without arguments) when the choice or the permission changes. */
export const onChange = new Set();

export function supported() {
  return "Notification" in window;
}

/** "granted" | "denied" | "default" | "unsupported". */
export function permission() {
  return supported() ? Notification.permission : "unsupported";
}

/** Whether desktop notifications show now: chosen here and allowed by the browser. */
export function enabled() {
  return localStorage.getItem(CHOICE_KEY) === "on" && permission() === "granted";
}

function changed() {
  onChange.forEach((listener) => listener());
}

/** Turns desktop notifications on; asks for the permission (call it on a user gesture). */
export async function enable() {
  if (!supported()) return "unsupported";
  const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
  localStorage.setItem(CHOICE_KEY, answer === "granted" ? "on" : "off");
  changed();
  return answer;
}

export function disable() {
  localStorage.setItem(CHOICE_KEY, "off");
  changed();
}

/** The events this browser shows. */
export function events() {
  try {
    const chosen = JSON.parse(localStorage.getItem(EVENTS_KEY));
    if (Array.isArray(chosen)) return chosen;
  } catch {
    /* not set, or not ours: the defaults */
  }
  return DEFAULT_EVENTS;
}

export function setEvents(chosen) {
  localStorage.setItem(EVENTS_KEY, JSON.stringify(chosen));
  changed();
}

/** Shows `title` / `body`; a click focuses this window and opens the run. */
function show(title, body, tag, jobId) {
  const notification = new Notification(title, { body, tag });
  notification.onclick = () => {
    window.focus();
    if (jobId) location.hash = `#/runs/${encodeURIComponent(jobId)}`;
    notification.close();
  };
  return notification;
}

/** The browser channel's test: a local notification (the runner is not involved). */
export function showTest() {
  if (!enabled()) throw new Error(permission() === "denied" ? "This browser blocks Coro's notifications: allow them in the site settings." : "Turn desktop notifications on first.");
  show("Coro test notification", "Desktop notifications work in this browser.", "coro-test", null);
}

// --- the tab title --------------------------------------------------------------------

let statsTimer = null;

/** Reads `/stats` and shows its count of runs awaiting someone. */
async function refreshTitle() {
  clearTimeout(statsTimer);
  try {
    const byStatus = (await api.get("/stats")).jobs?.byStatus || {};
    const waiting = AWAITING_SOMEONE.reduce((sum, status) => sum + (Number(byStatus[status]) || 0), 0);
    document.title = waiting > 0 ? `(${waiting}) ${TITLE}` : TITLE;
  } catch {
    /* a token prompt or an unreachable runner: the title keeps its last count */
  }
  statsTimer = setTimeout(refreshTitle, STATS_REFRESH_MS);
}

// --- the stream -----------------------------------------------------------------------

let closeStream = null;

/** One event of the stream (which replays nothing: each notification comes once). */
function received(event) {
  if (event.event !== "notification") return;
  let note;
  try {
    note = JSON.parse(event.data);
  } catch {
    return;
  }
  refreshTitle();
  // a channel's test from the settings page is not news about a run
  if (note.event === "test" || !enabled() || !events().includes(note.event)) return;
  show(note.title || TITLE, note.reason || note.question || note.status || "", `${note.jobId}:${note.event}`, note.jobId);
}

/** Follows the runner's notifications and keeps the title's count (again after a token). */
export function start() {
  if (closeStream) closeStream();
  closeStream = api.runner.followEvents("/notifications/stream", { onEvent: received });
  refreshTitle();
}

// another tab of this dashboard turned them on or off
window.addEventListener("storage", (event) => {
  if (event.key === CHOICE_KEY || event.key === EVENTS_KEY) changed();
});

// --- the header's switch --------------------------------------------------------------

/** A toggle button for desktop notifications (null where the browser has none). */
export function control() {
  if (!supported()) return null;
  const button = h("button", { type: "button", id: "notify-toggle", class: "notify-toggle" }, "Notifications");
  const draw = () => {
    const state = permission();
    button.setAttribute("aria-pressed", String(enabled()));
    button.disabled = state === "denied";
    button.title =
      state === "denied"
        ? "This browser blocks Coro's notifications (allow them in the site settings)"
        : enabled()
          ? "Desktop notifications are on for runs that need someone: click to turn them off"
          : "Get a desktop notification when a run needs someone";
  };
  button.onclick = () => (enabled() ? disable() : enable());
  onChange.add(draw);
  // the permission can change in the browser's own settings while the page is open
  navigator.permissions?.query({ name: "notifications" }).then(
    (status) => status.addEventListener("change", changed),
    () => {},
  );
  draw();
  return button;
}
