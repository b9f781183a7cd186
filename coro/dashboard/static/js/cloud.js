// A hybrid runner's link to its team cloud (`GET /cloud`), as the header and the team
// page show it: the team, the connection state, the reason it is not connected.

import { h } from "./ui.js";

export const STATE_TEXT = {
  connecting: "connecting",
  connected: "connected",
  disconnected: "disconnected, retrying",
  revoked: "token revoked",
  incompatible: "incompatible cloud",
  stopped: "stopped",
};

export function stateBadge(state) {
  return h("span", { class: `conn ${state}`, id: "cloud-state" }, STATE_TEXT[state] || state);
}

/** The team page of the cloud, for one of its views (`runners`, `jobs`); null if unsafe. */
export function cloudPage(status, view) {
  if (!status.url || !/^https?:\/\//.test(status.url)) return null;
  const team = status.teamId ? `#/t/${encodeURIComponent(status.teamId)}/${view}` : "";
  return `${status.url.replace(/\/+$/, "")}/${team}`;
}
