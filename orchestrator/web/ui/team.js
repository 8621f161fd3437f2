//! The Team view (admins: the operator or an organisation's admin): the
//! organisation, its tenants with their plans and usage against the plan's
//! limits, its members and their roles, tenant assignment, member tokens,
//! and the audit log.
//!
//! * Routes: `#/team` (organisation, tenants, members), `#/team/member/ID`
//!   (one member: role, assigned tenants, tokens, removal) and
//!   `#/team/audit` (the log). A member page is a link, so it survives a
//!   reload and can be shared with another admin.
//! * The organisation is the member's own; the operator sees every one
//!   (`GET /v1/orgs`) and picks with a select, starting from the one of the
//!   tenant chosen in the header. The choice lasts while the page is open.
//! * Usage: each tenant's `usage` from `GET /v1/tenants/ID`, the counters
//!   admission keeps in the store: containers `creating`, `created` or
//!   `running` against `concurrentContainers` (as the stock plan policy
//!   counts them), the tenant's own workers neither revoked nor deleted
//!   against `workers`.
//! * Plans are the operator's to change (`PUT /v1/tenants/ID/plan`): a
//!   stock name, or `custom` with its numbers (empty: unlimited).
//! * A new token's secret is shown once in a `.secret` box with "Copy", held
//!   only by that box (never stored, never in a notice); "Hide it" drops it.
//!   When the browser refuses the clipboard the text is selected instead.
//! * The audit log's filters are the API's: the scope (everything for the
//!   operator, the organisation, or one tenant), the actor, the action (or
//!   a prefix such as `container.`), the outcome, a time range and the
//!   page size; "Older" follows `nextBefore` (a filtered page may be short
//!   or empty and still have older entries after it).
//! * After a change the page is drawn again from the API, so what it shows
//!   is what was stored; minting or revoking redraws only the token list,
//!   so the new token's box stays until hidden or the page is left.

import { get, post, put, patch, del, enc } from "./api.js";
import { h, fill, table, button, confirmed, when } from "./dom.js";

const STOCK_PLANS = ["free", "starter", "pro", "enterprise"];
const HELD = ["creating", "created", "running"];
const ROLES = ["admin", "member"];

/** The operator's choice of organisation, for as long as the page is open. */
let chosenOrgId = null;

export async function render(ctx) {
  if (!ctx.admin) {
    fill(ctx.root, h("p", { class: "muted" }, "The Team view is for the operator and organisation admins."));
    return;
  }
  const [first, second] = ctx.route;
  if (first === "audit") return auditView(ctx);
  if (first === "member" && second) return memberView(ctx, second);
  return overview(ctx);
}

const isOperator = (ctx) => ctx.me.principal === "operator";

/** Draw the current route again; a failure goes to the notice line. */
function again(ctx) {
  return Promise.resolve(render(ctx)).catch((err) => ctx.alive() && ctx.refused(err));
}

/** Run a change: a failure goes to `refused`, a success to `notify`, then `after(answer)`. */
async function act(ctx, fn, done, after) {
  let answer;
  try {
    answer = await fn();
  } catch (err) {
    if (ctx.alive()) ctx.refused(err);
    return false;
  }
  if (!ctx.alive()) return false;
  if (done) ctx.notify(typeof done === "function" ? done(answer) : done, "info");
  if (after) await after(answer);
  return true;
}

/** `form`'s submit runs `fn` once at a time (its submit button disabled meanwhile). */
function onSubmit(form, fn) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = form.querySelector("button[type=submit]");
    if (btn && btn.disabled) return;
    if (btn) btn.disabled = true;
    try {
      await fn();
    } finally {
      if (btn && btn.isConnected) btn.disabled = false;
    }
  });
  return form;
}

/** `<option>`s of `values`, `chosen` selected. */
const options = (values, chosen) => values.map((v) => h("option", { value: v, selected: v === chosen }, v));

