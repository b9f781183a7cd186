// The user's teams (the picker's choices) and a form to create one.

import { busy, h, notice } from "../../js/ui.js";
import { cloud } from "../session.js";

function slugOf(name) {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/, "");
}

export async function render(main, { me, reloadMe, teamHome }) {
  const message = h("div");
  const name = h("input", { id: "team-name", required: true, maxlength: 200 });
  const slug = h("input", { id: "team-slug", required: true, maxlength: 63, pattern: "[a-z0-9]([a-z0-9\\-]*[a-z0-9])?" });
  let slugEdited = false;
  name.addEventListener("input", () => {
    if (!slugEdited) slug.value = slugOf(name.value);
  });
  slug.addEventListener("input", () => {
    slugEdited = true;
  });
  const create = h("button", { type: "submit", class: "primary" }, "Create team");
  const form = h(
    "form",
    {
      class: "panel",
      "aria-labelledby": "create-team-title",
      onsubmit: (event) => {
        event.preventDefault();
        busy(create, message, async () => {
          const team = await cloud.post("/teams", { name: name.value.trim(), slug: slug.value.trim() });
          await reloadMe();
          location.hash = teamHome(team);
        });
      },
    },
    h("h2", { id: "create-team-title" }, "Create a team"),
    h("div", { class: "field" }, h("label", { for: "team-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "team-slug" }, "Slug"), slug),
    h("div", { class: "row end" }, create),
  );
  const teams = me.teams;
  main.append(
    h("h1", {}, "Teams"),
    message,
    teams.length
      ? h(
          "ul",
          { class: "panel", "aria-label": "Your teams" },
          teams.map((team) =>
            h(
              "li",
              {},
              h("a", { href: teamHome(team) }, team.name),
              h("span", { class: "muted" }, ` ${team.slug} · ${team.role}`),
            ),
          ),
        )
      : h("p", { class: "muted" }, "You are not in a team yet: create one, or ask a team's admin to add you."),
    form,
  );
  notice(message, null);
}
