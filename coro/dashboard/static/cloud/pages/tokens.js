// Runner tokens: every member sees the list (never a secret); admins mint one (its
// secret is shown here once, and is gone from the page on leaving it) and revoke.

import { busy, clear, confirmDialog, h, notice, time } from "../../js/ui.js";
import { cloud } from "../session.js";

export async function render(main, { teamId, team }) {
  const base = `/teams/${encodeURIComponent(teamId)}/runner-tokens`;
  const admin = team?.role === "admin";
  const message = h("div");
  const minted = h("div", { "aria-live": "polite" });
  const body = h("tbody");

  function row(token) {
    const revoke = h(
      "button",
      { type: "button", class: "danger", "aria-label": `Revoke ${token.name}` },
      "Revoke",
    );
    revoke.onclick = async () => {
      const sure = await confirmDialog(
        `Revoke ${token.name}?`,
        "Runners using it are disconnected at once and cannot connect with it again.",
        "Revoke token",
      );
      if (sure) {
        await busy(revoke, message, async () => {
          await cloud.del(`${base}/${encodeURIComponent(token.id)}`);
          notice(message, `Revoked ${token.name}.`, "ok");
          await load();
        });
      }
    };
    return h(
      "tr",
      { dataset: { token: token.id } },
      h("td", {}, token.name),
      h("td", { title: token.createdAt }, time(token.createdAt)),
      h("td", {}, token.lastUsedAt ? time(token.lastUsedAt) : h("span", { class: "muted" }, "never")),
      h("td", {}, token.revokedAt ? h("span", { class: "badge muted" }, "revoked") : h("span", { class: "badge ok" }, "active")),
      admin ? h("td", {}, token.revokedAt ? null : revoke) : null,
    );
  }

  async function load() {
    const tokens = await cloud.get(base);
    clear(
      body,
      tokens.length
        ? tokens.map(row)
        : h("tr", {}, h("td", { colspan: admin ? 5 : 4, class: "muted" }, "No runner tokens yet.")),
    );
  }

  function showSecret(token) {
    const secret = h("code", { class: "secret", id: "minted-secret" }, token.token);
    const copy = h("button", { type: "button" }, "Copy");
    copy.onclick = async () => {
      try {
        await navigator.clipboard.writeText(token.token);
        copy.textContent = "Copied";
      } catch {
        copy.textContent = "Select it and copy";
      }
    };
    const hide = h("button", { type: "button", onclick: () => clear(minted) }, "I have stored it");
    clear(
      minted,
      h(
        "section",
        { class: "panel notice ok stack", "aria-labelledby": "minted-title" },
        h("h2", { id: "minted-title" }, `Token ${token.name}`),
        h("p", {}, "This is the only time the secret is shown. Put it in the runner's config.json (cloud.token) or give it to coro login."),
        h("pre", {}, secret),
        h("div", { class: "row" }, copy, hide),
      ),
    );
  }

  const name = h("input", { id: "token-name", required: true, maxlength: 200, placeholder: "ada-laptop" });
  const mint = h("button", { type: "submit", class: "primary" }, "Mint token");
  const form = admin
    ? h(
        "form",
        {
          class: "panel row",
          "aria-label": "Mint a runner token",
          onsubmit: (event) => {
            event.preventDefault();
            busy(mint, message, async () => {
              const token = await cloud.post(base, { name: name.value.trim() });
              name.value = "";
              notice(message, null);
              showSecret(token);
              await load();
            });
          },
        },
        h("div", { style: "flex:1;min-width:12rem" }, h("label", { for: "token-name" }, "New token's name"), name),
        mint,
      )
    : h("p", { class: "muted" }, "Only the team's admins mint and revoke runner tokens.");

  await load();
  main.append(
    h("h1", {}, "Runner tokens"),
    message,
    form,
    minted,
    h(
      "div",
      { class: "table-wrap", style: "margin-top:1rem" },
      h(
        "table",
        { "aria-label": "Runner tokens" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Created", "Last used", "State"].map((c) => h("th", { scope: "col" }, c)),
            admin ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")) : null,
          ),
        ),
        body,
      ),
    ),
  );
  // the secret leaves the page with it
  return () => clear(minted);
}