/** A definition list of [term, value] pairs. */
const facts = (...pairs) => h("dl", {}, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

/** The organisations visible and the one to show. */
async function pickOrg(ctx) {
  const orgs = (await get("/v1/orgs")).orgs || [];
  const want = isOperator(ctx) ? chosenOrgId || (ctx.tenant && ctx.tenant.orgId) : ctx.me.member && ctx.me.member.orgId;
  return { orgs, org: orgs.find((o) => o.id === want) || orgs[0] || null };
}

/** The view's own navigation, and the operator's organisation select. */
function toolbar(ctx, orgs, org) {
  let picker = null;
  if (isOperator(ctx) && orgs.length > 1) {
    const sel = h("select", { "aria-label": "organisation" }, orgs.map((o) => h("option", { value: o.id, selected: org && o.id === org.id }, o.name)));
    sel.addEventListener("change", () => {
      chosenOrgId = sel.value;
      again(ctx);
    });
    picker = h("label", {}, "organisation ", sel);
  }
  return h(
    "div",
    { class: "toolbar" },
    h("a", { href: "#/team" }, "Organisation"),
    h("a", { href: "#/team/audit" }, "Audit log"),
    h("span", { class: "grow" }),
    picker,
  );
}

// ---- Organisation, tenants, members ----------------------------------

async function overview(ctx) {
  const { orgs, org } = await pickOrg(ctx);
  const all = (await get("/v1/tenants")).tenants || [];
  if (!ctx.alive()) return;
  if (!org) {
    fill(ctx.root, h("h1", {}, "Team"), h("p", { class: "muted" }, "No organisation is visible to you."));
    return;
  }
  const tenants = all.filter((t) => t.orgId === org.id);
  const [usage, answer] = await Promise.all([usageOf(ctx, tenants), get(`/v1/orgs/${enc(org.id)}/members`)]);
  if (!ctx.alive()) return;
  const members = answer.members || [];
  fill(
    ctx.root,
    toolbar(ctx, orgs, org),
    h("h1", {}, "Team"),
    h("section", { class: "card" }, h("h3", {}, org.name), facts(["id", h("span", { class: "mono" }, org.id)], ["created", when(org.createdAt)])),
    h("h2", {}, `Tenants (${tenants.length})`),
    h("div", { class: "scroll" }, tenantsTable(ctx, tenants, usage)),
    newTenantForm(ctx, org),
    h("h2", {}, `Members (${members.length})`),
    h("div", { class: "scroll" }, membersTable(ctx, members, tenants)),
    newMemberForm(ctx, org, tenants),
  );
}

/** Tenant id -> {containers, workers} held, as admission counts them (`GET /v1/tenants/ID`'s `usage`). */
async function usageOf(ctx, tenants) {
  const usage = new Map();
  try {
    const details = await Promise.all(tenants.map((t) => get(`/v1/tenants/${enc(t.id)}`)));
    for (const d of details) {
      const u = d.usage || {};
      usage.set(d.id, { containers: HELD.reduce((n, state) => n + (u[state] || 0), 0), workers: u.workers || 0 });
    }
  } catch (err) {
    if (ctx.alive()) ctx.refused(err);
  }
  return usage;
}

/** "2 / 5", "1 / unlimited"; marked when the limit is reached. */
function against(used, limit) {
  if (used === undefined) return h("span", { class: "muted" }, "–");
  const unlimited = limit === null || limit === undefined;
  const text = `${used} / ${unlimited ? "unlimited" : limit}`;
  return !unlimited && used >= limit ? h("span", { class: "verdict-refused" }, `${text} (at limit)`) : text;
}

function tenantsTable(ctx, tenants, usage) {
  if (!tenants.length) return h("p", { class: "muted" }, "No tenants in this organisation yet.");
  const operator = isOperator(ctx);
  const columns = ["Tenant", "Plan", "Workers", "Concurrent containers", "History"];
  if (operator) columns.push("Change plan");
  const rows = tenants.map((t) => {
    const u = usage.get(t.id) || {};
    const cells = [
      h("div", {}, t.name, h("div", { class: "muted mono" }, t.id)),
      h("span", { class: "badge" }, t.plan.name),
      against(u.workers, t.plan.workers),
      against(u.containers, t.plan.concurrentContainers),
      `${t.plan.historyDays} day${t.plan.historyDays === 1 ? "" : "s"}`,
    ];
    if (operator) cells.push(planForm(ctx, t));
    return cells;
  });
  return table(columns, rows, { class: "wide" });
}

/** The operator's plan change: a stock name, or custom numbers (empty: unlimited). */
function planForm(ctx, t) {
  const p = t.plan;
  const name = h("select", { "aria-label": `plan of ${t.name}` }, options([...STOCK_PLANS, "custom"], p.name));
  const num = (label, v, min) => h("input", { type: "number", min, value: v === null || v === undefined ? "" : v, placeholder: "unlimited", "aria-label": label, size: 6 });
  const workers = num("workers", p.workers, 0);
  const containers = num("concurrent containers", p.concurrentContainers, 0);
  const days = num("history days", p.historyDays, 1);
  // A plain span: the hidden attribute would lose to a class's display rule.
  const custom = h("span", { hidden: p.name !== "custom" }, " workers ", workers, " containers ", containers, " days ", days, " ");
  name.addEventListener("change", () => (custom.hidden = name.value !== "custom"));
  const orNull = (input) => (input.value.trim() === "" ? null : Number(input.value));
  const form = h("form", {}, name, custom, " ", h("button", { type: "submit" }, "Set"));
  return onSubmit(form, () => {
    const body =
      name.value === "custom"
        ? { name: "custom", workers: orNull(workers), concurrentContainers: orNull(containers), historyDays: Number(days.value) }
        : { name: name.value };
    return act(ctx, () => put(`/v1/tenants/${enc(t.id)}/plan`, body), `${t.name} is now on the ${name.value} plan.`, () => again(ctx));
  });
}

function newTenantForm(ctx, org) {
  const name = h("input", { name: "name", required: true, maxlength: 64, placeholder: "new tenant's name", "aria-label": "new tenant's name" });
  const form = h("form", { class: "toolbar" }, name, h("button", { type: "submit", class: "primary" }, "Create tenant"));
  return onSubmit(form, () =>
    act(
      ctx,
      () => post("/v1/tenants", { name: name.value.trim(), orgId: org.id }),
      (t) => `Tenant ${t.name} created (on the ${t.plan.name} plan). Reload the page to choose it in the tenant menu.`,
      () => again(ctx),
    ),
  );
}

/** A role select that saves on change (asking first before demoting oneself). */
function roleSelect(ctx, m, after) {
  const sel = h("select", { "aria-label": `role of ${m.name}` }, options(ROLES, m.role));
  sel.addEventListener("change", async () => {
    const self = ctx.me.member && ctx.me.member.id === m.id;
    if (self && sel.value !== "admin" && !(await confirmed("Make yourself a member? You lose the admin role, and this view, at once."))) {
      sel.value = m.role;
      return;
    }
    sel.disabled = true;
    const ok = await act(ctx, () => patch(`/v1/members/${enc(m.id)}`, { role: sel.value }), `${m.name} is now ${sel.value === "admin" ? "an admin" : "a member"}.`, after);
    if (!ok && sel.isConnected) sel.value = m.role;
    if (sel.isConnected) sel.disabled = false;
  });
  return sel;
}

async function deleteMember(ctx, m, after) {
  if (!(await confirmed(`Delete member ${m.name}? Every token of theirs is revoked at once.`))) return;
  await act(ctx, () => del(`/v1/members/${enc(m.id)}`), `${m.name} was deleted and their tokens revoked.`, after);
}

function tenantNames(m, tenants) {
  if (m.role === "admin") return h("span", { class: "muted" }, "every tenant (admin)");
  if (!m.tenants.length) return h("span", { class: "muted" }, "none");
  const byId = new Map(tenants.map((t) => [t.id, t.name]));
  return m.tenants.map((id) => byId.get(id) || id).join(", ");
}

function membersTable(ctx, members, tenants) {
  if (!members.length) return h("p", { class: "muted" }, "No members yet: add one below.");
  const rows = members.map((m) => [
    h("a", { href: `#/team/member/${enc(m.id)}` }, m.name),
    roleSelect(ctx, m, () => again(ctx)),
    tenantNames(m, tenants),
    when(m.createdAt),
    h(
      "div",
      { class: "row" },
      h("a", { href: `#/team/member/${enc(m.id)}` }, "tenants & tokens"),
      button("Delete", () => deleteMember(ctx, m, () => again(ctx)), { class: "danger" }),
    ),
  ]);
  return table(["Name", "Role", "Tenants", "Added", ""], rows, { class: "wide" });
}

/** Tenant checkboxes, for a new member or an existing one. */
function tenantChecks(tenants, checked, onChange) {
  if (!tenants.length) return h("p", { class: "muted" }, "This organisation has no tenants yet.");
  return h(
    "div",
    { class: "row" },
    tenants.map((t) => {
      const box = h("input", { type: "checkbox", value: t.id, checked: checked.includes(t.id) });
      if (onChange) box.addEventListener("change", () => onChange(t, box));
      return h("label", {}, box, " ", t.name);
    }),
  );
}

function newMemberForm(ctx, org, tenants) {
  const name = h("input", { id: "member-name", required: true, maxlength: 64, autocomplete: "off" });
  const role = h("select", { id: "member-role" }, options(ROLES, "member"));
  const checks = tenantChecks(tenants, []);
  const form = h(
    "form",
    { class: "card" },
    h("h3", {}, "Add a member"),
    h("label", { for: "member-name" }, "Name"),
    name,
    h("label", { for: "member-role" }, "Role"),
    role,
    h("span", { class: "muted" }, "An admin manages the organisation and uses every tenant; a member uses the tenants assigned."),
    h("label", {}, "Tenants"),
    checks,
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Add member")),
  );
  return onSubmit(form, () => {
    const picked = [...form.querySelectorAll("input[type=checkbox]:checked")].map((b) => b.value);
    return act(
      ctx,
      () => post(`/v1/orgs/${enc(org.id)}/members`, { name: name.value.trim(), role: role.value, tenants: picked }),
      (m) => `${m.name} was added. Mint a token for them here, and hand it over.`,
      (m) => ctx.go(`team/member/${enc(m.id)}`),
    );
  });
}

// ---- One member: role, tenants, tokens ---------------------------------

async function memberView(ctx, id) {
  const [m, all, answer] = await Promise.all([
    get(`/v1/members/${enc(id)}`),
    get("/v1/tenants").then((a) => a.tenants || []),
    get(`/v1/members/${enc(id)}/tokens`),
  ]);
  if (!ctx.alive()) return;
  const tenants = all.filter((t) => t.orgId === m.orgId);
  const secretBox = h("div");
  const tokensEl = h("div", { class: "scroll" });
  const showTokens = (list) => fill(tokensEl, tokensTable(ctx, list, reloadTokens));
  const reloadTokens = () => act(ctx, () => get(`/v1/members/${enc(id)}/tokens`), null, (a) => showTokens(a.tokens || []));
  showTokens(answer.tokens || []);

  const assign = async (t, box) => {
    const on = box.checked;
    box.disabled = true;
    const path = `/v1/members/${enc(m.id)}/tenants/${enc(t.id)}`;
    const ok = await act(ctx, () => (on ? put(path) : del(path)), `${m.name} ${on ? "may now use" : "no longer uses"} ${t.name}.`);
    if (!ok && box.isConnected) box.checked = !on;
    if (box.isConnected) box.disabled = false;
  };

  const tokenName = h("input", { maxlength: 64, placeholder: "api", "aria-label": "token name" });
  const mint = onSubmit(h("form", { class: "toolbar" }, tokenName, h("button", { type: "submit", class: "primary" }, "Mint a token")), () =>
    act(
      ctx,
      () => post(`/v1/members/${enc(m.id)}/tokens`, tokenName.value.trim() ? { name: tokenName.value.trim() } : {}),
      null,
      async (minted) => {
        tokenName.value = "";
        showSecret(ctx, secretBox, minted);
        await reloadTokens();
      },
    ),
  );

  fill(
    ctx.root,
    h("div", { class: "toolbar" }, h("a", { href: "#/team" }, "← Organisation"), h("a", { href: "#/team/audit" }, "Audit log")),
    h("h1", {}, m.name),
    h("section", { class: "card" }, facts(["id", h("span", { class: "mono" }, m.id)], ["role", roleSelect(ctx, m, () => again(ctx))], ["added", when(m.createdAt)])),
    h("h2", {}, "Tenants"),
    m.role === "admin" ? h("p", { class: "muted" }, "An admin uses every tenant of the organisation; these assignments count once the role is member.") : null,
    tenantChecks(tenants, m.tenants, assign),
    h("h2", {}, "Tokens"),
    mint,
    secretBox,
    tokensEl,
    h("h2", {}, "Remove"),
    button("Delete this member", () => deleteMember(ctx, m, () => ctx.go("team")), { class: "danger" }),
  );
}

/** The new token, this once, with a copy button; "Hide it" forgets it. */
function showSecret(ctx, box, minted) {
  const secret = h("div", { class: "secret mono" }, minted.token);
  const copy = button("Copy", async () => {
    try {
      await navigator.clipboard.writeText(minted.token);
      ctx.notify("The token was copied.", "info");
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(secret);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      ctx.notify("The browser did not allow copying: the token is selected, press Ctrl+C.", "info");
    }
  });
  fill(
    box,
    h(
      "div",
      { class: "card" },
      h("p", {}, `Token "${minted.name}": copy it now. It is shown this once and cannot be read again.`),
      secret,
      h("div", { class: "row" }, copy, button("Hide it", () => fill(box))),
    ),
  );
}

function tokensTable(ctx, tokens, reload) {
  if (!tokens.length) return h("p", { class: "muted" }, "No tokens yet.");
  const rows = tokens.map((t) => {
    const mine = t.id === ctx.me.tokenId;
    const state = t.revokedAt
      ? h("span", { class: "badge status-revoked" }, `revoked ${when(t.revokedAt)}`)
      : h("span", { class: "badge status-online" }, mine ? "active (this session)" : "active");
    const revoke = async () => {
      const q = mine ? `Revoke "${t.name}"? It is the token you are signed in with: you will be signed out.` : `Revoke token "${t.name}"? It is refused from now on.`;
      if (await confirmed(q)) await act(ctx, () => del(`/v1/tokens/${enc(t.id)}`), `Token "${t.name}" was revoked.`, reload);
    };
    return [t.name, h("span", { class: "mono" }, t.id), when(t.createdAt), state, t.revokedAt ? null : button("Revoke", revoke, { class: "danger" })];
  });
  return table(["Name", "Id", "Created", "State", ""], rows, { class: "wide" });
}

// ---- Audit log ---------------------------------------------------------

async function auditView(ctx) {
  const { orgs, org } = await pickOrg(ctx);
  const [all, members] = await Promise.all([
    get("/v1/tenants").then((a) => a.tenants || []),
    org ? get(`/v1/orgs/${enc(org.id)}/members`).then((a) => a.members || []) : [],
  ]);
  if (!ctx.alive()) return;
  const tenants = org ? all.filter((t) => t.orgId === org.id) : [];
  const tenantName = new Map(all.map((t) => [t.id, t.name]));
  const memberName = new Map(members.map((m) => [`member:${m.id}`, m.name]));

  const scope = h(
    "select",
    { "aria-label": "scope" },
    isOperator(ctx) ? h("option", { value: "" }, "everything") : null,
    org ? h("option", { value: `orgId:${org.id}`, selected: true }, `organisation ${org.name}`) : null,
    tenants.map((t) => h("option", { value: `tenantId:${t.id}` }, `tenant ${t.name}`)),
  );
  const limit = h("input", { type: "number", min: 1, max: 1000, value: 100, size: 5, "aria-label": "entries per page" });
  const who = h(
    "select",
    { "aria-label": "actor" },
    h("option", { value: "" }, "anyone"),
    h("option", { value: "operator" }, "the operator"),
    members.map((m) => h("option", { value: `member:${m.id}` }, m.name)),
  );
  const action = h("input", { type: "search", placeholder: "action, or a prefix: container.", size: 18, "aria-label": "action" });
  const outcome = h("input", { type: "search", placeholder: "outcome: ok, forbidden…", size: 12, "aria-label": "outcome" });
  const since = h("input", { type: "datetime-local", "aria-label": "since" });
  const until = h("input", { type: "datetime-local", "aria-label": "until" });
  const grid = table(["Time", "Actor", "Kind", "Action", "Target", "Tenant", "Outcome", "Status"], [], { class: "wide" });
  const pager = h("div", { class: "pager" });
  let entries = [];
  let next = null;

  const row = (e) => {
    const tenant = e.tenantId ? tenantName.get(e.tenantId) || e.tenantId : "–";
    const status = e.status === null || e.status === undefined ? "–" : String(e.status);
    const cells = [when(e.at), h("span", { title: e.principal }, memberName.get(e.principal) || e.principal), e.kind, e.action, h("span", { class: "mono" }, e.target), tenant, h("span", { class: "badge" }, e.outcome), status];
    return h("tr", {}, cells.map((c) => h("td", {}, c)));
  };
  const draw = () => {
    fill(grid.tBodies[0], entries.map(row));
    fill(
      pager,
      h("span", { class: "muted" }, `${entries.length} shown`),
      next === null || next === undefined ? h("span", { class: "muted" }, "· the start of the log") : button("Older", () => load(next)),
    );
  };
  // Only the latest request's answer is shown: an earlier one may come last.
  let latest = 0;
  const load = (before) => {
    const mine = ++latest;
    const params = new URLSearchParams();
    const [key, id] = scope.value.split(":");
    if (key) params.set(key, id);
    params.set("limit", limit.value || "100");
    if (who.value) params.set("principal", who.value);
    // A prefix ends in "." or a space ("POST "): only leading blanks go.
    if (action.value.trim()) params.set("action", action.value.trimStart());
    if (outcome.value.trim()) params.set("outcome", outcome.value.trim());
    if (since.value) params.set("since", String(new Date(since.value).getTime()));
    if (until.value) params.set("until", String(new Date(until.value).getTime()));
    if (before !== undefined) params.set("before", String(before));
    return act(ctx, () => get(`/v1/audit?${params}`), null, (page) => {
      if (mine !== latest) return;
      entries = before === undefined ? page.entries || [] : entries.concat(page.entries || []);
      next = page.nextBefore;
      draw();
    });
  };
  const filters = onSubmit(
    h("form", { class: "toolbar" }, scope, who, action, outcome, h("label", {}, "since ", since), h("label", {}, "until ", until), h("label", {}, "per page ", limit), h("button", { type: "submit", class: "primary" }, "Show newest")),
    () => load(),
  );

  fill(ctx.root, toolbar(ctx, orgs, org), h("h1", {}, "Audit log"), filters, h("div", { class: "scroll" }, grid), pager);
  await load();
}
