//! The dashboard's figures in real headless chromium, for
//! `tests/benches/dashboard` (which starts a release orchestrator holding a
//! SIMULATED fleet: N agents, each reporting one running container, and
//! runs `node dashboard-bench.js` with CROPS_URL, CROPS_TOKEN,
//! CROPS_SERVER_CERT, CROPS_N and CROPS_DASHBOARDS set).
//!
//! 1. First render: a fresh browser context (empty cache) with the token
//!    already stored opens `/ui#/workers`; the time from navigation start
//!    to the frame after the N-th card is in the page. The same for
//!    `/ui#/containers` and its N rows. Printed with what the page
//!    transferred: its own files, and the API's answers.
//! 2. Live: CROPS_DASHBOARDS pages on `/ui#/workers` in one context (timers
//!    not throttled), each rendered; then `OPEN` is printed and the bench
//!    measures the orchestrator's CPU until it answers `MEASURED`.
"use strict";

const L = require("./lib.js");

const URL = L.env("CROPS_URL");
const TOKEN = L.env("CROPS_TOKEN");
const N = Number(L.env("CROPS_N"));
const DASHBOARDS = Number(L.env("CROPS_DASHBOARDS"));

/** A context whose pages start signed in and note when N items are shown. */
async function signedIn(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(
    ({ token, n }) => {
      localStorage.setItem("crops.token", token);
      const t = {};
      window.__rendered = t;
      const seen = (key, selector) => {
        if (t[key] === undefined && document.querySelectorAll(selector).length >= n) {
          t[key] = null;
          requestAnimationFrame(() => (t[key] = performance.now()));
        }
      };
      new MutationObserver(() => {
        seen("workers", "article.worker");
        seen("containers", "tr[data-container]");
      }).observe(document, { subtree: true, childList: true });
    },
    { token: TOKEN, n: N },
  );
  return context;
}

async function rendered(page, key) {
  return L.waitFor(page, `${N} ${key} shown`, () => page.evaluate((k) => window.__rendered && window.__rendered[k], key), 120000);
}

/** Bytes the page's own files and the API's answers took, as received. */
async function transferred(page) {
  return page.evaluate(() => {
    const out = { files: 0, api: 0 };
    for (const e of [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]) {
      const size = e.transferSize || e.encodedBodySize || 0;
      if (new URL(e.name).pathname.startsWith("/v1/")) out.api += size;
      else out.files += size;
    }
    return out;
  });
}

async function first(browser, view) {
  const context = await signedIn(browser);
  const page = await context.newPage();
  page.on("pageerror", (e) => L.fail(`the page threw: ${e.stack || e}`));
  await page.goto(`${URL}/ui#/${view}`);
  const ms = await rendered(page, view);
  // The first answers only: the page's own polls came after the render.
  const bytes = await transferred(page);
  await context.close();
  return { ms, bytes };
}

L.main(async () => {
  const browser = await L.launchBrowser({
    certPem: L.env("CROPS_SERVER_CERT"),
    extraArgs: ["--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"],
  });
  const result = {};
  for (const view of ["workers", "containers"]) {
    // Twice: the first load of a process warms chromium itself; the second is the figure.
    await first(browser, view);
    result[view] = await first(browser, view);
    L.step(`${view}: ${JSON.stringify(result[view])}`);
  }
  process.stdout.write(`FIRST ${JSON.stringify(result)}\n`);
  const context = await signedIn(browser);
  const pages = [];
  for (let i = 0; i < DASHBOARDS; i++) {
    const page = await context.newPage();
    page.on("pageerror", (e) => L.fail(`the page threw: ${e.stack || e}`));
    await page.goto(`${URL}/ui#/workers`);
    await rendered(page, "workers");
    pages.push(page);
  }
  await L.handshake(L.stdinLines(), "OPEN", "MEASURED");
  await context.close();
  await browser.close();
});
