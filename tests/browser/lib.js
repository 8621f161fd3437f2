//! The browser side of the terminal page's end-to-end tests: Debian's
//! chromium under playwright-core, the page's screen read from xterm's
//! buffer, bounded waits, and the line protocol with the Rust test that
//! spawned this process (this side prints a line such as READY_TO_KILL, the
//! Rust side acts and answers a line such as RESTARTED on stdin).
//!
//! Everything missing fails loudly: no chromium, no playwright-core, no
//! environment variable. Nothing here is skipped.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");

const CHROMIUM = process.env.CROPS_CHROMIUM || "/usr/bin/chromium";

function fail(message) {
  process.stdout.write(`FAIL: ${message}\n`);
  process.exit(1);
}

function step(message) {
  process.stdout.write(`step: ${message}\n`);
}

function env(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set (the Rust test sets it)`);
  return v;
}

function playwright() {
  try {
    return require("playwright-core");
  } catch (e) {
    fail(`playwright-core is missing (${e.message}): run \`npm ci\` in tests/browser, or \`make deps\``);
  }
}

/**
 * Chromium trusting exactly the test server's key: the SHA-256 of its
 * SubjectPublicKeyInfo goes to --ignore-certificate-errors-spki-list, so
 * any other certificate is still refused.
 */
function spkiHash(certPem) {
  const key = crypto.createPublicKey(fs.readFileSync(certPem));
  const der = key.export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(der).digest("base64");
}

async function launch({ certPem, width = 900, height = 500, extraArgs = [] }) {
  if (!fs.existsSync(CHROMIUM)) {
    fail(`${CHROMIUM} is missing: apt-get install -y chromium (or \`make deps\`)`);
  }
  const { chromium } = playwright();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "crops-chromium-"));
  // Also on a failure, which exits at once.
  process.on("exit", () => fs.rmSync(userDataDir, { recursive: true, force: true }));
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ];
  if (certPem) args.push(`--ignore-certificate-errors-spki-list=${spkiHash(certPem)}`);
  args.push(...extraArgs);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width, height },
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    step(`console ${m.type()}: ${m.text()}`);
    // The pages' policies must never have to refuse anything they do.
    if (m.text().includes("Content Security Policy")) fail(`a Content-Security-Policy violation: ${m.text()}`);
  });
  page.on("pageerror", (e) => fail(`the page threw: ${e.stack || e}`));
  const close = () => context.close();
  return { context, page, close };
}

/**
 * A browser (not a persistent context): for cases that need several fresh
 * contexts, each with an empty cache and storage. `extraArgs` as above.
 */
async function launchBrowser({ certPem, extraArgs = [] }) {
  if (!fs.existsSync(CHROMIUM)) {
    fail(`${CHROMIUM} is missing: apt-get install -y chromium (or \`make deps\`)`);
  }
  const { chromium } = playwright();
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
  if (certPem) args.push(`--ignore-certificate-errors-spki-list=${spkiHash(certPem)}`);
  args.push(...extraArgs);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** The terminal's lines, scrollback included, with wrapped rows joined. */
async function screen(page) {
  return page.evaluate(() => {
    const buf = window.cropsTerminal.term.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) {
      const line = buf.getLine(i);
      if (!line) continue;
      const text = line.translateToString(true);
      if (line.isWrapped && lines.length) lines[lines.length - 1] += text;
      else lines.push(text);
    }
    return lines;
  });
}

/** What the page's status line says, as [state, text]. */
async function status(page) {
  return page.evaluate(() => {
    const el = document.getElementById("status");
    return [el.dataset.state, el.textContent];
  });
}

/** Poll `probe` until it yields a value other than undefined/false, or fail naming `what`. */
async function waitFor(page, what, probe, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > deadline) {
      const lines = await screen(page).catch(() => ["(no screen)"]);
      const st = await status(page).catch(() => ["?", "?"]);
      fail(`timed out after ${timeoutMs} ms waiting for ${what}\nstatus: ${st.join(": ")}\nscreen:\n${lines.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Wait for the status line to be in `state`. */
async function waitStatus(page, state, timeoutMs = 30000) {
  return waitFor(page, `status ${state}`, async () => (await status(page))[0] === state, timeoutMs);
}

/** The first capture group of the last line matching `re`, once one does. */
async function waitLine(page, what, re, timeoutMs = 30000) {
  return waitFor(
    page,
    what,
    async () => {
      const lines = await screen(page);
      for (let i = lines.length - 1; i >= 0; i--) {
        const m = re.exec(lines[i]);
        if (m) return m[1] === undefined ? m[0] : m[1];
      }
      return undefined;
    },
    timeoutMs,
  );
}

/** How many lines are exactly `text` (trailing blanks ignored), or match a RegExp. */
async function countLines(page, text) {
  const hit = text instanceof RegExp ? (l) => text.test(l) : (l) => l.trimEnd() === text;
  return (await screen(page)).filter(hit).length;
}

/** Type a command line with real key events into xterm, then Enter. */
async function typeLine(page, text) {
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}

/** Lines from the Rust side on stdin, one at a time. */
function stdinLines() {
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  const waiters = [];
  rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  rl.on("close", () => {
    while (waiters.length) waiters.shift()(null);
  });
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
}

/** Say `signal` to the Rust side and wait until it answers `answer`. */
async function handshake(nextLine, signal, answer) {
  process.stdout.write(`${signal}\n`);
  const line = await nextLine();
  if (line !== answer) fail(`expected ${answer} from the test on stdin, got ${JSON.stringify(line)}`);
}

/** Run `body`, print PASS, exit 0; any exception fails loudly. */
function main(body) {
  body()
    .then(() => {
      process.stdout.write("PASS\n");
      process.exit(0);
    })
    .catch((e) => fail(e && e.stack ? e.stack : String(e)));
}

module.exports = {
  countLines,
  env,
  fail,
  handshake,
  launch,
  launchBrowser,
  main,
  screen,
  status,
  stdinLines,
  step,
  typeLine,
  waitFor,
  waitLine,
  waitStatus,
};
