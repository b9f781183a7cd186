// A run's insights: what agents learned, for the developer to approve, reject, edit
// (summary, detail, suggestion, target layer) or delete.

import * as api from "../api.js";
import { busy, confirmDialog, h } from "../ui.js";

const LAYERS = ["", "tenant", "repo"];

export async function renderInsights(job, reload, where) {
  const id = encodeURIComponent(job.id);
  const { insights, inheritedCount } = await api.get(`/jobs/${id}/insights`);
  if (!insights.length) {
    return h("p", { class: "muted" }, inheritedCount ? `${inheritedCount} inherited insight(s) only.` : "No insights yet.");
  }
  return h(
    "div",
    { class: "stack" },
    insights.map((insight) => insightCard(id, insight, reload, where)),
    inheritedCount ? h("p", { class: "muted" }, `${inheritedCount} more inherited from the campaign.`) : null,
  );
}

function insightCard(jobId, insight, reload, where) {
  const url = `/jobs/${jobId}/insights/${encodeURIComponent(insight.id)}`;
  const field = (name, label, value, multiline) => {
    const input = multiline
      ? h("textarea", { id: `${insight.id}-${name}`, rows: 3, value: value || "" })
      : h("input", { id: `${insight.id}-${name}`, value: value || "" });
    return [h("label", { for: `${insight.id}-${name}` }, label), input];
  };
  const [summaryLabel, summary] = field("summary", "Summary", insight.editedSummary || insight.summary);
  const [detailLabel, detail] = field("detail", "Detail", insight.editedDetail || insight.detail, true);
  const [suggestionLabel, suggestion] = field("suggestion", "Suggestion", insight.editedSuggestion || insight.suggestion, true);
  const layer = h(
    "select",
    { id: `${insight.id}-layer` },
    LAYERS.map((value) => h("option", { value, selected: (insight.userLayer || insight.suggestedLayer || "") === value }, value || "no layer")),
  );
  const act = (button, body) =>
    busy(button, where, async () => {
      await api.patch(url, body);
      await reload();
    });
  const approve = h("button", { type: "button", class: "primary" }, "Approve");
  approve.onclick = () => act(approve, { status: "approved" });
  const reject = h("button", { type: "button" }, "Reject");
  reject.onclick = () => act(reject, { status: "rejected" });
  const save = h("button", { type: "button" }, "Save edits");
  save.onclick = () =>
    act(save, {
      editedSummary: summary.value,
      editedDetail: detail.value,
      editedSuggestion: suggestion.value || null,
      userLayer: layer.value || null,
    });
  const remove = h("button", { type: "button", class: "danger" }, "Delete");
  remove.onclick = async () => {
    if (!(await confirmDialog("Delete this insight?", insight.summary, "Delete"))) return;
    await busy(remove, where, async () => {
      await api.del(url);
      await reload();
    });
  };
  const form = h(
    "div",
    { class: "stack", hidden: true },
    summaryLabel,
    summary,
    detailLabel,
    detail,
    suggestionLabel,
    suggestion,
    h("label", { for: `${insight.id}-layer` }, "Layer to record it in"),
    layer,
    h("div", { class: "row" }, save),
  );
  const toggle = h("button", { type: "button", "aria-expanded": "false" }, "Edit");
  toggle.onclick = () => {
    form.hidden = !form.hidden;
    toggle.setAttribute("aria-expanded", String(!form.hidden));
  };
  return h(
    "article",
    { class: "panel stack", dataset: { insight: insight.id } },
    h(
      "div",
      { class: "row spread" },
      h("strong", {}, `[${insight.phase}] ${insight.category}`),
      h("span", { class: "tag" }, insight.status || "pending"),
    ),
    h("p", {}, insight.editedSummary || insight.summary),
    h("p", { class: "muted" }, insight.editedDetail || insight.detail),
    h("div", { class: "row" }, approve, reject, toggle, remove),
    form,
  );
}
