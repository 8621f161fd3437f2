//! The dashboard (/ui) in real headless chromium against a real
//! orchestrator and agent on real Podman (started by
//! tests/it/dashboard_browser.rs, which runs `node dashboard-e2e.js CASE`
//! with CROPS_URL, CROPS_TOKEN, CROPS_SERVER_CERT and, per case,
//! CROPS_IMAGE and CROPS_WORKER set). Prints `step: …` lines, then PASS or
//! FAIL: …. Any alert dialog fails the case (the XSS checks rely on it).
//!
//! Cases:
//! * member: signs in with a member's token; sees the worker online and no
//!   admin action anywhere (no Team view, no cordon, no "Add a worker");
//!   a launch with a name full of markup is refused in words, shown as text;
//!   with its only worker cordoned (CORDON / CORDONED, then UNCORDON /
//!   UNCORDONED), a launch shows each worker's verdict and reason;
//!   no view scrolls sideways on a phone's width; launches a container with
//!   automatic placement from the keyboard alone, watches it run and its
//!   CPU graph appear, types in its terminal (the existing page, opened
//!   from the row), stops it, removes it (after a confirmation); sign-out
//!   forgets the token.
//! * admin: signs in with the operator's token; every view renders without
//!   a refusal; "Add a worker" shows the commands, printed as
//!   `COMMANDS {json}` for the Rust side to run (it names the new worker
//!   with markup) and answer STARTED; the new worker appears online, its
//!   name shown as text, and the Team view counts two workers on the plan.
//! * live: the worker's card turns offline when its agent is killed
//!   (KILL_AGENT, answered KILLED); the page says it is reconnecting while
//!   the orchestrator is down (READY_TO_KILL / KILLED), and once it is back
//!   with the agent (START / STARTED) the card is online again, no reload.
//! * podman: the worker's card says how its agent drives Podman
//!   (CROPS_PODMAN: "as root" or "rootless") and lists what that cannot do
//!   on the box (CROPS_LIMITATION: one limitation, or "none"), as text.
"use strict";

const L = require("./lib.js");

const URL = L.env("CROPS_URL");
const TOKEN = L.env("CROPS_TOKEN");
const MARKUP = "<img src=x onerror=alert(1)>";

/** Open /ui, retrying a load the host's network changes cut short (Podman's bridges). */
async function open(page, hash = "") {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(`${URL}/ui${hash}`, { waitUntil: "load" });
      return;
    } catch (e) {
      if (attempt >= 5 || !String(e.message).includes("ERR_NETWORK_CHANGED")) throw e;
    }
  }
}

async function signIn(page) {
  await open(page);
  await page.locator("#token-input").fill(TOKEN);
  await page.locator("form.sign-in button[type=submit]").click();
  await L.waitFor(page, "the signed-in page", () => page.evaluate(() => document.body.dataset.signedIn === "yes"));
}

const noticeText = (page) => page.evaluate(() => (document.getElementById("notice").hidden ? "" : document.getElementById("notice").textContent));

async function waitNotice(page, what, re) {
  return L.waitFor(page, what, async () => {
    const t = await noticeText(page);
    return re.test(t) ? t : undefined;
  });
}

async function cardStatus(page, name) {
  return page.evaluate((n) => {
    const card = [...document.querySelectorAll("article.worker")].find((c) => c.querySelector("h3").textContent === n);
    return card ? card.dataset.status : undefined;
  }, name);
}

async function waitCard(page, name, status, timeoutMs = 30000) {
  await L.waitFor(page, `worker ${name} ${status}`, async () => (await cardStatus(page, name)) === status, timeoutMs);
}

async function rowState(page, name) {
  return page.evaluate((n) => {
    const row = [...document.querySelectorAll("tr[data-container]")].find((r) => r.querySelector("[data-field=name]").textContent === n);
    return row ? row.dataset.state : "absent";
  }, name);
}

async function waitRow(page, name, state, timeoutMs = 60000) {
  await L.waitFor(page, `container ${name} ${state}`, async () => (await rowState(page, name)) === state, timeoutMs);
}

