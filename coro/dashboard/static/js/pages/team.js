// Team (hybrid runners): the team cloud this runner has joined, its connection state
// and the team's runners (`GET /cloud/runners`, which the runner asks its cloud for),
// both polled, so they follow reconnects live.

import * as api from "../api.js";
import { cloudPage, stateBadge } from "../cloud.js";
import { runnersTable } from "../runners.js";
import { clear, h, notice } from "../ui.js";

const REFRESH_MS = 2000;

export async function render(main) {
  const message = h("div");
  const details = h("div", { class: "panel" });
  const runners = h("section", { class: "panel", "aria-labelledby": "team-runners-title" });
  const table = runnersTable();
  const tableNote = h("p", { class: "muted" });

  function link(url, text) {
    return url ? h("a", { href: url, target: "_blank", rel: "noopener" }, text) : h("span", { class: "muted" }, text);
  }

  function draw(status) {
    if (status.mode !== "hybrid") {
      clear(
        details,
        h("p", {}, "This runner is local: it is in no team."),
        h("p", { class: "muted" }, "Join a team cloud with coro login <cloud URL> (or cloud.url and cloud.token in config.json), then restart the runner."),
      );
      clear(runners);
      runners.hidden = true;
      return;
    }
    runners.hidden = false;
    clear(
      details,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Team"),
        h("dd", { id: "cloud-team" }, status.teamName || h("span", { class: "muted" }, "not known until the first connection")),
        h("dt", {}, "Connection"),
        h("dd", {}, stateBadge(status.state)),
        h("dt", {}, "Cloud"),
        h("dd", {}, link(cloudPage(status, "jobs"), status.url || "")),
        h("dt", {}, "This runner"),
        h("dd", { class: "mono" }, status.runnerId || ""),
        status.lastError ? h("dt", {}, "Last error") : null,
        status.lastError ? h("dd", { id: "cloud-error", class: "notice error" }, status.lastError) : null,
      ),
      status.state === "revoked"
        ? h("p", {}, "The team revoked this runner's token: ask an admin for a new one, run coro login again and restart.")
        : null,
    );
    if (!runners.childElementCount) {
      runners.append(
        h("h2", { id: "team-runners-title" }, "The team's runners"),
        table.element,
        tableNote,
        h("p", {}, link(cloudPage(status, "runners"), "open the team's runners"), " on the cloud's team page"),
      );
    }
  }

  async function refreshRunners(status) {
    if (status.mode !== "hybrid") return;
    if (status.state !== "connected") {
      tableNote.textContent = "The list comes back when the runner is connected to its cloud again.";
      return;
    }
    try {
      const listed = await api.get("/cloud/runners");
      table.show(listed.runners || [], status.runnerId);
      tableNote.textContent = "";
    } catch (error) {
      tableNote.textContent = `The team's runners are not available now: ${error.message}`;
    }
  }

  async function refresh() {
    try {
      const status = await api.get("/cloud");
      draw(status);
      notice(message, null);
      await refreshRunners(status);
    } catch (error) {
      notice(message, `Could not read the cloud link: ${error.message}`, "error");
    }
  }

  await refresh();
  main.append(h("h1", {}, "Team"), message, details, runners);
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
