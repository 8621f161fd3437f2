//! Scheduling (`#/scheduling`): why containers run where they run, and the
//! policies that decide it.
//!
//! * `#/scheduling`: the chosen tenant's recorded decisions, newest first
//!   (time, outcome, container, chosen worker, who decided, the reason),
//!   kept up to date; "older" appends the next page (`nextBefore`). Each
//!   links to its explanation.
//! * `#/scheduling/decision/ID`: one decision explained: the request and
//!   its wishes, the plan and usage admission saw, each module's answer,
//!   then every candidate worker with its verdict, score and reason, the
//!   chosen one first and marked. `explanationTable(decision)` is that
//!   table alone, for the containers view to say why nothing fits.
//! * Policies (admins; the operator also sees the global scope): per scope
//!   and role the active module, its fail mode and health; every uploaded
//!   version with activate (fail mode `closed` or `lastGood`), roll back
//!   and simulate (the last N recorded decisions, or one by its id, replayed through it,
//!   activating nothing: which would be decided otherwise, old and new);
//!   and the upload of a `.wasm` component.

import { get, post, call, enc } from "./api.js";
import { h, fill, table, button, confirmed, bytes, when, ago } from "./dom.js";

const PAGE = 50;
const MAX_PAGE = 500;
const ROLES = ["admission", "placement"];

export function render(ctx) {
  if (ctx.route[0] === "decision" && ctx.route[1]) return showDecision(ctx, ctx.route[1]);
  return showOverview(ctx);
}

// ---- shared pieces -------------------------------------------------------

let namesCache = { at: 0, promise: null };

/** Worker id -> name, from `GET /v1/workers` (kept 30 s). */
function workerNames() {
  if (!namesCache.promise || Date.now() - namesCache.at > 30000) {
    const p = get("/v1/workers").then((r) => new Map(((r && r.workers) || []).map((w) => [w.id, w.name])));
    p.catch(() => namesCache.promise === p && (namesCache.promise = null));
    namesCache = { at: Date.now(), promise: p };
  }
  return namesCache.promise;
}

const namesOrNone = () => workerNames().catch(() => new Map());

function workerLabel(id, names) {
  const name = names && names.get(id);
  return name ? h("span", { title: id }, name, " ", h("span", { class: "muted mono" }, id.slice(0, 8))) : h("span", { class: "mono" }, id);
}

function outcomeBadge(outcome) {
  const good = outcome === "placed" || outcome === "admitted";
  return h("span", { class: `badge ${good ? "verdict-fits" : "verdict-refused"}` }, (outcome || "unknown").replace("_", " "));
}

/** "module", with what failed when a last-good stood in. */
function moduleText(answer) {
  return answer.fallback ? `${answer.module} (${answer.fallback})` : answer.module;
}

/** The reason a decision came out as it did, in one line. */
function reasonOf(e) {
  const a = e.admission;
  const p = e.placement;
  if (a && a.error) return `admission failed: ${a.error}`;
  if (a && a.result && a.result.decision === "deny") return `denied: ${a.result.reason || ""}`;
  if (p && p.error) return `placement failed: ${p.error}`;
  if (p && p.result) return p.result.reason || "";
  return "";
}

/** Epoch ms, short: the time alone today, else date and time (full in the tooltip). */
function stamp(ms) {
  const d = new Date(ms);
  const text = d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  return h("span", { title: `${when(ms)} (${ago(ms)})` }, text);
}

const limitText = (n) => (n === null || n === undefined ? "unlimited" : String(n));
const labelsText = (labels) => (labels && labels.length ? labels.map(([k, v]) => `${k}=${v}`).join(", ") : "none");

/** A definition list of `[term, value]` (falsy entries skipped). */
function dl(entries) {
  return h("dl", {}, entries.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "–" : v)]));
}

/** `fn`, its failure shown through `ctx.refused` (while the view is shown). */
const guarded = (ctx, fn) => () => fn().catch((err) => ctx.alive() && ctx.refused(err));

const card = (title, ...children) => h("div", { class: "card" }, h("h3", {}, title), ...children);

// ---- the decisions list --------------------------------------------------