function row(page, name) {
  return page.locator("tr[data-container]").filter({ has: page.locator("[data-field=name]", { hasText: name }) });
}

/** Press Tab until the element with id `id` has the focus (at most 40 times). */
async function tabTo(page, id) {
  for (let i = 0; i < 40; i++) {
    if (await page.evaluate((want) => document.activeElement && document.activeElement.id === want, id)) return;
    await page.keyboard.press("Tab");
  }
  L.fail(`Tab never reached #${id}`);
}

async function launch(page, name, image) {
  if (!(await page.locator("#launch").count())) await page.locator("#launch-button").click();
  await page.locator("#launch-name").fill(name);
  await page.locator("#launch-image").fill(image);
  await page.locator("#launch-command").fill("sleep\n3600");
  await page.locator("#launch button[type=submit]").click();
}

async function member(page, context, nextLine) {
  const image = L.env("CROPS_IMAGE");
  await signIn(page);
  L.step("signed in as a member");
  const worker = L.env("CROPS_WORKER");
  await waitCard(page, worker, "online");
  const nav = await page.locator("#nav a").allTextContents();
  if (nav.includes("Team")) L.fail(`a member is shown the Team view: ${nav}`);
  for (const label of ["Cordon", "Drain", "Delete", "Rotate credential", "Add a worker"]) {
    if (await page.getByRole("button", { name: label }).count()) L.fail(`a member is offered "${label}"`);
  }
  await open(page, "#/team");
  await L.waitFor(page, "#/team falling back to workers", async () => (await page.locator("h1").first().textContent()) === "Workers");

  await open(page, "#/containers");
  await launch(page, MARKUP, image);
  const words = await waitNotice(page, "the markup name refused in words", /not accepted/);
  if (!words.includes(MARKUP)) L.fail(`the refusal does not quote the name as text: ${words}`);
  if (await page.locator("#notice img, #view img").count()) L.fail("the name became an element");
  L.step(`refused in words: ${words}`);

  // Nothing fits (the Rust side cordons the only worker): each worker's verdict and reason.
  await L.handshake(nextLine, "CORDON", "CORDONED");
  await launch(page, `nofit-${process.pid}`, image);
  await waitNotice(page, "the refused placement in words", /no worker|fits|cordoned/i);
  const why = await L.waitFor(page, "the decision's verdicts", () =>
    page.evaluate(() => {
      const box = document.getElementById("launch-why");
      if (!box || box.hidden) return undefined;
      const rows = [...box.querySelectorAll("tbody tr")].map((tr) => tr.textContent);
      return rows.some((r) => r.includes("refused") && r.includes("cordoned")) ? rows : undefined;
    }),
  );
  L.step(`nothing fits, and why: ${why.join(" | ")}`);
  await L.handshake(nextLine, "UNCORDON", "UNCORDONED");

  // A phone's width: no view scrolls sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const view of ["workers", "containers", "scheduling"]) {
    await open(page, `#/${view}`);
    await L.waitFor(page, `the ${view} view`, async () => (await page.locator("#view h1").count()) > 0);
    const [wide, fits] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    if (wide > fits) L.fail(`the ${view} view is ${wide} px wide on a ${fits} px screen`);
  }
  await page.setViewportSize({ width: 1200, height: 900 });

  // With the keyboard alone: Tab to "Launch a container", fill the form, submit.
  const name = `dash-${process.pid}`;
  await open(page, "#/containers");
  await L.waitFor(page, "the launch button", () => page.locator("#launch-button").count());
  await tabTo(page, "launch-button");
  await page.keyboard.press("Enter");
  await L.waitFor(page, "the focus in the form", () => page.evaluate(() => document.activeElement.id === "launch-name"));
  await page.keyboard.type(name);
  await tabTo(page, "launch-image");
  await page.keyboard.type(image);
  await tabTo(page, "launch-domains");
  await page.keyboard.type("example.com");
  await tabTo(page, "launch-command");
  await page.keyboard.type("sleep");
  await page.keyboard.press("Enter");
  await page.keyboard.type("3600");
  await tabTo(page, "launch-submit");
  await page.keyboard.press("Enter");
  await waitRow(page, name, "running");
  const profile = await row(page, name).locator("[data-domains]").textContent();
  if (profile !== "standard · 1 domain") L.fail(`the row's profile says ${JSON.stringify(profile)}`);
  L.step("launched with automatic placement and its own allow-list, running");
  await L.waitFor(page, "its CPU and memory graphs", async () => (await row(page, name).locator("svg.spark").count()) >= 2);
  // The agent's samples of the last heartbeats come with the first answer: a line, not a dot.
  await L.waitFor(page, "a graph of several samples", async () => {
    const points = await row(page, name).locator("svg.spark polyline").first().getAttribute("points");
    return points && points.split(" ").length >= 3;
  });

  const [term] = await Promise.all([context.waitForEvent("page"), row(page, name).getByRole("link", { name: "Terminal" }).click()]);
  await term.waitForLoadState("load");
  await L.waitFor(term, "the terminal connected", async () => (await L.status(term))[0] === "online");
  await L.typeLine(term, "echo dash-$((6*7))");
  await L.waitLine(term, "the shell's answer", /^(dash-42)$/);
  await term.close();
  L.step("typed in its terminal");

  await row(page, name).getByRole("button", { name: "Stop" }).click();
  await waitRow(page, name, "exited");
  await row(page, name).getByRole("button", { name: "Remove" }).click();
  await page.locator("dialog.confirm button.danger").click();
  await waitRow(page, name, "absent");
  L.step("stopped and removed");

  await page.locator("#sign-out").click();
  await L.waitFor(page, "the sign-in form", () => page.locator("#token-input").count());
  const kept = await page.evaluate(() => localStorage.getItem("crops.token"));
  if (kept) L.fail("sign-out kept the token");
}

