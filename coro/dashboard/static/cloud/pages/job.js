// One team job: what it is, its controls (asked of the runner that owns it, or queued
// for it while it is offline), a message to the agent and its live log through the cloud.

import { logView } from "../../js/log.js";
import { busy, clear, confirmDialog, cost, h, notice, statusBadge, time } from "../../js/ui.js";
import { cloud } from "../session.js";
import { takeStartWarning } from "./jobs.js";

const REFRESH_MS = 3000;

export async function render(main, { teamId, params }) {
  const jobId = params[1];
  const base = `/teams/${encodeURIComponent(teamId)}/jobs/${encodeURIComponent(jobId)}`;
  const message = h("div");
  const header = h("div");
  const controls = h("div", { class: "row controls", role: "group", "aria-label": "Controls" });
  let job = null;
  let drawnControls = null;

  const log = logView({ onLine: () => scheduleRefresh() });

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
      job = await cloud.get(base);
    } catch (error) {
      notice(message, `Could not load the job: ${error.message}`, "error");
      return;
    }
    drawHeader();
    const key = JSON.stringify([job.status, job.paused]);
    if (key !== drawnControls) {
      drawnControls = key;
      drawControls();
    }
  }

  /** A command's answer: the runner's, or 202 when it waits for the runner. */
  function answered(answer, what) {
    if (answer && answer.queued) {
      notice(message, `${what}: queued until the job's runner is connected.`, "ok");
    } else {
      notice(message, `${what}: done.`, "ok");
    }
  }

  function drawHeader() {
    const jobParams = job.params || {};
    clear(
      header,
      h("h1", {}, job.id),
      h(
        "div",
        { class: "row" },
        statusBadge(job.status),
        job.paused ? h("span", { class: "tag" }, "paused") : null,
        job.phase ? h("span", {}, "phase ", h("strong", { id: "job-phase" }, job.phase)) : null,
        h("span", { class: "muted" }, job.workflowPath || ""),
        jobParams.repo ? h("span", { class: "muted" }, `repo ${jobParams.repo}`) : null,
        h("span", { class: "muted" }, `cost ${cost(job.tokenUsage?.totalCostUsd)}`),
        h("span", { class: "muted", title: job.updatedAt || "" }, `updated ${time(job.updatedAt)}`),
      ),
      jobParams.description ? h("p", {}, String(jobParams.description)) : null,
      job.escalationMessage ? h("p", { class: "notice error", role: "alert" }, job.escalationMessage) : null,
      job.awaitingEvent ? h("p", { class: "notice" }, `Waiting for: ${job.awaitingEvent}`) : null,
    );
  }

  function command(button, path, what, body = {}) {
    return busy(button, message, async () => {
      answered(await cloud.post(`${base}/${path}`, body), what);
      await load();
    });
  }

  function drawControls() {
    const stopped = ["complete", "cancelled"].includes(job.status);
    const pause = h("button", { type: "button", id: "pause", disabled: stopped || job.paused }, "Pause");
    pause.onclick = () => command(pause, "pause", "Pause");
    const resume = h("button", { type: "button", id: "resume", disabled: stopped }, "Resume");
    resume.onclick = () => command(resume, "resume", "Resume");
    const cancel = h("button", { type: "button", id: "cancel", class: "danger", disabled: stopped }, "Cancel");
    cancel.onclick = async () => {
      const sure = await confirmDialog(
        "Cancel this job?",
        "The runner stops it at its next safe point and no later phase runs.",
        "Cancel job",
      );
      if (sure) await command(cancel, "cancel", "Cancel");
    };
    clear(controls, pause, resume, cancel);
  }

  const composer = h("textarea", { id: "message", rows: 2, placeholder: "Message the agent" });
  const send = h("button", { type: "button", id: "send-message" }, "Send");
  send.onclick = () =>
    busy(send, message, async () => {
      if (!composer.value.trim()) throw new Error("Write a message first.");
      answered(await cloud.post(`${base}/message`, { message: composer.value.trim() }), "Message");
      composer.value = "";
      await load();
    });

  await load();
  const warning = takeStartWarning();
  if (warning) notice(message, warning, "ok");
  if (!job) {
    main.append(h("p", {}, h("a", { href: `#/t/${encodeURIComponent(teamId)}/jobs` }, "← All jobs")), message);
    return undefined;
  }
  main.append(
    h("p", {}, h("a", { href: `#/t/${encodeURIComponent(teamId)}/jobs` }, "← All jobs")),
    header,
    message,
    controls,
    log.panel,
    h(
      "section",
      { class: "stack", "aria-labelledby": "composer-title" },
      h("h2", { id: "composer-title" }, "Message"),
      h("label", { for: "message" }, "Message to the agent"),
      composer,
      h("div", { class: "row" }, send),
    ),
  );
  const close = cloud.followLog(`${base}/stream`, {
    onLine: log.addLine,
    onDone: () => load(),
    onState: log.setState,
  });
  // the stream's `done` ends it; commands queued for an offline runner change the job
  // later, so the job is polled too
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    close();
    clearInterval(timer);
    clearTimeout(refreshTimer);
  };
}
