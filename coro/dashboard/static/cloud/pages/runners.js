// The team's runners: connected or not, how busy, when last heard of. Polled.

import { runnersTable } from "../../js/runners.js";
import { h, notice } from "../../js/ui.js";
import { cloud } from "../session.js";

const REFRESH_MS = 3000;

export async function render(main, { teamId, team }) {
  const message = h("div");
  const table = runnersTable();
  main.append(
    h("h1", {}, "Runners"),
    h("p", { class: "muted" }, `The runners of ${team?.name || "this team"}: developers' coro start with one of the team's runner tokens.`),
    message,
    table.element,
  );

  async function refresh() {
    try {
      table.show(await cloud.get(`/teams/${encodeURIComponent(teamId)}/runners`));
      notice(message, null);
    } catch (error) {
      notice(message, `Could not load the runners: ${error.message}`, "error");
    }
  }

  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
