// Plugins & settings → Notifications: this browser's desktop notifications (on or off,
// and a local test) and the runner's channels (webhooks, Slack, e-mail), each with where
// it delivers, its events, its last delivery and recent failures, a test through the
// runner, and editing through PUT /config. Secrets are shown masked, as GET /config gives
// them; a mask sent back unchanged keeps the secret (the runner matches it by the
// channel's id, which is why a saved channel's id is not editable).

import * as api from "../api.js";
import * as desktop from "../notifications.js";
import { busy, clear, confirmDialog, h, notice, time } from "../ui.js";

const { DEFAULT_EVENTS, EVENTS } = desktop;

/** Per kind: its list in `config.notifications` and its fields (besides id and events). */
const KINDS = {
  webhook: {
    list: "webhooks",
    label: "Webhook",
    fields: [
      { name: "url", label: "URL", type: "url", required: true },
      { name: "secret", label: "Signing secret (HMAC-SHA256)", secret: true, required: true },
    ],
  },
  slack: {
    list: "slack",
    label: "Slack",
    fields: [{ name: "webhookUrl", label: "Incoming webhook URL", secret: true, required: true }],
  },
  email: {
    list: "email",
    label: "E-mail",
    fields: [
      { name: "host", label: "SMTP host", required: true },
      { name: "port", label: "Port", type: "number", placeholder: "587" },
      { name: "security", label: "Security", options: ["starttls", "tls", "none"] },
      { name: "username", label: "User name" },
      { name: "password", label: "Password", secret: true },
      { name: "from", label: "From", type: "email", required: true },
      { name: "to", label: "To (comma-separated)", list: true, required: true },
    ],
  },
};

function eventsText(events) {
  return events.length ? events.join(", ") : "none (muted)";
}

/** One line about a delivery (beside its ok/failed badge): when, the event, the
 * attempts, and the error (which names the answer, `HTTP 500: …`) or the answer. */
function deliveryText(delivery) {
  const parts = [
    time(delivery.at),
    delivery.event,
    delivery.attempts > 1 ? `${delivery.attempts} attempts` : null,
    delivery.error || (delivery.status ? `HTTP ${delivery.status}` : null),
  ];
  return parts.filter(Boolean).join(" · ");
}

/** The runner's channels: their deliveries (GET /notifications) and a test of one. */
const RUNNER_CHANNELS = {
  read: () => api.get("/notifications"),
  test: (id) => api.post("/notifications/test", { channel: id }),
};

/**
 * Fills `box` with the section. `config` is GET /config's (masked); `save(patch, what,
 * where)` is the page's PUT /config (it reloads the page's data, redrawing this section);
 * `message` is the section's notice, kept across those redraws. Returns a cleanup
 * function. The team page shows a team's channels with it: `channels` reads and tests
 * them elsewhere, without this browser's part (`browser`), and read-only for members
 * (`editable`: no test, edit, removal or new channel).
 */
