//! The terminal page in real headless chromium against a real orchestrator,
//! agent and container (started by tests/it/terminal_browser.rs, which runs
//! `node terminal-e2e.js CASE` with CROPS_URL, CROPS_CONTAINER, CROPS_TOKEN
//! and CROPS_SERVER_CERT set). Prints `step: …` lines, then PASS, or FAIL: …
//!
//! Cases:
//! * basics: type `echo hello` and see hello; resize the page and `stty size`
//!   inside follows; query sequences printed by the container produce no
//!   input; a reload re-attaches to the same shell; `exit 3` shows code 3,
//!   and Enter then opens a new session.
//! * restart: READY_TO_KILL is printed with a background job waiting in the
//!   container; the Rust side kills -9 the orchestrator, releases the job
//!   (which prints later-42 while no orchestrator runs) and answers KILLED;
//!   the page is typed a command while nothing serves it, then TYPED; the
//!   Rust side restarts the orchestrator and answers RESTARTED. The page must
//!   reconnect by itself to the same shell, show later-42 exactly once, and
//!   the command typed meanwhile must have run exactly once.
//! * share: a page's invite link (no token in it) opens the same shell in a
//!   second browser; each sees what the other types; the status lines say
//!   how many are here in words, never a session number; output the
//!   scrollback no longer holds is marked `… N bytes skipped …`; opening the
//!   link with a wrong token keeps (and uses) the saved working one.
"use strict";

const L = require("./lib.js");

/** Open the page as a user would: the token in the fragment only. */
// Chromium fails a navigation, or a resource it loads, when the host's
// network interfaces change (`net::ERR_NETWORK_CHANGED`, or the navigation
// replaced by its error page), which Podman does whenever another test
// starts or removes a container on a bridge network. Such a failure is the
// machine's, not the page's: navigate again, from a blank page (the page
// may have wiped the token from its address already, and a navigation to
// the same address with only a fragment added would not load it again).
const NETWORK_CHANGED = ["ERR_NETWORK_CHANGED", "chrome-error://chromewebdata"];
async function navigating(page, go, again = go) {
  for (let attempt = 1; ; attempt += 1) {
    // Leaving the page may itself be cut short by Chromium's error page:
    // what matters is that the next load is a whole one.
    // A blank page whose navigation was cut short may still commit after
    // the promise failed and interrupt the next load: that is retried too.
    if (attempt > 1) await page.goto("about:blank").catch(() => {});
    let changed = false;
    const onFailed = (req) => {
      const why = (req.failure() && req.failure().errorText) || "";
      if (NETWORK_CHANGED.some((s) => why.includes(s))) changed = true;
    };
    page.on("requestfailed", onFailed);
    try {
      await (attempt > 1 ? again : go)();
    } catch (e) {
      const why = String(e.message);
      const blanked = attempt > 1 && why.includes('another navigation to "about:blank"');
      if (!blanked && !NETWORK_CHANGED.some((s) => why.includes(s))) throw e;
      changed = true;
    } finally {
      page.off("requestfailed", onFailed);
    }
    if (!changed) return;
    if (attempt >= 5) L.fail("the host's network kept changing under every page load");
  }
}

async function openPage() {
  const url = L.env("CROPS_URL");
  const container = L.env("CROPS_CONTAINER");
  const token = L.env("CROPS_TOKEN");
  const browser = await L.launch({ certPem: L.env("CROPS_SERVER_CERT") });
  const { page } = browser;
  const sockets = { opened: 0, closed: 0, urls: [] };
  page.on("websocket", (ws) => {
    sockets.opened += 1;
    sockets.urls.push(ws.url());
    ws.on("close", () => (sockets.closed += 1));
  });
  page.on("request", (req) => {
    if (req.url().includes(token)) L.fail(`the token went into a URL: ${req.url()}`);
  });
  const address = `${url}/ui/terminal?container=${encodeURIComponent(container)}#token=${token}`;
  await navigating(page, () => page.goto(address));
  if (page.url().includes(token)) L.fail(`the token stayed in the address bar: ${page.url()}`);
  await L.waitStatus(page, "online");
  for (const u of sockets.urls) {
    if (u.includes(token)) L.fail(`the token went into the socket's URL: ${u}`);
  }
  await page.click("#terminal");
  return { ...browser, sockets };
}

/** The shell's PID, through `echo $$` (the typed line never matches). */
async function shellPid(page) {
  const nonce = Math.random().toString(36).slice(2, 8);
  await L.typeLine(page, `echo pid-${nonce}-$$-pid`);
  return L.waitLine(page, "the shell's PID", new RegExp(`^pid-${nonce}-(\\d+)-pid\\s*$`));
}

async function terminalSize(page) {
  return page.evaluate(() => [window.cropsTerminal.term.rows, window.cropsTerminal.term.cols]);
}