async function showOverview(ctx) {
  const listBox = h("div", {}, h("p", { class: "muted" }, "Loading decisions…"));
  const pager = h("div", { class: "pager" });
  const policyBox = h("div", {}, h("p", { class: "muted" }, "Loading policies…"));
  const t = ctx.tenant;
  fill(
    ctx.root,
    h("h1", {}, "Scheduling"),
    h("h2", {}, t ? `Decisions for ${t.name}` : "Decisions"),
    t ? [listBox, pager] : h("p", { class: "muted" }, "There is no tenant to show: you may use none yet."),
    h("h2", {}, "Policies"),
    policyBox,
  );
  if (t) {
    // The newest page, refreshed; older pages appended by "older" (`nextBefore`).
    let newest = [];
    let older = [];
    let cursor = null;
    let names = null;
    const show = () => {
      const seen = new Set(newest.map((d) => d.id));
      const decisions = newest.concat(older.filter((d) => !seen.has(d.id)));
      fill(listBox, decisions.length ? decisionsTable(decisions, names) : h("p", { class: "muted" }, "No decisions recorded yet: they appear when a container is launched without naming a worker, or a worker enrols."));
      fill(
        pager,
        decisions.length > 0 && h("span", { class: "muted" }, `the ${decisions.length} newest`),
        cursor &&
          button("older", guarded(ctx, async () => {
            const page = await get(`/v1/tenants/${enc(t.id)}/decisions?limit=${PAGE}&before=${enc(cursor)}`);
            if (!ctx.alive()) return;
            older = older.concat(page.decisions || []);
            cursor = page.nextBefore || null;
            show();
          })),
      );
    };
    const load = async () => {
      const [answer, known] = await Promise.all([get(`/v1/tenants/${enc(t.id)}/decisions?limit=${PAGE}`), namesOrNone()]);
      if (!ctx.alive()) return;
      newest = (answer && answer.decisions) || [];
      names = known;
      if (!older.length) cursor = (answer && answer.nextBefore) || null;
      show();
    };
    ctx.every(15000, load);
  }
  await showPolicies(ctx, policyBox).catch((err) => {
    if (!ctx.alive()) return;
    fill(policyBox, h("p", { class: "muted" }, "The policies could not be loaded."));
    ctx.refused(err);
  });
}

function decisionsTable(decisions, names) {
  const rows = decisions.map((d) => {
    const e = d.explanation || {};
    return [
      h("a", { href: `#/scheduling/decision/${enc(d.id)}`, title: "explain this decision" }, stamp(d.at)),
      outcomeBadge(d.outcome),
      e.request ? e.request.name : e.enrolment ? h("span", { class: "muted" }, "worker enrolment") : "–",
      e.chosenWorkerId ? workerLabel(e.chosenWorkerId, names) : "–",
      [e.admission, e.placement].filter(Boolean).map(moduleText).join("; ") || "–",
      reasonOf(e),
    ];
  });
  return h("div", { class: "scroll" }, table(["Time (explain)", "Outcome", "Container", "Chosen worker", "Decided by", "Reason"], rows, { class: "wide" }));
}

// ---- one decision --------------------------------------------------------

