// New run: a plan-mode chat (POST /intake/stream) that ends in a <brief> the developer
// can edit, and the plain form it fills, which posts /jobs.

import * as api from "../api.js";
import { busy, clear, h, markdown, notice } from "../ui.js";

const BRIEF = /<brief>([\s\S]*?)<\/brief>/;

export async function render(main) {
  const message = h("div");
  // Whether plan mode can answer is asked up front, so a runner without an LLM says so
  // before anything is typed (if the question fails, a turn's 503 still says it).
  const [listed, intake] = await Promise.allSettled([api.get("/workflows?kind=job"), api.get("/intake")]);
  const workflows = listed.status === "fulfilled" ? listed.value.workflows : [];
  if (listed.status === "rejected") notice(message, `Could not list workflows: ${listed.reason.message}`, "error");

  // --- the form -------------------------------------------------------------------
  const field = (id, label, input, hint) =>
    h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("div", { class: "muted" }, hint) : null);
  const workflow = h(
    "select",
    { id: "run-workflow" },
    workflows.map((wf) => h("option", { value: wf.workflowPath }, `${wf.name} — ${wf.workflowPath}`)),
  );
  const standard = workflows.find((wf) => wf.workflowPath === "workflows/job/workflow.md");
  if (standard) workflow.value = standard.workflowPath;
  const repo = h("input", { id: "run-repo", placeholder: "org/api (or a local repository name)" });
  const service = h("input", { id: "run-service" });
  const description = h("textarea", { id: "run-description", rows: 8, required: true });
  const reviewers = h("input", { id: "run-reviewers", placeholder: "alice, bob" });
  const ticket = h("input", { id: "run-ticket", placeholder: "PROJ-123" });
  const interactive = h("input", { type: "checkbox", id: "run-interactive", checked: true });
  const maxCost = h("input", { id: "run-budget", type: "number", min: "0", step: "0.5", placeholder: "no limit" });
  const submit = h("button", { type: "submit", class: "primary", id: "run-submit" }, "Start run");
  const form = h(
    "form",
    {
      class: "panel",
      id: "run-form",
      "aria-labelledby": "form-title",
      onsubmit: (event) => {
        event.preventDefault();
        busy(submit, message, create);
      },
    },
    h("h2", { id: "form-title" }, "Run details"),
    field("run-workflow", "Workflow", workflow),
    field("run-description", "What should be done", description, "Goal, context, acceptance criteria."),
    field("run-repo", "Repository", repo),
    field("run-service", "Service name (optional)", service),
    field("run-reviewers", "Reviewers (comma-separated, optional)", reviewers),
    field("run-ticket", "Jira ticket (optional)", ticket, "The ticket is read into the run."),
    field("run-budget", "Budget in USD (optional)", maxCost),
    h("div", { class: "field" }, h("label", { class: "check", for: "run-interactive" }, interactive, "Interactive: stop for my approval after each checkpoint")),
    h("div", { class: "row" }, submit),
  );

  async function create() {
    if (!description.value.trim() && !ticket.value.trim()) {
      throw new Error("Describe what should be done (or give a ticket).");
    }
    const body = { workflowPath: workflow.value, interactive: interactive.checked, triggerSource: "dashboard" };
    if (description.value.trim()) body.description = description.value.trim();
    if (repo.value.trim()) body.repo = repo.value.trim();
    if (service.value.trim()) body.serviceName = service.value.trim();
    if (ticket.value.trim()) body.jiraTicketId = ticket.value.trim();
    const names = reviewers.value.split(",").map((r) => r.trim()).filter(Boolean);
    if (names.length) body.reviewers = names;
    if (maxCost.value) body.budget = { maxCostUsd: Number(maxCost.value) };
    const created = await api.post("/jobs", body);
    location.hash = `#/runs/${encodeURIComponent(created.jobId)}`;
  }

  function fillFrom(brief) {
    if (brief.workflowPath && workflows.some((wf) => wf.workflowPath === brief.workflowPath)) {
      workflow.value = brief.workflowPath;
    }
    if (brief.description) description.value = brief.description;
    if (brief.repo) repo.value = brief.repo;
    if (brief.serviceName) service.value = brief.serviceName;
    if (Array.isArray(brief.reviewers)) reviewers.value = brief.reviewers.join(", ");
    if (typeof brief.interactive === "boolean") interactive.checked = brief.interactive;
    notice(message, "The brief is in the form below: check it, then start the run.", "ok");
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    description.focus({ preventScroll: true });
  }

  // --- plan mode ------------------------------------------------------------------
  const sessionId = crypto.randomUUID();
  const history = [];
  const transcript = h("div", { class: "chat", id: "chat", "aria-live": "polite", "aria-label": "Plan-mode conversation" });
  const budget = h("p", { class: "muted", id: "chat-budget" }, "");
  const input = h("textarea", { id: "chat-input", rows: 3, placeholder: "Describe the change you want…" });
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  const title = h("h2", { id: "chat-title" }, "Plan it with the assistant");
  const composer = h("div", { class: "stack" }, h("label", { for: "chat-input" }, "Your message"), input, h("div", { class: "row" }, send));
  const chat = h(
    "form",
    {
      class: "panel stack",
      id: "plan-chat",
      "aria-labelledby": "chat-title",
      onsubmit: (event) => {
        event.preventDefault();
        busy(send, message, turn);
      },
    },
    title,
    transcript,
    budget,
    composer,
  );

  /** Plan mode cannot answer: the note (once) in place of the composer; `typed` (a
   * message it could not take) moves into the form's description, never lost. */
  function planModeOff(note, typed) {
    title.textContent = "Plan mode is off";
    transcript.hidden = !transcript.childElementCount;
    budget.hidden = !budget.textContent;
    clear(composer, h("p", { id: "no-llm" }, note));
    if (!typed) return;
    const written = description.value.trim();
    description.value = written ? `${written}\n\n${typed}` : typed;
    notice(message, "Your message is in the form below, under “What should be done”.", "ok");
  }
  if (intake.status === "fulfilled" && !intake.value.available) planModeOff(intake.value.message);

  async function turn() {
    const text = input.value.trim();
    if (!text) throw new Error("Write a message first.");
    history.push({ role: "user", content: text });
    const mine = h("div", { class: "bubble user" }, text);
    transcript.append(mine);
    input.value = "";
    const reply = h("div", { class: "bubble assistant" }, "…");
    transcript.append(reply);
    let answer = "";
    const context = {
      availableWorkflows: workflows.map((wf) => ({
        id: wf.id,
        name: wf.name,
        workflowPath: wf.workflowPath,
        description: (wf.description || "").slice(0, 2000),
      })),
      userLocale: navigator.language,
    };
    try {
      for await (const frame of api.postStream("/intake/stream", { sessionId, messages: history, context })) {
        const event = JSON.parse(frame.data);
        if (event.type === "token") {
          answer += event.text;
          reply.textContent = answer.replace(BRIEF, "").trim() || "…";
        } else if (event.type === "done") {
          const limits = event.limits || {};
          budget.textContent = `Turns ${event.turns}${limits.maxTurns ? ` of ${limits.maxTurns}` : ""} · tokens ${event.sessionTokens}${limits.maxSessionTokens ? ` of ${limits.maxSessionTokens}` : ""}`;
        } else if (event.type === "error") {
          throw new Error(event.message || "The assistant could not answer.");
        }
      }
    } catch (error) {
      // The turn did not happen: what was typed goes back where it can be sent again.
      reply.remove();
      mine.remove();
      history.pop();
      if (error.status === 503) {
        planModeOff(error.message, text);
        return;
      }
      input.value = text;
      throw error;
    }
    history.push({ role: "assistant", content: answer });
    clear(reply, markdown(answer.replace(BRIEF, "").trim() || "Here is the brief."));
    const found = answer.match(BRIEF);
    if (found) {
      try {
        const brief = JSON.parse(found[1]);
        reply.append(h("div", { class: "row" }, h("button", { type: "button", id: "use-brief", onclick: () => fillFrom(brief) }, "Use this brief")));
        fillFrom(brief);
      } catch {
        notice(message, "The assistant's brief was not valid JSON; fill the form yourself.", "error");
      }
    }
  }

  main.append(h("h1", {}, "New run"), message, chat, form);
  return undefined;
}
