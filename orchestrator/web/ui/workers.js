//! The workers view (`#/workers`): one card per worker the signed-in
//! principal may see, refreshed every 2 s from `GET /v1/workers` without a
//! reload (a worker that goes offline turns offline on the open page within
//! one refresh after the orchestrator notices), and, for admins, the
//! worker's actions and "Add a worker".
//!
//! * Cards are built once per worker and updated in place, so a refresh
//!   never takes the keyboard focus from a button.
//! * The status shown is the first that applies of deleted, revoked,
//!   offline, reconnecting, draining, cordoned, online.
//! * Whether the agent drives rootless Podman, and what that costs on its
//!   box (`limitations`: e.g. memory, CPU and PIDs limits ignored), is
//!   shown as the agent registered it, so a limit that does not hold is
//!   never a surprise.
//! * "Add a worker" mints a single-use join token for the tenant in use and
//!   shows the two commands that download the static agent from this
//!   orchestrator (`GET /download/agent/{arch}`) and enrol and run it.

import { get, post, del, enc } from "./api.js";
import { h, fill, button, confirmed, bytes, percent, ago, pairs } from "./dom.js";

const REFRESH_MS = 2000;
const ARCHES = [
  ["x86_64", "x86_64 (PCs, most VMs, Intel/AMD NAS)"],
  ["aarch64", "64-bit ARM (Raspberry Pi 4/5, most ARM NAS)"],
];

/** The one word for a worker's state. */
export function statusOf(w) {
  if (w.deleted) return "deleted";
  if (w.revoked) return "revoked";
  if (w.status !== "online") return w.status;
  if (w.draining) return "draining";
  if (w.cordoned) return "cordoned";
  return "online";
}

const FIELDS = [
  ["scope", "tenant / region"],
  ["platform", "platform"],
  ["heartbeat", "last heartbeat"],
  ["cpu", "CPU"],
  ["memory", "memory"],
  ["disk", "disk"],
  ["running", "running containers"],
  ["labels", "labels"],
  ["floor", "security floor"],
  ["podman", "Podman"],
  ["limitations", "limitations"],
  ["network", "network path"],
  ["agent", "agent"],
];

function values(w, tenantName) {
  const beat = w.heartbeat;
  const memUsed = beat && w.memoryTotal ? w.memoryTotal - beat.memoryFree : null;
  const diskUsed = beat && beat.diskTotal != null && beat.diskFree != null ? beat.diskTotal - beat.diskFree : null;
  return {
    scope: w.tenantId ? `tenant ${tenantName(w.tenantId)}` : `fleet, region ${w.region || "–"}`,
    platform: `${w.platform || "?"}/${w.arch || "?"}${w.cpuCount ? `, ${w.cpuCount} CPUs` : ""}`,
    heartbeat: ago(w.lastHeartbeatAt),
    cpu: beat ? percent(beat.cpuUsage) : "–",
    memory: memUsed == null ? "–" : `${bytes(memUsed)} of ${bytes(w.memoryTotal)}`,
    disk: diskUsed == null ? "–" : `${bytes(diskUsed)} of ${bytes(beat.diskTotal)}`,
    running: beat ? String(beat.containersRunning) : "–",
    labels: pairs(w.labels),
    floor: w.securityFloor || "–",
    podman: w.rootless == null ? "–" : w.rootless ? "rootless" : "as root",
    limitations: w.limitations && w.limitations.length ? w.limitations.join("; ") : "none",
    network: beat && beat.gatewayStatus ? `${beat.gatewayStatus}${beat.gatewayStatusDetail ? `: ${beat.gatewayStatusDetail}` : ""}` : "–",
    agent: w.agentVersion || "–",
  };
}

/** One worker's card: `update(w)` rewrites its text, the elements stay. */
function card(ctx, id, refresh) {
  const title = h("h3", {});
  const badge = h("span", { class: "badge", "data-role": "status" });
  const dds = {};
  const dl = h(
    "dl",
    {},
    FIELDS.map(([key, label]) => [h("dt", {}, label), (dds[key] = h("dd", { "data-field": key }))]),
  );
  const actions = h("div", { class: "row" });
  const el = h("article", { class: "card worker", "data-worker": id }, title, badge, dl, actions);
  let shownFlags = "";
  const act = (path, done) => async () => {
    try {
      await post(`/v1/workers/${enc(id)}/${path}`);
      ctx.notify(done, "info");
      await refresh();
    } catch (err) {
      ctx.refused(err);
    }
  };
  const update = (w, tenantName) => {
    title.textContent = w.name;
    const status = statusOf(w);
    badge.textContent = status;
    badge.className = `badge status-${status}`;
    el.dataset.status = status;
    const v = values(w, tenantName);
    for (const [key] of FIELDS) dds[key].textContent = v[key];
    const flags = `${w.cordoned}/${w.draining}/${w.deleted}`;
    if (!ctx.admin || flags === shownFlags) return;
    shownFlags = flags;
    if (w.deleted) return fill(actions);
    fill(
      actions,
      button(w.cordoned ? "Uncordon" : "Cordon", act(w.cordoned ? "uncordon" : "cordon", `${w.name}: ${w.cordoned ? "uncordoned" : "cordoned"}`)),
      button(w.draining ? "Undrain" : "Drain", act(w.draining ? "undrain" : "drain", `${w.name}: ${w.draining ? "taking work again" : "draining"}`)),
      button("Rotate credential", act("rotate-credential", `${w.name}: credential rotated`)),
      button(
        "Delete",
        async () => {
          if (!(await confirmed(`Delete worker ${w.name}? Its credential is revoked and its connection closed; this cannot be undone.`))) return;
          try {
            await del(`/v1/workers/${enc(id)}`);
            ctx.notify(`${w.name}: deleted`, "info");
            await refresh();
          } catch (err) {
            ctx.refused(err);
          }
        },
        { class: "danger" },
      ),
    );
  };
  return { el, update };
}