async function showDecision(ctx, id) {
  const back = h("p", {}, h("a", { href: "#/scheduling" }, "← all decisions"));
  if (!ctx.tenant) return fill(ctx.root, back, h("p", {}, "There is no tenant to show."));
  fill(ctx.root, back, h("p", { class: "muted" }, "Loading the decision…"));
  let d, names;
  try {
    [d, names] = await Promise.all([get(`/v1/tenants/${enc(ctx.tenant.id)}/decisions/${enc(id)}`), namesOrNone()]);
  } catch (err) {
    if (!ctx.alive()) return;
    fill(ctx.root, back, h("p", { class: "muted" }, "This decision could not be shown."));
    return ctx.refused(err);
  }
  if (!ctx.alive()) return;
  const e = d.explanation || {};
  const r = e.request;
  const a = e.admission;
  const p = e.placement;
  const u = e.usage;
  const cards = [
    r &&
      card(
        "Request",
        dl([
          ["name", r.name],
          ["image", h("span", { class: "mono" }, r.image)],
          ["profile", r.profile],
          ["memory", r.memoryBytes ? bytes(r.memoryBytes) : "any"],
          ["CPUs", r.cpus || "any"],
          ["pinned worker", r.pinnedWorker ? workerLabel(r.pinnedWorker, names) : "none"],
          ["platform", r.platform || "any"],
          ["arch", r.arch || "any"],
          ["region", r.region || "any"],
          ["labels", labelsText(r.labels)],
        ]),
      ),
    e.enrolment && card("Enrolment", dl([["tenant", h("span", { class: "mono" }, e.enrolment.tenantId)]])),
    (e.plan || u) &&
      card(
        "Plan and usage",
        dl([
          e.plan && ["plan", e.plan.name],
          e.plan && ["self-hosted workers", limitText(e.plan.selfHostedWorkers)],
          e.plan && ["concurrent containers", limitText(e.plan.concurrentContainers)],
          u && ["containers", `${u.running} running, ${u.created} created, ${u.creating} creating, ${u.exited} exited, ${u.lost} lost, ${u.failed} failed`],
          u && ["self-hosted workers held", u.selfHostedWorkers],
        ]),
      ),
    a &&
      card(
        "Admission",
        dl([
          ["module", a.module],
          a.fallback && ["fallback", a.fallback],
          ["answer", a.result ? (a.result.decision === "deny" ? `deny: ${a.result.reason || ""}` : a.result.decision) : "none"],
          a.error && ["error", a.error],
        ]),
      ),
    p &&
      card(
        "Placement",
        dl([
          ["module", p.module],
          p.fallback && ["fallback", p.fallback],
          ["chosen", e.chosenWorkerId ? workerLabel(e.chosenWorkerId, names) : "none"],
          p.result && ["reason", p.result.reason],
          p.error && ["error", p.error],
        ]),
      ),
  ].filter(Boolean);
  fill(
    ctx.root,
    back,
    h("h1", {}, "Decision ", h("span", { class: "mono" }, d.id)),
    h("p", {}, outcomeBadge(d.outcome), " ", when(d.at), ` (${ago(d.at)})`, d.containerId ? [" · container ", h("span", { class: "mono" }, d.containerId)] : null),
    cards.length ? h("div", { class: "cards" }, cards) : h("p", { class: "muted" }, "This explanation does not read as one this dashboard knows; it is shown as stored below."),
    h("h2", {}, "Candidate workers"),
    explanationTable(d),
    h("details", {}, h("summary", {}, "As stored (JSON)"), h("pre", {}, JSON.stringify(d.explanation, null, 2))),
  );
}

/**
 * Every candidate worker of `decision` (as `GET .../decisions/{id}`
 * answers it): verdict, score, reason and the machine it saw, the chosen
 * one first with a "chosen" badge, then those that fit (best score
 * first), then the refused. Worker names are filled in when known.
 */
