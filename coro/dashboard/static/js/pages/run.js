// Run detail: header and controls, phases, approval panel, replies, the live log and
// tabs for work items and PRs, the diff, campaign children, insights and diagnostics.

import * as api from "../api.js";
import { logView } from "../log.js";
import { busy, clear, confirmDialog, cost, h, markdown, notice, statusBadge, time, tokens } from "../ui.js";
import { renderCampaign } from "./run-campaign.js";
import { renderInsights } from "./run-insights.js";

const CHECKPOINT = "developer-input: approval after ";
// As `coro.domain.models`: a finished run takes no resume or message (a complete one can
// still re-run a phase); a stopped one (finished, failed or escalated) ends its stream and
// takes no pause or interactive switch, but failed and escalated runs resume.
const FINISHED = new Set(["complete", "cancelled"]);
const STOPPED = new Set([...FINISHED, "failed", "escalated"]);
const FINISHED_WHY = {
  complete: "This run is complete: it takes no resume or message. Rerun a phase to reopen it.",
  cancelled: "This run was cancelled: it takes no resume, rerun or message. Start a new run to do it again.",
};
const EDITABLE = /\.(md|txt|ya?ml|json)$/i;

export async function render(main, [jobId]) {
  const id = encodeURIComponent(jobId);
  const message = h("div");
  const header = h("div");
  const controls = h("div", { class: "row controls", role: "group", "aria-label": "Controls" });
  const attention = h("div");
  const phases = h("div", { class: "phases", role: "list", "aria-label": "Phases" });
  const tabBody = h("div");
  let job = null;
  let tab = "log";

  // --- the live log ---------------------------------------------------------------
  const log = logView({ onLine: () => scheduleRefresh() });
  const logPanel = log.panel;
  // The stream ends when the run stops; when the run goes on again (a resume or rerun)
  // `load` follows it anew, from the line after the last one shown.
  let closeLog = null;
  let lastLine = -1;
  function follow() {
    const after = lastLine >= 0 ? `?lastEventId=${lastLine}` : "";
    closeLog = api.runner.followLog(`/jobs/${id}/stream${after}`, {
      onLine: (index, text) => {
        if (index <= lastLine) return;
        lastLine = index;
        log.addLine(index, text);
      },
      onDone: () => {
        closeLog = null;
        load();
      },
      onState: log.setState,
    });
  }

  // --- loading and refreshing -----------------------------------------------------
  let refreshTimer = null;
  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      await load();
    }, 300);
  }

  async function load() {
    try {
      job = await api.get(`/jobs/${id}`);
    } catch (error) {
      notice(message, `Could not load the run: ${error.message}`, "error");
      return;
    }
    drawHeader();
    drawComposer();
    if (!closeLog && !STOPPED.has(job.status)) follow();
    // Sections with inputs are redrawn only when what they show changed, so a reply
    // being typed or a model being chosen survives the live refreshes.
    redraw("controls", [job.status, job.paused, job.interactive, job.phase], drawControls);
    const edits = (job.artifacts || []).map((a) => `${a.id}@${a.editedAt || ""}@${a.updatedAt || ""}`);
    redraw("attention", [job.status, job.paused, job.awaitingEvent, job.escalationMessage, edits], drawAttention);
    redraw("phases", [job.phase, job.workflowPhases, job.phaseUsage?.length, job.phaseModelOverrides, job.status === "cancelled"], drawPhases);
    // A running phase's usage changes after every round trip: only its text is updated,
    // so a model override being typed survives.
    drawPhaseUsage();
    if (tab === "work" || tab === "diagnostics") drawTab();
    if (tab === "campaign") redraw("campaign", [job.campaignChildren, job.status], drawTab);
  }

  const drawn = {};
  function redraw(section, key, draw) {
    const value = JSON.stringify(key);
    if (drawn[section] === value) return;
    drawn[section] = value;
    draw();
  }

  // --- header and controls --------------------------------------------------------
  function drawHeader() {
    const params = job.params || {};
    clear(
      header,
      h("h1", {}, job.id),
      h(
        "div",
        { class: "row" },
        statusBadge(job.status),
        job.paused ? h("span", { class: "tag" }, "paused") : null,
        h("span", {}, `phase `, h("strong", { id: "run-phase" }, job.phase)),
        h("span", { class: "muted" }, job.workflowPath),
        params.repo ? h("span", { class: "muted" }, `repo ${params.repo}`) : null,
        h("span", { class: "muted" }, `cost ${cost(job.tokenUsage?.totalCostUsd)}`),
      ),
      params.description ? h("p", {}, params.description) : null,
      job.escalationMessage
        ? h("p", { class: "notice error", role: "alert" }, job.escalationMessage)
        : null,
    );
  }

  function drawControls() {
    const finished = FINISHED.has(job.status);
    const parked = job.status.startsWith("awaiting-") || ["failed", "escalated"].includes(job.status);
    const fromPhase = h(
      "select",
      { id: "resume-phase", "aria-label": "Resume from phase", disabled: finished },
      h("option", { value: "" }, `current (${job.phase})`),
      (job.workflowPhases || []).map((p) => h("option", { value: p.name }, p.name)),
    );
    const fresh = h("input", { type: "checkbox", id: "resume-fresh", disabled: finished });
    const pause = h("button", { type: "button", id: "pause", disabled: finished || job.paused || parked }, "Pause");
    pause.onclick = () => busy(pause, message, async () => {
      await api.post(`/jobs/${id}/pause`, {});
      await load();
    });
    const resume = h("button", { type: "button", id: "resume", disabled: finished }, "Resume");
    resume.onclick = () => busy(resume, message, async () => {
      const body = {};
      if (fromPhase.value) body.fromPhase = fromPhase.value;
      if (fresh.checked) body.clearSession = true;
      await api.post(`/jobs/${id}/resume`, body);
      await load();
    });
    const cancel = h("button", { type: "button", id: "cancel", class: "danger", disabled: finished }, "Cancel");
    cancel.onclick = async () => {
      const sure = await confirmDialog(
        "Cancel this run?",
        "The running phase stops at its next safe point and no later phase runs.",
        "Cancel run",
      );
      if (sure) {
        await busy(cancel, message, async () => {
          await api.post(`/jobs/${id}/cancel`, {});
          await load();
        });
      }
    };
    const interactive = h("input", {
      type: "checkbox",
      id: "interactive",
      checked: job.interactive,
      disabled: STOPPED.has(job.status),
    });
    interactive.onchange = () => busy(interactive, message, async () => {
      await api.patch(`/jobs/${id}/interactive`, { interactive: interactive.checked });
      await load();
    });
    clear(
      controls,
      pause,
      h("span", { class: "row" }, resume, h("label", { for: "resume-phase", class: "check" }, "from", fromPhase),
        h("label", { class: "check", for: "resume-fresh" }, fresh, "fresh session")),
      cancel,
      h("label", { class: "check", for: "interactive" }, interactive, "Interactive (stop for approval after each checkpoint)"),
      finished ? h("p", { class: "muted", id: "finished-why" }, FINISHED_WHY[job.status]) : null,
    );
  }

  // --- what needs the developer ---------------------------------------------------
  function drawAttention() {
    const label = job.awaitingEvent || "";
    if (label.startsWith(CHECKPOINT)) {
      clear(attention, approvalPanel(label.slice(CHECKPOINT.length)));
    } else if (
      ["escalated", "failed"].includes(job.status) ||
      (job.status === "awaiting-developer-input" && !job.paused)
    ) {
      const question = label.startsWith("developer-input:") ? label.slice(16).trim() : job.escalationMessage;
      clear(attention, replyPanel("Reply to the agent", question, "Send reply"));
    } else {
      clear(attention);
    }
  }

  function approvalPanel(phase) {
    const artefacts = (job.artifacts || []).filter((a) => a.phase === phase);
    const list = h("div", { class: "stack" });
    for (const artefact of artefacts) list.append(artefactView(artefact));
    const feedback = h("textarea", { id: "changes", placeholder: "What should change?" });
    const approve = h("button", { type: "button", class: "primary", id: "approve" }, "Approve");
    approve.onclick = () => busy(approve, message, async () => {
      await api.post(`/jobs/${id}/resume`, {});
      await load();
    });
    const changes = h("button", { type: "button", id: "request-changes" }, "Request changes");
    changes.onclick = () => busy(changes, message, async () => {
      if (!feedback.value.trim()) throw new Error("Say what should change first.");
      await api.post(`/jobs/${id}/message`, { message: feedback.value.trim() });
      feedback.value = "";
      await load();
    });
    return h(
      "section",
      { class: "panel stack", id: "approval", "aria-labelledby": "approval-title" },
      h("h2", { id: "approval-title" }, `Approve phase ${phase}?`),
      artefacts.length ? list : h("p", { class: "muted" }, "This phase published no artefacts."),
      h("label", { for: "changes" }, "Request changes"),
      feedback,
      h("div", { class: "row" }, approve, changes),
    );
  }

  function artefactView(artefact) {
    const path = artefact.data?.path || "";
    const view = h("div", { class: "markdown" }, h("p", { class: "muted" }, "Loading…"));
    const box = h(
      "article",
      { class: "panel artefact", dataset: { artifact: artefact.id } },
      h("h3", {}, `${artefact.title} `, h("span", { class: "muted" }, `${artefact.kind}${path ? ` · ${path}` : ""}`)),
      view,
    );
    const contentUrl = `/jobs/${id}/artifacts/${encodeURIComponent(artefact.id)}/content`;
    let text = null;
    const show = () => {
      if (/\.md$/i.test(path) || !path) clear(view, markdown(text));
      else clear(view, h("pre", {}, text));
    };
    api.getText(contentUrl).then(
      (content) => {
        text = content;
        show();
        if (EDITABLE.test(path)) box.append(editor());
      },
      (error) => clear(view, h("p", { class: "muted" }, `No content: ${error.message}`)),
    );
    function editor() {
      const area = h("textarea", { "aria-label": `Edit ${artefact.title}`, hidden: true, class: "mono", rows: 14 });
      const edit = h("button", { type: "button", class: "edit-artefact" }, "Edit");
      const save = h("button", { type: "button", class: "primary save-artefact", hidden: true }, "Save");
      edit.onclick = () => {
        area.value = text;
        area.hidden = !area.hidden;
        save.hidden = area.hidden;
        edit.textContent = area.hidden ? "Edit" : "Close editor";
      };
      save.onclick = () => busy(save, message, async () => {
        await api.put(contentUrl, { content: area.value });
        text = area.value;
        show();
        area.hidden = true;
        save.hidden = true;
        edit.textContent = "Edit";
        notice(message, `Saved ${artefact.title}.`, "ok");
      });
      return h("div", { class: "stack" }, area, h("div", { class: "row" }, edit, save));
    }
    return box;
  }

  function replyPanel(title, question, buttonLabel) {
    const text = h("textarea", { id: "reply" });
    const send = h("button", { type: "button", class: "primary", id: "send-reply" }, buttonLabel);
    send.onclick = () => busy(send, message, async () => {
      if (!text.value.trim()) throw new Error("Write a reply first.");
      await api.post(`/jobs/${id}/message`, { message: text.value.trim() });
      text.value = "";
      await load();
    });
    return h(
      "section",
      { class: "panel stack", "aria-labelledby": "reply-title" },
      h("h2", { id: "reply-title" }, title),
      question ? h("p", {}, question) : null,
      h("label", { for: "reply" }, "Your reply"),
      text,
      h("div", { class: "row" }, send),
    );
  }

  // --- phases ---------------------------------------------------------------------
  function phaseUsageTotals() {
    const usage = {};
    for (const u of job.phaseUsage || []) {
      const sum = (usage[u.phase] ||= { inputTokens: 0, outputTokens: 0, costUsd: 0, visits: 0, running: false });
      sum.inputTokens += u.inputTokens || 0;
      sum.outputTokens += u.outputTokens || 0;
      sum.costUsd += u.costUsd || 0;
      sum.visits += 1;
      sum.running ||= Boolean(u.inProgress);
    }
    return usage;
  }

  function usageText(used) {
    if (!used) return "not run yet";
    const running = used.running ? " · running" : "";
    return `${used.visits} visit(s) · ${tokens(used.inputTokens)} in / ${tokens(used.outputTokens)} out · ${cost(used.costUsd)}${running}`;
  }

  function drawPhaseUsage() {
    const usage = phaseUsageTotals();
    for (const node of phases.querySelectorAll("[data-usage-of]")) {
      const text = usageText(usage[node.dataset.usageOf]);
      if (node.textContent !== text) node.textContent = text;
    }
  }

  function drawPhases() {
    clear(
      phases,
      (job.workflowPhases || []).map((phase) => {
        const override = job.phaseModelOverrides?.[phase.name];
        const model = h("input", {
          id: `model-${phase.name}`,
          value: override?.model || "",
          placeholder: "default model",
          size: 14,
        });
        const pin = h("button", { type: "button" }, "Set");
        pin.onclick = () => busy(pin, message, async () => {
          const body = model.value.trim() ? { phase: phase.name, model: model.value.trim() } : { phase: phase.name, clear: true };
          await api.patch(`/jobs/${id}/phase-overrides`, body);
          await load();
        });
        const rerun = h(
          "button",
          { type: "button", class: "rerun", dataset: { phase: phase.name }, disabled: job.status === "cancelled" },
          "Rerun",
        );
        rerun.onclick = () => busy(rerun, message, async () => {
          await api.post(`/jobs/${encodeURIComponent(job.id)}/phases/${encodeURIComponent(phase.name)}/rerun`, {});
          await load();
        });
        return h(
          "div",
          { class: `phase${phase.name === job.phase ? " current" : ""}`, role: "listitem" },
          h("div", { class: "name" }, phase.name),
          h("div", { class: "meta", dataset: { usageOf: phase.name } }),
          h("label", { for: `model-${phase.name}`, class: "meta" }, "Model override"),
          h("div", { class: "row" }, model, pin, rerun),
        );
      }),
    );
  }

  // --- tabs -----------------------------------------------------------------------
  const TABS = [
    ["log", "Log"],
    ["work", "Work items & PRs"],
    ["diff", "Diff"],
    ["campaign", "Campaign"],
    ["insights", "Insights"],
    ["diagnostics", "Diagnostics"],
  ];
  const tabList = h("div", { class: "tabs", role: "tablist", "aria-label": "Run details" });
  function drawTabs() {
    clear(
      tabList,
      TABS.filter(([key]) => key !== "campaign" || job?.campaignChildren).map(([key, label]) =>
        h(
          "button",
          {
            type: "button",
            role: "tab",
            id: `tab-${key}`,
            "aria-selected": String(tab === key),
            "aria-controls": "tab-panel",
            onclick: () => {
              tab = key;
              drawTabs();
              drawTab();
            },
          },
          label,
        ),
      ),
    );
  }

  async function drawTab() {
    logPanel.hidden = tab !== "log";
    if (tab === "log") {
      clear(tabBody);
      return;
    }
    if (tab === "work") clear(tabBody, workView());
    if (tab === "diff") await diffView();
    if (tab === "campaign") clear(tabBody, renderCampaign(job, load, message));
    if (tab === "insights") {
      const refresh = async () => {
        await load();
        await drawTab();
      };
      clear(tabBody, await renderInsights(job, refresh, message));
    }
    if (tab === "diagnostics") clear(tabBody, diagnosticsView());
  }

  function workView() {
    const items = job.workItems || [];
    const prs = job.prMappings || [];
    return h(
      "div",
      { class: "stack" },
      h("h2", {}, "Work items"),
      items.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { "aria-label": "Work items" },
              h("thead", {}, h("tr", {}, ["Item", "Status", "Loops", "Pull requests"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                {},
                items.map((item) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, item.name, item.name === job.currentWorkItem ? h("span", { class: "tag" }, "current") : null),
                    h("td", {}, itemBadge(item.status)),
                    h("td", {}, String(item.loopCount)),
                    h("td", {}, prs.filter((p) => p.workItem === item.name).map(prLink)),
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No work items yet."),
      h("h2", {}, "Pull requests"),
      prs.length ? h("ul", {}, prs.map((p) => h("li", {}, prLink(p), ` ${p.workItem} · ${p.repoSlug}`))) : h("p", { class: "muted" }, "No pull requests yet."),
    );
  }

  function itemBadge(status) {
    const tone = { complete: "ok", escalated: "bad", "in-progress": "live" }[status] || "muted";
    return h("span", { class: `badge ${tone}` }, status);
  }

  function prLink(pr) {
    const state = pr.mergedAt ? "merged" : pr.declinedAt ? "declined" : "open";
    const label = `#${pr.prId} (${state})`;
    return pr.url && /^https?:/.test(pr.url) ? h("a", { href: pr.url, target: "_blank", rel: "noopener" }, label) : h("span", {}, label);
  }

  async function diffView() {
    if (!(job.checkouts || []).length) {
      clear(tabBody, h("p", { class: "muted" }, "No repository has been cloned in this run."));
      return;
    }
    clear(tabBody, h("p", { class: "muted" }, "Loading the diff…"));
    try {
      const diff = await api.get(`/jobs/${id}/diff`);
      const lines = (diff.diff || "").split("\n").map((line) =>
        h(
          "div",
          { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "" },
          line || " ",
        ),
      );
      clear(
        tabBody,
        h("p", { class: "muted" }, `${diff.repo}: ${diff.base} → ${diff.head || "working tree"}${diff.truncated ? " (truncated)" : ""}`),
        diff.diff ? h("pre", { class: "diff", "aria-label": "Diff" }, lines) : h("p", {}, "No changes."),
      );
    } catch (error) {
      clear(tabBody, h("p", { class: "muted" }, `No diff: ${error.message}`));
    }
  }

  function diagnosticsView() {
    const total = job.tokenUsage || {};
    const input = (total.inputTokens || 0) + (total.cacheReadInputTokens || 0) + (total.cacheCreationInputTokens || 0);
    const hitRate = input ? Math.round(((total.cacheReadInputTokens || 0) / input) * 100) : 0;
    return h(
      "div",
      { class: "stack" },
      h(
        "div",
        { class: "cards" },
        [
          ["Input tokens", tokens(total.inputTokens)],
          ["Output tokens", tokens(total.outputTokens)],
          ["Cache hit rate", `${hitRate}%`],
          ["Cost", cost(total.totalCostUsd)],
        ].map(([label, value]) => h("div", { class: "card" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label))),
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "aria-label": "Usage by phase visit" },
          h("thead", {}, h("tr", {}, ["Phase", "Visit", "Model", "In", "Out", "Cache read", "Cost", "Time"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            (job.phaseUsage || []).map((u) =>
              h(
                "tr",
                {},
                h("td", {}, u.phase),
                h("td", {}, String(u.visit ?? "")),
                h("td", {}, [u.provider, u.model].filter(Boolean).join(" / ")),
                h("td", {}, tokens(u.inputTokens)),
                h("td", {}, tokens(u.outputTokens)),
                h("td", {}, tokens(u.cacheReadInputTokens)),
                h("td", {}, cost(u.costUsd)),
                h("td", {}, u.inProgress ? "running" : u.durationMs ? `${(u.durationMs / 1000).toFixed(1)}s` : ""),
              ),
            ),
          ),
        ),
      ),
      h("p", { class: "muted" }, `Created ${time(job.createdAt)} · updated ${time(job.updatedAt)}`),
    );
  }

  // --- composer -------------------------------------------------------------------
  const composer = h("textarea", { id: "message", rows: 2, placeholder: "Message the agent" });
  const sendMessage = h("button", { type: "button", id: "send-message" }, "Send");
  const composerWhy = h("p", { class: "muted", id: "message-why", hidden: true }, "");
  sendMessage.onclick = () => busy(sendMessage, message, async () => {
    if (!composer.value.trim()) throw new Error("Write a message first.");
    const answer = await api.post(`/jobs/${id}/message`, { message: composer.value.trim() });
    composer.value = "";
    notice(message, `Message ${answer.delivery || "sent"}.`, "ok");
    await load();
  });
  // Only the disabled states change, so a message being typed survives the refreshes.
  function drawComposer() {
    const finished = FINISHED.has(job.status);
    composer.disabled = finished;
    composerWhy.hidden = !finished;
    composerWhy.textContent = finished ? `A ${job.status} run takes no message.` : "";
    // `busy` re-enables the button when its request ends; a finished run keeps it off.
    if (!sendMessage.hasAttribute("aria-busy")) sendMessage.disabled = finished;
  }

  await load();
  if (!job) return undefined;
  drawTabs();
  main.append(
    h("p", {}, h("a", { href: "#/runs" }, "← All runs")),
    header,
    message,
    controls,
    attention,
    h("h2", {}, "Phases"),
    phases,
    tabList,
    h("div", { id: "tab-panel", role: "tabpanel" }, logPanel, tabBody),
    h(
      "section",
      { class: "stack", "aria-labelledby": "composer-title" },
      h("h2", { id: "composer-title" }, "Message"),
      h("label", { for: "message" }, "Message to the agent (live turn, next phase, or to wake a parked run)"),
      composer,
      composerWhy,
      h("div", { class: "row" }, sendMessage),
    ),
  );
  if (!closeLog) follow();
  return () => {
    closeLog?.();
    clearTimeout(refreshTimer);
  };
}
