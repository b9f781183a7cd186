// The team's notifications: its channels (webhooks, Slack, e-mail) with where each
// delivers, its events, its last delivery and recent failures — the runner settings
// page's section (`../../js/pages/settings-notifications.js`) over the team's API:
// admins test, add, edit and remove them (secrets shown masked; a mask sent back keeps
// the secret) — and the member's own e-mails from the team.

import { DEFAULT_EVENTS, EVENTS } from "../../js/notifications.js";
import { renderNotifications } from "../../js/pages/settings-notifications.js";
import { busy, clear, h, notice, time } from "../../js/ui.js";
import { cloud } from "../session.js";

/** The lists of `PUT /teams/:teamId/notifications`, by channel kind. */
const LISTS = { webhook: "webhooks", slack: "slack", email: "email" };

/** What a member (who is not shown the settings) sees of the channels: id and events. */
function outline(channels) {
  const lists = { webhooks: [], slack: [], email: [] };
  for (const channel of channels) lists[LISTS[channel.kind]].push({ id: channel.id, events: channel.events });
  return lists;
}

function withIssues(error) {
  const issues = error.body?.issues || [];
  if (issues.length) error.message = `${error.message}: ${issues.map((i) => `${i.path} ${i.message}`).join("; ")}`;
  return error;
}

export async function render(main, { teamId, team }) {
  const base = `/teams/${encodeURIComponent(teamId)}/notifications`;
  const admin = team?.role === "admin";
  const channelsBox = h("section", { "aria-labelledby": "notifications-title" });
  const channelsMessage = h("div");
  const mineBox = h("section", { class: "panel stack", "aria-labelledby": "my-email-title" });
  const mineMessage = h("div", { "aria-live": "polite" });
  let closeChannels = null;

  async function drawChannels() {
    let first = await cloud.get(base);
    const settings = first.settings || outline(first.channels);
    if (closeChannels) closeChannels();
    closeChannels = await renderNotifications(channelsBox, {
      config: { notifications: settings },
      save: async (patch, what, where = channelsMessage) => {
        try {
          await cloud.put(base, { ...settings, ...patch.notifications });
        } catch (error) {
          throw withIssues(error);
        }
        notice(where, `${what} saved.`, "ok");
        await drawChannels();
      },
      message: channelsMessage,
      channels: {
        // the answer just read serves the first drawing; later ones read again
        read: async () => {
          const answer = first || (await cloud.get(base));
          first = null;
          return answer;
        },
        test: (id) => cloud.post(`${base}/test`, { channel: id }),
      },
      browser: false,
      editable: admin,
      title: "Team channels",
      intro: admin
        ? "Where the team hears about a job that awaits someone, is escalated or fails, or opens a pull request."
        : "Where the team hears about its jobs. Only the team's admins change, add and test channels.",
    });
  }

  async function drawMine() {
    const { email } = await cloud.get(`${base}/me`);
    const enabled = h("input", { type: "checkbox", id: "my-email-enabled", checked: email.enabled, disabled: !email.available && !email.enabled });
    const chosen = new Set(email.events ?? DEFAULT_EVENTS);
    const boxes = EVENTS.map(([event, label]) => {
      const id = `my-email-event-${event}`;
      return h("label", { class: "check", for: id }, h("input", { type: "checkbox", id, value: event, checked: chosen.has(event) }), label);
    });
    const save = h("button", { type: "submit", class: "primary", disabled: !email.available && !email.enabled }, "Save my e-mails");
    const last = email.lastDelivery;
    clear(
      mineBox,
      h("h2", { id: "my-email-title" }, "My e-mails"),
      h("p", { class: "muted" }, `E-mails to ${email.address} about this team's jobs, for the events you choose.`),
      email.available
        ? null
        : h("p", { class: "notice info", role: "note" }, "This cloud has no SMTP server (CLOUD_SMTP_URL), so it sends no e-mails to members."),
      h(
        "form",
        {
          class: "stack",
          "aria-label": "My e-mails",
          onsubmit: (event) => {
            event.preventDefault();
            busy(save, mineMessage, async () => {
              const events = boxes.map((label) => label.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
              await cloud.put(`${base}/me`, { email: { enabled: enabled.checked, events } });
              notice(mineMessage, enabled.checked ? "Saved: you get these e-mails." : "Saved: you get no e-mails.", "ok");
              await drawMine();
            });
          },
        },
        h("label", { class: "check", for: "my-email-enabled" }, enabled, "E-mail me about this team's jobs"),
        h("fieldset", {}, h("legend", {}, "Events"), boxes),
        h("div", { class: "row" }, save),
      ),
      h(
        "p",
        { class: "muted" },
        "Last e-mail: ",
        last ? `${last.ok ? "delivered" : "failed"} · ${time(last.at)} · ${last.event}${last.error ? ` · ${last.error}` : ""}` : "none yet",
      ),
      mineMessage,
    );
  }

  await Promise.all([drawChannels(), drawMine()]);
  main.append(h("h1", {}, `Notifications of ${team?.name || "this team"}`), mineBox, channelsBox);
  return () => {
    if (closeChannels) closeChannels();
  };
}