/**
 * `stty size` inside says `rows cols`. Asked again until it does: the resize
 * message and the keystrokes travel separately, so the first ask may race it.
 */
async function sttyFollows(page, [rows, cols]) {
  const want = `${rows} ${cols}`;
  const seen = [];
  for (let i = 0; i < 20; i++) {
    const nonce = Math.random().toString(36).slice(2, 8);
    await L.typeLine(page, `echo size-${nonce}-$(stty size)-size`);
    const size = await L.waitLine(page, `stty size (${want})`, new RegExp(`^size-${nonce}-(\\d+ \\d+)-size\\s*$`));
    if (size === want) return;
    seen.push(size);
  }
  L.fail(`stty size inside never said ${want}, the page's size: ${seen.join(", ")}`);
}

async function basics() {
  const { page, close } = await openPage();

  L.step("echo hello");
  await L.typeLine(page, "echo hello");
  await L.waitFor(page, "a line reading hello", async () => (await L.countLines(page, "hello")) === 1);
  const rendered = await page.locator(".xterm-rows").innerText();
  if (!/^hello\s*$/m.test(rendered)) L.fail(`hello is in the buffer but not on screen:\n${rendered}`);
  const pid = await shellPid(page);
  L.step(`shell pid ${pid}`);

  L.step("stty size follows the page");
  const before = await terminalSize(page);
  await sttyFollows(page, before);
  await page.setViewportSize({ width: 620, height: 330 });
  const after = await L.waitFor(page, "the terminal to refit", async () => {
    const now = await terminalSize(page);
    return now[0] !== before[0] && now[1] !== before[1] ? now : undefined;
  });
  L.step(`resized ${before.join("x")} -> ${after.join("x")}`);
  await sttyFollows(page, after);

  L.step("query sequences produce no input");
  // The container prints DSR, DA1, DA2, an OSC 11 colour query and DECRQSS,
  // then reads its terminal raw for two seconds: any answer xterm sent would
  // be read here. A reply leaking into the line editor would also garble the
  // next command line.
  await L.typeLine(
    page,
    "printf '\\033[6n\\033[c\\033[>c\\033]11;?\\007\\033P$qm\\033\\\\'; " +
      "stty -icanon -echo min 0 time 20; x=$(dd bs=256 count=1 2>/dev/null | od -An -c | tr -d ' \\n'); " +
      'stty icanon echo; echo "got$((1+1))[$x]"',
  );
  const got = await L.waitLine(page, "the raw read's result", /got2\[(.*)\]\s*$/);
  if (got !== "") L.fail(`the terminal answered a query as input: got[${got}]`);
  await L.typeLine(page, "echo clean-$((40+2))");
  await L.waitFor(page, "a clean next command", async () => (await L.countLines(page, "clean-42")) === 1);

  L.step("a reload re-attaches to the same shell, its screen replayed");
  const here = page.url();
  await navigating(page, () => page.reload(), () => page.goto(here));
  await L.waitStatus(page, "online");
  await L.waitFor(page, "hello replayed", async () => (await L.countLines(page, "hello")) === 1);
  await page.click("#terminal");
  const again = await shellPid(page);
  if (again !== pid) L.fail(`after a reload the shell is ${again}, was ${pid}`);

  L.step("exit 3 ends the session with its code");
  await L.typeLine(page, "exit 3");
  await L.waitStatus(page, "exited");
  const [, text] = await L.status(page);
  if (!text.includes("code 3")) L.fail(`the status does not show the exit code: ${text}`);
  const ended = await page.evaluate(() => window.cropsTerminal.state.sessionId);
  if (ended !== null) L.fail(`the ended session ${ended} is still remembered`);

  L.step("Enter opens a new session");
  await page.keyboard.press("Enter");
  await L.waitStatus(page, "online");
  const fresh = await shellPid(page);
  L.step(`new shell pid ${fresh}`);
  await close();
}

