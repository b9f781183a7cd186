// The team's jobs, from the cloud's mirror (readable while their runners are offline):
// filters, a server-paginated table, polled for live status; and a form that starts a
// job on the least busy runner of the team (or queues it until one connects).

import { jobHeadings, jobRow } from "../../js/jobs.js";
import { busy, clear, h, notice } from "../../js/ui.js";
import { cloud } from "../session.js";

const PAGE_SIZE = 25;
const REFRESH_MS = 3000;

/** The cloud's warning about the job just started here (no runner took it yet). */
let startWarning = null;

export function takeStartWarning() {
  const warning = startWarning;
  startWarning = null;
  return warning;
}

export async function render(main, { teamId, team }) {
  const base = `/teams/${encodeURIComponent(teamId)}/jobs`;
  const state = { group: "", q: "", offset: 0 };
  const message = h("div");
  const body = h("tbody");
  const pager = h("div", { class: "row spread" });
  const group = h(
    "select",
    { id: "filter-group", onchange: () => reload({ group: group.value }) },
    h("option", { value: "" }, "All"),
    h("option", { value: "active" }, "Active"),
    h("option", { value: "waiting" }, "Awaiting someone"),
    h("option", { value: "stopped" }, "Stopped"),
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

  const workflow = h("input", { id: "new-workflow", required: true, maxlength: 500, value: "workflows/job/workflow.md" });
  const description = h("textarea", { id: "new-description", rows: 2 });
  const repo = h("input", { id: "new-repo", maxlength: 500, placeholder: "owner/name" });
  const start = h("button", { type: "submit", class: "primary" }, "Start job");
  const startForm = h(
    "form",
    {
      class: "panel",
      "aria-label": "Start a team job",
      hidden: true,
      onsubmit: (event) => {
        event.preventDefault();
        busy(start, message, async () => {
          const body = { workflowPath: workflow.value.trim(), triggerSource: "dashboard" };
          if (description.value.trim()) body.description = description.value.trim();
          if (repo.value.trim()) body.repo = repo.value.trim();
          const created = await cloud.post(base, body);
          const link = `#/t/${encodeURIComponent(teamId)}/jobs/${encodeURIComponent(created.jobId)}`;
          startWarning = created.warning || null;
          location.hash = link;
        });
      },
    },
    h("div", { class: "field" }, h("label", { for: "new-workflow" }, "Workflow"), workflow),
    h("div", { class: "field" }, h("label", { for: "new-description" }, "What should be done"), description),
    h("div", { class: "field" }, h("label", { for: "new-repo" }, "Repository"), repo),
    h("div", { class: "row end" }, start),
  );
  const toggle = h("button", { type: "button", id: "new-job", "aria-expanded": "false" }, "New job");
  toggle.onclick = () => {
    startForm.hidden = !startForm.hidden;
    toggle.setAttribute("aria-expanded", String(!startForm.hidden));
  };

  main.append(
    h("div", { class: "row spread" }, h("h1", {}, `Jobs of ${team?.name || "the team"}`), toggle),
    startForm,
    message,
    h(
      "form",
      { class: "row", role: "search", onsubmit: (e) => e.preventDefault() },
      h("div", {}, h("label", { for: "filter-group" }, "Status"), group),
      h("div", { style: "flex:1;min-width:12rem" }, h("label", { for: "filter-q" }, "Search"), search),
    ),
    h(
      "div",
      { class: "table-wrap", style: "margin-top:.8rem" },
      h("table", { "aria-label": "Team jobs" }, h("thead", {}, h("tr", {}, jobHeadings())), body),
    ),
    pager,
  );

  async function refresh() {
    const query = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
    if (state.group) query.set("group", state.group);
    if (state.q) query.set("q", state.q);
    let page;
    try {
      page = await cloud.get(`${base}?${query}`);
    } catch (error) {
      notice(message, `Could not load the jobs: ${error.message}`, "error");
      return;
    }
    notice(message, null);
    const jobs = page.jobs || page.items || [];
    const offset = page.offset ?? state.offset;
    clear(
      body,
      jobs.length
        ? jobs.map((job) => jobRow(job, `#/t/${encodeURIComponent(teamId)}/jobs/${encodeURIComponent(job.id)}`))
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No jobs match.")),
    );
    const last = Math.min(offset + jobs.length, page.total);
    clear(
      pager,
      h("span", { class: "muted" }, page.total ? `${offset + 1}–${last} of ${page.total}` : ""),
      h(
        "div",
        { class: "row" },
        h(
          "button",
          { type: "button", disabled: state.offset === 0, onclick: () => reload({ offset: Math.max(0, state.offset - PAGE_SIZE) }) },
          "Previous",
        ),
        h(
          "button",
          { type: "button", disabled: last >= page.total, onclick: () => reload({ offset: state.offset + PAGE_SIZE }) },
          "Next",
        ),
      ),
    );
  }

  function reload(changes) {
    Object.assign(state, changes);
    if (!("offset" in changes)) state.offset = 0;
    refresh();
  }

  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    clearInterval(timer);
    clearTimeout(searchTimer);
  };
}
