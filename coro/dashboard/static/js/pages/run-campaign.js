// A campaign's children as a dependency graph (one column per depth), with the child
// controls: skip, rerun, cancel, abandon, resume (with a note) and start.

import * as api from "../api.js";
import { busy, confirmDialog, cost, h, statusBadge, tokens } from "../ui.js";

const ACTIONS = {
  pending: ["skip", "cancel"],
  ready: ["start", "skip", "cancel"],
  dispatched: ["skip", "cancel"],
  failed: ["resume", "rerun", "abandon"],
  escalated: ["resume", "rerun", "abandon"],
  complete: ["rerun"],
  skipped: ["rerun"],
  cancelled: ["rerun"],
};
const DESTRUCTIVE = new Set(["cancel", "abandon"]);

/** Depth of each child: 0 without dependencies, else 1 + the deepest dependency. */
function depths(children) {
  const byName = new Map(children.map((c) => [c.name, c]));
  const memo = new Map();
  const depth = (name, seen = new Set()) => {
    if (memo.has(name)) return memo.get(name);
    if (seen.has(name)) return 0; // a cycle cannot be finalised; draw it flat
    seen.add(name);
    const deps = (byName.get(name)?.dependsOn || []).filter((d) => byName.has(d));
    const value = deps.length ? 1 + Math.max(...deps.map((d) => depth(d, seen))) : 0;
    memo.set(name, value);
    return value;
  };
  for (const child of children) depth(child.name);
  return memo;
}

export function renderCampaign(job, reload, where) {
  const children = job.campaignChildren || [];
  if (!children.length) return h("p", { class: "muted" }, "No children registered yet.");
  const levels = depths(children);
  const columns = [];
  for (const child of children) {
    const level = levels.get(child.name) || 0;
    (columns[level] ||= []).push(child);
  }
  const totals = job.campaignTotals;
  return h(
    "div",
    { class: "stack" },
    totals
      ? h(
          "p",
          { class: "muted" },
          `Children: ${children.length} · child jobs ${totals.childJobCount} · tokens ${tokens(totals.inputTokens)} in / ${tokens(totals.outputTokens)} out · cost ${cost(totals.totalCostUsd)} · PRs ${totals.prCount} (${totals.mergedPrCount} merged)`,
        )
      : null,
    h(
      "div",
      { class: "graph", role: "list", "aria-label": "Campaign children by dependency depth" },
      columns.map((column, depth) =>
        h(
          "div",
          { class: "column", "aria-label": `Depth ${depth}` },
          column.map((child) => childCard(job, child, reload, where)),
        ),
      ),
    ),
  );
}

function childCard(job, child, reload, where) {
  const note = h("input", {
    "aria-label": `Note for ${child.name} (resume)`,
    placeholder: "note (optional)",
    size: 14,
  });
  const buttons = (ACTIONS[child.status] || []).map((action) => {
    const button = h(
      "button",
      { type: "button", class: DESTRUCTIVE.has(action) ? "danger" : null, dataset: { action } },
      action,
    );
    button.onclick = async () => {
      if (DESTRUCTIVE.has(action)) {
        const sure = await confirmDialog(`${action} ${child.name}?`, "Its job is cancelled if it runs.", action);
        if (!sure) return;
      }
      await busy(button, where, async () => {
        const body = action === "resume" && note.value.trim() ? { note: note.value.trim() } : {};
        await api.post(
          `/jobs/${encodeURIComponent(job.id)}/children/${encodeURIComponent(child.name)}/${action}`,
          body,
        );
        await reload();
      });
    };
    return button;
  });
  const summary = child.summary;
  return h(
    "article",
    { class: "child", role: "listitem", dataset: { child: child.name } },
    h("div", { class: "row spread" }, h("strong", {}, child.name), statusBadge(child.status)),
    h("div", {}, child.description),
    child.dependsOn?.length ? h("div", { class: "deps" }, `after ${child.dependsOn.join(", ")}`) : null,
    child.jobId
      ? h(
          "div",
          { class: "deps" },
          h("a", { href: `#/runs/${encodeURIComponent(child.jobId)}` }, child.jobId),
          summary ? ` · ${summary.phase} · ${cost(summary.tokenUsage?.totalCostUsd)}` : "",
        )
      : null,
    buttons.length ? h("div", { class: "row" }, buttons, ACTIONS[child.status].includes("resume") ? note : null) : null,
  );
}