export async function renderNotifications(
  box,
  {
    config,
    save,
    message: sectionMessage,
    channels: source = RUNNER_CHANNELS,
    browser = true,
    editable = true,
    title = "Notifications",
    intro = "Who hears about a run that awaits someone, is escalated or fails, or opens a pull request.",
  },
) {
  const browserBox = h("section", { class: "panel", "aria-labelledby": "browser-channel-title" });
  const channelsBox = h("div", { class: "stack" });
  const addBox = h("div", { class: "panel" });
  const settings = config.notifications || {};
  /** channel id -> redraws its delivery status from GET /notifications */
  const statusViews = new Map();

  // --- this browser ---------------------------------------------------------------
  const browserState = h("p", { role: "status" });
  const toggle = h("button", { type: "button", id: "browser-notifications-toggle" });
  const browserTest = h("button", { type: "button", "aria-describedby": "browser-channel-title" }, "Send a test notification");
  const browserResult = h("div", { "aria-live": "polite" });
  toggle.onclick = () =>
    busy(toggle, browserResult, async () => {
      if (desktop.enabled()) desktop.disable();
      else if ((await desktop.enable()) !== "granted") notice(browserResult, "The browser did not allow notifications.", "error");
    });
  browserTest.onclick = () =>
    busy(browserTest, browserResult, async () => {
      desktop.showTest();
      notice(browserResult, "Test notification shown.", "ok");
    });
  const browserEvents = EVENTS.map(([event, label]) => {
    const id = `browser-event-${event}`;
    const box = h("input", { type: "checkbox", id, value: event });
    box.onchange = () => {
      desktop.setEvents(browserEvents.filter((b) => b.checked).map((b) => b.value));
      notice(browserResult, "Saved for this browser.", "ok");
    };
    return box;
  });
  const eventsField = h(
    "fieldset",
    {},
    h("legend", {}, "Shown here"),
    browserEvents.map((box) => h("label", { class: "check", for: box.id }, box, EVENTS.find(([e]) => e === box.value)[1])),
  );
  function drawBrowser() {
    const chosen = desktop.events();
    for (const box of browserEvents) box.checked = chosen.includes(box.value);
    const state = desktop.permission();
    const on = desktop.enabled();
    browserState.textContent =
      state === "unsupported"
        ? "This browser has no desktop notifications."
        : state === "denied"
          ? "This browser blocks Coro's notifications: allow them in its site settings, then turn them on here."
          : on
            ? "On: while a page of this dashboard is open, this browser shows a notification when a run needs someone."
            : "Off: turn them on to get a notification when a run needs someone, while a page of this dashboard is open.";
    toggle.textContent = on ? "Turn off desktop notifications" : "Turn on desktop notifications";
    toggle.hidden = state === "unsupported" || state === "denied";
    browserTest.hidden = !on;
    eventsField.hidden = !on;
  }
  if (browser) {
    desktop.onChange.add(drawBrowser);
    drawBrowser();
  }
  clear(
    browserBox,
    h("h3", { id: "browser-channel-title" }, "This browser"),
    browserState,
    h("div", { class: "row" }, toggle, browserTest),
    eventsField,
    browserResult,
  );

  // --- the runner's channels ------------------------------------------------------
  async function refreshStatus() {
    let channels = null;
    try {
      ({ channels } = await source.read());
    } catch (error) {
      notice(sectionMessage, `Could not read the channels' deliveries: ${error.message}`, "error");
    }
    const byId = new Map((channels || []).map((c) => [c.id, c]));
    for (const [id, draw] of statusViews) draw(channels ? byId.get(id) || null : undefined);
  }

  /** The stored list of a kind with `entry` at `index` (a new one when index is -1), or
   * without it (entry null). Entries are sent back as GET /config showed them. */
  function listWith(kind, index, entry) {
    const list = [...(settings[KINDS[kind].list] || [])];
    if (entry === null) list.splice(index, 1);
    else if (index < 0) list.push(entry);
    else list[index] = entry;
    return { notifications: { [KINDS[kind].list]: list } };
  }

  function channelCard(kind, entry, index) {
    const spec = KINDS[kind];
    const saved = index >= 0;
    const key = saved ? entry.id : `new-${kind}`;
    const titleId = `channel-${key}-title`;
    const statusBox = h("div");
    const result = h("div", { "aria-live": "polite" });
    const form = channelForm(kind, entry, index, key);
    const card = h(
      "section",
      { class: "panel channel", "aria-labelledby": titleId, dataset: { channel: key } },
      h("h3", { id: titleId }, saved ? `${spec.label} ${entry.id}` : `New ${spec.label.toLowerCase()} channel`),
    );
    if (!saved) {
      form.node.hidden = false;
      card.append(form.node);
      return card;
    }
    statusViews.set(entry.id, (status) => {
      // undefined: the runner did not answer; null: it does not know the channel (yet)
      const last = status?.lastDelivery;
      const failures = status?.recentFailures || [];
      clear(
        statusBox,
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Sends to"),
          h("dd", { class: "mono" }, status?.target || "—"),
          h("dt", {}, "Events"),
          h("dd", {}, eventsText(status?.events ?? entry.events ?? DEFAULT_EVENTS)),
          h("dt", {}, "Last delivery"),
          h(
            "dd",
            {},
            last
              ? h("span", { class: `badge ${last.ok ? "ok" : "bad"}` }, last.ok ? "ok" : "failed")
              : null,
            " ",
            last ? deliveryText(last) : status === undefined ? "unknown (the runner did not say)" : "none yet",
          ),
        ),
        failures.length
          ? h(
              "details",
              { class: "failures" },
              h("summary", {}, `Recent failures (${failures.length})`),
              h("ul", {}, failures.map((f) => h("li", {}, deliveryText(f)))),
            )
          : null,
      );
    });
    const test = h("button", { type: "button", "aria-describedby": titleId }, "Send a test notification");
    test.onclick = () =>
      busy(test, result, async () => {
        notice(result, "Sending a test notification…", "info");
        const answer = await source.test(entry.id);
        // the error names the answer when there was one (`HTTP 500: …`)
        const how = answer.error || (answer.status ? `HTTP ${answer.status}` : "");
        notice(result, answer.ok ? `Test delivered${how ? ` (${how})` : ""}.` : `Test failed: ${how || "no answer"}.`, answer.ok ? "ok" : "error");
        await refreshStatus();
      });
    const edit = h("button", { type: "button", "aria-expanded": "false", "aria-describedby": titleId }, "Edit");
    edit.onclick = () => (form.node.hidden ? form.open() : form.close());
    form.onToggle = (open) => edit.setAttribute("aria-expanded", String(open));
    const remove = h("button", { type: "button", class: "danger", "aria-describedby": titleId }, "Remove");
    remove.onclick = async () => {
      if (!(await confirmDialog(`Remove the ${spec.label.toLowerCase()} channel ${entry.id}?`, "It gets no more notifications.", "Remove"))) return;
      await busy(remove, result, () => save(listWith(kind, index, null), `Channel ${entry.id} removal`, sectionMessage));
    };
    card.append(statusBox, ...(editable ? [h("div", { class: "row" }, test, edit, remove)] : []), result, form.node);
    return card;
  }

  function channelForm(kind, entry, index, key) {
    const spec = KINDS[kind];
    const saved = index >= 0;
    const errors = h("div", { "aria-live": "polite" });
    const inputs = {};
    const fieldId = (name) => `ch-${key}-${name}`;
    const row = (name, label, input) => h("div", { class: "field" }, h("label", { for: fieldId(name) }, label), input);
    const idInput = h("input", {
      id: fieldId("id"),
      value: entry.id || "",
      readOnly: saved,
      placeholder: `automatic (${kind}-1, …)`,
      pattern: "[A-Za-z0-9._\\-]{1,64}",
      autocomplete: "off",
    });
    const fields = spec.fields.map((field) => {
      const value = entry[field.name];
      const id = fieldId(field.name);
      const input = field.options
        ? h("select", { id }, field.options.map((o) => h("option", { value: o, selected: (value ?? field.options[0]) === o }, o)))
        : h("input", {
            id,
            type: field.secret ? "password" : field.type || "text",
            value: field.list ? (value || []).join(", ") : value ?? "",
            required: field.required,
            placeholder: field.placeholder || null,
            autocomplete: "off",
          });
      inputs[field.name] = { input, field };
      const hint = field.secret && saved && value ? h("div", { class: "muted" }, "Shown masked: leave it to keep the stored value.") : null;
      return h("div", { class: "field" }, h("label", { for: id }, field.label), input, hint);
    });
    const chosen = new Set(entry.events ?? DEFAULT_EVENTS);
    const boxes = EVENTS.map(([event, label]) => {
      const box = h("input", { type: "checkbox", id: fieldId(`event-${event}`), value: event, checked: chosen.has(event) });
      return h("label", { class: "check", for: fieldId(`event-${event}`) }, box, `${label} (${event})`);
    });
    const submit = h("button", { type: "submit", class: "primary" }, saved ? "Save channel" : "Add channel");
    const cancel = h("button", { type: "button" }, "Cancel");
    const node = h(
      "form",
      { class: "channel-form stack", hidden: true, "aria-label": saved ? `Edit ${spec.label.toLowerCase()} channel ${entry.id}` : `New ${spec.label.toLowerCase()} channel` },
      row("id", "Channel id", idInput),
      fields,
      h("fieldset", {}, h("legend", {}, "Events"), boxes),
      h("div", { class: "row" }, submit, cancel),
      errors,
    );

    function value() {
      const out = { ...entry };
      const id = idInput.value.trim();
      if (id) out.id = id;
      else delete out.id;
      for (const [name, { input, field }] of Object.entries(inputs)) {
        const given = input.value.trim();
        if (!given) delete out[name];
        else if (field.list) out[name] = given.split(/[\s,;]+/).filter(Boolean);
        else if (field.type === "number") out[name] = Number(given);
        else out[name] = given;
      }
      const events = boxes.map((label) => label.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
      const asDefault = events.length === DEFAULT_EVENTS.length && DEFAULT_EVENTS.every((e) => events.includes(e));
      // a channel on the defaults stays on them (it follows any change of the defaults)
      if (entry.events == null && asDefault) delete out.events;
      else out.events = events;
      return out;
    }

    node.onsubmit = (event) => {
      event.preventDefault();
      if (!node.reportValidity()) return;
      busy(submit, null, async () => {
        notice(errors, null);
        try {
          const channel = value();
          await save(listWith(kind, index, channel), `Channel ${channel.id || spec.label.toLowerCase()}`, sectionMessage);
        } catch (error) {
          notice(errors, error.message, "error");
        }
      });
    };
    const form = {
      node,
      onToggle: () => {},
      open() {
        node.hidden = false;
        form.onToggle(true);
        (saved ? fields[0].querySelector("input, select") : idInput).focus();
      },
      close() {
        node.hidden = true;
        notice(errors, null);
        form.onToggle(false);
      },
    };
    // a new channel's card goes away with its form
    cancel.onclick = () => (saved ? form.close() : node.closest(".channel").remove());
    return form;
  }

  // --- adding a channel -----------------------------------------------------------
  const kindSelect = h(
    "select",
    { id: "new-channel-kind" },
    Object.entries(KINDS).map(([kind, spec]) => h("option", { value: kind }, spec.label)),
  );
  const add = h("button", { type: "button", id: "add-channel" }, "New channel");
  add.onclick = () => {
    const kind = kindSelect.value;
    let card = channelsBox.querySelector(`[data-channel="new-${kind}"]`);
    if (!card) {
      card = channelCard(kind, {}, -1);
      channelsBox.querySelector(".empty")?.remove();
      channelsBox.append(card);
    }
    card.querySelector("input").focus();
  };
  clear(
    addBox,
    h("label", { for: "new-channel-kind" }, "Add a channel"),
    h("div", { class: "row" }, kindSelect, add),
  );

  const cards = Object.keys(KINDS).flatMap((kind) => (settings[KINDS[kind].list] || []).map((entry, index) => channelCard(kind, entry, index)));
  clear(
    channelsBox,
    cards.length ? cards : h("p", { class: "muted empty" }, "No channels yet: add a webhook, a Slack incoming webhook or an e-mail address."),
  );
  clear(
    box,
    h("h2", { id: "notifications-title" }, title),
    h("p", { class: "muted" }, intro),
    sectionMessage,
    browser ? browserBox : null,
    h("h3", {}, "Channels"),
    channelsBox,
    editable ? addBox : null,
  );
  await refreshStatus();
  return () => desktop.onChange.delete(drawBrowser);
}
