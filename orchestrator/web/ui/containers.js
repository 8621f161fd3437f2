//! The containers view (`#/containers`): the tenant's containers with
//! state, worker, profile, image, age and live CPU and memory with a small
//! graph each; start, stop, remove and terminal; and the launch form.
//!
//! * The list is `GET /v1/containers?tenantId=` every 3 s (the workers, for
//!   their names, only when a new one appears, every 30 s, and when the
//!   launch form opens). CPU and memory
//!   come from `GET /v1/containers/{id}/stats` every 5 s for the running
//!   containers shown, at most `STATS_MAX` of them, four calls at a time:
//!   the agent measures them when asked and adds its samples of the last
//!   five minutes (one per heartbeat), drawn as sparklines, so a graph
//!   shows the recent past as soon as the page opens.
//! * The tenant's default egress allow-list above the list, editable by
//!   admins, and each container's own list beside its profile
//!   (`allowlist.js`).
//! * Launch: name, image, profile, allowed domains (one per line; empty:
//!   the tenant's default), command (one argument per line), env
//!   and labels (`KEY=value` lines), an optional workspace repository
//!   (cloned by `POST …/setup` once the container is created), and
//!   "place automatically" or a chosen worker. When nothing fits, the
//!   decision the create recorded (its id is in the answer's message) is
//!   fetched and its per-worker verdicts and reasons are shown.
//! * Removed containers are hidden unless asked for.

import { get, post, del, enc, ApiFailure } from "./api.js";
import { h, fill, button, confirmed, bytes, ago, sparkline, parsePairs } from "./dom.js";
import { explanationTable } from "./scheduling.js";
import { lines, profileCell, defaultsLine } from "./allowlist.js";

const REFRESH_MS = 3000;
const STATS_MS = 5000;
const STATS_MAX = 30;
const WORKERS_MS = 30000;
const PROFILES = ["standard", "strict", "open", "offline"];

/** container id → its last stats answer (the agent's recent samples with it). */
const latest = new Map();

/** The CPU and memory cells of one container: the agent's samples of the last minutes, then now. */
function usage(c) {
  const s = latest.get(c.id);
  if (c.state !== "running") return ["–", "–"];
  if (!s) return ["measuring…", "measuring…"];
  const list = [...(s.history || []).map((x) => ({ cpu: x.cpuPercent, mem: x.memoryUsed })), { cpu: s.cpuPercent, mem: s.memoryUsed }];
  const limit = s.memoryLimit || 0;
  const cpuMax = Math.max(100, ...list.map((x) => x.cpu));
  const memMax = Math.max(limit, ...list.map((x) => x.mem));
  return [
    h("span", {}, sparkline(list.map((x) => x.cpu), cpuMax, `CPU of ${c.name}`), ` ${s.cpuPercent.toFixed(1)} %`),
    h("span", {}, sparkline(list.map((x) => x.mem), memMax, `memory of ${c.name}`), ` ${bytes(s.memoryUsed)}${limit ? ` of ${bytes(limit)}` : ""}`),
  ];
}

async function pool(items, n, fn) {
  const queue = items.slice();
  const run = async () => {
    while (queue.length) await fn(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.min(n, queue.length) }, run));
}