export function explanationTable(decision) {
  const e = (decision && decision.explanation) || {};
  const p = e.placement || {};
  const placed = p.result || null;
  const workers = Array.isArray(e.workers) ? e.workers : [];
  const summary = p.error ? `Placement failed: ${p.error}` : placed && placed.reason ? `Placement: ${placed.reason}` : null;
  if (!workers.length) {
    return h("p", { class: "muted" }, summary || "No worker was considered for this decision.");
  }
  const verdicts = (placed && placed.verdicts) || [];
  const chosenAt = placed && Number.isInteger(placed.chosen) ? placed.chosen : workers.findIndex((w) => w.id === e.chosenWorkerId);
  const rank = (x) => (x.chosen ? 0 : x.v && x.v.feasible ? 1 : 2);
  const items = workers
    .map((w, i) => ({ w, v: verdicts[i], chosen: i === chosenAt, i }))
    .sort((x, y) => rank(x) - rank(y) || (rank(x) === 1 ? y.v.score - x.v.score : 0) || x.i - y.i);
  const nameCells = [];
  const rows = items.map(({ w, v, chosen }) => {
    const who = h("span", { class: "mono" }, w.id);
    nameCells.push([who, w.id]);
    const verdict = v
      ? h("span", { class: `badge ${v.feasible ? "verdict-fits" : "verdict-refused"}` }, v.feasible ? "fits" : "refused")
      : h("span", { class: "muted" }, "no verdict");
    const flags = [!w.online && "offline", w.cordoned && "cordoned", w.drained && "draining"].filter(Boolean);
    const machine = [
      [w.mode, [w.platform, w.arch].filter(Boolean).join("/"), w.region].filter(Boolean).join(", "),
      w.cpuCount ? `${w.cpuCount} CPU, load ${(w.cpuLoadPermille || 0) / 10} %` : null,
      w.memoryTotal ? `${bytes(w.memoryFree)} of ${bytes(w.memoryTotal)} free` : null,
      `${w.containersRunning || 0} running`,
      `floor ${w.securityFloor}`,
    ].filter(Boolean).join("; ");
    return h(
      "tr",
      { class: chosen ? "chosen" : null, "aria-current": chosen ? "true" : null },
      h("td", {}, chosen ? h("strong", {}, who) : who, chosen ? [" ", h("span", { class: "badge verdict-fits" }, "chosen")] : null),
      h("td", {}, verdict),
      h("td", {}, v ? String(v.score) : "–"),
      h("td", {}, v ? v.reason : "–"),
      h("td", {}, machine, flags.length ? h("span", { class: "verdict-refused" }, ` (${flags.join(", ")})`) : null),
    );
  });
  workerNames()
    .then((names) => nameCells.forEach(([cell, id]) => names.has(id) && fill(cell, workerLabel(id, names))))
    .catch(() => {});
  return h(
    "div",
    { class: "scroll" },
    summary && h("p", {}, summary),
    table(["Worker", "Verdict", "Score", "Reason", "What placement saw"], rows, { class: "wide" }),
  );
}

// ---- policies ------------------------------------------------------------

async function showPolicies(ctx, box) {
  if (!ctx.admin) {
    return fill(box, h("p", { class: "muted" }, "Policies are managed by your organisation's admins and the operator."));
  }
  const operator = ctx.me.principal === "operator";
  const t = ctx.tenant;
  if (!operator && !t) return fill(box, h("p", { class: "muted" }, "Choose a tenant to manage its policies."));
  const [all, mine, names] = await Promise.all([
    operator ? get("/v1/policies") : null,
    t ? get(`/v1/policies?tenantId=${enc(t.id)}`) : null,
    namesOrNone(),
  ]);
  if (!ctx.alive()) return;
  const listed = all || mine;
  const scopes = [];
  if (operator) scopes.push({ key: "global", label: "Global (every tenant)", tenantId: null });
  if (t) scopes.push({ key: `tenant:${t.id}`, label: `Tenant ${t.name}`, tenantId: t.id });
  const reload = guarded(ctx, () => showPolicies(ctx, box));
  const eff = mine && mine.effective;
  fill(
    box,
    eff && h("p", {}, `Deciding for ${t.name} now: admission ${eff.admission || "–"}, placement ${eff.placement || "–"}.`),
    scopes.map((s) => scopeSection(ctx, s, listed.policies || [], listed.active || [], names, reload)),
    h("h2", {}, "Upload a policy module"),
    uploadForm(ctx, scopes, reload),
  );
}

