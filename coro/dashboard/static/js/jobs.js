// A job as a row of a jobs table, as both dashboards list them (the runner's runs, the
// team's jobs): the same columns, every value as text.

import { ago, cost, h, statusBadge } from "./ui.js";

export const JOB_COLUMNS = ["Run", "Status", "Phase", "Work item", "Updated", "Cost"];

/** `<th>`s of a jobs table. */
export function jobHeadings(columns = JOB_COLUMNS) {
  return columns.map((name) =>
    h("th", { scope: "col", class: name === "Work item" ? "hide-narrow" : null }, name),
  );
}

/** A `<tr>` for `job` (a job summary) whose id links to `href`; `extra` cells follow. */
export function jobRow(job, href, ...extra) {
  const params = job.params || {};
  const tags = [];
  if (job.campaignChildren) tags.push(h("span", { class: "tag" }, "campaign"));
  if (job.campaignParentId) tags.push(h("span", { class: "tag" }, "sub-run"));
  const described = params.description || params.repo || job.workflowPath || "";
  return h(
    "tr",
    {},
    h(
      "td",
      {},
      h("a", { href }, job.id),
      tags,
      h("div", { class: "muted" }, String(described).slice(0, 120)),
    ),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, job.phase || ""),
    h("td", { class: "hide-narrow" }, job.currentWorkItem || ""),
    h("td", { title: job.updatedAt }, ago(job.updatedAt)),
    h("td", {}, cost(job.tokenUsage?.totalCostUsd)),
    extra,
  );
}