/** The launch form; `launched()` runs after a successful launch. */
function launchForm(ctx, workers, launched) {
  const field = (label, input, hint) => [h("label", { for: input.id }, label), input, hint ? h("span", { class: "muted" }, hint) : null];
  const name = h("input", { id: "launch-name", name: "name", required: true, autocomplete: "off" });
  const image = h("input", { id: "launch-image", name: "image", required: true, autocomplete: "off" });
  const profile = h("select", { id: "launch-profile", name: "profile" }, PROFILES.map((p) => h("option", { value: p }, p)));
  const domains = h("textarea", { id: "launch-domains", name: "allowedDomains", rows: 2 });
  const command = h("textarea", { id: "launch-command", name: "command", rows: 2 });
  const env = h("textarea", { id: "launch-env", name: "env", rows: 2 });
  const labels = h("textarea", { id: "launch-labels", name: "labels", rows: 2 });
  const repo = h("input", { id: "launch-repo", name: "repository", type: "url", placeholder: "https://…", autocomplete: "off" });
  const worker = h(
    "select",
    { id: "launch-worker", name: "worker" },
    h("option", { value: "" }, "place automatically"),
    workers.filter((w) => !w.deleted).map((w) => h("option", { value: w.id }, `${w.name} (${w.status})`)),
  );
  const why = h("section", { id: "launch-why", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", id: "launch-submit" }, "Launch");
  const form = h(
    "form",
    { class: "card", id: "launch" },
    h("h2", {}, "Launch a container"),
    field("Name", name),
    field("Image", image, "e.g. docker.io/library/alpine:3 or an image on the worker"),
    field("Profile", profile),
    field("Allowed domains", domains, "standard and strict: one name or *.domain per line; empty: the tenant's default"),
    field("Command", command, "one argument per line; empty: the image's own"),
    field("Environment", env, "KEY=value, one per line"),
    field("Labels", labels, "KEY=value, one per line"),
    field("Workspace repository", repo, "https URL, cloned into the workspace after create"),
    field("Worker", worker),
    submit,
    why,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    why.hidden = true;
    let body;
    try {
      body = {
        tenantId: ctx.tenant.id,
        name: name.value.trim(),
        image: image.value.trim(),
        profile: profile.value,
        env: parsePairs(env.value, "Environment"),
        labels: parsePairs(labels.value, "Labels"),
      };
    } catch (err) {
      return ctx.notify(err.message);
    }
    const argv = command.value.split("\n").filter((l) => l.trim() !== "");
    if (argv.length) body.command = argv;
    if (worker.value) body.workerId = worker.value;
    if (lines(domains.value).length) body.allowedDomains = lines(domains.value);
    if (repo.value.trim()) body.workspace = true;
    submit.disabled = true;
    try {
      const created = await post("/v1/containers", body);
      if (repo.value.trim()) await post(`/v1/containers/${enc(created.id)}/setup`, { repository: { url: repo.value.trim() } });
      if (created.state !== "running") await post(`/v1/containers/${enc(created.id)}/start`);
      ctx.notify(`${created.name} launched on ${workers.find((w) => w.id === created.workerId)?.name || created.workerId}`, "info");
      name.value = "";
      await launched();
    } catch (err) {
      ctx.refused(err);
      await explain(ctx, err, why);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** After a refused placement: the recorded decision's verdict per worker. */
async function explain(ctx, err, box) {
  if (!(err instanceof ApiFailure) || !/^no_worker/.test(err.code)) return;
  const m = /decision ([0-9a-f-]{36})/.exec(err.words);
  if (!m) return;
  try {
    const decision = await get(`/v1/tenants/${enc(ctx.tenant.id)}/decisions/${enc(m[1])}`);
    if (!ctx.alive()) return;
    fill(box, h("h3", {}, "Why no worker was chosen"), h("div", { class: "scroll" }, explanationTable(decision)));
    box.hidden = false;
  } catch (e) {
    ctx.refused(e);
  }
}

/** The buttons of one container's row. */
function actions(ctx, c, refresh) {
  const act = (verb, path, method = post) => async () => {
    try {
      await method(path);
      ctx.notify(`${c.name}: ${verb}`, "info");
    } catch (err) {
      ctx.refused(err);
    }
    await refresh();
  };
  const base = `/v1/containers/${enc(c.id)}`;
  const out = [];
  if (c.state === "created" || c.state === "exited") out.push(button("Start", act("started", `${base}/start`)));
  if (c.state === "running") {
    out.push(button("Stop", act("stopped", `${base}/stop`)));
    out.push(h("a", { href: `/ui/terminal?container=${enc(c.id)}`, target: "_blank", rel: "noopener", class: "terminal-link" }, "Terminal"));
  }
  if (c.state !== "removed" && c.state !== "creating") {
    out.push(
      button(
        "Remove",
        async () => {
          if (await confirmed(`Remove container ${c.name}? Its files are deleted on the worker.`)) await act("removed", base, del)();
        },
        { class: "danger" },
      ),
    );
  }
  return h("div", { class: "row" }, out);
}

export async function render(ctx) {
  if (!ctx.tenant) {
    fill(ctx.root, h("h1", {}, "Containers"), h("p", {}, "You are not assigned to any tenant yet: ask an admin."));
    return;
  }
  const body = h("tbody", { id: "containers" });
  const count = h("span", { class: "muted", role: "status" });
  const showRemoved = h("input", { type: "checkbox", id: "show-removed" });
  const formBox = h("div", { hidden: true });
  let containers = [];
  let workers = [];
  const workerName = (id) => workers.find((w) => w.id === id)?.name || id;

  const draw = () => {
    const shown = containers.filter((c) => showRemoved.checked || c.state !== "removed");
    count.textContent = `${shown.length} containers, ${shown.filter((c) => c.state === "running").length} running`;
    const now = Date.now();
    fill(
      body,
      shown.map((c) => {
        const [cpu, mem] = usage(c);
        return h(
          "tr",
          { "data-container": c.id, "data-state": c.state },
          h("td", { "data-field": "name" }, c.name),
          h("td", {}, h("span", { class: `badge state-${c.state}` }, c.state), c.lastError ? h("div", { class: "muted" }, c.lastError) : null),
          h("td", {}, workerName(c.workerId)),
          h("td", {}, profileCell(c)),
          h("td", { class: "mono" }, c.image),
          h("td", {}, ago(c.createdAt, now)),
          h("td", {}, cpu),
          h("td", {}, mem),
          h("td", {}, actions(ctx, c, refresh)),
        );
      }),
    );
    if (!shown.length) fill(body, h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No containers yet.")));
  };
  // The workers, for their names and the launch form: read again when a
  // container names one not known yet, every WORKERS_MS, and when the form
  // opens; not with every list (1,000 workers are 700 KB).
  let workersAt = 0;
  const loadWorkers = async () => {
    workers = (await get("/v1/workers")).workers || [];
    workersAt = Date.now();
  };
  const refresh = async () => {
    const list = await get(`/v1/containers?tenantId=${enc(ctx.tenant.id)}`);
    if (!ctx.alive()) return;
    containers = (list.containers || []).sort((a, b) => b.createdAt - a.createdAt);
    const unknown = containers.some((c) => !workers.some((w) => w.id === c.workerId));
    if (unknown || Date.now() - workersAt > WORKERS_MS) await loadWorkers();
    if (!ctx.alive()) return;
    // Focus stays on a row's button only if the list is left alone while it is held.
    if (!body.contains(document.activeElement)) draw();
  };
  const sample = async () => {
    const running = containers.filter((c) => c.state === "running").slice(0, STATS_MAX);
    await pool(running, 4, async (c) => {
      try {
        latest.set(c.id, await get(`/v1/containers/${enc(c.id)}/stats`));
      } catch (err) {
        if (err instanceof ApiFailure && err.status === 0) throw err;
        // A container that stopped meanwhile has no stats: the list says why.
      }
    });
    if (ctx.alive() && !body.contains(document.activeElement)) draw();
  };
  showRemoved.addEventListener("change", draw);

  fill(
    ctx.root,
    h("h1", {}, `Containers of ${ctx.tenant.name}`),
    defaultsLine(ctx),
    h(
      "div",
      { class: "toolbar" },
      count,
      h("label", {}, showRemoved, " show removed"),
      button(
        "Launch a container",
        async () => {
          formBox.hidden = !formBox.hidden;
          if (!formBox.hidden) {
            await loadWorkers();
            fill(formBox, launchForm(ctx, workers, refresh));
            formBox.querySelector("input")?.focus();
          }
        },
        { class: "primary", id: "launch-button" },
      ),
    ),
    formBox,
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "wide" },
        h("thead", {}, h("tr", {}, ["Name", "State", "Worker", "Profile", "Image", "Age", "CPU", "Memory", ""].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
  );
  ctx.every(REFRESH_MS, refresh);
  ctx.every(STATS_MS, sample);
}
