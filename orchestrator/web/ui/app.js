//! The dashboard's shell (`/ui`): sign-in, the navigation, the tenant in
//! use, the notice line, and the views' lifecycle.
//!
//! * Sign-in takes a member's or the operator's API token, checks it with
//!   `GET /v1/me`, and keeps it (see `api.js`); sign-out forgets it. A 401
//!   anywhere brings the sign-in form back.
//! * A view is a module exporting `render(ctx)`. `ctx` carries who is
//!   signed in (`me`, `admin`), the tenants they may use and the one chosen,
//!   the element to fill (`root`), `notify(text)` for what the person must
//!   read, `refused(err)` for a failed call, and `every(ms, fn)`: a live
//!   update that runs until the view is left. Leaving a view stops its loops.
//! * Live updates: when a refresh cannot reach the orchestrator (restarted,
//!   network gone) the line under the header says "reconnecting" and the
//!   loops keep trying with their own period; the first success clears it.
//!   Nothing is lost on the page meanwhile: it shows the last state it had.
//! * Routes are the fragment: `#/workers`, `#/containers`, `#/scheduling`,
//!   `#/scheduling/decision/ID`, `#/team`. The token never appears there.

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import * as workers from "./workers.js";
import * as containers from "./containers.js";
import * as scheduling from "./scheduling.js";
import * as team from "./team.js";

const VIEWS = [
  { path: "workers", label: "Workers", view: workers, admin: false },
  { path: "containers", label: "Containers", view: containers, admin: false },
  { path: "scheduling", label: "Scheduling", view: scheduling, admin: false },
  { path: "team", label: "Team", view: team, admin: true },
];
const TENANT_KEY = "crops.ui.tenant";

const root = document.getElementById("view");
const nav = document.getElementById("nav");
const whoEl = document.getElementById("who");
const tenantSelect = document.getElementById("tenant");
const noticeEl = document.getElementById("notice");
const liveEl = document.getElementById("live");
const signOutBtn = document.getElementById("sign-out");

const session = { me: null, admin: false, tenants: [], tenant: null };
let generation = 0;

/** Show `text` on the notice line until dismissed or replaced. */
function notify(text, kind = "error") {
  noticeEl.dataset.kind = kind;
  fill(noticeEl, h("span", { class: "grow" }, text), h("button", { type: "button", class: "link", onclick: () => (noticeEl.hidden = true) }, "dismiss"));
  noticeEl.hidden = false;
}

function clearNotice() {
  noticeEl.hidden = true;
}

/** A failed call, in words; a 401 signs out. */
function refused(err) {
  if (err instanceof api.ApiFailure && err.status === 401) {
    api.signOut();
    showSignIn(err.words);
    return;
  }
  if (err instanceof api.ApiFailure && err.status === 0) {
    setLive(false);
  }
  notify(err instanceof api.ApiFailure ? err.words : String(err.message || err));
}

function setLive(ok) {
  liveEl.hidden = ok;
  if (!ok) liveEl.textContent = "Reconnecting to the orchestrator… the page shows the last state it had.";
}

function showSignIn(why) {
  generation++;
  session.me = null;
  document.body.dataset.signedIn = "no";
  whoEl.textContent = "";
  fill(nav);
  const input = h("input", { type: "password", id: "token-input", name: "token", autocomplete: "off", required: true, "aria-label": "API token" });
  const form = h(
    "form",
    { class: "card sign-in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a member's API token, or the operator's admin token. It is kept in this browser only, and sent only in request headers."),
    h("label", { for: "token-input" }, "API token"),
    input,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    api.signIn(input.value);
    input.value = "";
    await start();
  });
  fill(root, form);
  if (why) notify(why);
  input.focus();
}

/** Who is signed in and which tenants they may use; false on a refusal. */
async function loadSession() {
  try {
    session.me = await api.get("/v1/me");
    session.tenants = (await api.get("/v1/tenants")).tenants || [];
  } catch (err) {
    if (err instanceof api.ApiFailure && err.status === 401) {
      api.signOut();
      showSignIn("That token was refused: it is unknown, revoked or mistyped.");
    } else {
      refused(err);
    }
    return false;
  }
  const m = session.me.member;
  session.admin = session.me.principal === "operator" || (m && m.role === "admin");
  let saved = "";
  try {
    saved = localStorage.getItem(TENANT_KEY) || "";
  } catch (_) {
    saved = "";
  }
  session.tenant = session.tenants.find((t) => t.id === saved) || session.tenants[0] || null;
  whoEl.textContent = session.me.principal === "operator" ? "operator" : `${m.name} (${m.role})`;
  fill(tenantSelect, session.tenants.map((t) => h("option", { value: t.id, selected: session.tenant && t.id === session.tenant.id }, t.name)));
  tenantSelect.disabled = session.tenants.length === 0;
  document.body.dataset.signedIn = "yes";
  return true;
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const allowed = VIEWS.filter((v) => !v.admin || session.admin);
  const found = allowed.find((v) => v.path === parts[0]) || allowed[0];
  return { found, rest: parts.slice(1), allowed };
}

/** Render the view the fragment names; its loops end when another is shown. */
function show() {
  if (!session.me) return;
  const gen = ++generation;
  const { found, rest, allowed } = route();
  fill(nav, allowed.map((v) => h("a", { href: `#/${v.path}`, "aria-current": v === found ? "page" : null }, v.label)));
  clearNotice();
  const alive = () => gen === generation;
  const ctx = {
    me: session.me,
    admin: session.admin,
    tenants: session.tenants,
    tenant: session.tenant,
    root: fill(root),
    route: rest,
    notify,
    refused,
    alive,
    /** Run `fn` now and every `ms` while this view is shown. */
    every(ms, fn) {
      const tick = async () => {
        if (!alive()) return;
        try {
          await fn();
          setLive(true);
        } catch (err) {
          if (!alive()) return;
          if (err instanceof api.ApiFailure && err.status === 0) setLive(false);
          else refused(err);
        }
        if (alive()) setTimeout(tick, ms);
      };
      tick();
    },
    /** Go to another route of the dashboard. */
    go(path) {
      location.hash = "#/" + path;
    },
  };
  document.title = `${found.label} · Crops`;
  Promise.resolve(found.view.render(ctx)).catch((err) => alive() && refused(err));
}

async function start() {
  if (!api.hasToken()) return showSignIn();
  if (await loadSession()) show();
}

tenantSelect.addEventListener("change", () => {
  session.tenant = session.tenants.find((t) => t.id === tenantSelect.value) || null;
  try {
    localStorage.setItem(TENANT_KEY, tenantSelect.value);
  } catch (_) {
    // Kept for this page only.
  }
  show();
});
signOutBtn.addEventListener("click", () => {
  api.signOut();
  try {
    localStorage.removeItem(TENANT_KEY);
  } catch (_) {
    // Nothing stored.
  }
  showSignIn();
});
window.addEventListener("hashchange", show);
start();
