// A job's live log as both dashboards show it: lines as text (never markup: the agent's
// words are written by strangers), a filter (all, agent, tools), "follow" scrolling and
// the stream's connection state.

import { clock, h } from "./ui.js";

const TOOL_LINE = /^\S+ (→ |\[tool-error\])/;
// The runner's own lines are tagged `[…]` or are one of its few phase-boundary notes;
// everything else is the agent speaking.
const RUNNER_LINE =
  /^\S+ (\[|Runner started|Phase \S+ \(visit|Phase advanced|Job parked|All phases complete|Job failed)/;
const MAX_LOG_LINES = 5000;

const STATE_TEXT = { live: "live", reconnecting: "reconnecting…", closed: "stream closed" };

function kind(text) {
  if (TOOL_LINE.test(text)) return "tools";
  return RUNNER_LINE.test(text) ? "runner" : "agent";
}

/**
 * `{panel, addLine(index, text), setState(state)}`: `panel` is the section to place,
 * `setState` takes `Client.followLog`'s states. `onLine` is called after each line.
 */
export function logView({ onLine } = {}) {
  const box = h("div", {
    class: "log",
    id: "log",
    role: "log",
    "aria-live": "polite",
    "aria-label": "Live log",
    tabindex: "0",
  });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const filter = h(
    "select",
    { id: "log-filter", onchange: () => applyFilter() },
    h("option", { value: "all" }, "All"),
    h("option", { value: "agent" }, "Agent"),
    h("option", { value: "tools" }, "Tools"),
  );
  const conn = h("span", { class: "conn closed", id: "log-connection" }, "connecting");
  const panel = h(
    "section",
    { "aria-label": "Log" },
    h(
      "div",
      { class: "row spread" },
      h(
        "div",
        { class: "row" },
        h("label", { class: "check", for: "log-follow" }, follow, "Follow"),
        h("label", { for: "log-filter", class: "check" }, "Show", filter),
      ),
      conn,
    ),
    box,
  );

  function visible(node) {
    const wanted = filter.value;
    return wanted === "all" || node.dataset.kind === wanted;
  }

  function applyFilter() {
    for (const node of box.children) node.hidden = !visible(node);
  }

  function addLine(index, text) {
    const space = text.indexOf(" ");
    const stamp = space > 0 ? text.slice(0, space) : "";
    const body = space > 0 ? text.slice(space + 1) : text;
    const when = stamp ? new Date(stamp) : null;
    const node = h(
      "div",
      {
        class: `line${body.startsWith("[tool-error]") ? " error" : body.startsWith("→ ") ? " tool" : ""}`,
        dataset: { index: String(index), kind: kind(text) },
      },
      h("span", { class: "time" }, when && !Number.isNaN(when.getTime()) ? clock(when) : ""),
      body,
    );
    node.hidden = !visible(node);
    box.append(node);
    while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
    if (follow.checked) box.scrollTop = box.scrollHeight;
    if (onLine) onLine(index, text);
  }

  function setState(state) {
    conn.className = `conn ${state}`;
    conn.textContent = STATE_TEXT[state] || state;
  }

  box.addEventListener("scroll", () => {
    const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
    if (!atEnd && follow.checked && document.activeElement === box) follow.checked = false;
  });

  return { panel, addLine, setState };
}
