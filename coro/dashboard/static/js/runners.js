// A team's runners as a table, as both dashboards show them (the cloud's runners page,
// a hybrid runner's team page): `GET /teams/:t/runners` rows, every value as text.

import { ago, clear, h } from "./ui.js";

const TONE = { idle: "ok", busy: "live", offline: "muted" };
const COLUMNS = ["Runner", "Status", "Jobs", "Version", "Connected", "Last heartbeat"];

export function runnerBadge(status) {
  return h("span", { class: `badge ${TONE[status] || "muted"}` }, status);
}

/** `{element, show(runners, thisRunnerId?)}`: the table, and what fills it. */
export function runnersTable() {
  const body = h("tbody");
  const element = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "aria-label": "Runners" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );

  function row(runner, self) {
    const active = runner.activeJobIds || [];
    return h(
      "tr",
      { dataset: { runner: runner.runnerId } },
      h(
        "td",
        {},
        h("div", {}, runner.hostname || runner.runnerId, self ? h("span", { class: "tag" }, "this runner") : null),
        h("div", { class: "muted mono" }, runner.runnerId),
      ),
      h("td", {}, runnerBadge(runner.status)),
      h("td", { title: active.join(", ") }, `${active.length} / ${runner.capacity ?? "?"}`),
      h("td", {}, runner.version || ""),
      h("td", { title: runner.connectedAt || "" }, ago(runner.connectedAt)),
      h("td", { title: runner.lastHeartbeatAt || "" }, ago(runner.lastHeartbeatAt)),
    );
  }

  function show(runners, thisRunnerId = null) {
    clear(
      body,
      runners.length
        ? runners.map((runner) => row(runner, runner.runnerId === thisRunnerId))
        : h(
            "tr",
            {},
            h("td", { colspan: COLUMNS.length, class: "muted" }, "No runner is connected: mint a runner token and start one."),
          ),
    );
  }

  return { element, show };
}