function scopeSection(ctx, scope, policies, active, names, reload) {
  const nameOf = (id) => {
    const p = policies.find((x) => x.id === id);
    return p ? `${p.name} v${p.version}` : id;
  };
  const slots = active.filter((a) => a.scope === scope.key);
  const simOut = h("div", {});
  const slotRows = ROLES.map((role) => {
    const s = slots.find((a) => a.role === role);
    if (!s || !s.current) return [role, h("span", { class: "muted" }, "stock default"), "–", "–", "–"];
    const reg = s.registry;
    const health = !reg
      ? "–"
      : reg.health.healthy
        ? h("span", { class: "verdict-fits" }, "healthy")
        : h("span", { class: "verdict-refused" }, `failing (${reg.health.failures}): ${reg.health.lastError || ""}`);
    const mode = s.current.failMode === "lastGood" ? `lastGood (stands in: ${(reg && reg.lastGood) || "stock default"})` : s.current.failMode;
    return [role, h("span", { class: "mono" }, s.module || s.current.policyId), mode, health, [stamp(s.activatedAt), `, ${(s.previous || []).length} earlier`]];
  });
  const mine = policies
    .filter((p) => p.scope === scope.key)
    .sort((x, y) => x.name.localeCompare(y.name) || y.version - x.version);
  const rows = mine.map((p) => {
    const activeIn = slots.filter((a) => a.current && a.current.policyId === p.id);
    const mode = h("select", { "aria-label": `fail mode for ${p.name} v${p.version}` }, h("option", { value: "closed" }, "fail closed"), h("option", { value: "lastGood" }, "fall back to last good"));
    const last = h("input", { type: "text", value: "20", size: 12, "aria-label": "decisions to replay: a number, or one decision's id", title: "how many recent decisions to replay, or one decision's id" });
    return [
      [h("span", { class: "mono" }, p.name), ` v${p.version}`],
      p.kind,
      stamp(p.uploadedAt),
      [bytes(p.sizeBytes), " ", h("span", { class: "mono muted", title: `SHA-256 ${p.sha256}` }, p.sha256.slice(0, 12))],
      activeIn.length ? activeIn.map((a) => h("span", { class: "badge verdict-fits" }, `${a.role} (${a.current.failMode})`)) : h("span", { class: "muted" }, "no"),
      h(
        "div",
        { class: "row" },
        mode,
        button("activate", guarded(ctx, async () => {
          const r = await post(`/v1/policies/${enc(p.id)}/activate?failMode=${enc(mode.value)}`);
          if (!ctx.alive()) return;
          ctx.notify(`${p.name} v${p.version} now decides ${(r.active || []).map((a) => a.role).join(" and ")} in ${r.scope} (${mode.value}).`, "info");
          await reload();
        }), { class: "primary" }),
        activeIn.length > 0 &&
          button("roll back", guarded(ctx, async () => {
            if (!(await confirmed(`Roll back ${p.name} v${p.version}? Each role it decides goes back to its previous module (or the stock default).`))) return;
            const r = await post(`/v1/policies/${enc(p.id)}/rollback`);
            if (!ctx.alive()) return;
            const now = (r.active || []).map((a) => `${a.role} is decided by ${a.current ? nameOf(a.current.policyId) : "the stock default"}`);
            ctx.notify(`Rolled back ${p.name} v${p.version}: ${now.join("; ")}.`, "info");
            await reload();
          }), { class: "danger" }),
        last,
        button("simulate", guarded(ctx, async () => {
          const wanted = last.value.trim();
          const one = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(wanted);
          const n = Math.min(MAX_PAGE, Math.max(1, parseInt(wanted, 10) || 20));
          const what = one ? `decision ${wanted}` : `the last ${n} decisions`;
          fill(simOut, h("p", { class: "muted" }, `Replaying ${what} through ${p.name} v${p.version}…`));
          const query = one ? `decisionId=${enc(wanted)}` : `last=${n}`;
          const r = await post(`/v1/policies/${enc(p.id)}/simulate?${query}`).finally(() => fill(simOut));
          if (ctx.alive()) fill(simOut, replayView(r, names, ctx.tenant));
        })),
      ),
    ];
  });
  return h(
    "section",
    {},
    h("h3", {}, scope.label),
    h("div", { class: "scroll" }, table(["Role", "Active module", "Fail mode", "Health", "Since"], slotRows)),
    mine.length
      ? h("div", { class: "scroll" }, h("p", { class: "muted" }, "Versions uploaded in this scope:"), table(["Module", "Kind", "Uploaded", "Size, SHA-256", "Active in", "Actions"], rows, { class: "wide" }))
      : h("p", { class: "muted" }, "No module uploaded in this scope: the stock defaults decide."),
    simOut,
  );
}