async function admin(page, nextLine) {
  await signIn(page);
  for (const view of ["workers", "containers", "scheduling", "team"]) {
    await open(page, `#/${view}`);
    await L.waitFor(page, `the ${view} view`, async () => (await page.locator("#view h1").count()) > 0);
    // Give its first refresh the time to fail, if it would: the page's own calls settle.
    await page.waitForLoadState("networkidle");
    const n = await noticeText(page);
    if (n) L.fail(`the ${view} view shows a refusal: ${n}`);
    L.step(`${view} renders: ${await page.locator("#view h1").first().textContent()}`);
  }
  // The tenant's default egress allow-list: a bad pattern is refused in
  // words and changes nothing; a good list is saved and shown.
  await open(page, "#/containers");
  await page.locator("#allowlist-edit").click();
  await page.locator("#allowlist-text").fill("*.com");
  await page.locator("#allowlist-save").click();
  await waitNotice(page, "the refused pattern", /bare top-level domain/);
  await page.locator("#allowlist-text").fill("pypi.org\n*.pythonhosted.org");
  await page.locator("#allowlist-save").click();
  await L.waitFor(page, "the saved list", async () => (await page.locator("#allowlist-current").textContent()) === "pypi.org, *.pythonhosted.org");
  L.step("the tenant's default allow-list refused *.com and saved two patterns");
  await open(page, "#/workers");
  await page.locator("#add-worker-button").click();
  const commands = await L.waitFor(page, "the shown commands", () =>
    page.evaluate(() => {
      const box = document.querySelector('#add-worker [data-arch="x86_64"]');
      if (!box) return undefined;
      return {
        download: box.querySelector('[data-step="download"]').textContent,
        enroll: box.querySelector('[data-step="enroll"]').textContent,
      };
    }),
  );
  if (!(await page.locator('#add-worker [data-arch="aarch64"]').count())) L.fail("no commands for 64-bit ARM");
  process.stdout.write(`COMMANDS ${JSON.stringify(commands)}\n`);
  const answer = await nextLine();
  if (answer !== "STARTED") L.fail(`expected STARTED, got ${answer}`);
  await waitCard(page, MARKUP, "online", 60000);
  if (await page.locator("#view img").count()) L.fail("the worker's name became an element");
  L.step("the new worker appeared online, its name as text");
  // The Team view counts both workers against the plan (the API's usage).
  await open(page, "#/team");
  await L.waitFor(page, "the tenant's two workers against its plan", () =>
    page.evaluate(() => [...document.querySelectorAll("#view td")].some((td) => /^2 \/ /.test(td.textContent))),
  );
  // The audit log, filtered by the server: the operator's POSTs only.
  await open(page, "#/team/audit");
  await page.getByLabel("actor").selectOption("operator");
  await page.getByLabel("action").fill("POST ");
  await page.getByRole("button", { name: "Show newest" }).click();
  const shown = await L.waitFor(page, "the filtered audit log", () =>
    page.evaluate(() => {
      const rows = [...document.querySelectorAll("#view tbody tr")].map((tr) => [...tr.cells].map((td) => td.textContent));
      // Only the filtered answer has nothing but the operator's POSTs (the
      // unfiltered one, shown first, has the agents' enrolments too).
      return rows.length && rows.every((r) => r[1] === "operator" && r[3].startsWith("POST ")) ? rows : undefined;
    }),
  );
  if (!shown.some((r) => r[3].startsWith("POST /v1/tenants/{tenantId}/join-tokens"))) L.fail(`no join token minted in ${JSON.stringify(shown)}`);
  L.step(`audit filtered on the server: ${shown.length} POSTs by the operator`);
}

