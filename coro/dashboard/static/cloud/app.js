// The team page's shell: session, team picker, navigation and a hash router. It reuses
// the runner dashboard's modules (`../js/`): the API client, DOM helpers, the jobs
// table and the live log.
//
// Routes: #/signin, #/teams, #/t/<team>/jobs, #/t/<team>/jobs/<job>, #/t/<team>/runners,
// #/t/<team>/tokens, #/t/<team>/notifications. Each page module exports `render(view,
// context)` and may return a cleanup function, as the runner dashboard's pages do.

import { clear, h } from "../js/ui.js";
import { cloud, onSignedOut, resume, signedIn, signOut } from "./session.js";

const ROUTES = [
  { pattern: /^#\/signin$/, page: "signin", open: true },
  { pattern: /^#\/teams$/, page: "teams", nav: "teams" },
  { pattern: /^#\/t\/([^/]+)\/jobs\/([^/]+)$/, page: "job", nav: "jobs" },
  { pattern: /^#\/t\/([^/]+)\/jobs$/, page: "jobs", nav: "jobs" },
  { pattern: /^#\/t\/([^/]+)\/runners$/, page: "runners", nav: "runners" },
  { pattern: /^#\/t\/([^/]+)\/tokens$/, page: "tokens", nav: "tokens" },
  { pattern: /^#\/t\/([^/]+)\/notifications$/, page: "notifications", nav: "notifications" },
];

const main = document.getElementById("main");
const picker = document.getElementById("team-picker");
let cleanup = null;
let generation = 0;
/** `/auth/me`: the user and their teams (with the user's role in each). */
let me = null;
/** Where to go once signed in. */
let wanted = null;

export async function loadMe() {
  me = await cloud.get("/auth/me");
  drawHeader(currentTeamId());
  return me;
}

function currentTeamId() {
  const match = (location.hash || "").match(/^#\/t\/([^/]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function teamHome(team) {
  return `#/t/${encodeURIComponent(team.id)}/jobs`;
}

function drawHeader(teamId) {
  const account = document.getElementById("account");
  const teams = me?.teams || [];
  document.getElementById("team-switch").hidden = !me || !teams.length;
  document.getElementById("team-nav").hidden = !me;
  if (!me) {
    clear(account);
    return;
  }
  clear(
    picker,
    teamId && !teams.some((t) => t.id === teamId) ? h("option", { value: teamId }, "…") : null,
    teams.map((t) => h("option", { value: t.id, selected: t.id === teamId }, t.name)),
  );
  for (const link of document.querySelectorAll("#team-nav a[data-nav]")) {
    const section = link.dataset.nav;
    if (section === "teams") continue;
    const team = teamId || teams[0]?.id;
    link.hidden = !team;
    if (team) link.href = `#/t/${encodeURIComponent(team)}/${section}`;
  }
  clear(
    account,
    h("span", { id: "signed-in-as" }, me.user.name),
    h(
      "button",
      {
        type: "button",
        id: "sign-out",
        onclick: async () => {
          await signOut();
          wanted = null; // the next account may not see this team
        },
      },
      "Sign out",
    ),
  );
}

picker.addEventListener("change", () => {
  const section = location.hash.match(/^#\/t\/[^/]+\/(runners|tokens|notifications)/)?.[1] || "jobs";
  location.hash = `#/t/${encodeURIComponent(picker.value)}/${section}`;
});

async function route() {
  const hash = location.hash || "#/";
  const match = ROUTES.find((r) => r.pattern.test(hash));
  if (!match?.open && !signedIn() && !(await resume())) {
    wanted = match ? hash : null;
    if (hash !== "#/signin") location.hash = "#/signin";
    else route();
    return;
  }
  if (match?.open && signedIn()) {
    location.hash = wanted || "#/";
    wanted = null;
    return;
  }
  if (!match?.open && !me) await loadMe();
  if (!match) {
    const first = me.teams[0];
    location.replace(first ? teamHome(first) : "#/teams");
    return;
  }
  const params = hash.match(match.pattern).slice(1).map((p) => decodeURIComponent(p));
  const teamId = match.page === "teams" ? null : params[0] || null;
  if (me) drawHeader(teamId || currentTeamId());
  for (const link of document.querySelectorAll("#team-nav a[data-nav]")) {
    if (link.dataset.nav === match.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cleanup) cleanup();
  cleanup = null;
  const mine = ++generation;
  clear(main, h("p", { class: "muted" }, "Loading…"));
  const team = me?.teams.find((t) => t.id === teamId) || null;
  const context = { params, me, team, teamId, reloadMe: loadMe, teamHome, route };
  try {
    const module = await import(`./pages/${match.page}.js`);
    const view = h("div", { class: "view" });
    const result = await module.render(view, context);
    if (mine !== generation) {
      if (typeof result === "function") result();
      return;
    }
    clear(main, view);
    cleanup = typeof result === "function" ? result : null;
  } catch (error) {
    if (mine === generation) {
      clear(main, h("h1", {}, "Something went wrong"), h("p", { role: "alert" }, error.message));
    }
  }
  main.focus({ preventScroll: true });
}

function toSignIn() {
  me = null;
  drawHeader(null);
  if (location.hash !== "#/signin") {
    wanted = location.hash || null;
    location.hash = "#/signin";
  }
}

onSignedOut.add(toSignIn);
cloud.onUnauthorized.add(toSignIn);
window.addEventListener("hashchange", route);
route();
