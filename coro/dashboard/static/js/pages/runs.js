// Runs: stat cards, filters (status group, workflow, search), a server-paginated table.

import * as api from "../api.js";
import { jobHeadings, jobRow } from "../jobs.js";
import { clear, cost, h, notice } from "../ui.js";

const PAGE_SIZE = 25;
const REFRESH_MS = 5000;

export async function render(main) {
  const state = { group: "", workflow: "", q: "", offset: 0 };
  const message = h("div");
  const cards = h("div", { class: "cards", "aria-label": "Summary" });
  const body = h("tbody");
  const pager = h("div", { class: "row spread" });

  const group = h(
    "select",
    { id: "filter-group", onchange: () => reload({ group: group.value }) },
    h("option", { value: "" }, "All"),
    h("option", { value: "active" }, "Active"),
    h("option", { value: "waiting" }, "Awaiting you"),
    h("option", { value: "stopped" }, "Stopped"),
  );
  const workflow = h(
    "select",
    { id: "filter-workflow", onchange: () => reload({ workflow: workflow.value }) },
    h("option", { value: "" }, "All workflows"),
  );
  let searchTimer = null;
  const search = h("input", {
    id: "filter-q",
    type: "search",
    placeholder: "id, description, repo",
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => reload({ q: search.value.trim() }), 250);
    },
  });

  main.append(
    h(
      "div",
      { class: "row spread" },
      h("h1", {}, "Runs"),
      h("a", { class: "button primary", href: "#/new" }, "New run"),
    ),
    message,
    cards,
    h(
      "form",
      { class: "row", role: "search", onsubmit: (e) => e.preventDefault() },
      h("div", {}, h("label", { for: "filter-group" }, "Status"), group),
      h("div", {}, h("label", { for: "filter-workflow" }, "Workflow"), workflow),
      h("div", { style: "flex:1;min-width:12rem" }, h("label", { for: "filter-q" }, "Search"), search),
    ),
    h(
      "div",
      { class: "table-wrap", style: "margin-top:.8rem" },
      h(
        "table",
        { "aria-label": "Runs", class: "runs-table" },
        h(
          "thead",
          {},
          h("tr", {}, jobHeadings()),
        ),
        body,
      ),
    ),
    pager,
  );

  async function loadWorkflows() {
    try {
      const { workflows } = await api.get("/workflows");
      for (const wf of workflows) {
        workflow.append(h("option", { value: wf.workflowPath }, wf.name || wf.workflowPath));
      }
    } catch {
      /* the filter simply offers "All" */
    }
  }

  async function loadStats() {
    const stats = await api.get("/stats");
    clear(
      cards,
      card("Active", stats.jobs.active, "active"),
      card("Awaiting you", stats.jobs.waiting, "waiting"),
      card("Stopped", stats.jobs.stopped, "stopped"),
      h(
        "div",
        { class: "card" },
        h("div", { class: "value", id: "stat-spend" }, cost(stats.spend.totalCostUsd)),
        h("div", { class: "label" }, "Spend"),
      ),
    );
  }

  function card(label, value, groupName) {
    return h(
      "button",
      {
        class: "card",
        type: "button",
        "aria-label": `${label}: ${value} — show these runs`,
        onclick: () => {
          group.value = groupName;
          reload({ group: groupName });
        },
      },
      h("div", { class: "value", id: `stat-${groupName}` }, String(value)),
      h("div", { class: "label" }, label),
    );
  }

  async function loadRuns() {
    const query = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
    if (state.group) query.set("group", state.group);
    if (state.workflow) query.set("workflowPath", state.workflow);
    if (state.q) query.set("q", state.q);
    const page = await api.get(`/jobs?${query}`);
    clear(
      body,
      page.jobs.length
        ? page.jobs.map(row)
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No runs match.")),
    );
    const last = Math.min(page.offset + page.jobs.length, page.total);
    clear(
      pager,
      h("span", { class: "muted" }, page.total ? `${page.offset + 1}–${last} of ${page.total}` : ""),
      h(
        "div",
        { class: "row" },
        h(
          "button",
          {
            type: "button",
            disabled: state.offset === 0,
            onclick: () => reload({ offset: Math.max(0, state.offset - PAGE_SIZE) }, false),
          },
          "Previous",
        ),
        h(
          "button",
          {
            type: "button",
            disabled: last >= page.total,
            onclick: () => reload({ offset: state.offset + PAGE_SIZE }, false),
          },
          "Next",
        ),
      ),
    );
  }

  function row(job) {
    return jobRow(job, `#/runs/${encodeURIComponent(job.id)}`);
  }

  async function refresh() {
    try {
      await Promise.all([loadStats(), loadRuns()]);
      notice(message, null);
    } catch (error) {
      notice(message, `Could not load runs: ${error.message}`, "error");
    }
  }

  function reload(changes, resetOffset = true) {
    Object.assign(state, changes);
    if (resetOffset && !("offset" in changes)) state.offset = 0;
    refresh();
  }

  await Promise.all([loadWorkflows(), refresh()]);
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    clearInterval(timer);
    clearTimeout(searchTimer);
  };
}