async function restart() {
  const nextLine = L.stdinLines();
  const { page, close, sockets } = await openPage();
  const pid = await shellPid(page);
  L.step(`shell pid ${pid}`);
  // Prints only once the Rust side creates /tmp/go, after the kill.
  await L.typeLine(
    page,
    "(while [ ! -e /tmp/go ]; do sleep 0.1; done; echo later-$((6*7)); touch /tmp/later-done) &",
  );
  await L.typeLine(page, "echo armed-$((2+3))");
  await L.waitFor(page, "the job armed", async () => (await L.countLines(page, "armed-5")) === 1);

  await L.handshake(nextLine, "READY_TO_KILL", "KILLED");
  L.step("the orchestrator was killed");
  await L.waitFor(page, "the page to notice", async () => sockets.closed >= 1, 60000);
  await L.typeLine(page, "echo typed-$((4+5))");
  await L.handshake(nextLine, "TYPED", "RESTARTED");
  L.step("the orchestrator was restarted");
  await L.waitFor(page, "the page to reconnect", async () => sockets.opened >= 2, 60000);
  await L.waitStatus(page, "online", 90000);
  // Printed by a background job, so it may share the prompt's line.
  const laterLine = /later-42\s*$/;
  await L.waitFor(page, "later-42, printed while away", async () => (await L.countLines(page, laterLine)) >= 1, 90000);
  const later = await L.countLines(page, laterLine);
  if (later !== 1) L.fail(`later-42 is shown ${later} times`);
  // Typed while nothing served the page: run once the shell is back.
  const typedLine = /^typed-9\s*$/;
  await L.waitFor(page, "typed-9, typed while away", async () => (await L.countLines(page, typedLine)) >= 1, 90000);
  await page.click("#terminal");
  const again = await shellPid(page);
  if (again !== pid) L.fail(`after the restart the shell is ${again}, was ${pid}`);
  await L.typeLine(page, "echo still-$((1+1))");
  await L.waitFor(page, "the shell still answering", async () => (await L.countLines(page, "still-2")) === 1);
  const typed = await L.countLines(page, typedLine);
  if (typed !== 1) L.fail(`the command typed while away ran ${typed} times`);
  await close();
}

/** The status line speaks in words: no long number (a session id) in it. */
async function statusInWords(page, want) {
  const [, text] = await L.status(page);
  const id = await page.evaluate(() => window.cropsTerminal.state.sessionId);
  if (/\d{10,}/.test(text) || text.includes(String(id))) L.fail(`the status line shows a number, not words: ${text}`);
  if (!text.includes("e2e-term-share")) L.fail(`the status line does not name the container: ${text}`);
  if (want && !text.includes(want)) L.fail(`the status line does not say "${want}": ${text}`);
}

async function share() {
  const url = L.env("CROPS_URL");
  const token = L.env("CROPS_TOKEN");
  const a = await openPage();
  await L.waitFor(a.page, "the status to say who is here", async () => (await L.status(a.page))[1].includes("only you"));
  await statusInWords(a.page, "only you");
  const pid = await shellPid(a.page);

  L.step("more output than the scrollback holds");
  // 1.5 MB of NUL bytes: more than the 1 MiB scrollback, yet no rows on
  // screen, so a marker at the top stays in view of xterm's own scrollback.
  await L.typeLine(a.page, "head -c 1500000 /dev/zero; echo first-$((2*3))");
  await L.waitFor(a.page, "first-6", async () => (await L.countLines(a.page, "first-6")) === 1, 120000);
  const skippedLine = /… \d+ bytes skipped …/;
  if ((await L.countLines(a.page, skippedLine)) !== 0) L.fail("a page that read everything shows a skip");

  L.step("the invite link joins the same shell from another browser");
  const link = await a.page.getAttribute("#share", "href");
  if (!link || link.includes(token) || !/[?&]session=\d+/.test(link)) L.fail(`no usable invite link: ${link}`);
  const b = await L.launch({ certPem: L.env("CROPS_SERVER_CERT") });
  await navigating(b.page, () => b.page.goto(`${link}#token=${token}`));
  await L.waitStatus(b.page, "online");
  await L.waitFor(b.page, "first-6 replayed", async () => (await L.countLines(b.page, "first-6")) === 1);
  const skipped = await L.waitLine(b.page, "the skipped bytes marked", /… (\d+) bytes skipped …/);
  L.step(`${skipped} bytes marked as skipped`);
  await L.waitFor(a.page, "a to see two people", async () => (await L.status(a.page))[1].includes("1 other"));
  await statusInWords(a.page, "you and 1 other person");
  await statusInWords(b.page, "you and 1 other person");
  await b.page.click("#terminal");
  if ((await shellPid(b.page)) !== pid) L.fail("the invite link opened another shell");
  await L.typeLine(b.page, "echo from-b-$((3*3))");
  await L.waitFor(a.page, "b's command in a", async () => (await L.countLines(a.page, "from-b-9")) === 1);

  L.step("a link with a wrong token keeps the saved one");
  await navigating(b.page, () => b.page.goto(`${link}#token=not-a-token`));
  await L.waitStatus(b.page, "online", 60000);
  const saved = await b.page.evaluate(() => localStorage.getItem("crops.token"));
  if (saved !== token) L.fail(`the saved token was replaced: ${saved}`);
  await b.page.click("#terminal");
  if ((await shellPid(b.page)) !== pid) L.fail("after the wrong link b is in another shell");
  await b.close();
  await L.waitFor(a.page, "a to be alone again", async () => (await L.status(a.page))[1].includes("only you"), 60000);
  await a.close();
}

const cases = { basics, restart, share };
const which = process.argv[2];
if (!cases[which]) L.fail(`usage: node terminal-e2e.js ${Object.keys(cases).join("|")}`);
L.main(cases[which]);
