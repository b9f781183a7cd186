// Plugins & settings: installed plugins with forms generated from their JSON Schema
// (secrets masked: a masked value sent back means "unchanged"), test connection,
// install/remove, default providers, the model aliases editor, notifications
// (`settings-notifications.js`), and proposals.

import * as api from "../api.js";
import { busy, clear, confirmDialog, h, notice } from "../ui.js";
import { renderNotifications } from "./settings-notifications.js";

const SECRET_NAME = /key|token|secret|password/i;

export async function render(main) {
  const message = h("div");
  const pluginsBox = h("section", { "aria-labelledby": "plugins-title" });
  const defaultsBox = h("section", { "aria-labelledby": "defaults-title", class: "panel" });
  const aliasesBox = h("section", { "aria-labelledby": "aliases-title", class: "panel" });
  const proposalsBox = h("section", { "aria-labelledby": "proposals-title" });
  const notificationsBox = h("section", { "aria-labelledby": "notifications-title" });
  const notificationsMessage = h("div");
  let closeNotifications = null;
  let config = null;
  let plugins = [];

  async function load() {
    [config, { plugins }] = await Promise.all([
      api.get("/config").then((body) => body.config),
      api.get("/plugins"),
    ]);
    drawPlugins();
    drawDefaults();
    drawAliases();
    if (closeNotifications) closeNotifications();
    closeNotifications = await renderNotifications(notificationsBox, {
      config,
      save: saveConfig,
      message: notificationsMessage,
    });
    await drawProposals();
  }

  /** PUT /config; says what happened in `where` (a refused patch names its paths). */
  async function saveConfig(patch, what, where = message) {
    let answer;
    try {
      answer = await api.put("/config", patch);
    } catch (error) {
      const issues = error.body?.issues || [];
      if (issues.length) error.message = `${error.message}: ${issues.map((i) => `${i.path} ${i.message}`).join("; ")}`;
      throw error;
    }
    const failed = answer.reload?.failed || [];
    const restart = answer.reload?.restartRequired || [];
    notice(
      where,
      `${what} saved.${failed.length ? ` Not loaded: ${failed.map((f) => `${f.id} (${f.error})`).join("; ")}.` : ""}${restart.length ? ` Restart the runner for: ${restart.join(", ")}.` : ""}`,
      failed.length ? "error" : "ok",
    );
    await load();
  }

  // --- plugins --------------------------------------------------------------------
  function drawPlugins() {
    const spec = h("input", { id: "install-spec", placeholder: "a package name or a path to a wheel" });
    const install = h("button", { type: "button", id: "install-plugin" }, "Install");
    install.onclick = () =>
      busy(install, message, async () => {
        if (!spec.value.trim()) throw new Error("Name a package or a wheel file first.");
        notice(message, "Installing with pip…", "info");
        await api.post("/plugins/install", { spec: spec.value.trim() });
        notice(message, `Installed ${spec.value.trim()}.`, "ok");
        await load();
      });
    clear(
      pluginsBox,
      h("h2", { id: "plugins-title" }, "Plugins"),
      h("div", { class: "stack" }, plugins.map(pluginCard)),
      h(
        "div",
        { class: "panel stack" },
        h("label", { for: "install-spec" }, "Install a plugin (pip)"),
        h("div", { class: "row" }, spec, install),
      ),
    );
  }

  /** Kinds with a connection test (tools, state backends and transports have none). */
  const TESTABLE = new Set(["executor", "scm", "tracker"]);

  function pluginCard(plugin) {
    const form = schemaForm(plugin);
    const enabled = h("input", { type: "checkbox", id: `enabled-${plugin.id}`, checked: plugin.enabled !== false });
    const save = h("button", { type: "button", class: "primary" }, "Save");
    save.onclick = () =>
      busy(save, message, () =>
        saveConfig(
          { plugins: { installed: { [plugin.id]: { enabled: enabled.checked, config: form.values() } } } },
          `${plugin.displayName || plugin.id} settings`,
        ),
      );
    const test = h("button", { type: "button" }, "Test connection");
    const result = h("div", { role: "status" });
    test.onclick = () =>
      busy(test, message, async () => {
        const answer =
          plugin.kind === "executor"
            ? await api.post(`/plugins/${encodeURIComponent(plugin.id)}/healthcheck`, {})
            : await api.post(plugin.kind === "scm" ? "/test/git" : "/test/tracker", { pluginId: plugin.id });
        clear(result, h("p", { class: `notice ${answer.ok ? "ok" : "error"}` }, answer.message));
      });
    const remove = h("button", { type: "button", class: "danger" }, "Remove");
    remove.onclick = async () => {
      if (!(await confirmDialog(`Remove ${plugin.id}?`, "The plugin is uninstalled; jobs can no longer use it.", "Remove"))) return;
      await busy(remove, message, async () => {
        await api.del(`/plugins/${encodeURIComponent(plugin.id)}`);
        await load();
      });
    };
    return h(
      "details",
      { class: "panel", dataset: { plugin: plugin.id } },
      h(
        "summary",
        {},
        h("strong", {}, plugin.displayName || plugin.id),
        ` ${plugin.kind} · ${plugin.source}${plugin.version ? ` ${plugin.version}` : ""} `,
        statusBadgeFor(plugin),
      ),
      plugin.error ? h("p", { class: "notice error" }, plugin.error) : null,
      plugin.description ? h("p", { class: "muted" }, plugin.description) : null,
      h("div", { class: "field" }, h("label", { class: "check", for: `enabled-${plugin.id}` }, enabled, "Enabled")),
      form.node,
      h("div", { class: "row" }, save, TESTABLE.has(plugin.kind) ? test : null, plugin.source === "dropin" ? remove : null),
      result,
    );
  }

  function statusBadgeFor(plugin) {
    const label = plugin.error ? "error" : plugin.active ? "active" : plugin.configured ? "inactive" : "not configured";
    const tone = plugin.error ? "bad" : plugin.active ? "ok" : "muted";
    return h("span", { class: `badge ${tone}` }, label);
  }

  /** Inputs for the top-level properties of a plugin's JSON Schema. */
  function schemaForm(plugin) {
    const schema = plugin.configSchema || {};
    const current = plugin.config || {};
    const inputs = {};
    const fields = Object.entries(schema.properties || {}).map(([name, prop]) => {
      const id = `cfg-${plugin.id}-${name}`;
      const type = prop.type || (prop.anyOf || []).map((p) => p.type).find((t) => t && t !== "null") || "string";
      const secret = prop.writeOnly || prop.format === "password" || SECRET_NAME.test(name);
      const value = current[name];
      let input;
      if (prop.enum) {
        input = h("select", { id }, h("option", { value: "" }, "(default)"), prop.enum.map((v) => h("option", { value: v, selected: value === v }, v)));
      } else if (type === "boolean") {
        input = h("input", { id, type: "checkbox", checked: value ?? prop.default ?? false });
      } else if (type === "integer" || type === "number") {
        input = h("input", { id, type: "number", value: value ?? "", placeholder: prop.default != null ? String(prop.default) : "" });
      } else if (type === "string") {
        input = h("input", {
          id,
          type: secret ? "password" : "text",
          autocomplete: "off",
          value: value ?? "",
          placeholder: prop.default != null ? String(prop.default) : "",
        });
      } else {
        return null; // objects and arrays are edited in config.json
      }
      inputs[name] = { input, type, original: value };
      return h("div", { class: "field" }, h("label", { for: id }, prop.title && prop.title.toLowerCase() !== name.toLowerCase() ? `${name} — ${prop.title}` : name), input, prop.description ? h("div", { class: "muted" }, prop.description) : null);
    });
    return {
      node: h("div", {}, fields),
      values() {
        const out = { ...current };
        for (const [name, { input, type }] of Object.entries(inputs)) {
          if (type === "boolean") out[name] = input.checked;
          else if (input.value === "") delete out[name];
          else out[name] = type === "integer" ? parseInt(input.value, 10) : type === "number" ? Number(input.value) : input.value;
        }
        return out;
      },
    };
  }

  // --- defaults and aliases -------------------------------------------------------
  function drawDefaults() {
    const of = (kind) => plugins.filter((p) => p.kind === kind && p.active);
    const select = (id, options, value) =>
      h("select", { id }, h("option", { value: "" }, "(automatic)"), options.map((p) => h("option", { value: p.id, selected: p.id === value }, p.id)));
    const llm = select("default-llm", of("executor"), config.llm?.defaultProvider);
    const scm = select("default-scm", of("scm"), config.plugins?.defaults?.scm);
    const tracker = select("default-tracker", of("tracker"), config.plugins?.defaults?.tracker);
    const save = h("button", { type: "button", class: "primary", id: "save-defaults" }, "Save defaults");
    save.onclick = () =>
      busy(save, message, () =>
        saveConfig(
          {
            llm: { defaultProvider: llm.value || null },
            plugins: { defaults: { scm: scm.value || null, tracker: tracker.value || null } },
          },
          "Defaults",
        ),
      );
    clear(
      defaultsBox,
      h("h2", { id: "defaults-title" }, "Default providers"),
      h("div", { class: "field" }, h("label", { for: "default-llm" }, "LLM provider"), llm),
      h("div", { class: "field" }, h("label", { for: "default-scm" }, "Source control"), scm),
      h("div", { class: "field" }, h("label", { for: "default-tracker" }, "Tracker"), tracker),
      save,
    );
  }

  function drawAliases() {
    const rows = h("tbody");
    const loaded = config.llm?.aliases || {};
    // each row's alias as stored, so fields this table does not show survive a save
    const stored = new WeakMap();
    // The runner's `toolCalling` modes; a stored value outside them is kept as it is.
    const TOOL_CALLING = ["native", "prompted", "constrained", "auto"];
    const addRow = (name = "", alias = {}) => {
      // narrow cells, so the whole row fits beside the defaults panel
      const text = (field, value, size) => h("input", { "aria-label": `Alias ${field}`, size, value: value || "", dataset: { field } });
      const windowInput = h("input", {
        type: "number",
        min: "1000",
        step: "1",
        style: "width:7.5rem",
        placeholder: "catalogue",
        "aria-label": "Alias contextWindow",
        value: alias.contextWindow ? String(alias.contextWindow) : "",
        dataset: { field: "contextWindow" },
      });
      const modes = alias.toolCalling && !TOOL_CALLING.includes(alias.toolCalling) ? [...TOOL_CALLING, alias.toolCalling] : TOOL_CALLING;
      const calling = h(
        "select",
        { "aria-label": "Alias toolCalling", dataset: { field: "toolCalling" } },
        h("option", { value: "" }, "(default)"),
        modes.map((mode) => h("option", { value: mode, selected: mode === alias.toolCalling }, mode)),
      );
      const cells = [
        text("name", name, 10),
        text("provider", alias.provider, 8),
        text("model", alias.model, 14),
        text("reasoningEffort", alias.reasoningEffort, 6),
        windowInput,
        calling,
      ];
      const drop = h("button", { type: "button", "aria-label": `Remove alias ${name}` }, "Remove");
      const row = h("tr", {}, cells.map((c) => h("td", {}, c)), h("td", {}, drop));
      stored.set(row, alias);
      drop.onclick = () => row.remove();
      rows.append(row);
    };
    for (const [name, alias] of Object.entries(loaded)) addRow(name, alias);
    const add = h("button", { type: "button", id: "add-alias" }, "Add alias");
    add.onclick = () => addRow();
    const save = h("button", { type: "button", class: "primary", id: "save-aliases" }, "Save aliases");
    save.onclick = () =>
      busy(save, message, () => {
        // Aliases merge key by key on the runner: a removed or renamed one is sent as null.
        const aliases = Object.fromEntries(Object.keys(loaded).map((name) => [name, null]));
        for (const row of rows.children) {
          const value = Object.fromEntries([...row.querySelectorAll("[data-field]")].map((i) => [i.dataset.field, i.value.trim()]));
          if (!value.name) continue;
          const alias = { ...stored.get(row), provider: value.provider, model: value.model };
          const optional = {
            reasoningEffort: value.reasoningEffort || null,
            contextWindow: value.contextWindow ? Number(value.contextWindow) : null,
            toolCalling: value.toolCalling || null,
          };
          for (const [field, given] of Object.entries(optional)) {
            if (given === null) delete alias[field];
            else alias[field] = given;
          }
          aliases[value.name] = alias;
        }
        return saveConfig({ llm: { aliases } }, "Aliases");
      });
    clear(
      aliasesBox,
      h("h2", { id: "aliases-title" }, "Model aliases"),
      h("p", { class: "muted" }, "Phases name a model by alias (tier:planning, tier:coding, tier:mini, or your own)."),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "aria-label": "Model aliases" },
          h("thead", {}, h("tr", {}, ["Alias", "Provider", "Model", "Reasoning effort", "Context window", "Tool calling", ""].map((c) => h("th", { scope: "col" }, c)))),
          rows,
        ),
      ),
      h("p", { class: "muted" }, "Context window: the tokens a model takes, when the model catalogue does not know it (a local model). Tool calling: how the openai executor offers tools."),
      h("div", { class: "row", style: "margin-top:.6rem" }, add, save),
    );
  }

  // --- proposals ------------------------------------------------------------------
  async function drawProposals() {
    const { proposals } = await api.get("/proposals");
    clear(
      proposalsBox,
      h("h2", { id: "proposals-title" }, "Intelligence proposals"),
      proposals.length
        ? h("div", { class: "stack" }, proposals.map(proposalCard))
        : h("p", { class: "muted" }, "No proposals from agents yet."),
    );
  }

  function proposalCard(proposal) {
    const decide = (action) => {
      const button = h("button", { type: "button", class: action === "approve" ? "primary" : "danger" }, action === "approve" ? "Approve" : "Reject");
      button.onclick = () =>
        busy(button, message, async () => {
          await api.post(`/proposals/${encodeURIComponent(proposal.id)}/${action}`, {});
          notice(message, `Proposal ${action === "approve" ? "approved" : "rejected"}.`, "ok");
          await drawProposals();
        });
      return button;
    };
    return h(
      "article",
      { class: "panel stack", dataset: { proposal: proposal.id } },
      h("div", { class: "row spread" }, h("strong", {}, proposal.title), h("span", { class: "tag" }, proposal.status)),
      h("p", { class: "muted" }, `${proposal.type} · ${proposal.targetLayer || "tenant"} layer · from ${proposal.jobId}`),
      proposal.rationale ? h("p", {}, proposal.rationale) : null,
      proposal.status === "pending" ? h("div", { class: "row" }, decide("approve"), decide("reject")) : null,
    );
  }

  main.append(
    h("h1", {}, "Plugins & settings"),
    message,
    pluginsBox,
    h("div", { class: "grid split", style: "margin-top:1rem" }, defaultsBox, aliasesBox),
    notificationsBox,
    proposalsBox,
  );
  try {
    await load();
  } catch (error) {
    notice(message, `Could not load the settings: ${error.message}`, "error");
  }
  return () => closeNotifications?.();
}