/** What one call said, recorded or replayed (`scheduling::simulate::Said`). */
function saidText(s, names) {
  if (s === null || s === undefined) return "failed, no result";
  if (s.decision) return s.decision === "deny" ? `deny: ${s.reason || ""}` : s.decision;
  if ("chosenWorkerId" in s) {
    const w = s.chosenWorkerId;
    const who = w ? `worker ${(names && names.get(w)) || w}` : "no worker";
    return s.reason ? `${who} (${s.reason})` : who;
  }
  if ("error" in s) return `error: ${s.error || "unknown"}`;
  return JSON.stringify(s);
}

function replayView(r, names, tenant) {
  const link = (x) =>
    tenant && x.tenantId === tenant.id
      ? h("a", { href: `#/scheduling/decision/${enc(x.decisionId)}` }, x.decisionId.slice(0, 8))
      : h("span", { class: "mono", title: `tenant ${x.tenantId}` }, x.decisionId.slice(0, 8));
  const differences = r.differences || [];
  const unreadable = r.unreadable || [];
  return h(
    "div",
    { class: "card" },
    h("h3", {}, `Simulation of ${r.module}`),
    h(
      "p",
      {},
      `Roles replayed: ${(r.roles || []).join(", ") || "none"}. ${r.evaluated} decision(s) replayed, ${r.skipped} skipped (no call this module makes). `,
      h("strong", {}, r.differing ? `${r.differing} call(s) would be decided differently.` : "It decides every replayed call as recorded."),
    ),
    differences.length > 0 &&
      h(
        "div",
        { class: "scroll" },
        table(
          ["Time", "Decision", "Call", "Recorded", "Candidate"],
          differences.map((x) => [stamp(x.at), link(x), x.call, saidText(x.recorded, names), saidText(x.candidate, names)]),
          { class: "wide" },
        ),
      ),
    unreadable.length > 0 && [
      h("p", {}, `${unreadable.length} recorded decision(s) could not be read, so were not replayed:`),
      table(["Time", "Decision", "Why"], unreadable.map((x) => [stamp(x.at), link(x), x.error])),
    ],
  );
}

function uploadForm(ctx, scopes, reload) {
  const file = h("input", { type: "file", id: "policy-file", accept: ".wasm,application/wasm", required: true });
  const name = h("input", { id: "policy-name", required: true, pattern: "[a-z0-9_\\-]{1,64}", maxlength: 64, placeholder: "e.g. prefer-gpu", autocomplete: "off" });
  const kind = h("select", { id: "policy-kind" }, ["placement", "admission", "policy"].map((k) => h("option", { value: k }, k === "policy" ? "policy (both)" : k)));
  const scope = h("select", { id: "policy-scope" }, [...scopes].reverse().map((s) => h("option", { value: s.tenantId || "" }, s.label)));
  const submit = h("button", { type: "submit", class: "primary" }, "Upload");
  const form = h(
    "form",
    { class: "card" },
    h("p", { class: "muted" }, "A WebAssembly component implementing the admission or placement world (or both), at most 32 MiB. It is stored as the next version of its name; nothing changes until you activate it."),
    h("label", { for: "policy-file" }, "Component (.wasm)"),
    file,
    h("label", { for: "policy-name" }, "Name (a-z, 0-9, - and _)"),
    name,
    h("label", { for: "policy-kind" }, "Kind"),
    kind,
    h("label", { for: "policy-scope" }, "Scope"),
    scope,
    h("div", { class: "row" }, submit),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = file.files && file.files[0];
    if (!chosen || submit.disabled) return;
    submit.disabled = true;
    try {
      const body = await chosen.arrayBuffer();
      const tenant = scope.value ? `&tenantId=${enc(scope.value)}` : "";
      const p = await call("POST", `/v1/policies?kind=${enc(kind.value)}&name=${enc(name.value.trim())}${tenant}`, body, "application/wasm");
      if (!ctx.alive()) return;
      ctx.notify(`Uploaded ${p.name} v${p.version} (${p.kind}, ${bytes(p.sizeBytes)}) to ${p.scope}. Simulate it, then activate it.`, "info");
      await reload();
    } catch (err) {
      if (ctx.alive()) ctx.refused(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