/** "Add a worker": a join token and the commands that use it (`listed()`: the workers shown). */
function addWorker(ctx, box, listed) {
  return async () => {
    if (!ctx.tenant) return ctx.notify("There is no tenant to add a worker to.");
    let minted;
    try {
      minted = await post(`/v1/tenants/${enc(ctx.tenant.id)}/join-tokens`, {});
    } catch (err) {
      return ctx.refused(err);
    }
    if (!ctx.alive()) return;
    const origin = location.origin;
    const limit = ctx.tenant.plan && ctx.tenant.plan.workers;
    const have = listed().filter((w) => w.tenantId === ctx.tenant.id && !w.deleted).length;
    const full = limit != null && have >= limit;
    fill(
      box,
      h("h2", {}, `Add a worker to ${ctx.tenant.name}`),
      h("p", {}, `On the machine, as the user that runs Podman, run the two commands for its processor. The token works once, until ${new Date(minted.expiresAt).toLocaleString()}.`),
      full ? h("p", { class: "secret", id: "plan-full" }, `The ${ctx.tenant.plan.name} plan allows ${limit} workers and ${ctx.tenant.name} has ${have}: the enrolment will be refused until a worker is deleted or the plan changes.`) : null,
      ARCHES.map(([arch, label]) =>
        h(
          "div",
          { "data-arch": arch },
          h("h3", {}, label),
          h("pre", { class: "command", "data-step": "download" }, `curl -fLo crops-agent ${origin}/download/agent/${arch} && chmod +x crops-agent`),
          h("pre", { class: "command", "data-step": "enroll" }, `./crops-agent enroll --url ${origin} --token ${minted.token} && ./crops-agent run`),
        ),
      ),
      h("p", { class: "muted" }, "With a private CA add --cacert ca.pem to curl and --ca-file ca.pem to enroll. The new worker appears here by itself once it connects."),
      h("p", { class: "muted" }, "To keep it running from boot on a machine with systemd, end the second command with ./crops-agent service install instead of ./crops-agent run."),
    );
    box.hidden = false;
  };
}

export async function render(ctx) {
  const grid = h("div", { class: "cards", id: "workers" });
  const count = h("span", { class: "muted", role: "status" });
  const showDeleted = h("input", { type: "checkbox", id: "show-deleted" });
  const addBox = h("section", { class: "card", id: "add-worker", hidden: true });
  const cards = new Map();
  const tenantNames = new Map(ctx.tenants.map((t) => [t.id, t.name]));
  const tenantName = (id) => tenantNames.get(id) || id;
  let last = [];

  const draw = () => {
    const shown = last.filter((w) => showDeleted.checked || !w.deleted);
    const seen = new Set();
    for (const w of shown) {
      let c = cards.get(w.id);
      if (!c) {
        c = card(ctx, w.id, refresh);
        cards.set(w.id, c);
      }
      c.update(w, tenantName);
      seen.add(w.id);
      grid.appendChild(c.el); // keeps the list's order; moves, never rebuilds
    }
    for (const [id, c] of cards) {
      if (!seen.has(id)) {
        c.el.remove();
        cards.delete(id);
      }
    }
    const online = shown.filter((w) => statusOf(w) === "online").length;
    count.textContent = `${shown.length} workers, ${online} online`;
    if (!shown.length) fill(grid, h("p", { class: "muted" }, "No workers yet."));
    else grid.querySelector(":scope > p")?.remove();
  };
  const refresh = async () => {
    const answer = await get("/v1/workers");
    if (!ctx.alive()) return;
    last = (answer.workers || []).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    draw();
  };
  showDeleted.addEventListener("change", draw);

  fill(
    ctx.root,
    h("h1", {}, "Workers"),
    h(
      "div",
      { class: "toolbar" },
      count,
      h("label", {}, showDeleted, " show deleted"),
      ctx.admin ? button("Add a worker", addWorker(ctx, addBox, () => last), { class: "primary", id: "add-worker-button" }) : null,
    ),
    addBox,
    grid,
  );
  ctx.every(REFRESH_MS, refresh);
}
