// Team (hybrid runners): the team cloud this runner has joined, its connection state
// (polled, so it follows reconnects live) and where the team's runners and jobs are.
//
// The runner's API has no list of the team's other runners (only the cloud has it, for
// signed-in members), so this page links to the cloud's team page for them.

import * as api from "../api.js";
import { cloudPage, stateBadge } from "../cloud.js";
import { clear, h, notice } from "../ui.js";

const REFRESH_MS = 2000;

export async function render(main) {
  const message = h("div");
  const details = h("div", { class: "panel" });
  const runners = h("section", { class: "panel", "aria-labelledby": "team-runners-title" });

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
    clear(
      runners,
      h("h2", { id: "team-runners-title" }, "The team's runners"),
      h(
        "p",
        {},
        "The cloud lists every runner of the team, with how busy each is, on its team page: ",
        link(cloudPage(status, "runners"), "open the team's runners"),
        ".",
      ),
    );
  }

  async function refresh() {
    try {
      draw(await api.get("/cloud"));
      notice(message, null);
    } catch (error) {
      notice(message, `Could not read the cloud link: ${error.message}`, "error");
    }
  }

  await refresh();
  main.append(h("h1", {}, "Team"), message, details, runners);
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