async function live(page, nextLine) {
  await signIn(page);
  const worker = L.env("CROPS_WORKER");
  await waitCard(page, worker, "online");
  await L.handshake(nextLine, "KILL_AGENT", "KILLED");
  await waitCard(page, worker, "offline");
  L.step("the card turned offline by itself");
  await L.handshake(nextLine, "READY_TO_KILL", "KILLED");
  await L.waitFor(page, "the reconnecting line", () => page.evaluate(() => !document.getElementById("live").hidden));
  await L.handshake(nextLine, "START", "STARTED");
  await L.waitFor(page, "the reconnecting line gone", () => page.evaluate(() => document.getElementById("live").hidden));
  await waitCard(page, worker, "online", 60000);
  L.step("back online after the restart, without a reload");
}

async function podman(page) {
  await signIn(page);
  const worker = L.env("CROPS_WORKER");
  await waitCard(page, worker, "online");
  const [want, limitation] = [L.env("CROPS_PODMAN"), L.env("CROPS_LIMITATION")];
  const shown = await L.waitFor(page, `the card saying ${want}`, () =>
    page.evaluate(
      ([n, want]) => {
        const card = [...document.querySelectorAll("article.worker")].find((c) => c.querySelector("h3").textContent === n);
        const field = (f) => card.querySelector(`[data-field=${f}]`).textContent;
        return card && field("podman") === want ? [field("podman"), field("limitations")] : undefined;
      },
      [worker, want],
    ),
  );
  if (!shown[1].includes(limitation)) L.fail(`limitations shown: ${shown[1]}; wanted ${limitation}`);
  if (limitation === "none" && shown[1] !== "none") L.fail(`limitations shown: ${shown[1]}; wanted none`);
  L.step(`Podman: ${shown[0]}; limitations: ${shown[1]}`);
}

L.main(async () => {
  const which = process.argv[2];
  const cases = { member, admin, live, podman };
  if (!cases[which]) L.fail(`unknown case ${which}`);
  const { context, page, close } = await L.launch({ certPem: L.env("CROPS_SERVER_CERT"), width: 1200, height: 900 });
  page.on("dialog", (d) => L.fail(`a dialog opened: ${d.type()} ${d.message()}`));
  const lines = L.stdinLines();
  await (which === "member" ? member(page, context, lines) : cases[which](page, lines));
  await close();
});
